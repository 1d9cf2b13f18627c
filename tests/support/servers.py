"""A real ``mlflow server`` on 127.0.0.1 for the tests that need one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, root: Path, app_name: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    """A lean server (one worker, no job runner) on ``backend_uri``; yields its URL. Its log
    is ``root/server.log``; artifacts it receives go to ``root/artifacts``. ``app_name``:
    ``mlflow server --app-name`` (``basic-auth``); ``env``: extra environment variables."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    log = open(root / "server.log", "w")  # noqa: SIM115 (open for the server's lifetime)
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--workers", "1", "--host", "127.0.0.1",
         "--port", str(port), "--backend-store-uri", backend_uri,
         "--artifacts-destination", str(root / "artifacts"),
         *(["--app-name", app_name] if app_name else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)  # the server and its uvicorn worker, by group id
        log.close()


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it after 20 s, and reap ``proc``."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
