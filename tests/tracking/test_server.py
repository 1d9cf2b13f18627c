"""Tracking against a real ``mlflow server`` over HTTP, and against one that does not answer."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import torch

from metafgnet.params import TrackingParams, parse_params
from metafgnet.tracking import stage_run

# starts processes, servers or torchrun: `make test-fast` leaves it out
pytestmark = pytest.mark.slow

PARAMS = parse_params({"seed": 3, "meta": {"order": "second"}})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_stage_over_http(mlflow_server, monkeypatch):
    import mlflow
    import mlflow.pytorch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)
    monkeypatch.setenv("DVC_EXP_NAME", "http-exp")
    tracking = TrackingParams(experiment="http-check", registered_model="http-best",
                              system_metrics=False)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.LazyLinear(3))
    images = torch.randn(4, 3, 8, 8)
    model(images)  # materialise the lazy layer
    with stage_run("finetune@metafgnet", PARAMS, ["meta", "finetune"], tracking) as run:
        for step in range(30):
            run.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        info = run.log_model(model, "model", input_example=images)
        version = run.register_model(info.model_uri)

    client = mlflow.MlflowClient(mlflow_server)
    child = client.get_run(run.run_id)
    parent = client.get_run(run.parent_run_id)
    # the experiment's name, then what differs from the baseline commit (nothing here)
    assert parent.info.run_name == "http-exp baseline" and parent.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["meta.order"] == "second"
    assert child.data.params["finetune.epochs"] == str(PARAMS.finetune.epochs)
    history = client.get_metric_history(run.run_id, "train/loss")
    assert [m.step for m in history] == list(range(30))
    assert child.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    loaded = mlflow.pytorch.load_model(info.model_uri)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    # the REST store gives versions as strings, sqlite as ints; VersionRef always an int
    assert int(client.get_model_version_by_alias("http-best", "champion").version) == version.version


STAGE = textwrap.dedent("""\
    from metafgnet.params import parse_params
    from metafgnet.tracking import stage_run
    params = parse_params({"tracking": {"experiment": "unreachable"}})
    with stage_run("meta_train", params, ["meta"]):
        raise SystemExit("the stage body must not run")
    """)


def test_unreachable_server_fails_the_stage_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    env = {"MLFLOW_TRACKING_URI": uri, "DVC_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", STAGE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "TrackingUnavailable" in proc.stderr and uri in proc.stderr
    assert "must not run" not in proc.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert not (tmp_path / "mlflow.db").exists()  # no silent local record


def test_offline_opt_in_records_locally_and_tags_runs(tmp_path, monkeypatch):
    import mlflow

    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    offline = TrackingParams(experiment="offline", offline=True, system_metrics=False)
    with stage_run("prepare", PARAMS, ["data"], offline) as run:
        run.log_metrics({"images": 120.0})
    assert run.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    local = mlflow.MlflowClient(run.tracking_uri)
    for run_id in (run.run_id, run.parent_run_id):
        tags = local.get_run(run_id).data.tags
        assert tags["tracking.offline"] == "true"
        assert tags["tracking.intended_uri"] == uri
    assert local.get_run(run.run_id).data.metrics["images"] == 120.0
    assert re.match(r"file:///", local.get_experiment(run.experiment_id).artifact_location)
