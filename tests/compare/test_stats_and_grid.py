"""`metafgnet compare` arithmetic on known inputs, and its grid: parsing, validation, names."""

import math
from pathlib import Path

import pytest

from metafgnet.compare.grid import Grid, GridError, parse_grid, validate
from metafgnet.compare.stats import describe, paired_difference, ratio_of_means
from metafgnet.compare.summary import summarise
from metafgnet.evaluation import ARMS

T_975_2 = 4.302652729749464  # Student t quantile, 0.975, 2 degrees of freedom (tables)


def test_paired_difference_is_student_t_over_seed_pairs():
    a = {0: 0.50, 1: 0.60, 2: 0.70}
    b = {0: 0.60, 1: 0.80, 2: 0.75, 9: 0.99}   # seed 9 has no pair: ignored
    d = paired_difference(a, b)
    diffs = [0.10, 0.20, 0.05]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = T_975_2 * sd / math.sqrt(3)
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(0.116666667)
    assert d["std"] == pytest.approx(sd) == pytest.approx(0.0763763)
    assert (d["low"], d["high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert d["low"] < 0 < d["high"]     # three seeds: this effect does not exclude zero


def test_one_pair_gives_no_interval_and_describe_uses_sample_std():
    d = paired_difference({0: 0.5}, {0: 0.7})
    assert d["mean"] == pytest.approx(0.2) and math.isnan(d["low"]) and math.isnan(d["high"])
    s = describe([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "n": 3}
    assert math.isnan(describe([4.0])["std"])
    assert ratio_of_means([3.0, 5.0], [2.0, 2.0]) == 2.0
    assert math.isnan(ratio_of_means([1.0], []))


def test_default_grid_is_both_orders_over_three_seeds():
    grid = parse_grid([])
    assert grid.factor == "meta.order" and grid.levels == ("first", "second")
    names = [p.name for p in grid.points()]
    assert len(names) == len(set(names)) == 6
    assert "cmp-meta_order-first-seed-1" in names
    point = grid.points()[0]
    assert point.set_args() == ["-S", "meta.order=first", "-S", "seed=0"]


def test_further_swept_keys_make_conditions():
    grid = parse_grid(["select.ratio=0.5,0.8,1.0", "meta.order=first,second"], seeds=[0, 1])
    assert grid.factor == "meta.order" and grid.others == (("select.ratio", ("0.5", "0.8", "1.0")),)
    assert len(grid.points()) == 3 * 2 * 2
    assert {grid.condition(p) for p in grid.points()} == {(("select.ratio", v),)
                                                         for v in ("0.5", "0.8", "1.0")}


@pytest.mark.parametrize("sets,seeds,message", [
    (["meta.order"], [0], "expected KEY=V1"),
    (["seed=1,2"], [0], "--seeds"),
    (["meta.order=first,first"], [0], "repeated value"),
    (["meta.order=first,second", "meta.order=first,second"], [0], "at most once"),
    ([], [1, 1], "distinct seeds"),
])
def test_bad_grid_options_say_what_is_wrong(sets, seeds, message):
    with pytest.raises(GridError, match=message):
        parse_grid(sets, seeds)


def test_validation_names_the_point_the_key_and_the_allowed_values():
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    validate(parse_grid([]), params)                   # the default grid is valid
    with pytest.raises(GridError) as err:
        validate(parse_grid(["meta.order=first,third"], seeds=[0]), params)
    assert "cmp-meta_order-third-seed-0" in str(err.value) and "meta.order" in str(err.value)
    assert "second" in str(err.value)                  # the allowed values
    with pytest.raises(GridError, match="nosuch.*no such params section"):
        validate(parse_grid(["nosuch.key=1,2"], seeds=[0]), params)


def _record(acc: dict[str, float], s_per_iter: float) -> dict:
    arms = {arm: {"test_top1": acc[arm], "val_top1": acc[arm] / 2, "test_mean_class_acc": 0.0}
            for arm in ARMS}
    cost = {"seconds_per_iter": s_per_iter, "images_per_s": 1.0, "peak_memory_mib": 10.0}
    return {"params": {}, "jobs": 1, "metrics": {"metrics/evaluate.json": arms,
                                      "metrics/meta_train.json": {"cost": cost},
                                      "metrics/meta_train_selected.json": {"cost": cost}}}


def test_summary_pairs_seeds_and_divides_costs():
    grid = Grid("meta.order", ("first", "second"), seeds=(0, 1, 2))
    first = {0: 0.50, 1: 0.60, 2: 0.70}
    second = {0: 0.60, 1: 0.80, 2: 0.75}
    records = {}
    for p in grid.points():
        order, seed = p.value("meta.order"), int(p.value("seed"))
        value = (first if order == "first" else second)[seed]
        records[p.name] = _record({arm: value for arm in ARMS}, 1.0 if order == "first" else 1.6)
    (cond,) = summarise(grid, records)["conditions"]
    assert cond["arms"]["metafgnet"]["first"]["test_top1"]["mean"] == pytest.approx(0.6)
    assert cond["arms"]["metafgnet"]["second"]["val_top1"]["n"] == 3
    diff = cond["difference"]["metafgnet"]["test_top1"]
    assert diff == paired_difference(first, second)
    assert cond["cost_ratio"]["meta_train"]["seconds_per_iter"] == pytest.approx(1.6)
