"""A real small study in-process: pruning, outputs, nested MLflow runs, resuming by name."""

from __future__ import annotations

import json

import mlflow
import optuna
import pytest
import yaml

from metafgnet.tuning.run import run_tune, with_overrides
from metafgnet.tuning.study import StudyMismatch, open_study

# A wide space (learning rates over decades): on the tiny task some trials are clearly worse,
# and the pruner (n_startup_trials=1, n_warmup_steps=0 in the tiny params) stops them.
SPACE = {
    "meta.inner_lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    "finetune.head_lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "finetune.backbone_lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "select.ratio": {"type": "float", "low": 0.3, "high": 1.0},
}
GOOD = {"meta.inner_lr": 0.0096, "finetune.head_lr": 0.0158, "finetune.backbone_lr": 0.0442,
        "select.ratio": 0.404}


def _trials(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=url).get_trials()


@pytest.mark.slow
def test_study_prunes_writes_outputs_logs_nested_runs_and_resumes(tiny, mlflow_uri, experiment,
                                                                 tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    params = tiny.params(experiment, storage=url, study_name="prune", n_trials=6, space=SPACE,
                         sampler={"kind": "random", "seed": 3})
    # trial 0: a point above chance on the tiny task; with n_startup_trials=1 and
    # n_warmup_steps=0 the median pruner stops the later trials that fall below it
    open_study(params, url).enqueue_trial(GOOD)
    out = tmp_path / "results" / "tune"
    summary = run_tune(params, out=out, data_dir=tiny.data_dir, init=tiny.init)

    trials = _trials(url, "prune")
    states = [t.state.name for t in trials]
    assert len(trials) == 6 and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert "PRUNED" in states, [(t.state.name, t.intermediate_values) for t in trials]
    assert "COMPLETE" in states
    pruned = next(t for t in trials if t.state.name == "PRUNED")
    assert len(pruned.intermediate_values) < params.tune.budget.finetune_epochs

    # outputs: best params in the params layout, summary, offline plots
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    nested = yaml.safe_load((out / "best_params.yaml").read_text())
    assert nested["meta"]["inner_lr"] == best.params["meta.inner_lr"]
    assert nested["finetune"] == {"head_lr": best.params["finetune.head_lr"],
                                  "backbone_lr": best.params["finetune.backbone_lr"]}
    assert summary["best"]["value"] == best.value
    saved = json.loads((out / "summary.json").read_text())
    assert saved["states"] == {s: states.count(s) for s in set(states)}
    assert "| trial | state | value |" in (out / "summary.md").read_text()
    for plot in ("history.png", "intermediate.png", "parallel.png", "slice.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG", plot
    n_complete = states.count("COMPLETE")
    assert (out / "importance.png").exists() == (n_complete >= 2)

    # MLflow: one parent run, one nested child run per trial with params, steps and state
    client = mlflow.MlflowClient(mlflow_uri)
    runs = client.search_runs(client.get_experiment_by_name(experiment).experiment_id)
    parents = [r for r in runs if r.data.tags.get("metafgnet.role") == "tune"]
    children = [r for r in runs if r.data.tags.get("metafgnet.role") == "trial"]
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_value"] == best.value
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "best_params.yaml", "summary.json", "history.png"}
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    for trial in trials:
        run = by_number[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[trial.state.name]
        assert float(run.data.params["meta.inner_lr"]) == pytest.approx(
            trial.params["meta.inner_lr"])
        history = client.get_metric_history(run.info.run_id, "val_top1")
        assert [m.step for m in history] == sorted(trial.intermediate_values)
        if trial.state.name == "COMPLETE":
            assert run.data.metrics["value"] == trial.value

    # a second invocation resumes the study: the budget is complete, nothing runs
    run_tune(params, out=out, data_dir=tiny.data_dir, init=tiny.init)
    assert len(_trials(url, "prune")) == 6
    # a larger budget (CLI --n-trials) adds exactly the missing trials
    run_tune(with_overrides(params, n_trials=7), out=out, data_dir=tiny.data_dir, init=tiny.init)
    again = _trials(url, "prune")
    assert len(again) == 7 and [t.number for t in again] == list(range(7))
    assert len({tuple(sorted(t.params.items())) for t in again}) == 7  # no trial repeated

    # the same name with another budget is refused, not mixed
    other = with_overrides(params, budget={"finetune_epochs": 2})
    with pytest.raises(StudyMismatch, match="another search space, budget"):
        open_study(other, url)


def test_journal_storage_resumes_across_invocations(tiny, tmp_path):
    from metafgnet.params import parse_params
    from metafgnet.tuning.storage import open_storage

    url = f"journal:{tmp_path / 'study.journal'}"
    raw = tiny.raw_with(storage=url, study_name="journal", n_trials=1, pruner="none")
    params = parse_params({**raw, "tracking": {**raw["tracking"], "enabled": False}})
    run_tune(params, out=tmp_path / "out", data_dir=tiny.data_dir, init=tiny.init)
    run_tune(with_overrides(params, n_trials=2), out=tmp_path / "out", data_dir=tiny.data_dir,
             init=tiny.init)
    study = optuna.load_study(study_name="journal", storage=open_storage(url, params.tune))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert (tmp_path / "out" / "best_params.yaml").is_file()
