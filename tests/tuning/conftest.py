"""A tiny tuning setup built once per session: synthetic data (16 px, 4 classes), manifests, a
width-4 pretrained model, a params file; real Optuna storages and a real MLflow sqlite store."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metafgnet.params import Params, deep_merge, parse_params, to_dict
from metafgnet.training import LoopRuntime

TINY = {
    "synthetic": {"image_size": 16, "target_classes": 4, "train_per_class": 9,
                  "test_per_class": 2, "related_classes": 3, "unrelated_classes": 3,
                  "aux_per_class": 8},
    "data": {"image_size": 16, "resize": 18, "val_fraction": 0.34},
    "model": {"width": 4},
    "pretrain": {"epochs": 4, "batch_size": 16, "head_lr": 0.1, "backbone_lr": 0.05,
                 "milestones": []},
    "meta": {"iterations": 6, "batch_size": 4, "aux_batch_size": 8, "milestones": [4],
             "order": "first", "log_every": 3},
    "select": {"batch_size": 64},
    "finetune": {"epochs": 3, "batch_size": 4, "milestones": [2]},
    "runtime": {"num_threads": 1},
    "tune": {"n_trials": 3, "heartbeat_interval": 1, "grace_period": 3,
             "budget": {"meta_iterations": 4, "finetune_epochs": 3, "selection": True},
             "sampler": {"n_startup_trials": 2},
             "pruning": {"n_startup_trials": 1, "n_warmup_steps": 0}},
}


@dataclasses.dataclass(frozen=True)
class Tiny:
    root: Path
    raw: dict  # params as a mapping (tests merge their own tune settings on top)
    data_dir: Path
    init: Path

    def raw_with(self, experiment: str = "metafgnet", **tune) -> dict:
        """The raw params with ``tune`` keys merged (``space`` replaced whole) and runs logged
        to MLflow ``experiment``."""
        raw = deep_merge(self.raw, {"tune": {k: v for k, v in tune.items() if k != "space"},
                                    "tracking": {"experiment": experiment}})
        if "space" in tune:
            raw["tune"]["space"] = tune["space"]
        return raw

    def params(self, experiment: str = "metafgnet", **tune) -> Params:
        return parse_params(self.raw_with(experiment, **tune))

    def write_params(self, path: Path, experiment: str = "metafgnet", **tune) -> Path:
        path.write_text(yaml.safe_dump(self.raw_with(experiment, **tune), sort_keys=False))
        return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    import torch

    from metafgnet.data import (
        ImageDataset,
        generate_synthetic,
        load_prepared,
        prepare_manifests,
        train_transform,
    )
    from metafgnet.models import build_model
    from metafgnet.models.files import save_model
    from metafgnet.training import pretrain, setup_runtime

    root = tmp_path_factory.mktemp("tune")
    synthetic = root / "synthetic"
    raw = deep_merge(to_dict(parse_params({})), TINY)
    raw = deep_merge(raw, {"data": {"target_root": str(synthetic / "target"),
                                    "auxiliary_root": str(synthetic / "auxiliary")}})
    params = parse_params(raw)
    threads = torch.get_num_threads()
    device = setup_runtime(params.runtime, params.seed)
    try:
        generate_synthetic(params.synthetic, synthetic)
        data = prepare_manifests(params, root / "prepared")
        model = build_model(params.model, len(data.target_classes), len(data.auxiliary_classes))
        aux = ImageDataset(data.auxiliary, data.root("auxiliary"),
                           train_transform(params.data, "random_resized_crop"))
        pretrain(model, aux, params.pretrain, LoopRuntime(device=device, seed=params.seed))
        init = root / "models" / "pretrain" / "model.pt"
        save_model(init, model, to_dict(params.model), {"seed": params.seed}, "pretrain")
        load_prepared(root / "prepared")
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    return Tiny(root, raw, root / "prepared", init)


@pytest.fixture(autouse=True)
def _restore_torch_runtime():
    """In-process tuning pins threads and deterministic algorithms (setup_runtime): undo it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> Path:
    """One MLflow sqlite database for the suite (creating its schema takes seconds); each test
    logs to an experiment of its own."""
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


@pytest.fixture
def mlflow_uri(mlflow_store, monkeypatch) -> str:
    """MLFLOW_TRACKING_URI at the suite's store (also seen by subprocesses)."""
    uri = f"sqlite:///{mlflow_store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for key in ("DVC_ROOT", "MLFLOW_RUN_ID", "METAFGNET_EXECUTION_ID"):
        monkeypatch.delenv(key, raising=False)
    return uri


@pytest.fixture
def experiment(request) -> str:
    """An MLflow experiment name of this test's own."""
    return f"tune-{request.node.name}"[:200]


@pytest.fixture
def start_cli(mlflow_uri):
    """Start ``metafgnet <args>`` as a real subprocess (output to a log file); returns it."""
    procs = []

    def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
        handle = open(log, "w")  # noqa: SIM115 (closed when the test ends)
        proc = subprocess.Popen([sys.executable, "-m", "metafgnet.cli", *args], cwd=cwd,
                                env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)
        procs.append((proc, handle))
        return proc

    yield start
    for proc, handle in procs:  # only the processes this test started
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        handle.close()
