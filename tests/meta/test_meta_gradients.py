"""Invariants of the meta-gradient (Eq. 1, 3 and 5 of the MetaFGNet supplementary) on small
conv + BatchNorm nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metafgnet.meta import (
    HESSIAN_MAX_PARAMS,
    HessianTooLarge,
    MetaGradients,
    batch_loss,
    inner_step,
    meta_gradients,
)
from metafgnet.models import build_model
from metafgnet.params import ModelParams
from support.meta_nets import ETA, NUM_CLASSES, batches, clones, rel_err, small_net


def unrolled_reference(net, inner, outer, eta, names=None):
    """Autograd straight through θ' = θ − η∇L(T_i; θ) (create_graph), then ∇_θ L(T_j; θ')."""
    named = dict(net.named_parameters())
    names = list(named) if names is None else names
    theta = {n: named[n].detach().clone().requires_grad_(True) for n in names}
    fixed = {n: p.detach() for n, p in named.items() if n not in theta}
    inner_loss = batch_loss(net, {**theta, **fixed}, clones(net), inner)
    g = torch.autograd.grad(inner_loss, list(theta.values()), create_graph=True)
    theta_prime = inner_step(theta, dict(zip(names, g, strict=True)), eta)
    outer_loss = batch_loss(net, {**theta_prime, **fixed}, clones(net), outer)
    grads = torch.autograd.grad(outer_loss, list(theta.values()))
    return dict(zip(names, grads, strict=True))


SUBSET = ["3.weight", "4.weight", "4.bias", "8.weight"]  # second conv, its BN, head weight


@pytest.mark.parametrize("names", [None, SUBSET], ids=["all", "subset"])
def test_second_order_is_exact(names):
    net = small_net()
    inner, outer = batches()
    ref = unrolled_reference(net, inner, outer, ETA, names)
    second = meta_gradients(net, inner, outer, ETA, "second", params=names)
    hessian = meta_gradients(net, inner, outer, ETA, "hessian", params=names)
    assert list(second) == list(ref)
    assert rel_err(second, ref) <= 1e-10
    assert rel_err(hessian, ref) <= 1e-10
    assert rel_err(second, hessian) <= 1e-10
    # the Hessian term is not negligible here, so the check has teeth
    first = meta_gradients(net, inner, outer, ETA, "first", params=names)
    assert rel_err(first, ref) > 1e-3
    for name, grad in second.items():
        p = dict(net.named_parameters())[name]
        assert grad.dtype == p.dtype and grad.shape == p.shape and grad.device == p.device


def test_first_order_is_gradient_at_adapted_params():
    net = small_net()
    inner, outer = batches()
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    g = torch.autograd.grad(batch_loss(net, theta, clones(net), inner), list(theta.values()))
    with torch.no_grad():
        theta_prime = inner_step(theta, dict(zip(theta, g, strict=True)), ETA)
    theta_prime = {n: t.requires_grad_(True) for n, t in theta_prime.items()}
    outer_loss = batch_loss(net, theta_prime, clones(net), outer)
    G = dict(zip(theta, torch.autograd.grad(outer_loss, list(theta_prime.values())), strict=True))
    first = meta_gradients(net, inner, outer, ETA, "first")
    assert rel_err(first, G) <= 1e-12


def test_net_parameters_and_batchnorm_buffers_unchanged():
    net = small_net()
    inner, outer = batches()
    net(inner[0])  # non-trivial running statistics and counter
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for order in ("second", "first", "hessian"):
        meta_gradients(net, inner, outer, ETA, order)
    after = net.state_dict()
    assert set(after) == set(before)
    assert any(k.endswith("num_batches_tracked") for k in after)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in net.parameters())
    assert net.training


def test_update_running_stats_matches_one_train_forward_of_inner_batch():
    net, twin = small_net(), small_net()
    inner, outer = batches()
    meta_gradients(net, inner, outer, ETA, "second", update_running_stats=True)
    with torch.no_grad():
        twin(inner[0])
    for (k, a), (_, b) in zip(net.state_dict().items(), twin.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_one_inner_step_lowers_inner_loss():
    net = small_net()
    inner, _ = batches()
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    loss = batch_loss(net, theta, clones(net), inner)
    g = torch.autograd.grad(loss, list(theta.values()))
    with torch.no_grad():
        theta_prime = inner_step(theta, dict(zip(theta, g, strict=True)), 1e-2)
        after = batch_loss(net, theta_prime, clones(net), inner)
    assert after < loss


def test_inner_step_is_plain_sgd_and_differentiable():
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    g = p * 3  # depends on p
    out = inner_step({"w": p}, {"w": g}, 0.1)["w"]
    torch.testing.assert_close(out, torch.tensor([0.7, 1.4]))
    (d,) = torch.autograd.grad(out.sum(), p)
    torch.testing.assert_close(d, torch.tensor([0.7, 0.7]))  # 1 − η·3
    with pytest.raises(KeyError, match="no gradient for w"):
        inner_step({"w": p}, {}, 0.1)


def test_deterministic_reruns_are_identical():
    net = small_net()
    inner, outer = batches()
    a = meta_gradients(net, inner, outer, ETA, "second")
    b = meta_gradients(net, inner, outer, ETA, "second")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_return_losses():
    net = small_net()
    inner, outer = batches()
    out = meta_gradients(net, inner, outer, ETA, "second", return_losses=True)
    assert isinstance(out, MetaGradients)
    params = {n: p.detach() for n, p in net.named_parameters()}
    torch.testing.assert_close(out.inner_loss, batch_loss(net, params, clones(net), inner))
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    g = torch.autograd.grad(batch_loss(net, theta, clones(net), inner), list(theta.values()))
    theta_prime = inner_step(params, dict(zip(params, g, strict=True)), ETA)
    torch.testing.assert_close(out.outer_loss, batch_loss(net, theta_prime, clones(net), outer))
    assert not out.inner_loss.requires_grad and out.inner_loss.dim() == 0
    plain = meta_gradients(net, inner, outer, ETA, "second")
    assert all(torch.equal(plain[k], out.grads[k]) for k in plain)


def test_metafgnet_target_net_with_fixed_params():
    """The real model's target view; the backbone's stem stays fixed (not adapted)."""
    torch.manual_seed(0)
    model = build_model(ModelParams(width=4), NUM_CLASSES, 3).double().train()
    net = model.target_net()
    inner, outer = batches(size=16)
    names = [n for n, _ in net.named_parameters() if not n.startswith("backbone.stem.")]
    ref = unrolled_reference(net, inner, outer, ETA, names)
    second = meta_gradients(net, inner, outer, ETA, "second", params=names)
    assert list(second) == names
    assert rel_err(second, ref) <= 1e-10


def test_hessian_refuses_large_models():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 40), nn.Linear(40, NUM_CLASSES))
    n = sum(p.numel() for p in net.parameters())
    assert n > HESSIAN_MAX_PARAMS
    inner, outer = batches(dtype=torch.float32)
    with pytest.raises(HessianTooLarge, match=rf"{n:,}.*{HESSIAN_MAX_PARAMS:,}"):
        meta_gradients(net, inner, outer, ETA, "hessian")
    # a small enough subset is allowed
    meta_gradients(net, inner, outer, ETA, "hessian", params=["2.weight", "2.bias"])


def test_bad_arguments():
    net = small_net()
    inner, outer = batches()
    with pytest.raises(ValueError, match="'second', 'first', 'hessian'"):
        meta_gradients(net, inner, outer, ETA, "third")
    with pytest.raises(ValueError, match="nope"):
        meta_gradients(net, inner, outer, ETA, params=["nope"])
    with pytest.raises(ValueError, match="at least one"):
        meta_gradients(net, inner, outer, ETA, params=[])


def test_cpu_autocast_bfloat16_close_to_float32():
    net = small_net(torch.float32)
    inner, outer = batches(dtype=torch.float32, n=16, size=16)
    ref = meta_gradients(net, inner, outer, ETA, "second")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = meta_gradients(net, inner, outer, ETA, "second")
    assert all(amp[k].dtype == torch.float32 for k in amp)
    assert rel_err(amp, ref) < 0.1


def _cuda_reason():
    return "no CUDA device (torch.cuda.is_available() is False)"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=_cuda_reason())
def test_cuda_matches_cpu_and_amp_is_close():
    net = small_net()
    inner, outer = batches()
    cpu = meta_gradients(net, inner, outer, ETA, "second")
    dev = torch.device("cuda")
    net_cuda = small_net().to(dev)
    to = lambda b: (b[0].to(dev), b[1].to(dev))  # noqa: E731
    gpu = meta_gradients(net_cuda, to(inner), to(outer), ETA, "second")
    assert all(gpu[k].device.type == "cuda" for k in gpu)
    assert rel_err({k: v.cpu() for k, v in gpu.items()}, cpu) <= 1e-10

    net32 = small_net(torch.float32).to(dev)
    in32, out32 = batches(dtype=torch.float32, n=32, size=16)
    in32, out32 = to(in32), to(out32)
    ref = meta_gradients(net32, in32, out32, ETA, "second")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        amp = meta_gradients(net32, in32, out32, ETA, "second")
    assert all(amp[k].dtype == torch.float32 for k in amp)
    assert rel_err(amp, ref) < 0.1
