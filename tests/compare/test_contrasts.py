"""The paired contrasts of `metafgnet compare` on known inputs: bootstrap intervals against the
exact bootstrap distribution, power figures against published and closed-form values, and the
summary's contrasts, cost rule, table and figure."""

import itertools
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from metafgnet.compare.grid import Grid
from metafgnet.compare.stats import (
    bootstrap_interval,
    minimum_detectable_effect,
    paired_difference,
    seeds_needed,
    t_test_power,
)
from metafgnet.compare.summary import (
    ARM_CONTRASTS,
    contrast_rows,
    markdown,
    measured_alone,
    summarise,
    write,
)
from metafgnet.compare.tracking import _metrics
from metafgnet.evaluation import ARMS

Z = norm.ppf(0.975) + norm.ppf(0.8)  # 1.95996 + 0.84162: the normal-approximation multiplier


def _exact_percentiles(diffs: list[float]) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of the mean over all n^n equally likely resamples."""
    means = [statistics.fmean(c) for c in itertools.product(diffs, repeat=len(diffs))]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_bootstrap_interval_of_three_pairs_is_the_range_of_the_differences():
    # diffs 0.10, 0.20, 0.05: each extreme resample (all three the same pair) has probability
    # 1/27 > 2.5 %, so both percentiles are the extreme differences
    d = paired_difference({0: 0.50, 1: 0.60, 2: 0.70}, {0: 0.60, 1: 0.80, 2: 0.75})
    assert (d["boot_low"], d["boot_high"]) == (pytest.approx(0.05), pytest.approx(0.20))
    assert d["ahead"] == 1.0


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    a = [0.50, 0.61, 0.42, 0.70, 0.55]
    diffs = [0.12, -0.03, 0.07, 0.01, 0.20]
    b = [x + d for x, d in zip(a, diffs, strict=True)]
    low, high = bootstrap_interval(a, b)
    exact_low, exact_high = _exact_percentiles(diffs)        # 0.006, 0.146
    assert (low, high) == (pytest.approx(exact_low, abs=2e-3), pytest.approx(exact_high, abs=2e-3))
    assert bootstrap_interval(a, b) == (low, high)            # fixed seed: repeatable


def test_bootstrap_resamples_pairs_not_each_side_alone():
    """Seed effects shared by both members cancel: shifting each pair leaves the interval."""
    a, b = [0.5, 0.6, 0.7, 0.4], [0.55, 0.62, 0.78, 0.41]
    shift = [0.3, -0.2, 0.1, 0.25]
    moved = bootstrap_interval([x + s for x, s in zip(a, shift, strict=True)],
                               [y + s for y, s in zip(b, shift, strict=True)])
    assert moved == pytest.approx(bootstrap_interval(a, b))
    with pytest.raises(ValueError, match="4 values of a against 3 of b"):
        bootstrap_interval(a, b[:3])


def test_ties_are_not_ahead_and_constant_differences_have_a_point_interval():
    d = paired_difference({0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.6, 1: 0.5, 2: 0.6})
    assert d["ahead"] == pytest.approx(2 / 3)
    same = paired_difference({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert (same["boot_low"], same["boot_high"]) == (0.0, 0.0)
    assert math.isnan(same["mde"]) and math.isnan(same["seeds_for_one_point"])
    one = paired_difference({0: 0.5}, {0: 0.7})
    assert math.isnan(one["boot_low"]) and math.isnan(one["mde"])


def test_seeds_needed_matches_the_published_paired_t_table():
    # two-sided paired t-test, alpha 0.05, power 0.8, standardised effect 0.5: 34 pairs
    # (actual power 0.8078), the standard table value (Cohen 1988; G*Power)
    assert seeds_needed(0.01, 0.02) == 34
    assert t_test_power(0.01, 0.02, 34) == pytest.approx(0.8078, abs=1e-4)
    assert t_test_power(0.01, 0.02, 33) < 0.8
    # the normal approximation ceil((Z sd / effect)^2) = 32 is the lower bound the t-test exceeds
    assert math.ceil((Z * 0.02 / 0.01) ** 2) == 32


def test_power_figures_approach_the_normal_closed_form_with_many_seeds():
    n, sd = 10_000, 0.03
    assert minimum_detectable_effect(sd, n) == pytest.approx(Z * sd / math.sqrt(n), rel=1e-3)
    effect = 0.001
    closed = norm.cdf(effect * math.sqrt(n) / sd - norm.ppf(0.975))
    assert t_test_power(effect, sd, n) == pytest.approx(closed, abs=1e-3)


def test_minimum_detectable_effect_is_where_power_reaches_0_8():
    for n, sd in ((2, 0.05), (3, 0.02), (10, 0.04)):
        mde = minimum_detectable_effect(sd, n)
        assert t_test_power(mde, sd, n) == pytest.approx(0.8, abs=1e-9)
        assert mde > Z * sd / math.sqrt(n)          # the t-test needs more than the normal bound
    # three seeds: the t quantile 4.30 makes the detectable effect about 3.3 sd
    assert minimum_detectable_effect(1.0, 3) == pytest.approx(3.26, abs=0.01)
    assert seeds_needed(0.01, 100.0) == math.inf


def _record(values: dict[str, float], jobs: int | None, s_per_iter: float = 1.0) -> dict:
    arms = {arm: {"test_top1": v, "val_top1": v, "test_mean_class_acc": v / 2}
            for arm, v in values.items()}
    cost = {"seconds_per_iter": s_per_iter, "images_per_s": 1.0, "peak_memory_mib": 10.0}
    record = {"params": {}, "metrics": {"metrics/evaluate.json": arms,
                                        "metrics/meta_train.json": {"cost": cost},
                                        "metrics/meta_train_selected.json": {"cost": cost}}}
    if jobs is not None:
        record["jobs"] = jobs
    return record


def test_arm_contrasts_are_paired_within_each_execution():
    grid = Grid("meta.order", ("first", "second"), seeds=(0, 1, 2))
    value = {"finetune": [0.40, 0.50, 0.45], "joint": [0.42, 0.47, 0.50],
             "metafgnet": [0.44, 0.55, 0.46], "metafgnet_selected": [0.50, 0.56, 0.52],
             "metafgnet_random": [0.47, 0.53, 0.52]}
    records = {p.name: _record({arm: v[int(p.value("seed"))] + (0.01 if p.value("meta.order")
                                                                  == "second" else 0)
                                for arm, v in value.items()}, jobs=1)
               for p in grid.points()}
    (cond,) = summarise(grid, records)["conditions"]
    for first, second in ARM_CONTRASTS:
        got = cond["contrasts"]["second"][f"{first}-{second}"]
        expected = paired_difference(dict(enumerate(value[second])), dict(enumerate(value[first])))
        assert got["test_top1"]["mean"] == pytest.approx(expected["mean"])
        assert got["test_top1"]["low"] == pytest.approx(expected["low"])
        assert got["test_mean_class_acc"]["mean"] == pytest.approx(expected["mean"] / 2)
    assert cond["contrasts"]["first"]["metafgnet-finetune"]["test_top1"]["ahead"] == 1.0
    assert cond["difference"]["metafgnet"]["test_top1"]["mean"] == pytest.approx(0.01)
    labels = [label for label, _ in contrast_rows(cond, "meta.order", ["first", "second"])]
    assert labels[:2] == ["metafgnet: meta.order second − first",
                          "metafgnet_selected: meta.order second − first"]
    assert "metafgnet − finetune (meta.order=second)" in labels and len(labels) == 11
    # the selection criterion's own effect: selected against a random subset of its size
    assert "metafgnet_selected − metafgnet_random (meta.order=first)" in labels
    criterion = cond["contrasts"]["first"]["metafgnet_selected-metafgnet_random"]["test_top1"]
    assert criterion["mean"] == pytest.approx((0.03 + 0.03 + 0.00) / 3)
    assert criterion["ahead"] == pytest.approx(2 / 3)
    logged = _metrics(summarise(grid, records))     # what the MLflow run of the comparison gets
    assert logged["contrast_diff/second/test_top1/metafgnet-finetune"] == pytest.approx(
        cond["contrasts"]["second"]["metafgnet-finetune"]["test_top1"]["mean"])
    assert "contrast_diff_boot_low/first/test_mean_class_acc/metafgnet_selected-metafgnet" in logged
    text = markdown(summarise(grid, records), "metafgnet compare")
    assert "| metafgnet − joint (meta.order=first) | test_mean_class_acc |" in text
    assert "seeds for 1 point" in text and "noncentral t" in text


def test_costs_of_points_that_shared_cores_are_left_out(tmp_path: Path):
    assert measured_alone({"jobs": 1}) and not measured_alone({"jobs": 2})
    assert not measured_alone({})                          # not recorded: not trusted
    assert measured_alone({"cores_shared": False, "jobs": 2})
    assert not measured_alone({"cores_shared": True, "jobs": 1})
    grid = Grid("meta.order", ("first", "second"), seeds=(0, 1))
    acc = dict.fromkeys(ARMS, 0.5)
    records = {}
    for p in grid.points():
        alone = p.value("seed") == "0"
        slow = 10.0 if not alone else 1.0               # the shared point ran slower
        factor = 1.5 if p.value("meta.order") == "second" else 1.0
        records[p.name] = _record(acc, 1 if alone else 2, slow * factor)
    summary = summarise(grid, records)
    (cond,) = summary["conditions"]
    first_cost = cond["cost"]["meta_train"]["first"]["seconds_per_iter"]
    assert (first_cost["n"], first_cost["mean"]) == (1, 1.0)
    assert cond["cost_ratio"]["meta_train"]["seconds_per_iter"] == pytest.approx(1.5)
    assert cond["cost_left_out"] == {"first": 1, "second": 1}
    text = write(summary, tmp_path, "metafgnet compare --jobs 2")
    assert "left out as run beside others or not recorded: first 1, second 1" in text
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    # nothing measured alone: no cost, no ratio, and the table says so rather than 'nan'
    shared = {n: {**r, "jobs": 2} for n, r in records.items()}
    (cond,) = summarise(grid, shared)["conditions"]
    assert cond["cost"]["meta_train"]["first"]["seconds_per_iter"]["n"] == 0
    assert math.isnan(cond["cost_ratio"]["meta_train"]["seconds_per_iter"])
    text = write(summarise(grid, shared), tmp_path, "metafgnet compare --jobs 2")
    assert "nan" not in text.lower()
