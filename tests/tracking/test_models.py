"""Logging a PyTorch model, loading it back, registering it under an alias."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from metafgnet.params import TrackingParams, parse_params
from metafgnet.tracking import TrackingError, stage_run
from metafgnet.tracking.models import SERIALIZATION_FORMAT, pip_requirements

PARAMS = parse_params({"seed": 1})


class TinyNet(nn.Module):
    """Conv + BN + linear head: the layer kinds of the real backbones, a few KB."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, classes)

    def forward(self, x):  # (B, 3, H, W) -> (B, classes)
        return self.head(self.features(x))


class TwoOutputs(TinyNet):
    def forward(self, x):
        return self.head(self.features(x)), self.features(x)


def _trained(seed: int) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet()
    model.train()
    model(torch.randn(16, 3, 16, 16))  # moves the BN running stats away from their defaults
    return model


def test_round_trip_gives_the_same_predictions_and_logs_fast(client, tracking, capsys):
    import mlflow.pytorch

    model = _trained(0)
    images = torch.randn(8, 3, 16, 16)
    timings = []
    with stage_run("finetune@metafgnet", PARAMS, [], tracking) as run:
        for name in ("model", "model_again"):  # a fresh process pays ~1 s of lazy imports once
            start = time.perf_counter()
            info = run.log_model(model, name, input_example=images)
            timings.append(time.perf_counter() - start)
    with capsys.disabled():
        print(f"\n[tracking] log_model: first {timings[0]:.2f} s, second {timings[1]:.2f} s "
              f"(serialization_format={SERIALIZATION_FORMAT}, pip_requirements={pip_requirements()})")
    assert max(timings) < 5.0  # requirement inference alone takes 9-28 s
    assert model.training  # the caller's model is left as it was

    loaded = mlflow.pytorch.load_model(info.model_uri)
    assert type(loaded).__name__ == "TinyNet"
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))

    logged = mlflow.models.get_model_info(info.model_uri)
    assert logged.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, 16, 16)
    assert logged.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 5)
    assert logged.saved_input_example_info is not None
    reqs = mlflow.pyfunc.get_model_dependencies(info.model_uri)
    text = Path(reqs).read_text()
    assert f"torch=={torch.__version__.split('+')[0]}" in text


def test_model_must_return_one_tensor(sqlite_uri, tracking):
    with pytest.raises(TrackingError, match="must return one tensor"), \
            stage_run("finetune@a", PARAMS, [], tracking) as run:
        run.log_model(TwoOutputs(), "model", input_example=torch.randn(2, 3, 8, 8))


def test_log_models_false_skips_models(sqlite_uri, tracking):
    off = TrackingParams(experiment=tracking.experiment, log_models=False, system_metrics=False,
                         agent=False)
    with stage_run("finetune@a", PARAMS, [], off) as run:
        assert run.log_model(TinyNet(), "model", input_example=torch.randn(2, 3, 8, 8)) is None


def test_better_model_registered_with_alias_champion(client, tracking):
    """The champion rule itself: test_datasets_and_registry.py."""
    import mlflow.pytorch

    name = f"{tracking.experiment}-best"
    images = torch.randn(4, 3, 16, 16)
    with stage_run("evaluate", PARAMS, [], tracking) as run:
        first = run.log_model(_trained(1), "best_1", input_example=images,
                              metrics={"val_top1": 0.5})
        v1 = run.register_model(first.model_uri, name)
        newest_model = _trained(2)
        second = run.log_model(newest_model, "best_2", input_example=images,
                               metrics={"val_top1": 0.6})
        v2 = run.register_model(second.model_uri, name, alias="champion")
    assert (int(v1.version), int(v2.version)) == (1, 2)
    assert client.get_model_version_by_alias(name, "champion").version == v2.version
    assert client.get_run(run.run_id).data.tags["registered_model"] == f"{name}/2@champion"
    version = client.get_model_version(name, v2.version)
    assert version.tags["stage"] == "evaluate"
    loaded = mlflow.pytorch.load_model(f"models:/{name}@champion")
    newest_model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), newest_model(images))


def test_default_registered_name_comes_from_params(client, tracking):
    params = TrackingParams(experiment=tracking.experiment, registered_model="from-params",
                            system_metrics=False, agent=False)
    with stage_run("evaluate", PARAMS, [], params) as run:
        info = run.log_model(TinyNet(), "model", input_example=torch.randn(2, 3, 8, 8))
        version = run.register_model(info.model_uri)
    assert version.name == "from-params"


@pytest.mark.parametrize("alias", ["latest", "Latest", "v3"])
def test_reserved_aliases_are_refused_before_registering(client, tracking, alias):
    with stage_run("evaluate", PARAMS, [], tracking) as run, \
            pytest.raises(TrackingError, match="reserved"):
        run.register_model("models:/m-0123", "never-created", alias=alias)
    assert client.search_registered_models(filter_string="name = 'never-created'") == []
