"""What a pipeline execution shows and leaves: progress lines in the captured log, live
curves, and cached outputs that hash the same on every run of one CPU."""

import re
import subprocess
import sys
import time

import pytest
import yaml

from support.repo import copy_repo, run

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
TIMING = ("seconds_per_step", "images_per_s")


def test_every_long_step_reports_progress_with_total_rate_and_eta(tiny_pipeline):
    _, _, result = tiny_pipeline
    log = result.stdout + result.stderr
    assert "\r" not in log  # captured output: plain lines, never a redrawn bar
    line = r"{}: (\d+)/(\d+) {} \(\d+%\), elapsed \d\d:\d\d, ETA [\d:?]+, "
    for desc, unit in [("generate", "image"), ("pretrain", "step"), ("meta_train", "step"),
                       ("score", "batch"), ("joint_train", "step"), ("finetune", "step"),
                       ("evaluate", "batch")]:
        found = re.findall(line.format(desc, unit), log)
        assert found, f"no progress line for {desc}"
        assert any(done == total for done, total in found), f"{desc} never reached its total"


def test_cached_outputs_hold_no_timings(tiny_pipeline):
    repo, _, _ = tiny_pipeline
    cached = [*repo.glob("models/**/metrics.json"), *repo.glob("models/**/curves.tsv")]
    assert len(cached) >= 10
    for path in cached:
        text = path.read_text()
        assert not any(key in text for key in TIMING), path
    # the uncached, git-tracked metrics keep the loop's cost for `dvc exp show`
    assert "images_per_s" in (repo / "metrics" / "meta_train.json").read_text()


def _copy(tiny_pipeline, dest):
    """A copy of the tiny pipeline whose stage runs leave the session's audit records alone."""
    repo, env = copy_repo(tiny_pipeline[0], dest, tiny_pipeline[1])
    return repo, {k: v for k, v in env.items() if k != "METAFGNET_AUDIT"}


def _lock_hashes(repo, stages):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {s: {o["path"]: o["md5"] for o in lock[s]["outs"]
                if not o["path"].startswith("metrics/")}  # uncached: the cost, timed
            for s in stages}


def test_cached_outputs_hash_the_same_on_every_run(tiny_pipeline, tmp_path):
    repo, env = _copy(tiny_pipeline, tmp_path / "repo")
    stages = ["pretrain", "meta_train"]
    hashes = []
    for _ in range(2):  # two forced runs at one commit
        for stage in stages:
            run([*DVC, "repro", "-f", "-s", stage], repo, env)
        hashes.append(_lock_hashes(repo, stages))
    assert hashes[0] == hashes[1]


def test_curves_grow_while_the_stage_runs(tiny_pipeline, tmp_path):
    repo, env = _copy(tiny_pipeline, tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["meta"].update(iterations=400, log_every=10, milestones=[200])
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    curve = repo / "live" / "curves.tsv"
    proc = subprocess.Popen(
        [sys.executable, "pipeline/meta_train.py", "--data", "data/prepared/manifests", "--init",
         "models/pretrain", "--out", "live", "--metrics", "live.json"], cwd=repo, env={**env, "PYTHONPATH": "src"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = set()
    while proc.poll() is None:  # rows counted while the stage is still running
        if curve.is_file():
            seen.add(len(curve.read_text().splitlines()) - 1)
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read()
    live = sorted(n for n in seen if n > 0)
    assert len(live) >= 3 and live[0] < 40, f"rows seen while running: {live}"
    rows = curve.read_text().splitlines()
    assert len(rows) == 41 and rows[0].split("\t")[0] == "step"
    assert not any(key in rows[0] for key in TIMING)
