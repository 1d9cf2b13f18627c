"""Which part of a global batch, or of a dataset, each rank processes.

Training batches: every rank draws the SAME global batch (a pure function of ``seed`` and the
step, :mod:`metafgnet.training.batches`) and keeps a contiguous slice of each of its segments.
The meta stage's global batch of ``2B`` target images has two segments, ``T_i`` = the first
``B`` and ``T_j`` = the next ``B``; rank ``r`` of ``W`` keeps images ``[rB/W, (r+1)B/W)`` of
each, so its local batch is ``(T_i^r, T_j^r)`` and the union over ranks is exactly what one
process draws with the same seed. Segments must split evenly: a mean over ranks of per-shard
mean losses is the global mean only for equal shards.

Inference (evaluation, selection scoring): the dataset is cut into ``W`` contiguous ranges in
index order (sizes differ by at most one); gathering them in rank order restores dataset order.
"""

from __future__ import annotations

from collections.abc import Sequence


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items (sizes differ by <= 1)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def check_divisible(size: int, world_size: int, what: str) -> int:
    """``size // world_size``, refusing sizes that do not split evenly over the ranks."""
    if size % world_size:
        raise ValueError(
            f"{what} ({size}) must be divisible by the number of processes ({world_size}) so "
            f"every rank gets an equal shard; pick a multiple of {world_size}")
    return size // world_size


def shard_segments(items: Sequence, segments: Sequence[int], rank: int, world_size: int) -> list:
    """This rank's slice of each consecutive segment of ``items``, concatenated.

    ``segments`` are the segment lengths (``[B, B]`` for ``T_i`` / ``T_j``); each must be
    divisible by ``world_size``. ``world_size == 1`` returns ``items`` unchanged.
    """
    if sum(segments) != len(items):
        raise ValueError(f"segments {list(segments)} do not add up to {len(items)} items")
    if world_size == 1:
        return list(items)
    out: list = []
    offset = 0
    for length in segments:
        share = check_divisible(length, world_size, "batch segment")
        start = offset + rank * share
        out.extend(items[start:start + share])
        offset += length
    return out
