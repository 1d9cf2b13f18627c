"""The control for selection (arm ``metafgnet_random``): a seeded random subset of the selected
subset's size, and the subset files both arms train from."""

import csv

import pytest
import torch

from metafgnet.data import Record
from metafgnet.params import SelectParams
from metafgnet.selection import random_subset, read_subset, select, write_subset


def test_random_subset_has_the_size_asked_and_depends_on_its_seed_alone():
    masks = [random_subset(1000, 800, seed) for seed in (0, 0, 1)]
    assert all(m.dtype == torch.bool and m.shape == (1000,) for m in masks)
    assert [int(m.sum()) for m in masks] == [800, 800, 800]
    assert torch.equal(masks[0], masks[1])              # same seed: same subset, any call
    torch.manual_seed(123)                              # the global RNG plays no part
    assert torch.equal(random_subset(1000, 800, 0), masks[0])
    assert not torch.equal(masks[0], masks[2])          # another seed: another subset
    # a pinned draw: the subset stays the same on every machine and torch release that keeps
    # torch.randperm's CPU stream
    assert torch.nonzero(random_subset(10, 3, 0)).flatten().tolist() == [1, 4, 7]


def test_random_subset_differs_from_the_selection_it_copies_in_size_only():
    scores = torch.linspace(1.0, 0.0, 500)              # the selection keeps the first 400
    selected = select(scores, SelectParams(criterion="ratio", ratio=0.8))
    control = random_subset(500, int(selected.sum()), seed=0)
    assert int(control.sum()) == int(selected.sum()) == 400
    assert not torch.equal(control, selected)
    assert control[400:].any()                          # it draws from the images left out too


@pytest.mark.parametrize("size", [-1, 11])
def test_random_subset_larger_than_the_set_is_refused(size):
    with pytest.raises(ValueError, match=f"{size} images cannot be drawn from 10"):
        random_subset(10, size, 0)


def test_subset_file_round_trip(tmp_path):
    records = [Record(f"c{i % 3}/{i}.png", i % 3) for i in range(6)]
    keep = torch.tensor([True, False, True, True, False, False])
    write_subset(tmp_path / "subset.csv", records, keep)
    with (tmp_path / "subset.csv").open() as fh:
        assert next(csv.reader(fh)) == ["path", "label"]
    assert read_subset(tmp_path / "subset.csv") == [records[0], records[2], records[3]]
