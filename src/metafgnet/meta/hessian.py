"""The explicit Hessian of the inner loss, row by row (Eq. 3 of the MetaFGNet
supplementary). Reference only.

Row ``i`` of ``H = ∂²L(T_i; θ)/∂θ²`` is ``∂g_i/∂θ`` with ``g = ∇L(T_i; θ)``: one backward pass
per adapted scalar (batched :data:`ROWS_PER_PASS` rows at a time with ``is_grads_batched``, the
same arithmetic), ``N²`` memory. This is what the Hessian-vector product of Eq. 5 avoids; it
exists to verify that product on tiny models.
"""

from __future__ import annotations

import torch
from torch import Tensor

HESSIAN_MAX_PARAMS = 5_000
ROWS_PER_PASS = 64  # rows of H per batched backward pass (memory ~ ROWS_PER_PASS x graph)


class HessianTooLarge(ValueError):
    """The explicit Hessian was requested for more adapted scalars than the limit."""


def check_hessian_size(n: int) -> None:
    """Raise :class:`HessianTooLarge` when ``n`` adapted scalars exceed the limit."""
    if n > HESSIAN_MAX_PARAMS:
        raise HessianTooLarge(
            f'order="hessian" forms the explicit {n} x {n} Hessian: {n:,} adapted parameters '
            f'exceed the limit of {HESSIAN_MAX_PARAMS:,}. Use order="second" (exact, '
            "Hessian-vector product) or adapt fewer parameters (params=...)."
        )


def explicit_hessian(g: list[Tensor], theta: list[Tensor]) -> Tensor:
    """``H`` of shape ``(N, N)``, ``N`` = adapted scalars, from ``g`` built with its graph."""
    n = sum(t.numel() for t in theta)
    check_hessian_size(n)
    g_flat = torch.cat([t.reshape(-1) for t in g])  # (N,)
    if not g_flat.requires_grad:  # the loss is linear in θ
        return g_flat.new_zeros(n, n)
    rows = []
    eye = torch.eye(n, dtype=g_flat.dtype, device=g_flat.device)  # (N, N)
    for block in torch.split(eye, ROWS_PER_PASS):  # (R, N): selects rows i .. i+R of H
        # Row i of H is ∂g_i/∂θ (Eq. 3); R rows at once through one batched backward.
        parts = torch.autograd.grad(
            g_flat,
            theta,
            grad_outputs=block,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
            is_grads_batched=True,
        )
        rows.append(torch.cat([r.reshape(block.shape[0], -1) for r in parts], dim=1))  # (R, N)
    return torch.cat(rows)  # (N, N)
