"""Auxiliary subsets as files, and the control for selection.

A subset is a CSV of ``path,label`` rows (the auxiliary manifest's paths and ORIGINAL class
indices), in manifest order: ``selected.csv`` of the ``select`` stage, and the random subset of
the ``metafgnet_random`` arm. That arm is the control a reviewer asks of selection: meta-trained
on a subset drawn uniformly at random, of the selected subset's size, with the same rescaled
schedule, so ``metafgnet_selected`` − ``metafgnet_random`` is the criterion's own effect (both
arms see as many auxiliary images for as many iterations).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch

from metafgnet.data import Record
from metafgnet.io import atomic_path


def random_subset(n: int, size: int, seed: int) -> torch.Tensor:
    """Boolean keep-mask ``(n,)`` with ``size`` entries set, drawn uniformly without replacement
    by a generator seeded with ``seed`` alone: the same on every machine and run."""
    if not 0 <= size <= n:
        raise ValueError(f"a random subset of {size} images cannot be drawn from {n} auxiliary "
                         "images: the selection it copies must come from the same auxiliary set")
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:size]] = True
    return mask


def write_subset(path: Path, records: Sequence[Record], keep: torch.Tensor) -> None:
    """The kept ``records`` (``keep`` (N,) bool) as a subset CSV, atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows((r.path, r.label) for r, k in zip(records, keep.tolist(), strict=True)
                         if k)


def read_subset(path: Path) -> list[Record]:
    """The records of a subset CSV (``selected.csv`` of the ``select`` stage, ``subset.csv`` of
    the control), in file order, with their original class indices."""
    with path.open() as fh:
        return [Record(row["path"], int(row["label"])) for row in csv.DictReader(fh)]
