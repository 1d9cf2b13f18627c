"""A tracking server that restarts mid-stage loses nothing, and an unreadable store stops the
stage with one block naming it and the fix.

The outage test stops a real (lean) ``mlflow server`` while a stage run logs through the
tracking agent and starts it again on the same port: the values logged meanwhile wait on disk
and reach the run, whose metric history then equals that of a run without an outage. MLflow's
own retries are turned down (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``) so that the sends really fail
while the server is away, instead of waiting inside MLflow's backoff.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import metafgnet.tracking.buffer as buffer
from metafgnet.errors import UserError
from metafgnet.params import Params, TrackingParams
from metafgnet.tracking import stage_run
from support.servers import BIN, free_port, stop_group

PARAMS = Params()
STEPS = 30


def _start(store: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("a") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1", "--port",
             str(port), "--backend-store-uri", f"sqlite:///{store}",
             "--artifacts-destination", str(store.parent / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def _stop(proc: subprocess.Popen, port: int) -> None:
    """Stop the server and its worker (by group id) and wait until the port is free again."""
    stop_group(proc)
    with contextlib.suppress(ProcessLookupError):  # a worker that outlived the server
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.2)


def _stage(url: str, tracking: TrackingParams, monkeypatch, during=None) -> str:
    """One training stage's run through the tracking agent: ``STEPS`` steps of two metrics;
    ``during(step)`` runs after each step's values are recorded. Returns the run id."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)   # an agent of its own
    with stage_run("meta_train", PARAMS, ["meta"], tracking, system_metrics=False) as run:
        run_id = run.run_id  # the run is open (the outage comes after)
        for step in range(STEPS):
            run.log_metrics({"loss": 1.0 / (step + 1), "val_top1": step / STEPS}, step=step)
            if during is not None:
                during(step)
            time.sleep(0.05)
    return run_id


def _history(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in ("loss", "val_top1")}


@pytest.mark.slow
def test_a_server_restart_mid_stage_loses_no_metric_value(tmp_path, monkeypatch, caplog):
    from mlflow import MlflowClient

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))        # the spool, this test's own
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # inherited by the agent
    monkeypatch.setattr(buffer, "FLUSH_SECONDS", 0.2)
    tracking = TrackingParams(experiment="outage", log_models=False, system_metrics=False)
    store, log, port = tmp_path / "mlflow.db", tmp_path / "server.log", free_port()
    url = f"http://127.0.0.1:{port}"
    server = [_start(store, port, log)]
    try:
        def outage(step: int) -> None:
            if step == 8:
                _stop(server[0], port)
            elif step == 20:                  # some seconds later, on the same port
                server[0] = _start(store, port, log)

        with caplog.at_level(logging.WARNING, logger="metafgnet.tracking.buffer"):
            stormy = _stage(url, tracking, monkeypatch, during=outage)
        client = MlflowClient(url)
        assert client.get_run(stormy).info.status == "FINISHED"
        # the history of a run without an outage: every value the stage logged, at its step
        calm = {"loss": [(s, 1.0 / (s + 1)) for s in range(STEPS)],
                "val_top1": [(s, s / STEPS) for s in range(STEPS)]}
        assert _history(client, stormy) == calm
    finally:
        _stop(server[0], port)
    spooled = [r.getMessage() for r in caplog.records if "keeping them on disk" in r.getMessage()]
    assert spooled, "the server was away but no send failed: the test proved nothing"
    assert any("recovered: every value was sent" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / f"metafgnet-{os.getuid()}" / "metric-spool").glob("*.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("flush_s", [60.0, 0.0], ids=["values-waiting", "all-values-sent"])
def test_a_server_away_when_the_stage_ends_is_waited_for(tmp_path, monkeypatch, caplog, flush_s):
    """The server stops at the stage's last step and comes back while the stage is ending:
    the stage waits for it (buffer.FINAL_WAIT_S), sends every value and ends its run. With
    values still waiting (``flush_s`` 60) the final send waits; with every value sent as it
    came (0) ending the run does."""
    import threading

    from mlflow import MlflowClient

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(buffer, "FLUSH_SECONDS", flush_s)
    tracking = TrackingParams(experiment="outage", log_models=False, system_metrics=False)
    store, log, port = tmp_path / "mlflow.db", tmp_path / "server.log", free_port()
    url = f"http://127.0.0.1:{port}"
    server = [_start(store, port, log)]
    back = threading.Timer(3.0, lambda: server.append(_start(store, port, log)))
    try:
        def away_at_the_end(step: int) -> None:
            if step == STEPS - 1:
                _stop(server[0], port)
                back.start()  # after the stage has ended and its first final send failed

        with caplog.at_level(logging.WARNING, logger="metafgnet.tracking.buffer"):
            run_id = _stage(url, tracking, monkeypatch, during=away_at_the_end)
        back.join()
        client = MlflowClient(url)
        assert client.get_run(run_id).info.status == "FINISHED"
        assert _history(client, run_id) == {"loss": [(s, 1.0 / (s + 1)) for s in range(STEPS)],
                                            "val_top1": [(s, s / STEPS) for s in range(STEPS)]}
    finally:
        back.cancel()
        for proc in server[1:] or server:  # the first was stopped when the stage ended
            _stop(proc, port)
    assert any("the stage has ended; waiting up to" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / f"metafgnet-{os.getuid()}" / "metric-spool").glob("*.jsonl"))


def test_an_unreadable_store_stops_the_stage_with_one_block(tmp_path, monkeypatch):
    """A truncated ``mlflow.db``: one message naming the store and the fix, no traceback from
    SQLAlchemy or from the tracking agent."""
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)   # a header, then nothing
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)
    tracking = TrackingParams(experiment="broken", system_metrics=False)
    with (pytest.raises(UserError) as err,
          stage_run("meta_train", PARAMS, ["meta"], tracking, root=tmp_path) as run):
        run.log_metrics({"loss": 1.0}, step=0)
    message = str(err.value)
    assert f"the MLflow store {store} cannot be read" in message
    assert f"mv {store} {store}.broken" in message and "MLFLOW_TRACKING_URI" in message
    assert "Traceback" not in message and "sqlalchemy" not in message.lower()
    assert len(message.splitlines()) <= 3, message


def test_a_backlog_beyond_its_limit_stops_the_stage_mid_run(tmp_path, monkeypatch):
    """Values that wait for a server that stays away are bounded: a mid-stage send past
    MAX_BACKLOG raises, naming the spool file, which holds every value in order. The sink
    refuses like a server that is away (a connection error, as MLflow's client raises after
    its retries); the real-server outages are the tests above."""
    class Away:
        def log_metrics(self, batch):
            raise ConnectionError("connection refused")

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(buffer, "MAX_BACKLOG", 50)
    buf = buffer.MetricBuffer("http://user:secret@127.0.0.1:9")
    buf.attach(Away(), "run1")
    with pytest.raises(UserError, match="More than 50 values waited") as err:
        for step in range(100):
            buf.add({"loss": float(step)}, step=step)
            buf.flush(final=False)
    assert step == 50 and "secret" not in str(err.value)
    spool = next(tmp_path.rglob("metric-spool/*.jsonl"))
    assert str(spool) in str(err.value)
    assert [json.loads(line)[3] for line in spool.read_text().splitlines()] == list(range(51))
