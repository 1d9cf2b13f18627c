"""Parent/child run structure, provenance, params, metrics, artifacts and failures (sqlite)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from metafgnet.params import TrackingParams, parse_params
from metafgnet.tracking import StageRun, TrackingError, is_training_stage, stage_run
from metafgnet.tracking.experiment import open_session
from metafgnet.tracking.run_tags import all_params, provenance_tags
from metafgnet.tracking.writer import RunSpec, find_or_create_parent, parent_name

PARAMS = parse_params({"seed": 7, "meta": {"order": "first", "inner_lr": 0.05}})


def runs_of(client, tracking):
    exp = client.get_experiment_by_name(tracking.experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("metafgnet.role") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("metafgnet.role") == "stage"]
    return parents, children


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def test_one_parent_per_execution_one_child_per_stage(client, tracking, git_repo, monkeypatch):
    monkeypatch.chdir(git_repo)
    (git_repo / "params.yaml").write_text("meta: {order: second, inner_lr: 0.01}\n")
    git("commit", "-qam", "params", cwd=git_repo)
    baseline = git("rev-parse", "HEAD", cwd=git_repo).strip()
    (git_repo / "params.yaml").write_text("meta: {order: first, inner_lr: 0.01}\n")  # as -S does
    monkeypatch.setenv("DVC_EXP_NAME", "brave-owls")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", baseline)
    for stage, sections in [("prepare", ["data"]), ("meta_train", ["model", "meta"])]:
        with stage_run(stage, PARAMS, sections, tracking, data_digest="sha256:abc",
                       device="cpu") as run:
            assert isinstance(run, StageRun)
            assert client.get_run(run.parent_run_id).info.status == "RUNNING"

    (parent,), children = runs_of(client, tracking)
    assert parent.info.run_name == "brave-owls meta.order=first"  # what differs, in the name
    assert parent.info.status == "FINISHED"
    assert parent.data.params["meta.order"] == "first"  # the parent carries every section
    assert parent.data.params["synthetic.image_size"] == "32"
    assert {c.info.run_name for c in children} == {"prepare", "meta_train"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        tags = child.data.tags
        assert tags["stage"] == child.info.run_name
        assert tags["dvc.exp_name"] == "brave-owls"
        assert tags["dvc.exp_baseline_rev"] == baseline
        assert tags["params.overrides"] == "meta.order=first"
        assert re.fullmatch(r"[0-9a-f]{40}", tags["git.commit"])
        assert tags["git.dirty"] == "true"  # params.yaml edited, as in a DVC experiment
        assert tags["data.manifest_digest"] == "sha256:abc"
        assert tags["seed"] == "7" and tags["device"] == "cpu"
        assert tags["metafgnet.version"]
    meta = next(c for c in children if c.info.run_name == "meta_train")
    assert meta.data.params["meta.order"] == "first"
    assert meta.data.params["meta.inner_lr"] == "0.05"
    assert meta.data.params["model.backbone"] == "small_resnet"
    assert meta.data.params["seed"] == "7"
    assert not any(k.startswith("data.") for k in meta.data.params)  # only its sections


def test_parent_named_after_git_revision_and_time(client, tracking, git_repo, monkeypatch):
    monkeypatch.chdir(git_repo)
    rev = provenance_tags(PARAMS)["git.commit"]
    with stage_run("evaluate", PARAMS, ["select"], tracking):
        pass
    (parent,), _ = runs_of(client, tracking)
    assert re.fullmatch(rf"{rev[:7]}-\d{{8}}-\d{{6}} baseline", parent.info.run_name)


def test_separate_executions_get_separate_parents(client, tracking, monkeypatch):
    for execution in ("exec-a", "exec-b"):
        monkeypatch.setenv("METAFGNET_EXECUTION_ID", execution)
        with stage_run("prepare", PARAMS, ["data"], tracking):
            pass
    parents, children = runs_of(client, tracking)
    assert len(parents) == 2 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {
        p.info.run_id for p in parents}


def test_concurrent_first_stages_agree_on_one_parent(sqlite_uri, client, tracking):
    session = open_session(tracking)
    tags = provenance_tags(PARAMS)
    barrier, found = threading.Barrier(2), []

    def create():
        barrier.wait()
        found.append(find_or_create_parent(
            session, RunSpec(parent_name(tags), "pipeline", tags, all_params(PARAMS))))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    parents, _ = runs_of(client, tracking)
    assert len(set(found)) == 1 and [p.info.run_id for p in parents] == found[:1]


def test_step_metrics_are_batched(client, tracking):
    with stage_run("meta_train", PARAMS, ["meta"], tracking) as run:
        for step in range(50):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 50}, step=step)
        requests_during = run._buffer.requests
    history = client.get_metric_history(run.run_id, "loss")
    assert [m.step for m in history] == list(range(50))
    assert history[-1].value == pytest.approx(1 / 50)
    assert len(client.get_metric_history(run.run_id, "acc")) == 50
    assert requests_during == 0  # nothing sent before the flush at the end (within 5 s)
    assert run._buffer.requests == 1


def test_artifacts(client, tracking, tmp_path):
    (tmp_path / "metrics.json").write_text('{"acc": 0.5}')
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "curve.csv").write_text("step,loss\n0,1.0\n")
    with stage_run("evaluate", PARAMS, [], tracking) as run:
        run.log_artifact(tmp_path / "metrics.json")
        run.log_artifacts(plots, "plots")
        run.log_dict({"arm": "metafgnet"}, "summary/best.yaml")
        run.log_text("hello", "notes.txt")
    listed = {a.path for a in client.list_artifacts(run.run_id)}
    assert listed == {"metrics.json", "plots", "summary", "notes.txt"}
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/curve.csv"]
    local = client.download_artifacts(run.run_id, "summary/best.yaml", str(tmp_path / "dl"))
    assert "arm: metafgnet" in Path(local).read_text()


def test_failing_stage_is_recorded_failed_with_its_error(client, tracking):
    with pytest.raises(ValueError, match="loss is nan"), \
            stage_run("meta_train", PARAMS, ["meta"], tracking) as run:
        run.log_metrics({"loss": 2.0}, step=0)
        raise ValueError("loss is nan at step 1")
    failed = client.get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error"] == "ValueError: loss is nan at step 1"
    assert failed.data.metrics["loss"] == 2.0  # what was logged before the error is kept
    tb = client.download_artifacts(run.run_id, "error/traceback.txt")
    assert "ValueError: loss is nan at step 1" in Path(tb).read_text()
    parent = client.get_run(run.parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["failed_stage"] == "meta_train"

    with stage_run("report", PARAMS, [], tracking) as later:  # e.g. `dvc repro --keep-going`
        pass
    assert client.get_run(later.run_id).info.status == "FINISHED"
    assert client.get_run(run.parent_run_id).info.status == "FAILED"  # stays failed


def test_interrupted_stage_is_killed(client, tracking):
    with pytest.raises(KeyboardInterrupt), stage_run("finetune@a", PARAMS, [], tracking) as run:
        raise KeyboardInterrupt
    assert client.get_run(run.run_id).info.status == "KILLED"


def test_unknown_section_fails_before_recording(sqlite_uri, tracking):
    with pytest.raises(ValueError, match="unknown params section 'metaa'"), \
            stage_run("meta_train", PARAMS, ["metaa"], tracking):
        pass


def test_disabled_tracking_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/never.db")
    with stage_run("meta_train", PARAMS, ["meta"], TrackingParams(enabled=False)) as run:
        assert isinstance(run, StageRun) and not run.enabled
        run.log_metrics({"loss": 1.0}, step=0)
        run.log_params({"x": 1})
        run.set_tags({"y": 2})
        run.log_artifact(tmp_path)
        run.log_artifacts(tmp_path)
        run.log_dict({}, "a.json")
        run.log_text("", "a.txt")
        assert run.log_model(object(), "model", input_example=None) is None
        assert run.register_model("models:/x", "name") is None
        run.flush()
    assert not (tmp_path / "never.db").exists()


@pytest.mark.slow
def test_training_stages_log_system_metrics(client, tracking, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    on = TrackingParams(experiment=tracking.experiment, system_metrics=True, agent=False)
    with stage_run("finetune@metafgnet", PARAMS, ["finetune"], on) as train:
        assert train.run_id  # waits for the run, opened in the background
        time.sleep(1.6)
    with stage_run("evaluate", PARAMS, [], on) as evaluate:
        time.sleep(0.6)
    metrics = client.get_run(train.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics
    assert len(client.get_metric_history(train.run_id, "system/cpu_utilization_percentage")) >= 2
    assert not any(k.startswith("system/") for k in client.get_run(evaluate.run_id).data.metrics)


def test_a_run_that_cannot_be_opened_fails_the_stage(client, tracking):
    doomed = client.create_experiment(tracking.experiment)
    client.delete_experiment(doomed)
    with pytest.raises(TrackingError, match="is deleted; restore it"), \
            stage_run("prepare", PARAMS, ["data"], tracking) as run:
        run.log_metrics({"n": 1.0})
        run.run_id  # noqa: B018 (waits for the background opening, which failed)


@pytest.mark.parametrize(("stage", "training"), [
    ("pretrain", True), ("meta_train", True), ("meta_train_selected", True), ("joint", True),
    ("finetune@joint", True), ("prepare", False), ("select", False), ("evaluate", False),
    ("report", False)])
def test_system_metrics_go_to_every_training_stage(stage, training):
    assert is_training_stage(stage) is training


def test_sigterm_interrupted_stage_is_killed_not_failed(client, tracking):
    from metafgnet.training import TrainingInterrupted

    with pytest.raises(TrainingInterrupted), stage_run("meta_train", PARAMS, [], tracking) as run:
        raise TrainingInterrupted(4, None, 15)
    assert client.get_run(run.run_id).info.status == "KILLED"
    assert client.get_run(run.parent_run_id).info.status == "KILLED"
