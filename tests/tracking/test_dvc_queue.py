"""Two queued DVC experiments running at once land complete in the one repository database."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
STAGE = textwrap.dedent("""\
    import json, sys
    from metafgnet.params import load_params
    from metafgnet.tracking import stage_run

    stage = sys.argv[1]
    params = load_params("params.yaml")
    with stage_run(stage, params, ["meta"], data_digest="toy") as run:
        for step in range(20):
            run.log_metrics({f"{stage}/loss": 1.0 / (step + 1)}, step=step)
        run.log_dict({"order": params.meta.order}, "result.json")
    with open(f"{stage}.json", "w") as f:
        json.dump({"order": params.meta.order}, f)
    """)
DVC_YAML = textwrap.dedent("""\
    stages:
      prepare:
        cmd: python stage.py prepare
        deps: [stage.py]
        params: [meta.order]
        outs: [prepare.json]
      train:
        cmd: python stage.py train
        deps: [stage.py, prepare.json]
        params: [meta.order]
        outs: [train.json]
    """)
PARAMS = textwrap.dedent("""\
    seed: 0
    meta:
      order: first
    tracking:
      experiment: queue
      system_metrics: false
    """)


def _run(args, cwd, env, timeout=120):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def toy_repo(tmp_path):
    repo = tmp_path / "toy"
    repo.mkdir()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text(PARAMS)
    (repo / ".gitignore").write_text("mlflow.db*\nmlartifacts/\n")
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "toy pipeline"], repo, env)  # dvc exp needs a commit
    _run([str(BIN / "dvc"), "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "config", "core.analytics", "false"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "dvc init"], repo, env)
    return repo, env


@pytest.mark.slow
def test_two_queued_experiments_share_one_database(toy_repo):
    import mlflow

    repo, env = toy_repo
    dvc = str(BIN / "dvc")
    for order in ("first", "second"):
        _run([dvc, "exp", "run", "--queue", "-S", f"meta.order={order}"], repo, env)
    # The workers outlive `queue start`: give them no pipe of ours to hold open.
    subprocess.run([dvc, "queue", "start", "-j", "2"], cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    deadline = time.monotonic() + 200
    while True:  # `queue start` returns at once; --run-all would exit 0 even on failure
        status = _run([dvc, "queue", "status"], repo, env)
        if not any(s in status for s in ("Queued", "Running")):
            break
        if time.monotonic() > deadline:
            subprocess.run([dvc, "queue", "stop", "--kill"], cwd=repo, env=env, timeout=60)
            pytest.fail(f"queued experiments still running after 200 s:\n{status}")
        time.sleep(2)
    tasks = [line for line in status.splitlines() if line[:7].strip() and "Status" not in line
             and "Worker" not in line]
    failed = [t.split()[1] for t in tasks if "Success" not in t]
    logs = "\n".join(subprocess.run([dvc, "queue", "logs", name], cwd=repo, env=env,
                                    capture_output=True, text=True).stdout for name in failed)
    assert len(tasks) == 2 and not failed, f"{status}\n{logs}"

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("queue")
    assert exp.artifact_location == (repo / "mlartifacts").as_uri()
    runs = client.search_runs([exp.experiment_id])
    parents = {r.info.run_id: r for r in runs if r.data.tags["metafgnet.role"] == "pipeline"}
    children = [r for r in runs if r.data.tags["metafgnet.role"] == "stage"]
    assert len(parents) == 2 and len(children) == 4, [r.info.run_name for r in runs]
    orders = set()
    for parent in parents.values():
        assert parent.info.status == "FINISHED"
        # DVC's experiment name, then what its -S changed against the baseline commit
        overrides = parent.data.tags.get("params.overrides") or "baseline"
        assert parent.info.run_name == f"{parent.data.tags['dvc.exp_name']} {overrides}"
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert sorted(c.info.run_name for c in mine) == ["prepare", "train"]
        order = {c.data.params["meta.order"] for c in mine}
        assert len(order) == 1 and parent.data.params["meta.order"] in order
        orders |= order
        for child in mine:
            assert child.info.status == "FINISHED"
            assert child.data.tags["dvc.exp_name"] == parent.data.tags["dvc.exp_name"]
            if order == {"second"}:  # -S changed the committed params.yaml
                assert child.data.tags["git.dirty"] == "true"
                assert overrides == "meta.order=second"
            history = client.get_metric_history(child.info.run_id,
                                                f"{child.info.run_name}/loss")
            assert [m.step for m in history] == list(range(20))
            assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["result.json"]
    assert orders == {"first", "second"}
    assert not list(repo.glob(".dvc/tmp/exps/**/mlflow.db"))  # no throw-away databases
