"""Seeded batch streams for the training loops: the data order is a pure function of
``(seed, epoch, position)``.

Every stream draws GLOBAL batches: epoch ``e`` is the permutation
``randperm(n, Generator(derive(seed, e)))``, cut into ``n // batch_size`` batches (the last
incomplete batch is dropped, so every train-mode BatchNorm pass sees a full batch). Batch
number ``c`` (counted across epochs) is therefore known without replaying anything: a resumed
run (:mod:`metafgnet.training.checkpointing`) restarts its streams at the step it stopped at, and
``torchrun`` ranks each keep their slice of the same global batch
(:func:`metafgnet.distributed.shard_segments`).

Random augmentation does not depend on which process, worker or position loads an image
either: each item of an epoch carries its own seed (drawn with the permutation), and
:class:`SeededItems` seeds Python's ``random``, NumPy and torch's CPU generator with it just
for that item's ``__getitem__`` (the main process's global RNG states are restored after it).
So the images are the same with 0 or 8 loader workers, with 1 or 8 ranks, and after a resume.

The meta stage draws its two target batches ``T_i``, ``T_j`` as the two halves of ONE global
batch of ``2 * batch_size`` (segments ``[B, B]``), disjoint by construction; the authors' two
loaders over the same set could overlap after a reshuffle.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from metafgnet.distributed.sharding import check_divisible, shard_segments
from metafgnet.training.runtime import derive_seed

Batch = tuple[torch.Tensor, torch.Tensor]  # (images (B, C, H, W), labels (B,))
ItemKey = tuple[int, int]  # (dataset index, item seed)


def _seed_worker(worker_id: int) -> None:
    # items seed themselves (SeededItems); this only covers transforms outside __getitem__
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@contextlib.contextmanager
def _item_rng(seed: int) -> Iterator[None]:
    """Python, NumPy and torch-CPU RNGs seeded with ``seed`` inside; restored after (main
    process only: a worker's global state belongs to nobody else)."""
    in_worker = get_worker_info() is not None
    saved = None if in_worker else (random.getstate(), np.random.get_state(),
                                    torch.random.get_rng_state())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])


class SeededItems(Dataset):
    """``ds`` indexed by ``(index, item_seed)``: the item is loaded under its own RNG seed."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: ItemKey):
        index, seed = key
        with _item_rng(seed):
            return self.ds[index]


class EpochPlan:
    """The global batches of a dataset of ``n`` items: a pure function of ``seed``."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ValueError(
                f"training set of {n} images cannot fill one batch of {batch_size} "
                "(the last incomplete batch is dropped): lower the batch size")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.batches_per_epoch = n // batch_size
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached is None or self._cached[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, f"epoch/{epoch}"))
            order = torch.randperm(self.n, generator=g)  # (n,) int64
            seeds = torch.randint(0, 2**62, (self.n,), generator=g)  # (n,) int64
            self._cached = (epoch, order, seeds)
        return self._cached[1], self._cached[2]

    def batch(self, counter: int) -> list[ItemKey]:
        """Global batch number ``counter`` (across epochs): ``(index, item seed)`` pairs."""
        epoch, k = divmod(counter, self.batches_per_epoch)
        order, seeds = self._epoch(epoch)
        lo, hi = k * self.batch_size, (k + 1) * self.batch_size
        return list(zip(order[lo:hi].tolist(), seeds[lo:hi].tolist(), strict=True))


class ShardedBatchSampler(Sampler[list[ItemKey]]):
    """Batch sampler over global batches ``[start, stop)`` (``stop=None``: endless), keeping
    this rank's slice of each segment of every batch."""

    def __init__(self, plan: EpochPlan, *, segments: Sequence[int] | None = None, rank: int = 0,
                 world_size: int = 1, start: int = 0, stop: int | None = None) -> None:
        self.plan = plan
        self.segments = list(segments) if segments is not None else [plan.batch_size]
        for length in self.segments:
            check_divisible(length, world_size, "batch size")
        self.rank, self.world_size = rank, world_size
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[list[ItemKey]]:
        counter = self.start
        while self.stop is None or counter < self.stop:
            yield shard_segments(self.plan.batch(counter), self.segments, self.rank,
                                 self.world_size)
            counter += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless batch sampler has no length")
        return max(0, self.stop - self.start)


class BatchStream:
    """Seeded, optionally sharded, global batches of ``ds``; loaders start at any batch.

    ``segments`` split each global batch of ``batch_size`` (default: one segment); rank ``rank``
    of ``world_size`` gets its slice of each (:func:`metafgnet.distributed.shard_segments`).
    ``loader_kwargs`` (``num_workers``, ``pin_memory``, ``prefetch_factor``, ...) pass through
    to every ``DataLoader``.
    """

    def __init__(self, ds: Dataset, batch_size: int, *, seed: int,
                 segments: Sequence[int] | None = None, rank: int = 0, world_size: int = 1,
                 loader_kwargs: dict | None = None) -> None:
        self.ds, self.seed = ds, seed
        self.plan = EpochPlan(len(ds), batch_size, seed)  # type: ignore[arg-type]
        self.segments, self.rank, self.world_size = segments, rank, world_size
        self.loader_kwargs = dict(loader_kwargs or {})
        self.batches_per_epoch = self.plan.batches_per_epoch

    def loader(self, start: int = 0, stop: int | None = None) -> DataLoader:
        sampler = ShardedBatchSampler(self.plan, segments=self.segments, rank=self.rank,
                                      world_size=self.world_size, start=start, stop=stop)
        # the generator only seeds the workers' base seed; it keeps the global RNG untouched
        return DataLoader(SeededItems(self.ds), batch_sampler=sampler,
                          generator=torch.Generator().manual_seed(self.seed),
                          worker_init_fn=_seed_worker, **self.loader_kwargs)

    def endless(self, start: int = 0) -> Iterator[Batch]:
        """Every batch from global batch ``start`` on, across epochs, forever."""
        return iter(self.loader(start, None))


def pair_stream(stream: BatchStream, local_batch_size: int, start: int = 0
                ) -> Iterator[tuple[Batch, Batch]]:
    """Endless ``(T_i, T_j)`` pairs of a stream with segments ``[B, B]``, from batch ``start``:
    ``T_i`` the first ``local_batch_size`` items (this rank's share of ``B``), ``T_j`` the rest
    (disjoint)."""
    b = local_batch_size
    for x, y in stream.endless(start):  # (2b, C, H, W), (2b,)
        yield (x[:b], y[:b]), (x[b:], y[b:])


def target_pairs(
    ds: Dataset, batch_size: int, *, seed: int, loader_kwargs: dict | None = None
) -> Iterator[tuple[Batch, Batch]]:
    """Endless ``(T_i, T_j)`` pairs from one seeded stream of ``2 * batch_size``
    (docs/method.md, meta-iteration step 1)."""
    stream = BatchStream(ds, 2 * batch_size, seed=seed, segments=[batch_size, batch_size],
                         loader_kwargs=loader_kwargs)
    return pair_stream(stream, batch_size)


def to_device(batch: Batch, device: torch.device, *, channels_last: bool = False) -> Batch:
    """Move ``(x, y)`` to ``device``; asynchronous on CUDA (pinned memory makes it overlap),
    images in channels-last layout when asked (4-d inputs only)."""
    x, y = batch
    non_blocking = device.type == "cuda"
    fmt = torch.channels_last if channels_last and x.dim() == 4 else torch.preserve_format
    return (x.to(device, non_blocking=non_blocking, memory_format=fmt),
            y.to(device, non_blocking=non_blocking))
