"""The validation split, carved from the target training set (never from test).

Stratified: each class gives ``round(val_fraction * n_c)`` of its ``n_c`` training images,
capped so that it keeps at least one for training. Which images go is drawn per class from a
generator seeded by ``(seed, class)``, after sorting the class's records by path, so the split
depends only on its seed and the set of files, not on listing order.
"""

from __future__ import annotations

import math

import numpy as np

from metafgnet.data.errors import DataError, short_list
from metafgnet.data.records import Record

_STREAM = 7301  # separates this generator from other users of the top-level seed


def val_count(n: int, val_fraction: float) -> int:
    """Validation images taken from a class with ``n`` training images (round half up)."""
    return max(0, min(n - 1, math.floor(val_fraction * n + 0.5)))


def split_validation(
    train: list[Record], class_names: list[str], val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Split ``train`` into ``(train_kept, val)``, both sorted by (label, path).

    Raises :class:`DataError` if a class has no training image at all.
    """
    by_class: list[list[Record]] = [[] for _ in class_names]
    for record in train:
        by_class[record.label].append(record)
    empty = [class_names[c] for c, recs in enumerate(by_class) if not recs]
    if empty:
        raise DataError(
            f"{len(empty)} target classes have no training image: {short_list(empty)}; every "
            "class needs at least one (check the split files, or skipped corrupt images)"
        )
    kept: list[Record] = []
    val: list[Record] = []
    for c, records in enumerate(by_class):
        records = sorted(records)
        n_val = val_count(len(records), val_fraction)
        chosen = set(np.random.default_rng([seed, _STREAM, c]).permutation(len(records))[:n_val])
        for i, record in enumerate(records):
            (val if i in chosen else kept).append(record)
    return kept, val
