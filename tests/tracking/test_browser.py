"""The MLflow UI of a real server lists a first- and a second-order run (headless Chromium)."""

from __future__ import annotations

import uuid

import pytest

from metafgnet.params import TrackingParams, parse_params
from metafgnet.tracking import stage_run
from support.browser import CHROMIUM, SCREENSHOTS, dump_dom, screenshot, text_of


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
    text = text_of(dump_dom(tmp_path, url))
    for name in names.values():
        assert name in text, f"{name} not rendered on {url}: {text[:500]}"

    shot = screenshot(tmp_path, url, "mlflow_runs.png")
    assert shot.parent == SCREENSHOTS and shot.exists() and shot.stat().st_size > 20_000
