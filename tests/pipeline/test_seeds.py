"""`metafgnet seeds`: queued DVC experiments over `seed`, run two at a time, summarised."""

from __future__ import annotations

import json
import statistics
import sys

import pytest

from support.repo import run

pytestmark = pytest.mark.slow

ARMS = ("finetune", "joint", "metafgnet", "metafgnet_selected")


def test_seed_sweep_summarises_mean_and_std_per_arm(tiny_pipeline):
    repo, env, _ = tiny_pipeline
    run([sys.executable, "-m", "metafgnet.cli", "seeds", "--seeds", "1", "2", "--jobs", "2"],
        repo, env)
    summary = json.loads((repo / "results/seeds/summary.json").read_text())
    assert set(summary) == set(ARMS)
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo,
                           env).stdout)
    per_seed = {}
    for exp in (e for baseline in shown for e in baseline.get("experiments") or []):
        rev = exp["revs"][0]
        if exp.get("name") in ("seed-1", "seed-2"):
            per_seed[exp["name"]] = rev["data"]["metrics"]["results/evaluate/metrics.json"]["data"]
            assert rev["data"]["params"]["params.yaml"]["data"]["seed"] == int(exp["name"][-1])
    assert set(per_seed) == {"seed-1", "seed-2"}
    for arm in ARMS:
        values = [per_seed[s][arm]["test_top1"] for s in ("seed-1", "seed-2")]
        stats = summary[arm]["test_top1"]
        assert stats["n"] == 2
        assert stats["mean"] == pytest.approx(statistics.fmean(values))
        assert stats["std"] == pytest.approx(statistics.pstdev(values))
    assert "±" in (repo / "results/seeds/summary.md").read_text()
