"""A grid on a shared machine: threads shared out between the points run at once, points at
different thread counts never paired, the queue's worker processes seen while they start."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from metafgnet.compare.grid import Grid, workers_alive
from metafgnet.compare.stats import paired_difference
from metafgnet.compare.summary import markdown, summarise
from metafgnet.evaluation import ARMS
from metafgnet.training.runtime import shared_threads


@pytest.mark.parametrize("num_threads,jobs,cores,expected", [
    (2, 1, 2, 2),    # alone: params.yaml's count
    (2, 2, 2, 1),    # two points on two cores: one thread each
    (4, 2, 16, 4),   # plenty of cores: params.yaml's count stands
    (0, 4, 16, 4),   # 0 (every core) is shared out too
    (2, 3, 2, 1),    # more points than cores: at least one thread each
])
def test_threads_are_shared_out_between_the_points_run_at_once(num_threads, jobs, cores,
                                                                expected):
    assert shared_threads(num_threads, jobs, cores) == expected
    if jobs <= cores:
        assert jobs * shared_threads(num_threads, jobs, cores) <= cores


def _record(value: float, threads: int | None) -> dict:
    arms = {arm: {"test_top1": value, "val_top1": value, "test_mean_class_acc": value}
            for arm in ARMS}
    params = {"runtime": {"num_threads": threads}} if threads is not None else {}
    return {"params": params, "jobs": 1, "metrics": {"metrics/evaluate.json": arms}}


def test_points_at_different_thread_counts_are_not_paired():
    """Seed 2 was resumed with another --jobs: its second-order point ran at one thread."""
    grid = Grid("meta.order", ("first", "second"), seeds=(0, 1, 2))
    first, second = {0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.6, 1: 0.8, 2: 0.1}
    records = {}
    for p in grid.points():
        order, seed = p.value("meta.order"), int(p.value("seed"))
        threads = 1 if (order, seed) == ("second", 2) else 2
        records[p.name] = _record((first if order == "first" else second)[seed], threads)
    (cond,) = summarise(grid, records)["conditions"]
    assert cond["unpaired_seeds"] == [2]
    got = cond["difference"]["metafgnet"]["test_top1"]
    assert got["seeds"] == [0, 1]
    assert got["mean"] == pytest.approx(paired_difference({0: 0.5, 1: 0.6},
                                                          {0: 0.6, 1: 0.8})["mean"])
    assert cond["threads"]["second"] == {0: 2, 1: 2, 2: 1}
    text = markdown(summarise(grid, records), "metafgnet compare")
    assert "Threads per point (`runtime.num_threads`): 1, 2." in text
    assert "Not paired" in text and "seeds 2." in text


def test_points_at_one_thread_count_are_all_paired():
    grid = Grid("meta.order", ("first", "second"), seeds=(0, 1))
    records = {p.name: _record(0.5 + 0.1 * int(p.value("seed")), 1) for p in grid.points()}
    (cond,) = summarise(grid, records)["conditions"]
    assert cond["unpaired_seeds"] == []
    assert cond["difference"]["metafgnet"]["test_top1"]["seeds"] == [0, 1]


def test_a_starting_queue_worker_counts_as_alive(tmp_path):
    """DVC writes a worker's process file when it spawns it, before `dvc queue status` lists it:
    a worker still starting must stop `compare` from starting a second one."""
    folder = tmp_path / ".dvc" / "tmp" / "exps" / "celery"
    folder.mkdir(parents=True)
    assert workers_alive(tmp_path) == 0
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "exp", "queue-worker", "dvc-exp-abc-1@localhost"])
    try:
        info = {"pid": worker.pid, "stdin": None, "stdout": None, "stderr": None,
                "returncode": None}
        (folder / "dvc-exp-worker-1.json").write_text(json.dumps(info))
        assert workers_alive(tmp_path) == 1
    finally:
        worker.kill()
        worker.wait()
    assert workers_alive(tmp_path) == 0   # its process file stays; the process is gone
    # a pid reused by another program is not a worker
    (folder / "dvc-exp-worker-2.json").write_text(json.dumps({"pid": 1}))
    assert workers_alive(tmp_path) == 0

