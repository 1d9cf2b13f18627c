"""The tiny pipeline tracked through an ``mlflow server`` whose backend store is PostgreSQL (a
throw-away cluster) and whose artifacts go to a local folder: a DVC experiment's parent and
stage runs, the stage's dataset inputs, the registry's champion rule, and the summary run of
``metafgnet compare`` linking the execution."""

from __future__ import annotations

import sys

import pytest

from support.repo import copy_repo, run
from support.servers import mlflow_server

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
EXP = "pg-evaluate"


def test_pipeline_runs_registry_and_compare_summary_through_a_postgres_backed_server(
        tiny_pipeline, postgres, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from metafgnet.compare.tracking import log_comparison
    from metafgnet.params import TrackingParams

    backend = postgres.create_database("mlflow")
    with mlflow_server(backend, tmp_path / "server") as url:
        repo, env = copy_repo(tiny_pipeline[0], tmp_path / "repo", tiny_pipeline[1])
        env = {**env, "MLFLOW_TRACKING_URI": url}
        # one stage re-run as a named DVC experiment: evaluate reads the prepared data and
        # registers the fine-tuned model
        run([*DVC, "exp", "run", "-n", EXP, "-f", "-s", "evaluate"], repo, env)

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("metafgnet")
        (parent,) = client.search_runs(
            [exp.experiment_id],
            f"tags.`metafgnet.role` = 'pipeline' and tags.`dvc.exp_name` = '{EXP}'")
        assert parent.info.status == "FINISHED"
        children = client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        (stage,) = [c for c in children if c.data.tags.get("stage", "").startswith("evaluate")]
        assert stage.info.status == "FINISHED"
        assert stage.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, local folder
        inputs = {d.dataset.name for d in stage.inputs.dataset_inputs}
        assert {"target-train", "target-val", "target-test"} <= inputs, inputs
        # the first version of the model in this registry is its champion
        name, version = stage.data.tags["registered_model"].split("@")[0].rsplit("/", 1)
        assert stage.data.tags["registry.decision"] == "champion"
        assert str(client.get_model_version_by_alias(name, "champion").version) == version
        assert any((tmp_path / "server" / "artifacts").rglob("*"))  # artifacts stored locally

        # the comparison's summary run, as `metafgnet compare` logs it (from this process)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        summary_dir = tmp_path / "compare"
        summary_dir.mkdir()
        (summary_dir / "summary.md").write_text("# summary\n")
        summary = {"factor": "meta.order", "levels": ["first", "second"], "seeds": [0],
                   "conditions": []}
        run_id = log_comparison(summary, [EXP], summary_dir, TrackingParams(), repo,
                                "metafgnet compare --collect-only")
        compare = client.get_run(run_id)
        assert compare.info.status == "FINISHED"
        assert compare.data.tags["metafgnet.role"] == "compare"
        assert compare.data.tags["compare.parent_runs"] == parent.info.run_id
        assert [a.path for a in client.list_artifacts(run_id)] == ["summary.md"]
