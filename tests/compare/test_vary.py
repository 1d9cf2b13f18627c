"""`metafgnet compare --vary`: which sources of randomness move with each seed, the overrides
each grid point gets, and the summary's account of what varied and what was held fixed."""

from pathlib import Path

import pytest

from metafgnet.compare.grid import GridError, parse_grid, parse_vary, validate
from metafgnet.compare.summary import markdown, summarise
from metafgnet.evaluation import ARMS

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_by_default_only_the_method_seed_moves():
    assert parse_vary("seed") == ("seed",)
    grid = parse_grid([], seeds=[3])
    assert grid.vary == ("seed",)
    assert grid.points()[0].set_args() == ["-S", "meta.order=first", "-S", "seed=3"]
    assert grid.points()[0].name == "cmp-meta_order-first-seed-3"   # names of earlier grids


def test_vary_split_and_source_sets_their_seeds_on_every_point():
    vary = parse_vary("source, seed,split")           # any order: stored in a fixed one
    assert vary == ("split", "source", "seed")
    grid = parse_grid([], seeds=[0, 1], vary=vary)
    point = grid.points()[1]
    assert point.set_args() == ["-S", "meta.order=first", "-S", "data.split_seed=1",
                                "-S", "pretrain.seed=1", "-S", "seed=1"]
    assert point.value("seed") == "1"
    names = [p.name for p in grid.points()]
    assert len(set(names)) == 4 and "cmp-meta_order-first-seed-1" not in names
    validate(grid, PARAMS)                             # every override is a real params key


@pytest.mark.parametrize("text", ["split", "seed,seed", "seed,weather", ""])
def test_bad_vary_names_the_choices(text):
    with pytest.raises(GridError, match="seed, split|split, source"):
        parse_vary(text)


def test_a_moved_key_cannot_also_be_swept():
    with pytest.raises(GridError, match="--vary split already sets it"):
        parse_grid(["data.split_seed=0,1"], seeds=[0], vary=("split", "seed"))
    parse_grid(["data.split_seed=0,1"], seeds=[0])     # held fixed per condition: allowed


def _record(seed: int, split: int, source: int) -> dict:
    arms = {arm: {"test_top1": 0.5, "val_top1": 0.5, "test_mean_class_acc": 0.5} for arm in ARMS}
    return {"params": {"seed": seed, "data": {"split_seed": split},
                       "pretrain": {"seed": source}},
            "jobs": 1, "metrics": {"metrics/evaluate.json": arms}}


def test_summary_names_the_sources_that_varied_and_the_values_of_the_fixed_ones():
    grid = parse_grid([], seeds=[0, 1], vary=("split", "seed"))
    records = {p.name: _record(int(p.value("seed")), int(p.value("data.split_seed")), 7)
               for p in grid.points()}
    summary = summarise(grid, records)
    assert [v["key"] for v in summary["randomness"]["varied"]] == ["data.split_seed", "seed"]
    (fixed,) = summary["randomness"]["fixed"]
    assert (fixed["source"], fixed["key"], fixed["values"]) == ("source", "pretrain.seed", [7])
    text = markdown(summary, "metafgnet compare --vary seed,split")
    assert ("Varied from seed to seed: the validation split (`data.split_seed`); meta-training, "
            "joint training and fine-tuning (`seed`).") in text
    assert "Held fixed: the source network (pretraining) (`pretrain.seed` = 7)" in text
    everything = summarise(parse_grid([], seeds=[0], vary=("split", "source", "seed")),
                           {p.name: _record(0, 0, 0) for p in parse_grid(
                               [], seeds=[0], vary=("split", "source", "seed")).points()})
    assert everything["randomness"]["fixed"] == []
