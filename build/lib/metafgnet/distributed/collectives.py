"""Bucketed collectives over lists of tensors (gradients, BatchNorm buffers, logged scalars).

Many small tensors are flattened into a few large buffers (one per dtype, capped at
:data:`BUCKET_ELEMENTS`) so a step costs a handful of collectives, as DDP's buckets do. No DDP
wrapper: it does not support double backward (pytorch#63929; docs/platform.md).

Means are ``SUM`` followed by a division by the world size (``ReduceOp.AVG`` is NCCL-only).
For two ranks the sum ``a + b`` is exact-order independent, so both ranks and a
single-process emulation get bit-identical means.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as tdist
from torch import Tensor

BUCKET_ELEMENTS = 1 << 24  # 64 MiB of float32 per collective


def _buckets(tensors: list[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (dtype, device), each group cut at the size cap."""
    groups: dict[tuple, list[list[int]]] = defaultdict(lambda: [[]])
    sizes: dict[tuple, int] = defaultdict(int)
    for i, t in enumerate(tensors):
        key = (t.dtype, t.device)
        if sizes[key] and sizes[key] + t.numel() > BUCKET_ELEMENTS:
            groups[key].append([])
            sizes[key] = 0
        groups[key][-1].append(i)
        sizes[key] += t.numel()
    return [bucket for key in groups for bucket in groups[key] if bucket]


def bucketed_all_reduce_mean(tensors: list[Tensor], world_size: int) -> list[Tensor]:
    """Mean over ranks of every tensor; returns new tensors in the input order and shapes."""
    out: list[Tensor | None] = [None] * len(tensors)
    for bucket in _buckets(tensors):
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in bucket])  # (sum numel,)
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        flat.div_(world_size)
        for i, chunk in zip(bucket, flat.split([tensors[i].numel() for i in bucket]), strict=True):
            out[i] = chunk.view_as(tensors[i])
    return out  # type: ignore[return-value]


def bucketed_broadcast_(tensors: list[Tensor], src: int) -> None:
    """Copy rank ``src``'s values into ``tensors`` on every rank, in place."""
    for bucket in _buckets(tensors):
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in bucket])
        tdist.broadcast(flat, src=src)
        with torch.no_grad():
            for i, chunk in zip(bucket, flat.split([tensors[i].numel() for i in bucket]),
                                strict=True):
                tensors[i].copy_(chunk.view_as(tensors[i]))


def float_buffers(module: torch.nn.Module) -> list[Tensor]:
    """The floating-point buffers of ``module`` (BatchNorm ``running_mean`` / ``running_var``).

    Integer buffers (``num_batches_tracked``) advance identically on every rank and are left out.
    """
    return [b for _, b in module.named_buffers() if b.is_floating_point()]


def module_state_tensors(module: torch.nn.Module) -> list[Tensor]:
    """Every parameter and buffer of ``module`` (what must be equal on all ranks)."""
    return [*module.parameters(), *module.buffers()]
