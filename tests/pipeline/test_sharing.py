"""Sharing results the DVC way, through a local-directory remote: a second clone pulls the
baseline's outputs and a named experiment without re-running any stage."""

from __future__ import annotations

import json
import sys

import pytest

from support.repo import copy_repo, run

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]


def test_push_then_a_second_clone_pulls_results_and_an_experiment(two_executions, tmp_path):
    repo, env = copy_repo(two_executions[0], tmp_path / "repo", two_executions[1])
    origin, storage = tmp_path / "origin.git", tmp_path / "dvc-storage"
    run(["git", "init", "-q", "--bare", str(origin)], tmp_path, env)
    # the comparison flow's repository is a clone already: the team's origin gets its own name
    run(["git", "remote", "add", "team", str(origin)], repo, env)
    run(["git", "push", "-q", "team", "HEAD"], repo, env)
    run([*DVC, "remote", "add", "--local", "-d", "shared", str(storage)], repo, env)
    run([*DVC, "push"], repo, env)
    run([*DVC, "exp", "push", "team", "first-order"], repo, env)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    clone_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}"}
    run([*DVC, "remote", "add", "--local", "-d", "shared", str(storage)], clone, clone_env)
    run([*DVC, "pull"], clone, clone_env)
    status = run([*DVC, "status", "--json"], clone, clone_env)
    assert json.loads(status.stdout or "{}") == {}, status.stdout   # nothing to re-run
    assert (clone / "models/meta_train/model.pt").read_bytes() == (
        repo / "models/meta_train/model.pt").read_bytes()

    run([*DVC, "exp", "pull", "origin", "first-order"], clone, clone_env)
    run([*DVC, "exp", "apply", "first-order"], clone, clone_env)
    run([*DVC, "checkout"], clone, clone_env)
    assert "order: first" in (clone / "params.yaml").read_text()
    repro = run([*DVC, "repro", "--dry"], clone, clone_env)
    assert "Running stage" not in repro.stdout, repro.stdout      # its outputs came with it
