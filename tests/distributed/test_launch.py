"""Launching: the stage-style self-relaunch under torchrun, and the start-up checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distributed._helpers import ROOT, bn_model, images, worker_env
from metafgnet.distributed import SINGLE, init_distributed, torchrun_command
from metafgnet.distributed.sharding import check_divisible, shard_bounds, shard_segments
from metafgnet.params import MetaParams, RuntimeParams
from metafgnet.training import LoopRuntime, meta_train

# starts processes, servers or torchrun: `make test-fast` leaves it out
pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("launch_worker.py")


def test_plain_python_relaunches_itself_under_torchrun(tmp_path):
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp_path), "2"], env=worker_env(),
                          capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.read_text() for p in tmp_path.glob("rank*.txt")) == ["0 2 gloo", "1 2 gloo"]


def test_one_process_needs_no_torchrun(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert init_distributed(RuntimeParams()) is SINGLE
    assert SINGLE.is_main and not SINGLE.enabled
    cmd = torchrun_command(4, ["pipeline/meta_train.py", "--out", "x"], python="py")
    assert cmd == ["py", "-m", "metafgnet.distributed.run", "--standalone", "--nproc_per_node=4",
                   "pipeline/meta_train.py", "--out", "x"]


def test_torchrun_process_count_must_match_runtime_nproc(monkeypatch):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeError, match=r"runtime\.nproc is 4 but torchrun started 2"):
        init_distributed(RuntimeParams(nproc=4))


def test_shard_arithmetic():
    assert [shard_bounds(11, r, 2) for r in range(2)] == [(0, 5), (5, 11)]
    assert shard_segments(list(range(8)), [4, 4], 1, 2) == [2, 3, 6, 7]
    assert shard_segments(list(range(8)), [4, 4], 0, 1) == list(range(8))
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        check_divisible(6, 4, "meta.batch_size")


def test_global_batch_sizes_must_split_evenly_over_ranks():
    from distributed._helpers import EmulatedRank, ThreadGroup

    ctx = EmulatedRank(rank=0, world_size=3, group=ThreadGroup(3))
    with pytest.raises(ValueError, match=r"meta\.batch_size \(4\) must be divisible by .* \(3\)"):
        meta_train(bn_model(), images(16, 3, 1), images(16, 5, 2),
                   MetaParams(iterations=1, batch_size=4, aux_batch_size=6),
                   LoopRuntime(device=None, seed=0, dist=ctx))


STAGE = '''
import os, sys
from metafgnet.stages.context import open_stage
from metafgnet.errors import UserError

data = "data/prepared/manifests" if sys.argv[1] == "all" else None  # missing on every rank
with open_stage("probe", ["data", "runtime"], data=data) as ctx:
    if os.environ["RANK"] == "1":  # only rank 1 meets the problem, rank 0 is stopped by torchrun
        raise UserError("rank 1 found a problem; fix it this way")
'''


@pytest.mark.parametrize("failing", ["all", "rank1"])
def test_a_known_error_under_torchrun_is_reported_once_without_traceback(tmp_path, failing):
    """``runtime.nproc: 2``: whether every rank or only one stops on the problem, the stage
    prints its one block once, no torchrun traceback or failure report, and exits 2."""
    (tmp_path / "params.yaml").write_text(
        "runtime: {nproc: 2, num_threads: 2}\ntracking: {enabled: false}\n")
    (tmp_path / "stage.py").write_text(STAGE)
    proc = subprocess.run([sys.executable, "stage.py", failing], cwd=tmp_path, env=worker_env(),
                          capture_output=True, text=True, timeout=240)
    err = proc.stderr
    assert proc.returncode == 2, err[-3000:]
    what = "(DataError)" if failing == "all" else "(UserError)"
    assert err.count(f"error: stage 'probe' stopped {what}") == 1, err
    assert "Traceback" not in err and "ChildFailedError" not in err and "FAILED" not in err, err
