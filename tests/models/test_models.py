"""Backbone registry, the two-headed MetaFGNet, and offline-safe ImageNet weights."""

from __future__ import annotations

import socket
import time

import pytest
import torch

from metafgnet.models import (
    BACKBONES,
    MetaFGNet,
    PretrainedWeightsUnavailable,
    build_model,
    cache_path,
)
from metafgnet.params import ModelParams, ParamsError

FEATURE_DIMS = {"small_resnet": 4 * 8, "resnet18": 512, "resnet34": 512, "resnet50": 2048}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_registry_lists_the_params_backbones():
    assert set(BACKBONES) == {"small_resnet", "resnet18", "resnet34", "resnet50"}


@pytest.mark.parametrize("backbone", sorted(FEATURE_DIMS))
def test_build_model_shapes(backbone, no_network):
    torch.manual_seed(0)
    model = build_model(ModelParams(backbone=backbone, width=8), 5, 7)
    assert isinstance(model, MetaFGNet)
    assert model.feature_dim == FEATURE_DIMS[backbone]
    x = torch.randn(2, 3, 32, 32)  # (B, C, H, W)
    target_logits, source_logits = model(x)
    assert target_logits.shape == (2, 5)
    assert source_logits.shape == (2, 7)
    assert model.backbone(x).shape == (2, FEATURE_DIMS[backbone])
    assert not hasattr(model.backbone, "fc")


def test_head_views_share_parameters_and_names():
    torch.manual_seed(0)
    model = build_model(ModelParams(width=8), 5, 7).eval()
    target, source = model.target_net(), model.source_net()
    t_names = [n for n, _ in target.named_parameters()]
    s_names = [n for n, _ in source.named_parameters()]
    assert t_names[-2:] == ["target_head.weight", "target_head.bias"]
    assert s_names[-2:] == ["source_head.weight", "source_head.bias"]
    assert all(n.startswith(("backbone.", "target_head.")) for n in t_names)
    assert all(n.startswith(("backbone.", "source_head.")) for n in s_names)
    full = dict(model.named_parameters())
    for name, p in [*target.named_parameters(), *source.named_parameters()]:
        assert p is full[name]  # shared, not copied
    x = torch.randn(3, 3, 32, 32)
    t_ref, s_ref = model(x)
    torch.testing.assert_close(target(x), t_ref, rtol=0, atol=0)
    torch.testing.assert_close(source(x), s_ref, rtol=0, atol=0)
    # state dicts of the full model contain each parameter once
    assert not any("target_net" in k for k in model.state_dict())


def test_reset_target_head_is_fresh_and_seeded():
    torch.manual_seed(0)
    model = build_model(ModelParams(width=8), 5, 7).double()
    old = model.target_head.weight.detach().clone()
    source = model.source_head.weight.detach().clone()
    torch.manual_seed(1)
    model.reset_target_head()
    first = model.target_head.weight.detach().clone()
    torch.manual_seed(1)
    model.reset_target_head()
    assert torch.equal(model.target_head.weight, first)  # global RNG decides
    assert not torch.equal(first, old)
    assert model.target_head.weight.dtype == torch.float64
    assert torch.equal(model.source_head.weight, source)
    model.reset_target_head(num_classes=3)
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64))[0].shape == (2, 3)
    assert model.target_net().target_head is model.target_head


def test_small_resnet_has_no_imagenet_weights():
    with pytest.raises(ParamsError, match="small_resnet has no ImageNet weights"):
        build_model(ModelParams(backbone="small_resnet", pretrained="imagenet"), 5, 7)


def test_imagenet_offline_fails_at_once(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("METAFGNET_NO_DOWNLOAD", "1")
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable, match="nor in the torch hub cache") as err:
        build_model(ModelParams(backbone="resnet34", pretrained="imagenet"), 5, 7)
    assert time.monotonic() - start < 10
    assert str(cache_path("resnet34")) in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_imagenet_unreachable_host_fails_at_once(tmp_path, monkeypatch):
    """Without METAFGNET_NO_DOWNLOAD the host is probed; a refused probe ends in the same error."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("METAFGNET_NO_DOWNLOAD", raising=False)
    probes = []

    def unreachable(address, timeout=None, **kwargs):
        probes.append((address, timeout))
        raise OSError("no route to host (fake)")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(PretrainedWeightsUnavailable, match="cannot be reached"):
        build_model(ModelParams(backbone="resnet18", pretrained="imagenet"), 5, 7)
    assert probes and probes[0][1] is not None and probes[0][1] <= 5  # bounded probe


def test_imagenet_weights_load_from_cache(tmp_path, monkeypatch, no_network):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    fake = torchvision.models.resnet18(weights=None).state_dict()  # stands in for ImageNet's
    path = cache_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(fake, path)
    torch.manual_seed(4)  # a different random init, overwritten by the cached weights
    model = build_model(ModelParams(backbone="resnet18", pretrained="imagenet"), 5, 7)
    loaded = model.backbone.state_dict()
    assert torch.equal(loaded["conv1.weight"], fake["conv1.weight"])
    assert torch.equal(loaded["layer4.1.bn2.running_var"], fake["layer4.1.bn2.running_var"])


def test_imagenet_weights_in_data_external_come_first(tmp_path, monkeypatch, no_network):
    """A weights file under data/external/weights (a DVC dependency of pretrain) is read before
    the torch hub cache."""
    import torchvision

    monkeypatch.chdir(tmp_path)  # the repository root, as in a stage
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("METAFGNET_NO_DOWNLOAD", "1")
    hub = cache_path("resnet18")
    torch.manual_seed(3)
    fake = torchvision.models.resnet18(weights=None).state_dict()
    external = tmp_path / "data" / "external" / "weights" / hub.name
    external.parent.mkdir(parents=True)
    torch.save(fake, external)
    assert cache_path("resnet18").resolve() == external
    model = build_model(ModelParams(backbone="resnet18", pretrained="imagenet"), 5, 7)
    assert torch.equal(model.backbone.state_dict()["conv1.weight"], fake["conv1.weight"])
    assert not hub.exists()  # nothing was fetched into the hub cache
