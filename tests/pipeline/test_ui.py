"""The comparison as a person sees it: the real MLflow UI in headless Chromium, after a real
`dvc repro` and `dvc exp run -S meta.order=first` of the tiny config, with a grid's worth of
further executions (parent and stage runs) added to a copy of the store by the MLflow client,
so the saved view is read among more than a hundred runs. Screenshots are left in
/tmp/metafgnet-ui/ for a person to open (docs/img/runs_compare_view.png is the view's)."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import time
import urllib.parse

import pytest

from metafgnet.evaluation.arms import ARMS
from metafgnet.tracking.views import GROUP_BY, compare_view_url, experiment_url
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


GRID_SEEDS = (0, 1, 2)


def _add_grid(uri: str, exp_id: str, stages: list[str]) -> None:
    """A grid's worth of executions as the pipeline records them: per order and seed one parent
    run (``metafgnet.role = pipeline``, ``meta.order``, ``seed``, every arm's test top-1, the
    meta-training cost) with one finished child run per stage."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client, now = MlflowClient(uri), int(time.time() * 1000)
    for order in ("first", "second"):
        for seed in GRID_SEEDS:
            parent = client.create_run(exp_id, run_name=f"grid {order} {seed}",
                                       tags={"metafgnet.role": "pipeline"}).info.run_id
            metrics = [Metric(f"test_top1/{arm}", 0.40 + 0.05 * i + 0.01 * seed
                              + (0.02 if order == "second" else 0.0), now, 0)
                       for i, arm in enumerate(ARMS)]
            metrics.append(Metric("cost/meta_train/seconds_per_iter", 0.1 + 0.01 * seed, now, 0))
            client.log_batch(parent, metrics=metrics,
                             params=[Param("meta.order", order), Param("seed", str(seed))])
            for stage in stages:
                child = client.create_run(exp_id, run_name=stage, tags={
                    "metafgnet.role": "stage", "mlflow.parentRunId": parent}).info.run_id
                client.set_terminated(child)
            client.set_terminated(parent)


def test_runs_table_and_compare_page_show_each_order_beside_its_result(two_executions, tmp_path):
    from mlflow import MlflowClient

    repo, env, _ = two_executions
    # a copy of the store (artifacts stay where they are): the session's own is left as it was
    shutil.copy(repo / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id, parents = _parents(uri)
    assert set(parents) == {"first", "second"}
    client = MlflowClient(uri)
    stages = sorted({r.info.run_name for r in client.search_runs(
        [exp_id], filter_string="tags.`metafgnet.role` = 'stage'", max_results=1000)})
    assert {"meta_train", "meta_train_random", "finetune@metafgnet_random"} <= set(stages)
    _add_grid(uri, exp_id, stages)
    everything = client.search_runs([exp_id], max_results=1000)
    assert len(everything) >= 100, len(everything)
    by_order: dict[str, list] = {}
    for run in client.search_runs([exp_id], "tags.`metafgnet.role` = 'pipeline'", max_results=1000):
        by_order.setdefault(run.data.params[GROUP_BY], []).append(run)
    assert {k: len(v) for k, v in by_order.items()} == {"first": 4, "second": 4}
    with mlflow_server(uri, tmp_path / "server") as url:
        # the experiment's page in model-training mode opens on its runs (not GenAI traces),
        # newest first, a page of 100 at a time: the baseline is past the first page
        home = text_of(dump_dom(tmp_path, experiment_url(url, exp_id)))
        assert "grid second 2" in home and parents["first"].info.run_name in home, home[-800:]
        assert "Load more" in home

        # the package's saved view: the executions (parent runs only) grouped by meta.order
        # with MLflow's run grouping, each group's row the average of its runs, the runs below
        view = compare_view_url(url, exp_id)
        rows = grid_rows(dump_dom(tmp_path, view))
        groups = [r for r in rows if r["attributes.`Run Name`"].split()[1:2] == ["Group:"]]
        assert [g["attributes.`Run Name`"].split()[2:] for g in groups] == [
            ["second", "4"], ["first", "4"]], rows        # newest first, four executions each
        runs = [r for r in rows if r not in groups]
        assert len(runs) == 8 and all("Group:" not in r["attributes.`Run Name`"] for r in runs)
        names = {r.info.run_name for v in by_order.values() for r in v}
        assert {r["attributes.`Run Name`"] for r in runs} == names   # no stage run among them
        for group in groups:
            order = group["attributes.`Run Name`"].split()[2]
            for arm in ARMS:
                cell = group[f"metrics.`test_top1/{arm}`"]
                assert cell.endswith("(average)"), cell
                mean = statistics.mean(r.data.metrics[f"test_top1/{arm}"] for r in by_order[order])
                assert float(cell.split()[0]) == pytest.approx(mean, abs=5e-4), (order, arm)
            below = runs[:4] if order == "second" else runs[4:]
            assert {r["params.`meta.order`"] for r in below} == {order}
        for order, parent in parents.items():           # the two real executions, each in its group
            row = next(r for r in runs if r["attributes.`Run Name`"] == parent.info.run_name)
            assert row["params.`meta.order`"] == order
            for arm in ARMS:
                value = float(row[f"metrics.`test_top1/{arm}`"])
                assert value == pytest.approx(parent.data.metrics[f"test_top1/{arm}"], abs=5e-4)
            assert float(row["metrics.`cost/meta_train/seconds_per_iter`"]) > 0
        shot = screenshot(tmp_path, view, "runs_compare_view.png", size="2400,760")
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
