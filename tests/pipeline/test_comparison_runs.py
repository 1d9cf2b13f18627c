"""Comparing two executions in MLflow: after `dvc repro` and `dvc exp run -S meta.order=first`
of the tiny config, each parent run carries the headline of the pipeline state it produced
(reused stages included), says what differs from the baseline, and the runs that made the
models are found by filtering on `params.meta.order`."""

from __future__ import annotations

import json

import pytest

from metafgnet.evaluation import ARMS
from metafgnet.reporting.summary import META_STAGES

pytestmark = pytest.mark.slow


def _exp_metrics(repo, env, name: str) -> dict:
    """The metrics files of the DVC experiment ``name`` (the baseline: the one ``make run``
    saved)."""
    from support.repo import exp_ref, run

    out = {}
    for file in ("evaluate", "select", *META_STAGES):
        text = run(["git", "show", f"{exp_ref(repo, env, name)}:metrics/{file}.json"], repo, env)
        out[file] = json.loads(text.stdout)
    return out


def _parents(env) -> dict[str, object]:
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("metafgnet")
    parents = client.search_runs([exp.experiment_id],
                                 filter_string="tags.`metafgnet.role` = 'pipeline'")
    by = {("first-order" if p.data.tags.get("dvc.exp_name") == "first-order" else "baseline"): p
          for p in parents}
    assert len(by) == len(parents) == 2, [p.info.run_name for p in parents]
    return by


def test_parent_runs_carry_the_headline_of_their_pipeline_state(two_executions):
    repo, env, _ = two_executions
    parents = _parents(env)
    for name, parent in parents.items():
        files = _exp_metrics(repo, env, two_executions.baseline if name == "baseline" else name)
        m = parent.data.metrics
        for arm in ARMS:
            for key in ("val_top1", "test_top1", "test_mean_class_acc"):
                assert m[f"{key}/{arm}"] == pytest.approx(files["evaluate"][arm][key]), (name, arm)
        best = parent.data.tags["best_arm"]
        assert m["test_top1/best"] == m[f"test_top1/{best}"]
        assert m["selection/roc_auc"] == pytest.approx(files["select"]["roc_auc"])
        assert m["selection/precision_at_related"] == pytest.approx(
            files["select"]["precision_at_related"])
        for stage in META_STAGES:
            cost = files[stage]["cost"]
            assert m[f"cost/{stage}/seconds_per_iter"] == pytest.approx(cost["seconds_per_iter"])
            assert m[f"cost/{stage}/peak_memory_mib"] == pytest.approx(cost["peak_memory_mib"])
        assert m["pipeline/wall_s"] > 0


def test_the_experiment_reports_the_stages_dvc_reused(two_executions):
    _, _, _ = two_executions
    parents = _parents(env=two_executions[1])
    base, first = parents["baseline"], parents["first-order"]
    assert base.data.tags["stages.reused"] == "" and base.data.metrics["pipeline/stages_reused"] == 0
    reused = set(first.data.tags["stages.reused"].split())
    assert {"prepare", "pretrain", "joint", "finetune@finetune", "finetune@joint"} == reused
    assert first.data.metrics["pipeline/stages_reused"] == len(reused)
    # a reused arm's numbers are still on the experiment's parent, equal to the baseline's
    for arm in ("finetune", "joint"):
        assert first.data.metrics[f"test_top1/{arm}"] == base.data.metrics[f"test_top1/{arm}"]
    assert "prepare" in first.data.tags["mlflow.note.content"]


def test_parent_names_and_descriptions_say_what_differs(two_executions):
    parents = _parents(two_executions[1])
    first = parents["first-order"]
    assert first.data.tags["params.overrides"] == "meta.order=first"
    assert "first-order" in first.info.run_name and "meta.order=first" in first.info.run_name
    assert "meta.order=first" in first.data.tags["mlflow.note.content"]
    assert "baseline" in parents["baseline"].info.run_name
    for parent in parents.values():
        assert parent.data.params["meta.order"] in ("first", "second")


def test_filtering_on_meta_order_finds_the_runs_that_made_the_models(two_executions):
    from mlflow import MlflowClient

    env = two_executions[1]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("metafgnet")
    for order in ("first", "second"):
        runs = client.search_runs([exp.experiment_id], max_results=1000,
                                  filter_string=f"params.`meta.order` = '{order}'")
        stages = {r.data.tags.get("stage") for r in runs}
        assert {"evaluate", "report", "meta_train"} <= stages, (order, stages)
        evaluate = next(r for r in runs if r.data.tags.get("stage") == "evaluate")
        for key in ("seed", "select.ratio", "model.backbone", "meta.iterations"):
            assert key in evaluate.data.params, key
    # the first-order experiment did not re-run the arms that do not depend on meta.order
    first = client.search_runs([exp.experiment_id], max_results=1000,
                               filter_string="params.`meta.order` = 'first'")
    assert "finetune@finetune" not in {r.data.tags.get("stage") for r in first}
