"""`metafgnet tune dashboard` serves a real study with optuna-dashboard on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from support.servers import free_port

pytestmark = pytest.mark.slow


def test_dashboard_serves_the_study_and_its_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="dash-check", storage=url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("metafgnet")), "tune", "dashboard", "--storage", url,
         "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=2) as resp:
                    body = json.loads(resp.read())
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dashboard did not serve:\n{proc.stdout.read()}")
                time.sleep(0.5)
        (summary,) = [s for s in body["study_summaries"] if s["study_name"] == "dash-check"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/"
                                    f"{summary['study_id']}?after=0", timeout=5) as resp:
            detail = json.loads(resp.read())
        assert len(detail["trials"]) == 3
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
