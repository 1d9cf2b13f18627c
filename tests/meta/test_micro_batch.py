"""The memory-bounded exact meta-gradient (``micro_batch``): exact without BatchNorm, the
ghost-batch meta-gradient with it, and the same side-effect rules as the full-batch path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metafgnet.meta import batch_loss, inner_step, meta_gradients
from metafgnet.meta.microbatch import split_batch
from support.meta_nets import ETA, NUM_CLASSES, batches, clones, rel_err, small_net


def no_bn_net(dtype=torch.float64, seed=0) -> nn.Module:
    """Conv + ReLU + linear, nothing that mixes the images of a batch."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, 6)
        nn.Linear(6, NUM_CLASSES),
    )
    return net.to(dtype).train()


def ghost_loss(net, params, batch, micro_batch):
    """``Σ_k (n_k/B) L(batch_k; params)``, each micro-batch normalised with its own statistics."""
    return sum(w * batch_loss(net, params, clones(net), part)
               for part, w in split_batch(batch, micro_batch))


def ghost_reference(net, inner, outer, eta, micro_batch):
    """Autograd straight through θ' = θ − η∇L_ghost(T_i; θ) (create_graph), then
    ∇_θ L_ghost(T_j; θ'): the ghost-batch meta-gradient written out directly."""
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    g = torch.autograd.grad(ghost_loss(net, theta, inner, micro_batch), list(theta.values()),
                            create_graph=True)
    theta_prime = inner_step(theta, dict(zip(theta, g, strict=True)), eta)
    outer_loss = ghost_loss(net, theta_prime, outer, micro_batch)
    return dict(zip(theta, torch.autograd.grad(outer_loss, list(theta.values())), strict=True))


@pytest.mark.parametrize("micro_batch", [1, 2, 4])  # 4: uneven, 4 + 2 images
@pytest.mark.parametrize("order", ["second", "first"])
def test_without_batchnorm_equals_the_full_batch_meta_gradient(order, micro_batch):
    net = no_bn_net()
    inner, outer = batches(n=6)
    full = meta_gradients(net, inner, outer, ETA, order, return_losses=True)
    micro = meta_gradients(net, inner, outer, ETA, order, return_losses=True,
                           micro_batch=micro_batch)
    assert list(micro.grads) == list(full.grads)
    assert rel_err(micro.grads, full.grads) <= 1e-10
    torch.testing.assert_close(micro.inner_loss, full.inner_loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(micro.outer_loss, full.outer_loss, rtol=1e-12, atol=0)
    if order == "second":  # the Hessian term matters here, so the check has teeth
        first = meta_gradients(net, inner, outer, ETA, "first")
        assert rel_err(first, full.grads) > 1e-3


@pytest.mark.parametrize("micro_batch", [2, 4])
def test_with_batchnorm_is_the_ghost_batch_meta_gradient(micro_batch):
    net = small_net()
    inner, outer = batches(n=6)
    ref = ghost_reference(net, inner, outer, ETA, micro_batch)
    micro = meta_gradients(net, inner, outer, ETA, "second", micro_batch=micro_batch)
    assert rel_err(micro, ref) <= 1e-10
    full = meta_gradients(net, inner, outer, ETA, "second")
    assert rel_err(full, ref) > 1e-3  # ghost batches are a different objective with BatchNorm


def test_subset_of_parameters_and_dtype():
    net = small_net()
    inner, outer = batches(n=6)
    names = ["3.weight", "4.weight", "4.bias", "8.weight"]
    full_names = meta_gradients(no_bn_net(), inner, outer, ETA, params=["2.weight", "6.bias"])
    micro_names = meta_gradients(no_bn_net(), inner, outer, ETA, params=["2.weight", "6.bias"],
                                 micro_batch=2)
    assert rel_err(micro_names, full_names) <= 1e-10
    micro = meta_gradients(net, inner, outer, ETA, params=names, micro_batch=3)
    assert list(micro) == names
    for name, grad in micro.items():
        p = dict(net.named_parameters())[name]
        assert grad.dtype == p.dtype and grad.shape == p.shape


def test_composes_with_reduce_at_the_same_points():
    """A (non-averaging) reduce changes the result; micro-batches must apply it to the same
    accumulated ``g`` and ``G`` as the full-batch path, so both still agree."""
    calls = {"full": 0, "micro": 0}

    def reduce_for(key):
        def reduce(tensors):
            calls[key] += 1
            return [1.5 * t for t in tensors]
        return reduce

    net = no_bn_net()
    inner, outer = batches(n=6)
    full = meta_gradients(net, inner, outer, ETA, reduce=reduce_for("full"))
    micro = meta_gradients(net, inner, outer, ETA, reduce=reduce_for("micro"), micro_batch=2)
    assert calls == {"full": 2, "micro": 2}
    assert rel_err(micro, full) <= 1e-10
    assert rel_err(meta_gradients(net, inner, outer, ETA), full) > 1e-3


def test_running_statistics_never_move_without_the_policy():
    net = small_net()
    inner, outer = batches(n=6)
    net(inner[0])  # non-trivial running statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for order in ("second", "first"):
        meta_gradients(net, inner, outer, ETA, order, micro_batch=2)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in net.parameters())


