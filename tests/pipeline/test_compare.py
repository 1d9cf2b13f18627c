"""`metafgnet compare` for real, in a copy of the tiny repository (so the two executions the
other tests count stay two): a grid of queued DVC experiments run two at a time (threads shared
out between them), resumed one at a time with a point killed mid-run (never two at once, no row
left for the killed point), resumed again without re-running finished points, summarised with
the paired arithmetic, logged to MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from metafgnet.compare.grid import parse_grid, workers_alive
from metafgnet.compare.stats import paired_difference
from metafgnet.evaluation import ARMS
from metafgnet.training.runtime import shared_threads
from support.repo import copy_repo, run

pytestmark = pytest.mark.slow

COMPARE = [sys.executable, "-m", "metafgnet.cli", "compare", "--jobs", "2"]
DVC = [sys.executable, "-m", "dvc"]


def _shown(repo: Path, env: dict) -> dict[str, dict]:
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo,
                           env).stdout)
    return {e["name"]: e["revs"][0]["data"] for b in shown for e in b.get("experiments") or []
            if e.get("name")}


def test_compare_runs_the_grid_resumes_and_summarises(two_executions, tmp_path):
    repo, env = copy_repo(two_executions[0], tmp_path / "repo", two_executions[1])
    try:
        first = run([*COMPARE, "--seeds", "0"], repo, env)
        assert "2 grid points, 0 already done, 2 to run" in first.stdout
        assert "2/2 done" in first.stdout
        # one at a time, looking at the queue every second (a worker restart while the first
        # worker starts would run two points at once), the first point to run killed
        proc = subprocess.Popen([*COMPARE[:-2], "--jobs", "1", "--poll-s", "1", "--seeds", "0",
                                 "1"], cwd=repo, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines, killed, workers = [], None, []
        for line in proc.stdout:
            lines.append(line)
            workers.append(workers_alive(repo))
            if killed is None and " 1 running" in line:
                status = run([*DVC, "queue", "status"], repo, env).stdout
                killed = next(ln.split()[1] for ln in status.splitlines() if "Running" in ln)
                run([*DVC, "queue", "kill", killed], repo, env)
        stderr = proc.stderr.read()
        proc.wait(timeout=900)
        again = "".join(lines)
        assert "4 grid points, 2 already done, 2 to run with 1 job(s)" in again
        # progress counts only finished points (queued ones carry the baseline's metrics files)
        assert "compare: 0/2 done, " in again and "1/2 done" in again
        assert max(int(n) for n in re.findall(r"(\d+) running", again)) <= 1, again
        # (a worker that stopped may be started again, never beside a live or starting one)
        assert max(workers) <= 1, again
        assert proc.returncode == 2 and killed in stderr and "did not finish" in stderr, stderr
        assert (repo / "results" / "compare" / "failed" / f"{killed}.log").is_file()
        # no row of the killed point carrying the baseline's metrics under its name
        assert killed not in _shown(repo, env)
        resumed = run([*COMPARE[:-2], "--jobs", "1", "--seeds", "0", "1"], repo, env)
        assert "4 grid points, 3 already done, 1 to run" in resumed.stdout
    finally:
        run([sys.executable, "-m", "dvc", "queue", "stop"], repo, env, check=False)
    rows = _shown(repo, env)
    names = {f"cmp-meta_order-{o}-seed-{s}" for o in ("first", "second") for s in (0, 1)}
    assert names <= set(rows)
    value = {n: rows[n]["metrics"]["metrics/evaluate.json"]["data"] for n in names}
    threads = {n: rows[n]["params"]["params.yaml"]["data"]["runtime"]["num_threads"]
               for n in names}
    for name in names:
        params = rows[name]["params"]["params.yaml"]["data"]
        assert name == f"cmp-meta_order-{params['meta']['order']}-seed-{params['seed']}"
    # the points of seed 0 ran two at a time: each at its share of the cores
    ran_alone = {n for n in names if n.endswith("seed-1")}
    alone = threads["cmp-meta_order-first-seed-1"]
    assert {threads[n] for n in ran_alone} == {alone}
    assert {threads[n] for n in names - ran_alone} == {shared_threads(alone, 2)}
    summary = json.loads((repo / "results/compare/compare.json").read_text())
    (cond,) = summary["conditions"]
    for arm in ARMS:
        by = {o: {s: value[f"cmp-meta_order-{o}-seed-{s}"][arm]["test_top1"] for s in (0, 1)}
              for o in ("first", "second")}
        expected = paired_difference(by["first"], by["second"])
        got = cond["difference"][arm]["test_top1"]
        assert got["mean"] == pytest.approx(expected["mean"])
        assert (got["low"], got["high"]) == (pytest.approx(expected["low"]),
                                             pytest.approx(expected["high"]))
        assert cond["arms"][arm]["first"]["test_top1"]["n"] == 2
    # two points at a time share the cores: their costs are left out of the comparison; those
    # run one at a time (seed 1, queued with --jobs 1) count
    assert cond["cost_left_out"] == {"first": 1, "second": 1}
    assert cond["cost"]["meta_train"]["first"]["seconds_per_iter"]["n"] == 1
    assert cond["threads"]["first"] == {"0": shared_threads(alone, 2), "1": alone}
    assert cond["unpaired_seeds"] == []
    assert cond["contrasts"]["second"]["metafgnet-finetune"]["test_top1"]["n"] == 2
    text = (repo / "results/compare/summary.md").read_text()
    assert "±" in text and "95 %" in text
    assert (repo / "results/compare/compare.png").stat().st_size > 0

    # the third invocation runs nothing and logs a summary run linking the executions
    third = run([*COMPARE, "--seeds", "0", "1"], repo, env)
    assert "4 grid points, 4 already done, 0 to run" in third.stdout
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("metafgnet")
    compares = client.search_runs([exp.experiment_id],
                                  filter_string="tags.`metafgnet.role` = 'compare'",
                                  order_by=["attributes.start_time DESC"])
    assert len(compares) == 3
    latest = compares[0]
    grid = [p.name for p in parse_grid([], seeds=[0, 1]).points()]
    assert latest.data.tags["compare.experiments"].split() == grid
    linked = latest.data.tags["compare.parent_runs"].split()
    for run_id in linked:
        parent = client.get_run(run_id)
        assert parent.data.tags["metafgnet.role"] == "pipeline"
        assert parent.data.tags["dvc.exp_name"] in names
    # the points of seed 1 ran stages, so their executions have parent runs to link
    assert {client.get_run(r).data.tags["dvc.exp_name"] for r in linked} >= {
        "cmp-meta_order-first-seed-1", "cmp-meta_order-second-seed-1"}
    assert "diff/test_top1/metafgnet" in latest.data.metrics
    # a seed sweep shares the stages that do not depend on `seed`: checked out from the cache,
    # not re-run (points at params.yaml's thread count; those of seed 0 may have run at fewer)
    for run_id in linked:
        tags = client.get_run(run_id).data.tags
        if tags["dvc.exp_name"] in ran_alone:
            reused = tags["stages.reused"].split()
            assert {"prepare", "pretrain"} <= set(reused), reused


def test_an_invalid_grid_fails_before_anything_is_queued(tiny_pipeline):
    repo, env, _ = tiny_pipeline
    out = run([*COMPARE, "--set", "meta.order=first,third", "--seeds", "0"], repo, env,
              check=False)
    assert out.returncode == 2
    assert "cmp-meta_order-third-seed-0" in out.stderr and "meta.order" in out.stderr
    queued = run([sys.executable, "-m", "dvc", "queue", "status"], repo, env).stdout
    assert "cmp-" not in queued
