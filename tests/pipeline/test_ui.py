"""The comparison as a person sees it: the real MLflow UI in headless Chromium, after a real
`dvc repro` and `dvc exp run -S meta.order=first` of the tiny config. Screenshots are left in
/tmp/metafgnet-ui/ for a person to open."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from metafgnet.tracking.views import compare_view_url, experiment_url
from support.browser import CHROMIUM, dump_dom, grid_rows, screenshot, text_of
from support.servers import mlflow_server

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None,
                                 reason="no Chromium binary (apt-get install chromium)")]


def _parents(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("metafgnet")
    runs = client.search_runs([exp.experiment_id],
                              filter_string="tags.`metafgnet.role` = 'pipeline'")
    return exp.experiment_id, {r.data.params["meta.order"]: r for r in runs}


def test_runs_table_and_compare_page_show_each_order_beside_its_result(two_executions, tmp_path):
    _, env, _ = two_executions
    uri = env["MLFLOW_TRACKING_URI"]
    exp_id, parents = _parents(uri)
    assert set(parents) == {"first", "second"}
    with mlflow_server(uri, tmp_path / "server") as url:
        # the experiment's page in model-training mode opens on its runs (not GenAI traces)
        home = text_of(dump_dom(tmp_path, experiment_url(url, exp_id)))
        assert all(p.info.run_name in home for p in parents.values()), home[:800]

        # the package's saved view: one row per execution, the switch beside the results
        view = compare_view_url(url, exp_id)
        rows = grid_rows(dump_dom(tmp_path, view))
        assert len(rows) == 2, rows
        shown = {row["params.`meta.order`"]: row for row in rows}
        assert set(shown) == {"first", "second"}
        for order, row in shown.items():
            parent = parents[order]
            assert parent.info.run_name in row["attributes.`Run Name`"]
            for arm in ("metafgnet", "finetune"):
                value = float(row[f"metrics.`test_top1/{arm}`"])
                assert value == pytest.approx(parent.data.metrics[f"test_top1/{arm}"], abs=5e-4)
            assert float(row["metrics.`cost/meta_train/seconds_per_iter`"]) > 0
        shot = screenshot(tmp_path, view, "runs_compare_view.png", size="2400,520")
        assert shot.stat().st_size > 20_000

        # MLflow's compare page of the two parent runs
        ids = [parents["second"].info.run_id, parents["first"].info.run_id]
        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp_id])})
        page = f"{url}/#/compare-runs?{query}"
        text = text_of(dump_dom(tmp_path, page, size="2200,1400"))
        assert re.search(r"meta\.order (second first)\b", text), text[:800]
        for parent in parents.values():
            assert parent.info.run_name in text
        assert "test_mean_class_acc/finetune" in text   # the metrics table is rendered
        assert screenshot(tmp_path, page, "compare_page.png", size="1700,1400").stat().st_size > 20_000
