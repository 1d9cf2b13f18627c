"""`metafgnet compare` for real, in a copy of the tiny repository (so the two executions the
other tests count stay two): a grid of queued DVC experiments run two at a time, resumed
without re-running finished points, summarised with the paired arithmetic, logged to MLflow."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metafgnet.compare.grid import parse_grid
from metafgnet.compare.stats import paired_difference
from metafgnet.evaluation import ARMS
from support.repo import copy_repo, run

pytestmark = pytest.mark.slow

COMPARE = [sys.executable, "-m", "metafgnet.cli", "compare", "--jobs", "2"]


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
        again = run([*COMPARE, "--seeds", "0", "1"], repo, env)
        assert "4 grid points, 2 already done, 2 to run" in again.stdout
        # progress counts only finished points (queued ones carry the baseline's metrics files)
        assert "compare: 0/2 done, " in again.stdout and "2/2 done" in again.stdout
    finally:
        run([sys.executable, "-m", "dvc", "queue", "stop"], repo, env, check=False)
    rows = _shown(repo, env)
    names = {f"cmp-meta_order-{o}-seed-{s}" for o in ("first", "second") for s in (0, 1)}
    assert names <= set(rows)
    value = {n: rows[n]["metrics"]["metrics/evaluate.json"]["data"] for n in names}
    for name in names:
        params = rows[name]["params"]["params.yaml"]["data"]
        assert name == f"cmp-meta_order-{params['meta']['order']}-seed-{params['seed']}"
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
    # two points at a time share the cores: their costs are left out of the comparison
    assert cond["cost_left_out"] == {"first": 2, "second": 2}
    assert cond["cost"]["meta_train"]["first"]["seconds_per_iter"]["n"] == 0
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
    # not re-run
    for run_id in linked:
        reused = client.get_run(run_id).data.tags["stages.reused"].split()
        assert {"prepare", "pretrain"} <= set(reused), reused


def test_an_invalid_grid_fails_before_anything_is_queued(tiny_pipeline):
    repo, env, _ = tiny_pipeline
    out = run([*COMPARE, "--set", "meta.order=first,third", "--seeds", "0"], repo, env,
              check=False)
    assert out.returncode == 2
    assert "cmp-meta_order-third-seed-0" in out.stderr and "meta.order" in out.stderr
    queued = run([sys.executable, "-m", "dvc", "queue", "status"], repo, env).stdout
    assert "cmp-" not in queued
