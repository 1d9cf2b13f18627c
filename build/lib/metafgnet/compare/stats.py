"""The statistics of a comparison over seeds.

Per condition (arm, level of the compared factor): mean, sample standard deviation (``n − 1``)
and ``n`` over seeds. The effect of the factor is the *paired* difference ``B − A`` between its
two levels at the same seed (same data split, same source network, same batch order up to the
switch), so seed-to-seed variation shared by both levels cancels. Its 95 % confidence interval is
Student's t over the ``n`` paired differences: ``mean ± t_{0.975, n−1} · sd / √n``. It assumes the
differences are roughly normal and the seeds independent; with ``n = 3`` the t quantile is
4.30, so only large effects exclude zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy.stats import t as student_t


def describe(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}``; ``std`` is the sample deviation (NaN below two values)."""
    n = len(values)
    return {"mean": statistics.fmean(values) if n else math.nan,
            "std": statistics.stdev(values) if n > 1 else math.nan, "n": n}


def paired_difference(a: dict[int, float], b: dict[int, float],
                      confidence: float = 0.95) -> dict[str, float]:
    """``b − a`` over the seeds both have: mean, std, n, and the t confidence interval
    (``low``, ``high``; NaN with fewer than two pairs)."""
    seeds = sorted(set(a) & set(b))
    diffs = [b[s] - a[s] for s in seeds]
    out = describe(diffs)
    n = out["n"]
    if n > 1:
        half = student_t.ppf(0.5 + confidence / 2, n - 1) * out["std"] / math.sqrt(n)
        out.update(low=out["mean"] - half, high=out["mean"] + half)
    else:
        out.update(low=math.nan, high=math.nan)
    out["seeds"] = seeds
    return out


def ratio_of_means(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """``mean(numerator) / mean(denominator)`` (a cost ratio); NaN when either is empty or the
    denominator's mean is zero."""
    if not numerator or not denominator:
        return math.nan
    den = statistics.fmean(denominator)
    return statistics.fmean(numerator) / den if den else math.nan
