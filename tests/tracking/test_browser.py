"""The MLflow UI of a real server lists a first- and a second-order run (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from metafgnet.params import TrackingParams, parse_params
from metafgnet.tracking import stage_run

SCREENSHOT = Path("/tmp/mlflow_runs.png")
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             "/usr/bin/chromium") if p and Path(p).exists()), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=20000", "--window-size=1600,1000"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-{uuid.uuid4().hex[:8]}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")
def test_runs_page_lists_first_and_second_order_runs(mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    tracking = TrackingParams(experiment="browser-check", system_metrics=False)
    names = {}
    for order in ("first", "second"):
        names[order] = f"order-{order}-{uuid.uuid4().hex[:6]}"
        monkeypatch.setenv("DVC_EXP_NAME", names[order])
        monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)
        params = parse_params({"meta": {"order": order}})
        with stage_run("meta_train", params, ["meta"], tracking) as run:
            run.log_metrics({"meta/loss": 1.0}, step=0)
        assert run.experiment_id is not None

    # The MLflow 3 UI is a hash-routed SPA; the experiment's root opens on GenAI traces,
    # its runs table lives at #/experiments/<id>/runs.
    url = f"{mlflow_server}/#/experiments/{run.experiment_id}/runs"
    dom = _chromium(tmp_path, "--dump-dom", url).stdout
    text = " ".join(re.sub(r"<[^>]+>", " ", dom).split())
    for name in names.values():
        assert name in text, f"{name} not rendered on {url}: {text[:500]}"

    SCREENSHOT.unlink(missing_ok=True)
    _chromium(tmp_path, f"--screenshot={SCREENSHOT}", url)
    assert SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 20_000
