"""MLflow 3 datasets and models: the prepared splits as dataset inputs of a stage run, the
metrics of a logged model, the champion rule of the registry, and quiet GPU system metrics on a
CPU machine (real sqlite store, no mocks)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from metafgnet.data.manifest import MANIFESTS, combined_digest, load_prepared, manifest_text
from metafgnet.data.records import Record
from metafgnet.params import parse_params
from metafgnet.tracking import stage_run
from metafgnet.tracking.datasets import DIGEST_CHARS

PARAMS = parse_params({"seed": 3})
TARGET_CLASSES = ["albatross", "bunting", "cardinal"]
AUX_CLASSES = ["n01", "n02"]
SPLITS = {
    "train": [Record(f"{c}/train_{k}.jpg", i)
              for i, c in enumerate(TARGET_CLASSES) for k in range(3)],
    "val": [Record(f"{c}/val_0.jpg", i) for i, c in enumerate(TARGET_CLASSES)],
    "test": [Record(f"{c}/test_{k}.jpg", i)
             for i, c in enumerate(TARGET_CLASSES) for k in range(2)],
    "auxiliary": [Record(f"{c}/aux_{k}.JPEG", i)
                  for i, c in enumerate(AUX_CLASSES) for k in range(4)],
}
EXPECTED = {  # name -> (split, context, images)
    "target-train": ("train", "training", 9),
    "target-val": ("val", "validation", 3),
    "target-test": ("test", "test", 6),
    "auxiliary": ("auxiliary", "auxiliary", 8),
}


def write_prepared(folder: Path, target_root: Path, auxiliary_root: Path) -> None:
    """A prepared-data folder as the prepare stage writes it; the images do not exist (logging
    the datasets must not read any)."""
    folder.mkdir(parents=True)
    digests = {}
    for split, name in MANIFESTS.items():
        text = manifest_text(SPLITS[split], "train" if split == "auxiliary" else split)
        (folder / name).write_text(text, encoding="utf-8")
        digests[name] = hashlib.sha256(text.encode()).hexdigest()
    index = {"target": {"root": str(target_root), "classes": TARGET_CLASSES},
             "auxiliary": {"root": str(auxiliary_root), "classes": AUX_CLASSES},
             "manifests": digests, "skipped_count": 0,
             "digest": combined_digest(digests, TARGET_CLASSES, AUX_CLASSES)}
    (folder / "index.json").write_text(json.dumps(index))


@pytest.fixture
def prepared(tmp_path):
    write_prepared(tmp_path / "manifests", tmp_path / "cub", tmp_path / "imagenet")
    return load_prepared(tmp_path / "manifests")


def assert_dataset_inputs(run, data) -> None:
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == set(EXPECTED)
    for name, (split, context, images) in EXPECTED.items():
        logged = inputs[name]
        sha = hashlib.sha256((data.prepared_dir / MANIFESTS[split]).read_bytes()).hexdigest()
        assert logged.dataset.digest == sha[:DIGEST_CHARS]
        assert logged.dataset.source_type == "local"
        assert json.loads(logged.dataset.source) == {"uri": str(data.root(split))}
        profile = json.loads(logged.dataset.profile)
        assert profile["num_images"] == images and profile["sha256"] == sha
        assert profile["num_classes"] == len(AUX_CLASSES if split == "auxiliary"
                                             else TARGET_CLASSES)
        assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": context}


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))


IMAGES = torch.randn(2, 3, 2, 2)


# -- datasets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["while opening", "once open"])
def test_prepared_splits_are_the_dataset_inputs_of_the_stage_run(client, tracking, prepared,
                                                                  when):
    with stage_run("meta_train", PARAMS, [], tracking) as run:
        if when == "once open":
            assert run.run_id  # waits for the run
        run.log_datasets(prepared)  # while opening: sent by the opening thread, no wait
    assert_dataset_inputs(client.get_run(run.run_id), prepared)
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_manifest_digest_without_the_index_is_recomputed_from_the_records(prepared):
    import dataclasses

    in_memory = dataclasses.replace(prepared, manifest_digests={})
    for split in MANIFESTS:
        sha = hashlib.sha256((prepared.prepared_dir / MANIFESTS[split]).read_bytes()).hexdigest()
        assert prepared.manifest_digest(split) == in_memory.manifest_digest(split) == sha


def test_open_stage_logs_the_prepared_data_of_every_stage_that_reads_it(
        client, tracking, tmp_path, monkeypatch):
    from metafgnet.stages.context import open_stage

    prepared = Path("data/prepared/manifests")
    write_prepared(tmp_path / prepared, Path("data/cub"), Path("data/imagenet"))
    (tmp_path / "params.yaml").write_text(json.dumps({"tracking": {
        "experiment": tracking.experiment, "agent": False, "system_metrics": False}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("METAFGNET_PARAMS", raising=False)
    with open_stage("evaluate", ["data"], data=prepared) as ctx:
        run = ctx.run
    assert_dataset_inputs(client.get_run(run.run_id), ctx.data)
    assert ctx.data.root("val") == (tmp_path / "data" / "cub").resolve()  # relative roots


# -- metrics of a logged model -------------------------------------------------------------------


def test_logged_model_carries_exactly_the_metrics_measured_on_it(client, tracking, prepared):
    import mlflow

    scores = {"val_top1": 0.75, "test_top1": 0.5, "test_mean_class_acc": 0.45}
    with stage_run("finetune@metafgnet", PARAMS, [], tracking) as run:
        run.log_datasets(prepared)
        for step in range(4):  # the run's own curve: never linked to the model
            run.log_metrics({"val_top1": 0.1 * step, "train/loss": 1.0 / (step + 1)}, step=step)
        info = run.log_model(tiny_model(0), "model", input_example=IMAGES,
                             metrics={**scores, "cost": {"wall_s": 3.0}, "note": "x",
                                      "best_epoch": 2})
    model = mlflow.get_logged_model(info.model_id)
    linked = {m.key: m for m in model.metrics}
    assert {k: m.value for k, m in linked.items()} == {**scores, "best_epoch": 2.0}
    assert {m.step for m in model.metrics} == {4}  # the step after the run's last one
    digests = {d.dataset.name: d.dataset.digest
               for d in client.get_run(run.run_id).inputs.dataset_inputs}
    assert (linked["val_top1"].dataset_name, linked["val_top1"].dataset_digest) == \
        ("target-val", digests["target-val"])
    for key in ("test_top1", "test_mean_class_acc"):
        assert (linked[key].dataset_name, linked[key].dataset_digest) == \
            ("target-test", digests["target-test"])
    assert linked["best_epoch"].dataset_name is None
    # the run has them too: its curve ends on the model's score
    history = client.get_metric_history(run.run_id, "val_top1")
    assert [(m.step, m.value) for m in history][-1] == (4, 0.75)
    assert [o.model_id for o in client.get_run(run.run_id).outputs.model_outputs] == \
        [info.model_id]


# -- the champion rule ---------------------------------------------------------------------------


def register(tracking, name: str, val_top1: float | None, seed: int):
    """One evaluate stage (one run): log a model with its val_top1 and register it."""
    metrics = None if val_top1 is None else {"val_top1": val_top1}
    with stage_run("evaluate", PARAMS, [], tracking) as run:
        info = run.log_model(tiny_model(seed), "best", input_example=IMAGES, metrics=metrics)
        version = run.register_model(info.model_uri, name)
    return run, version


def holder(client, name: str, alias: str) -> int:
    return int(client.get_model_version_by_alias(name, alias).version)


def test_champion_moves_only_to_a_strictly_better_version(client, tracking, caplog):
    name = f"{tracking.experiment}-best"
    caplog.set_level(logging.INFO, logger="metafgnet.tracking.runs")
    runs = {}
    for version, score in ((1, 0.70), (2, 0.80), (3, 0.75), (4, 0.80)):
        runs[version], ref = register(tracking, name, score, seed=version)
        assert ref.version == version
    decisions = {v: client.get_run(r.run_id).data.tags for v, r in runs.items()}
    assert {v: t["registry.decision"] for v, t in decisions.items()} == \
        {1: "champion", 2: "champion", 3: "challenger", 4: "challenger"}  # a tie keeps it
    assert decisions[3]["registered_model"] == f"{name}/3@challenger"
    assert decisions[3]["registry.note"] == "val_top1 0.7500 vs champion v2 0.8000"
    assert holder(client, name, "champion") == 2
    assert holder(client, name, "challenger") == 4  # the latest that did not win
    assert client.get_model_version(name, "3").tags["val_top1"] == "0.75"
    messages = [r.getMessage() for r in caplog.records if r.name == "metafgnet.tracking.runs"]
    assert f"registered {name} v1: is the new champion (val_top1 0.7000, no champion before)" \
        in messages
    assert (f"registered {name} v3: stays a challenger, the champion is unchanged "
            "(val_top1 0.7500 vs champion v2 0.8000)") in messages


def test_a_version_without_a_score_never_displaces_a_champion(client, tracking):
    name = f"{tracking.experiment}-best"
    _, first = register(tracking, name, None, seed=1)  # no champion yet: it becomes one
    _, second = register(tracking, name, 0.6, seed=2)  # a score beats no score
    _, third = register(tracking, name, None, seed=3)
    assert (first.alias, second.alias, third.alias) == ("champion", "champion", "challenger")
    assert holder(client, name, "champion") == 2
    assert "val_top1" not in client.get_model_version(name, "3").tags


# -- GPU system metrics ----------------------------------------------------------------------


def test_system_metrics_on_a_cpu_machine_say_nothing_about_the_gpu(client, tracking):
    from metafgnet.tracking.recorder import _start_system_metrics

    pynvml = pytest.importorskip("pynvml")  # nvidia-ml-py: a declared dependency
    try:
        pynvml.nvmlInit()
        pytest.skip("this machine has an NVIDIA GPU")
    except pynvml.NVMLError:
        pass
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    loggers = [logging.getLogger("mlflow.system_metrics.system_metrics_monitor"),
               logging.getLogger("mlflow.system_metrics.metrics.gpu_monitor")]
    exp = client.get_experiment_by_name(tracking.experiment) or client.get_experiment(
        client.create_experiment(tracking.experiment))
    run = client.create_run(exp.experiment_id)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        for _ in range(2):  # one monitor per training stage
            monitor = _start_system_metrics(run.info.run_id, client.tracking_uri)
            monitor.finish()
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert not [m for m in messages if "GPU" in m or "NVML" in m], messages
    assert "Started monitoring system metrics." in messages  # only the GPU note is silenced
    client.set_terminated(run.info.run_id)


# -- through the tracking agent ------------------------------------------------------------------

AGENT_STAGE = textwrap.dedent("""\
    import json, sys
    import torch
    from metafgnet.data.manifest import load_prepared
    from metafgnet.params import TrackingParams, parse_params
    from metafgnet.tracking import stage_run

    out, prepared = sys.argv[1:3]
    tracking = TrackingParams(experiment="agent-datasets", system_metrics=False,
                              registered_model="agent-datasets-best")
    with stage_run("evaluate", parse_params({}), [], tracking) as run:
        run.log_datasets(load_prepared(prepared))
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        info = run.log_model(model, "best", input_example=torch.randn(2, 3, 2, 2),
                             metrics={"val_top1": 0.5, "test_top1": 0.25})
        version = run.register_model(info.model_uri)
    json.dump({"run_id": run.run_id, "model_id": info.model_id, "alias": version.alias,
               "decision": version.decision.alias, "mlflow": "mlflow" in sys.modules},
              open(out, "w"))
    """)


@pytest.mark.slow
def test_datasets_model_metrics_and_registry_through_the_agent(tmp_path, prepared, monkeypatch):
    import mlflow

    (tmp_path / "stage.py").write_text(AGENT_STAGE)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": src,
           "METAFGNET_EXECUTION_ID": uuid.uuid4().hex, "METAFGNET_AGENT_IDLE_S": "2",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "stage.py", "out.json", str(prepared.prepared_dir)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert not result["mlflow"]  # the stage never imported MLflow: the agent recorded it all
    assert result["alias"] == result["decision"] == "champion"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    assert_dataset_inputs(client.get_run(result["run_id"]), prepared)
    metrics = {m.key: m.value for m in mlflow.get_logged_model(result["model_id"]).metrics}
    assert metrics == {"val_top1": 0.5, "test_top1": 0.25}
    assert client.get_run(result["run_id"]).data.tags["registry.decision"] == "champion"


@pytest.mark.slow
def test_datasets_model_metrics_and_registry_over_http(mlflow_server, prepared, monkeypatch):
    """The REST store: dataset inputs, metrics of a logged model, the champion rule."""
    import mlflow

    from metafgnet.params import TrackingParams

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("METAFGNET_EXECUTION_ID", uuid.uuid4().hex)
    tracking = TrackingParams(experiment="http-datasets", system_metrics=False, agent=False)
    name = f"http-datasets-{uuid.uuid4().hex[:8]}"
    refs = []
    for seed, score in ((1, 0.5), (2, 0.4), (3, 0.6)):
        with stage_run("evaluate", PARAMS, [], tracking) as run:
            run.log_datasets(prepared)
            info = run.log_model(tiny_model(seed), "best", input_example=IMAGES,
                                 metrics={"val_top1": score})
            refs.append(run.register_model(info.model_uri, name))
    client = mlflow.MlflowClient(mlflow_server)
    assert_dataset_inputs(client.get_run(run.run_id), prepared)
    linked = mlflow.get_logged_model(info.model_id).metrics
    assert [(m.key, m.value, m.dataset_name) for m in linked] == [("val_top1", 0.6, "target-val")]
    assert [r.alias for r in refs] == ["champion", "challenger", "champion"]
    assert holder(client, name, "champion") == 3 and holder(client, name, "challenger") == 2