def test_inner_pass_policy_takes_the_mean_of_the_micro_batch_updates_once():
    """The recomputed pass 3 must not move the statistics a second time."""
    net, twins = small_net(), [small_net() for _ in range(2)]
    inner, outer = batches(n=6)
    meta_gradients(net, inner, outer, ETA, "second", update_running_stats=True, micro_batch=3)
    with torch.no_grad():  # each micro-batch's update from the same starting point
        for twin, x in zip(twins, (inner[0][:3], inner[0][3:]), strict=True):
            twin(x)
    for key, value in net.state_dict().items():
        a, b = twins[0].state_dict()[key], twins[1].state_dict()[key]
        expected = (a + b) / 2 if value.is_floating_point() else a
        torch.testing.assert_close(value, expected, rtol=1e-14, atol=1e-14, msg=key)
    assert net.state_dict()["1.num_batches_tracked"].item() == 1


def test_cpu_autocast_bfloat16_close_to_float32():
    net = small_net(torch.float32)
    inner, outer = batches(dtype=torch.float32, n=16, size=16)
    ref = meta_gradients(net, inner, outer, ETA, "second", micro_batch=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = meta_gradients(net, inner, outer, ETA, "second", micro_batch=4)
    assert all(amp[k].dtype == torch.float32 for k in amp)
    assert rel_err(amp, ref) < 0.1


def test_large_micro_batch_is_the_full_batch_path_and_bad_values_raise():
    net = small_net()
    inner, outer = batches(n=6)
    full = meta_gradients(net, inner, outer, ETA)
    same = meta_gradients(net, inner, outer, ETA, micro_batch=6)
    assert all(torch.equal(full[k], same[k]) for k in full)
    with pytest.raises(ValueError, match="micro_batch must be >= 0"):
        meta_gradients(net, inner, outer, ETA, micro_batch=-1)
    with pytest.raises(ValueError, match='not "hessian"'):
        meta_gradients(net, inner, outer, ETA, "hessian", micro_batch=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_micro_batches_match_the_cpu_full_batch_without_batchnorm():
    inner, outer = batches(n=6)
    cpu = meta_gradients(no_bn_net(), inner, outer, ETA)
    dev = torch.device("cuda")
    to = lambda b: (b[0].to(dev), b[1].to(dev))  # noqa: E731
    gpu = meta_gradients(no_bn_net().to(dev), to(inner), to(outer), ETA, micro_batch=4)
    assert all(g.device.type == "cuda" for g in gpu.values())
    assert rel_err({k: v.cpu() for k, v in gpu.items()}, cpu) <= 1e-10
