"""The tracking agent: real stage processes, a real agent process, a real sqlite store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch

from metafgnet.tracking.agent import socket_path

# starts processes, servers or torchrun: `make test-fast` leaves it out
pytestmark = pytest.mark.slow

STAGE = textwrap.dedent("""\
    import json, os, signal, sys, time
    import torch
    from metafgnet.params import parse_params, TrackingParams
    from metafgnet.tracking import stage_run

    stage, action, out = sys.argv[1:4]
    params = parse_params({"seed": 5, "meta": {"order": "first"}})
    tracking = TrackingParams(experiment="agent", system_metrics=action == "model")

    class LocalNet(torch.nn.Sequential):
        pass

    result = {"stage_pid": os.getpid()}
    with stage_run(stage, params, ["meta"], tracking) as run:
        for step in range(30):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        result.update(run_id=run.run_id, parent=run.parent_run_id, agent_pid=run.pid())
        if action == "model":
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                        torch.nn.Flatten(), torch.nn.Linear(144, 3))
            images = torch.randn(4, 3, 8, 8)
            model(images)  # moves the BatchNorm running statistics
            info = run.log_model(model, "model", input_example=images)
            result.update(model_uri=info.model_uri,
                          version=run.register_model(info.model_uri, "agent-best").version)
            model.eval()
            with torch.no_grad():
                torch.save({"images": images, "logits": model(images)}, out + ".pt")
            time.sleep(1.5)  # a few system metrics samples
        elif action == "fail":
            raise ValueError("loss is nan at step 3")
        elif action == "hang":
            print(json.dumps(result), flush=True)
            time.sleep(600)
        elif action == "lose_agent":
            os.kill(result["agent_pid"], signal.SIGKILL)
        elif action == "local_class":
            run.log_model(LocalNet(torch.nn.Linear(2, 2)), "m", input_example=torch.zeros(1, 2))
    result["mlflow_imported"] = "mlflow" in sys.modules
    with open(out, "w") as f:
        json.dump(result, f)
    """)


@pytest.fixture
def agent_env(tmp_path, monkeypatch):
    """One execution recording to a fresh sqlite store through its agent (this test process
    reads the same store)."""
    (tmp_path / "stage.py").write_text(STAGE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": src,
           "METAFGNET_EXECUTION_ID": uuid.uuid4().hex, "METAFGNET_AGENT_IDLE_S": "30",
           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path, env


def _stage(repo: Path, env: dict, stage: str, action: str = "ok", check: bool = True):
    out = repo / f"{stage}.json"
    proc = subprocess.run([sys.executable, "stage.py", stage, action, str(out)], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, proc.stderr
        return json.loads(out.read_text())
    return proc


def _client(env):
    import mlflow

    return mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_stages_of_one_execution_share_one_agent_and_never_import_mlflow(agent_env):
    import mlflow.pytorch

    repo, env = agent_env
    first = _stage(repo, env, "prepare")
    second = _stage(repo, env, "finetune@metafgnet", "model")

    assert first["agent_pid"] == second["agent_pid"]  # one agent for the execution
    assert first["agent_pid"] not in (first["stage_pid"], second["stage_pid"])
    assert not first["mlflow_imported"] and not second["mlflow_imported"]
    client = _client(env)
    parent = client.get_run(first["parent"])
    assert second["parent"] == parent.info.run_id and parent.info.status == "FINISHED"
    for result in (first, second):
        child = client.get_run(result["run_id"])
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["meta.order"] == "first"
        assert child.data.tags["mlflow.source.name"] == str(repo / "stage.py")  # not the agent
        history = client.get_metric_history(result["run_id"], "loss")
        assert [m.step for m in history] == list(range(30))
    train = client.get_run(second["run_id"]).data.metrics
    assert "system/cpu_utilization_percentage" in train  # sampled by the agent

    saved = torch.load(repo / "finetune@metafgnet.json.pt")
    loaded = mlflow.pytorch.load_model(second["model_uri"])
    with torch.no_grad():
        assert torch.equal(loaded(saved["images"]), saved["logits"])
    champion = client.get_model_version_by_alias("agent-best", "champion")
    assert int(champion.version) == second["version"]

    # idle for METAFGNET_AGENT_IDLE_S: the agent leaves, and takes its socket with it
    assert _wait_for(lambda: not _alive(first["agent_pid"]), 90)
    sock = socket_path(env["MLFLOW_TRACKING_URI"], env["METAFGNET_EXECUTION_ID"])
    assert not sock.exists()
    assert not sock.with_suffix(".log").exists()  # nothing went wrong: no log left behind


def test_failing_stage_is_recorded_failed_through_the_agent(agent_env):
    repo, env = agent_env
    proc = _stage(repo, env, "meta_train", "fail", check=False)
    assert proc.returncode != 0 and "loss is nan at step 3" in proc.stderr
    client = _client(env)
    (child,) = client.search_runs([client.get_experiment_by_name("agent").experiment_id],
                                  filter_string="tags.stage = 'meta_train'")
    assert child.info.status == "FAILED"
    assert child.data.tags["error"] == "ValueError: loss is nan at step 3"
    assert child.data.metrics["loss"] == pytest.approx(1 / 30)  # logged before the error
    traceback = client.download_artifacts(child.info.run_id, "error/traceback.txt")
    assert "loss is nan at step 3" in Path(traceback).read_text()
    parent = client.get_run(child.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED" and parent.data.tags["failed_stage"] == "meta_train"


@contextlib.contextmanager
def _hanging_stage(repo: Path, env: dict, stop):
    """A stage holding its run open; yields what it printed once the run was open, and ends
    with ``stop(process)``."""
    proc = subprocess.Popen([sys.executable, "stage.py", "pretrain", "hang", "x.json"],
                            cwd=repo, env=env, stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        stop(proc)
        proc.wait(timeout=60)


def test_a_killed_stage_has_its_run_ended_killed(agent_env):
    repo, env = agent_env
    with _hanging_stage(repo, env, lambda proc: proc.kill()) as started:
        pass
    client = _client(env)
    assert _wait_for(lambda: client.get_run(started["run_id"]).info.status == "KILLED", 20)
    assert "ended without closing its run" in client.get_run(started["run_id"]).data.tags["error"]
    assert client.get_run(started["parent"]).info.status == "KILLED"


def test_a_lost_agent_fails_the_stage(agent_env):
    repo, env = agent_env
    proc = _stage(repo, env, "select", "lose_agent", check=False)
    assert proc.returncode != 0
    assert "lost the tracking agent" in proc.stderr
    log = re.search(r"its log is (\S+\.log)", proc.stderr)
    assert log, proc.stderr  # names the agent's log, which a lost agent leaves behind
    assert Path(log.group(1)).exists()
    assert not (repo / "select.json").exists()


def test_a_model_class_the_agent_cannot_import_is_refused_clearly(agent_env):
    repo, env = agent_env
    proc = _stage(repo, env, "evaluate", "local_class", check=False)
    assert proc.returncode != 0
    assert "importable by module path" in proc.stderr
    assert "tracking.agent: false" in proc.stderr


def test_the_agent_never_outlives_its_idle_time_while_a_stage_is_connected(agent_env):
    """A stage longer than the idle time keeps its agent (it is connected the whole time)."""
    repo, env = agent_env
    with _hanging_stage(repo, env, lambda proc: proc.send_signal(signal.SIGINT)) as started:
        time.sleep(32)  # > METAFGNET_AGENT_IDLE_S
        assert _alive(started["agent_pid"])
    client = _client(env)
    assert _wait_for(lambda: client.get_run(started["run_id"]).info.status == "KILLED", 20)
