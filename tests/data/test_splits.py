"""The validation split: stratified, deterministic in its seed, never empties a class."""

from __future__ import annotations

from collections import Counter

import pytest

from metafgnet.data import DataError, Record, split_validation
from metafgnet.data.splits import val_count

NAMES = ["a", "b", "c", "d"]


def records(sizes: list[int]) -> list[Record]:
    return [Record(f"{c}/{k:03d}.png", c) for c, n in enumerate(sizes) for k in range(n)]


def test_stratified_and_every_class_keeps_a_training_image():
    train = records([10, 5, 2, 1])
    kept, val = split_validation(train, NAMES, 0.2, seed=0)
    assert Counter(r.label for r in val) == {0: 2, 1: 1}  # 2 x 0.2 rounds to 0
    assert Counter(r.label for r in kept) == {0: 8, 1: 4, 2: 2, 3: 1}
    assert sorted(kept + val) == sorted(train) and not set(kept) & set(val)


def test_large_fraction_still_leaves_one_training_image():
    kept, val = split_validation(records([3, 4]), NAMES[:2], 0.9, seed=0)
    assert Counter(r.label for r in kept) == {0: 1, 1: 1}
    assert [val_count(n, 0.5) for n in (1, 2, 3, 5)] == [0, 1, 2, 3]


def test_deterministic_in_seed_and_independent_of_listing_order():
    train = records([10, 10, 10, 10])
    first = split_validation(train, NAMES, 0.3, seed=4)
    assert split_validation(list(reversed(train)), NAMES, 0.3, seed=4) == first
    other = split_validation(train, NAMES, 0.3, seed=5)
    assert other[1] != first[1]
    assert Counter(r.label for r in other[1]) == Counter(r.label for r in first[1])


def test_class_without_training_images_is_an_error():
    with pytest.raises(DataError, match=r"1 target classes have no training image: c"):
        split_validation(records([3, 3, 0, 3]), NAMES, 0.2, seed=0)
