"""The leakage check in the real pipeline: `prepare` writes it inside its cached output, DVC
shows it as a metric (top-level `metrics:` of dvc.yaml), and the report has its section."""

from __future__ import annotations

import json
import sys

import pytest

from support.repo import run

pytestmark = pytest.mark.slow


def test_leakage_counts_are_a_dvc_metric_and_in_the_report(tiny_pipeline):
    repo, env, _ = tiny_pipeline
    path = "data/prepared/manifests/leakage.json"
    counts = json.loads((repo / path).read_text())
    assert set(counts) == {"train", "val", "test", "auxiliary_images", "max_distance", "dropped"}
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo,
                           env).stdout)
    by_file = {f: d.get("data") for rev in shown.values() for f, d in rev["data"].items()}
    assert by_file[path] == counts
    assert (repo / "data/prepared/manifests/leakage.csv").read_text().startswith(
        "auxiliary,split,target,kind,distance\n")
    report = (repo / "results/report/report.md").read_text()
    assert "## Auxiliary images that copy a target image" in report
    assert "`data.leakage.drop: false`" in report
