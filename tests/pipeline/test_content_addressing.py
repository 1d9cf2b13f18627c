"""Cached outputs depend only on their inputs: a fresh clone at a commit that differs from the
baseline's only outside every stage's dependencies reproduces every stage's outputs byte for
byte (one CPU), and a re-run of ``pretrain`` that reproduces its weights leaves every stage below
it cached (no commit, time, host or path in a model file: metafgnet.models.files)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from support.repo import copy_repo, exp_ref, run

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
# uncached, git-tracked metrics that hold the meta-training loops' cost: timed, so they differ
# on every run (the only outputs allowed to)
TIMED = "metrics/meta_train"


def _outs(lock_text: str) -> dict[str, dict[str, str]]:
    """Every stage's outputs and their hashes, from a ``dvc.lock`` (timed metrics left out)."""
    stages = yaml.safe_load(lock_text)["stages"]
    return {name: {o["path"]: o["md5"] for o in body.get("outs", [])
                   if not o["path"].startswith(TIMED)}
            for name, body in stages.items()}


def _ran(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}


def test_a_commit_outside_the_dependencies_reproduces_every_stages_outputs(tiny_pipeline,
                                                                          two_executions):
    origin = tiny_pipeline[0]
    repo, env, _ = two_executions
    # the clone's commit differs from the one its lock was made at by README.md alone, and its
    # `make run` (empty cache) ran every stage
    changed = run(["git", "diff", "--name-only", "origin/HEAD", "HEAD"], repo, env).stdout.split()
    assert changed == ["README.md"]
    expected = _outs((origin / "dvc.lock").read_text())
    assert _ran(two_executions.repro.stdout) == set(expected)
    saved = exp_ref(repo, env, two_executions.baseline)
    reproduced = _outs(run(["git", "show", f"{saved}:dvc.lock"], repo, env).stdout)
    assert all(expected[stage] for stage in expected)  # every stage has outputs to compare
    for stage in expected:
        assert reproduced[stage] == expected[stage], stage
    for rel in ("metrics/evaluate.json", "metrics/select.json"):
        text = run(["git", "show", f"{saved}:{rel}"], repo, env).stdout
        assert json.loads(text) == json.loads((origin / rel).read_text()), rel


def test_a_rerun_of_pretrain_that_reproduces_its_weights_leaves_meta_train_cached(
        tiny_pipeline, tmp_path):
    repo, env = copy_repo(tiny_pipeline[0], tmp_path / "repo", tiny_pipeline[1])
    env = {k: v for k, v in env.items() if k != "METAFGNET_AUDIT"}
    pretrain = _outs((repo / "dvc.lock").read_text())["pretrain"]

    # forced, at a new commit that changes nothing pretrain depends on
    (repo / "README.md").write_text("A change no stage depends on.\n")
    run(["git", "add", "README.md"], repo, env)
    run(["git", "commit", "-qm", "readme"], repo, env)
    run([*DVC, "repro", "-f", "-s", "pretrain"], repo, env)
    assert _outs((repo / "dvc.lock").read_text())["pretrain"] == pretrain
    status = json.loads(run([*DVC, "status", "--json"], repo, env).stdout)
    assert status == {}, status  # meta_train, joint and all below: up to date

    # a change to pretrain's own code that computes the same weights: pretrain alone re-runs
    script = repo / "pipeline" / "pretrain.py"
    script.write_text(script.read_text() + "# a comment changes no weight\n")
    out = run([*DVC, "repro"], repo, env)
    assert _ran(out.stdout) == {"pretrain"}, out.stdout
    assert _outs((repo / "dvc.lock").read_text())["pretrain"] == pretrain
