"""Meta-gradient of the MetaFGNet objective: ``∇_θ L(T_j; θ − η·∇L(T_i; θ))``.

Equation numbers are those of the MetaFGNet supplementary (exact meta-gradients). With
``G = ∇_{θ'} L(T_j; θ')`` and ``H = ∇²L(T_i; θ)``, Eq. 1 is
``∇_θ L(T_j; θ') = G·(I − η·H) = G − η·H·G`` (``H`` is symmetric). Three orders:

- ``"second"``: exact, with the Hessian-vector product of Eq. 5,
  ``H·G = ∇_θ Σ_k G_k·g_k`` with ``g = ∇L(T_i; θ)`` kept differentiable and ``G`` constant.
  ``H`` is never formed. ``micro_batch`` computes it in bounded memory
  (:mod:`metafgnet.meta.microbatch`).
- ``"first"``: ``G`` alone (the first-order approximation, after MAML).
- ``"hessian"``: ``H`` built row by row as in Eq. 3 (reference for tiny models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from metafgnet.meta.functional import (
    Batch,
    autocast_off,
    batch_loss,
    cloned_buffers,
    grads_or_zeros,
    hessian_vector_product,
    inner_step,
    split_params,
)
from metafgnet.meta.hessian import check_hessian_size, explicit_hessian
from metafgnet.meta.microbatch import micro_batched

ORDERS = ("second", "first", "hessian")


class MetaGradients(NamedTuple):
    """What :func:`meta_gradients` returns with ``return_losses=True``."""

    grads: dict[str, Tensor]  # d L(T_j; θ') / dθ per adapted parameter name
    inner_loss: Tensor  # L(T_i; θ), 0-d, detached
    outer_loss: Tensor  # L(T_j; θ'), 0-d, detached


def meta_gradients(
    net: nn.Module,
    inner_batch: Batch,
    outer_batch: Batch,
    inner_lr: float,
    order: str = "second",
    params: Sequence[str] | None = None,
    *,
    return_losses: bool = False,
    update_running_stats: bool = False,
    reduce: Callable[[list[Tensor]], list[Tensor]] | None = None,
    micro_batch: int = 0,
) -> dict[str, Tensor] | MetaGradients:
    """Gradient of the meta loss ``L(T_j; θ')``, ``θ' = θ − η·∇L(T_i; θ)``, w.r.t. ``θ``.

    Implements Eq. 1 of the MetaFGNet supplementary. ``net(x)`` must return logits ``(B, K)``;
    losses are mean cross-entropy; ``inner_batch`` is ``T_i`` and ``outer_batch`` is ``T_j``,
    each ``(x, y)``.
    ``params`` names the parameters the inner SGD step adapts (default: every parameter with
    ``requires_grad``); all others stay fixed at their current values in both passes and get
    no gradient. Returns ``{name: gradient}`` for the adapted names, each in its parameter's
    dtype and device, or a :class:`MetaGradients` with the detached inner and outer losses
    when ``return_losses`` is true.

    ``order``: ``"second"`` (exact: ``G − η·H·G`` with ``H·G`` from Eq. 5; the outer graph
    is freed as soon as ``G`` is known, before the Hessian-vector product), ``"first"``
    (``G``), or ``"hessian"`` (explicit ``H`` of Eq. 3; at most
    :data:`metafgnet.meta.hessian.HESSIAN_MAX_PARAMS` adapted scalars).

    Side effects: none on ``net``. Its parameters and their ``.grad`` are untouched. BatchNorm
    in train mode normalises with batch statistics in every pass, but its running statistics
    (``running_mean``, ``running_var``, ``num_batches_tracked``) are NOT updated: both passes
    write into discarded clones of the buffers. The training loop applies its own, explicit
    running-statistics policy. ``update_running_stats=True`` opts in to one policy: the inner
    pass (``T_i`` at ``θ``) updates the module's buffers exactly as one train-mode forward
    would, and the outer pass still writes into clones.

    Works on CPU and CUDA, float32 and float64, and inside a caller's ``torch.autocast``: the
    forward passes run under it, backward passes run with autocast off, and gradients come back
    in the parameters' dtype (use bfloat16; float16 without loss scaling can underflow).

    ``reduce`` (data parallelism, :mod:`metafgnet.distributed`): a collective that averages a
    list of tensors over the process group. It is applied to the inner gradient before the
    inner step and to ``G`` before the Hessian term, so every rank steps to the SAME ``θ'``
    (that of the global batch) and uses the global ``G``; the returned gradient is then this
    rank's ``G − η·H_r·G`` and its average over ranks is the exact meta-gradient of
    ``mean_r L(T_j^r; θ − η·mean_r ∇L(T_i^r; θ))`` (the caller averages). Without BatchNorm and
    with equal shards that is the single-process meta-gradient of the union of the shards.

    ``micro_batch`` (0: off): images per micro-batch for a memory-bounded computation of the
    same orders (:mod:`metafgnet.meta.microbatch`): peak memory is set by ``micro_batch``, at the
    cost of recomputing the inner pass. It is the meta-gradient of the ghost-batch objective
    (each micro-batch normalised by BatchNorm with its own statistics), which without BatchNorm
    equals the full-batch one. With ``reduce``, each rank micro-batches its own shard. With
    ``update_running_stats`` the running statistics take the mean of the micro-batches'
    updates. Batches of at most ``micro_batch`` images take the full-batch path.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}; got {order!r}")
    if micro_batch < 0:
        raise ValueError(f"micro_batch must be >= 0 (0: off); got {micro_batch}")
    split = micro_batch > 0 and max(len(inner_batch[1]), len(outer_batch[1])) > micro_batch
    if split and order == "hessian":
        raise ValueError('micro_batch works with order="second" or "first", not "hessian"')
    inner_lr = float(inner_lr)
    theta, fixed = split_params(net, None if params is None else list(params))
    names = list(theta)
    leaves = list(theta.values())
    device = leaves[0].device
    if order == "hessian":  # refuse before any work is done
        check_hessian_size(sum(t.numel() for t in leaves))
    if split:
        result, inner_loss, outer_loss = micro_batched(
            net, theta, fixed, inner_batch, outer_batch, inner_lr, micro_batch,
            second_order=order == "second", update_running_stats=update_running_stats,
            reduce=reduce)
        return _finish(names, result, leaves, inner_loss, outer_loss, return_losses)
    outer_buffers = cloned_buffers(net)
    inner_buffers = dict(net.named_buffers()) if update_running_stats else outer_buffers

    # Inner pass at θ on T_i; g keeps its graph when the Hessian term is needed.
    need_graph = order != "first"
    inner_loss = batch_loss(net, {**theta, **fixed}, inner_buffers, inner_batch)
    with autocast_off(device):
        g = grads_or_zeros(inner_loss, leaves, create_graph=need_graph)
    # θ' as fresh leaves: the outer graph must not reach back into the inner one.
    g_step = g if reduce is None else reduce([gk.detach() for gk in g])  # global inner grad
    with torch.no_grad():
        theta_prime = inner_step(theta, dict(zip(names, g_step, strict=True)), inner_lr)
    theta_prime = {n: t.requires_grad_(True) for n, t in theta_prime.items()}

    # Outer pass at θ' on T_j: G = ∇_{θ'} L(T_j; θ'); its graph is freed right here.
    outer_loss = batch_loss(net, {**theta_prime, **fixed}, outer_buffers, outer_batch)
    with autocast_off(device):
        G = grads_or_zeros(outer_loss, list(theta_prime.values()))
    del theta_prime
    if reduce is not None:
        G = reduce(G)  # the global G: the Hessian term multiplies the same vector on all ranks

    if order == "first":
        result = G
    elif order == "second":
        with autocast_off(device):
            HG = hessian_vector_product(g, leaves, G)  # (same shapes as θ)
        result = [Gk.sub_(HGk, alpha=inner_lr) for Gk, HGk in zip(G, HG, strict=True)]
    else:
        with autocast_off(device):
            result = explicit_hessian_meta_gradient(g, leaves, G, inner_lr)
    return _finish(names, result, leaves, inner_loss, outer_loss, return_losses)


def _finish(
    names: list[str], result: list[Tensor], leaves: list[Tensor], inner_loss: Tensor,
    outer_loss: Tensor, return_losses: bool,
) -> dict[str, Tensor] | MetaGradients:
    """The gradients by name in their parameters' dtypes, with the detached losses if asked."""
    grads = {n: r.to(dtype=p.dtype) for n, r, p in zip(names, result, leaves, strict=True)}
    if return_losses:
        return MetaGradients(grads, inner_loss.detach(), outer_loss.detach())
    return grads


def explicit_hessian_meta_gradient(
    g: list[Tensor], theta: list[Tensor], G: list[Tensor], inner_lr: float
) -> list[Tensor]:
    """``G·(I − η·H)`` with ``H`` formed explicitly (Eq. 1 with Eq. 3's rows)."""
    H = explicit_hessian(g, theta)  # (N, N)
    G_flat = torch.cat([t.reshape(-1) for t in G])  # (N,)
    out = G_flat - inner_lr * (G_flat @ H)  # (N,)
    return [
        chunk.view_as(t)
        for chunk, t in zip(torch.split(out, [t.numel() for t in theta]), theta, strict=True)
    ]
