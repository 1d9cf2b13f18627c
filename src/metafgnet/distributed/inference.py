"""Sharded inference: evaluation and selection scoring split over the ranks, gathered back.

Each rank runs the library's own single-process function (:func:`metafgnet.evaluation.evaluate`,
:func:`metafgnet.selection.score_auxiliary`) on its contiguous range of the dataset
(:func:`~metafgnet.distributed.sharding.shard_bounds`); the per-item results are all-gathered
in rank order, which is dataset order, so every rank ends with exactly what one process would
have computed (metrics are recomputed from the gathered predictions, never averaged). Eval mode:
BatchNorm uses the running statistics, which the training loops keep identical on all ranks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import Dataset, Subset

from metafgnet.distributed.context import DistContext
from metafgnet.distributed.sharding import shard_bounds
from metafgnet.evaluation import evaluate
from metafgnet.evaluation.metrics import confusion_matrix, metrics_from_confusion


def local_shard(ds: Dataset, dist: DistContext) -> Dataset:
    """This rank's contiguous range of ``ds`` (all of it in a single process)."""
    n = len(ds)  # type: ignore[arg-type]
    if not dist.enabled:
        return ds
    if n < dist.world_size:
        raise ValueError(f"cannot shard {n} items over {dist.world_size} processes")
    start, stop = shard_bounds(n, dist.rank, dist.world_size)
    return Subset(ds, range(start, stop))


def gather_in_order(local: torch.Tensor, n: int, dist: DistContext) -> torch.Tensor:
    """Concatenation over ranks (rank order) of each rank's ``local`` ``(n_r, ...)`` rows.

    ``n`` is the total row count; each rank's count follows from :func:`shard_bounds`. Returns
    a CPU tensor on every rank.
    """
    if not dist.enabled:
        return local.cpu()
    sizes = [b - a for a, b in (shard_bounds(n, r, dist.world_size)
                                for r in range(dist.world_size))]
    device = dist.comm_device()
    padded = local.new_zeros((max(sizes), *local.shape[1:])).to(device)  # (max n_r, ...)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(dist.world_size)]
    tdist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).cpu()


def sharded_evaluate(
    model: nn.Module, ds: Dataset, *, dist: DistContext, device: torch.device,
    batch_size: int, head: str = "target", loader_kwargs: dict | None = None,
) -> dict:
    """:func:`metafgnet.evaluation.evaluate` over the ranks; the same dict on every rank (in a
    single process, evaluate's own: the metrics are recomputed from the same integers)."""
    n = len(ds)  # type: ignore[arg-type]
    local = evaluate(model, local_shard(ds, dist), device=device, batch_size=batch_size,
                     head=head, loader_kwargs=loader_kwargs, progress=dist.is_main)
    pairs = torch.from_numpy(np.stack([local["predictions"], local["labels"]], axis=1))  # (n_r, 2)
    both = gather_in_order(pairs, n, dist).numpy()  # (N, 2)
    preds, labels = both[:, 0].astype(np.int64), both[:, 1].astype(np.int64)
    confusion = confusion_matrix(labels, preds, local["confusion"].shape[0])
    return {**metrics_from_confusion(confusion), "confusion": confusion, "predictions": preds,
            "labels": labels, "num_samples": int(labels.size)}


def sharded_score_auxiliary(
    model: nn.Module, aux_ds: Dataset, *, dist: DistContext, device: torch.device,
    batch_size: int, loader_kwargs: dict | None = None,
) -> torch.Tensor:
    """:func:`metafgnet.selection.score_auxiliary` over the ranks: ``(N,)`` float32 on CPU,
    in dataset order, on every rank."""
    # imported here, not at module level: the training loops import this package, and a
    # training stage must not depend on (nor be re-run by DVC for) the selection code
    from metafgnet.selection import score_auxiliary

    local = score_auxiliary(model, local_shard(aux_ds, dist), device=device,
                            batch_size=batch_size, loader_kwargs=loader_kwargs,
                            progress=dist.is_main)  # (n_r,)
    return gather_in_order(local, len(aux_ds), dist)  # type: ignore[arg-type]
