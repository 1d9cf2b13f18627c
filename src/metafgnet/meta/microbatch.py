"""The exact meta-gradient in micro-batches: peak memory set by the micro-batch, not the batch.

Split ``T_i`` into micro-batches ``T_i^k`` of ``n_k`` images (weights ``w_k = n_k / B``) and
``T_j`` likewise. The meta-objective is then the ghost-batch one,

    L(T_i; θ) = Σ_k w_k L(T_i^k; θ),    L(T_j; θ') = Σ_m w_m L(T_j^m; θ'),

each micro-batch normalised by BatchNorm with its own batch statistics (as every rank of a
data-parallel run normalises its own shard). Without BatchNorm (or any other layer that mixes
the images of a batch) this is exactly the full-batch objective, because a mean loss is the
weighted mean of its micro-batch means.

Three passes, none of which keeps more than one micro-batch's graph alive:

1. ``g = Σ_k w_k ∇L(T_i^k; θ)``, graphs freed after each micro-batch; ``θ' = θ − η·g``;
2. ``G = Σ_m w_m ∇_{θ'} L(T_j^m; θ')``, likewise;
3. ``H·G = Σ_k w_k ∇_θ (G · ∇L(T_i^k; θ))``: each micro-batch's inner gradient is recomputed
   WITH its graph and contracted with ``G`` at once (the Hessian-vector product of Eq. 5 of the
   MetaFGNet supplementary, ``H`` being linear in the micro-batch weights), then freed.

The meta-gradient is ``G − η·H·G`` (Eq. 1 of the supplementary). The price is pass 3's
recomputed forward and backward of ``T_i``; the full-batch path keeps that graph instead.

Running statistics: every pass runs on copies of the module's buffers taken before pass 1, so
the recomputed pass 3 sees the same buffers as pass 1 and never moves them. With
``update_running_stats`` the module's statistics take ONE update: the ``w_k``-weighted mean of
the updates each micro-batch of pass 1 would make from the same starting point, as data-parallel
training averages its ranks' statistics. The counter ``num_batches_tracked`` advances by one.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce as fold

import torch
from torch import Tensor, nn

from metafgnet.meta.functional import (
    Batch,
    autocast_off,
    batch_loss,
    grads_or_zeros,
    hessian_vector_product,
    inner_step,
)


def split_batch(batch: Batch, micro_batch: int) -> list[tuple[Batch, float]]:
    """``[((x_k, y_k), w_k)]``: consecutive micro-batches of at most ``micro_batch`` images and
    their weights ``n_k / B`` (the last one may be smaller)."""
    x, y = batch  # (B, C, H, W), (B,)
    n = y.shape[0]
    return [((xk, yk), yk.shape[0] / n)
            for xk, yk in zip(torch.split(x, micro_batch), torch.split(y, micro_batch), strict=True)]


def _add(total: list[Tensor] | None, parts: list[Tensor], weight: float) -> list[Tensor]:
    """``total + weight·parts`` in place (``weight·parts`` when ``total`` is None)."""
    if total is None:
        return [p.mul_(weight) for p in parts]
    for t, p in zip(total, parts, strict=True):
        t.add_(p, alpha=weight)
    return total


def _copies(buffers: dict[str, Tensor]) -> dict[str, Tensor]:
    return {n: b.clone() for n, b in buffers.items()}


def _write_weighted_mean(net: nn.Module, moved: list[tuple[dict[str, Tensor], float]]) -> None:
    """Set the module's buffers to the ``w_k``-weighted mean of the per-micro-batch copies
    (floating buffers); integer counters take the (common) value of the first copy."""
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if buf.is_floating_point():
                buf.copy_(fold(operator.add, (w * bufs[name] for bufs, w in moved)))
            else:
                buf.copy_(moved[0][0][name])


def micro_batched(
    net: nn.Module,
    theta: dict[str, Tensor],
    fixed: dict[str, Tensor],
    inner_batch: Batch,
    outer_batch: Batch,
    inner_lr: float,
    micro_batch: int,
    *,
    second_order: bool,
    update_running_stats: bool,
    reduce: Callable[[list[Tensor]], list[Tensor]] | None,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """``(meta-gradient list in θ's order, inner loss, outer loss)`` by the three passes of the
    module docstring. ``theta`` are the adapted leaves (``requires_grad``), ``fixed`` the rest.
    ``reduce`` is applied to the accumulated ``g`` and ``G``, exactly where the full-batch path
    applies it, so each rank micro-batches its own shard. Forward passes run in the caller's
    autocast context, backward passes with autocast off."""
    leaves = list(theta.values())
    device = leaves[0].device
    start = {n: b.detach().clone() for n, b in net.named_buffers()}  # every pass starts here
    inner_parts = split_batch(inner_batch, micro_batch)

    # 1. g = Σ_k w_k ∇L(T_i^k; θ), no graph kept
    g: list[Tensor] | None = None
    inner_loss: Tensor | float = 0.0
    moved: list[tuple[dict[str, Tensor], float]] = []
    for part, w in inner_parts:
        buffers = _copies(start)
        loss = batch_loss(net, {**theta, **fixed}, buffers, part)
        with autocast_off(device):
            g = _add(g, grads_or_zeros(loss, leaves), w)
        inner_loss = inner_loss + w * loss.detach()
        if update_running_stats:
            moved.append((buffers, w))
    assert g is not None and isinstance(inner_loss, Tensor)  # inner_parts is never empty
    if moved:
        _write_weighted_mean(net, moved)
    g_step = g if reduce is None else reduce(g)
    with torch.no_grad():
        theta_prime = inner_step(theta, dict(zip(theta, g_step, strict=True)), inner_lr)
    del g, g_step
    prime_leaves = [t.requires_grad_(True) for t in theta_prime.values()]

    # 2. G = Σ_m w_m ∇_{θ'} L(T_j^m; θ'), no graph kept
    G: list[Tensor] | None = None
    outer_loss: Tensor | float = 0.0
    for part, w in split_batch(outer_batch, micro_batch):
        loss = batch_loss(net, {**theta_prime, **fixed}, _copies(start), part)
        with autocast_off(device):
            G = _add(G, grads_or_zeros(loss, prime_leaves), w)
        outer_loss = outer_loss + w * loss.detach()
    del theta_prime, prime_leaves
    assert G is not None and isinstance(outer_loss, Tensor)  # the outer batch is never empty
    if reduce is not None:
        G = reduce(G)
    if not second_order:
        return G, inner_loss, outer_loss

    # 3. H·G = Σ_k w_k ∇_θ(G · ∇L(T_i^k; θ)): recompute each micro-batch's graph, contract, free
    HG: list[Tensor] | None = None
    for part, w in inner_parts:
        loss = batch_loss(net, {**theta, **fixed}, _copies(start), part)
        with autocast_off(device):
            gk = grads_or_zeros(loss, leaves, create_graph=True)
            HG = _add(HG, hessian_vector_product(gk, leaves, G), w)
        del gk, loss
    assert HG is not None
    result = [Gk.sub_(HGk, alpha=inner_lr) for Gk, HGk in zip(G, HG, strict=True)]
    return result, inner_loss, outer_loss
