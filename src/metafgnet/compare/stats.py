"""The statistics of a comparison over seeds.

Per condition (arm, level of the compared factor): mean, sample standard deviation (``n − 1``)
and ``n`` over seeds. Every claim is a *paired* contrast ``B − A``: two quantities measured at
the same seed (two levels of a factor for one arm, or two arms of one execution), so
seed-to-seed variation shared by both cancels. For the ``n`` paired differences
:func:`paired_difference` reports

- the mean and the 95 % Student-t interval ``mean ± t_{0.975, n−1} · sd / √n`` (assumes the
  differences roughly normal and the seeds independent; with ``n = 3`` the t quantile is 4.30,
  so only large effects exclude zero);
- a paired bootstrap interval: ``scipy.stats.bootstrap`` resampling the seeds (both members of a
  pair together), percentile method, :data:`BOOTSTRAP_RESAMPLES` resamples from a fixed seed.
  It makes no normality assumption but cannot reach beyond the observed differences, so at
  small ``n`` it is narrower than the t interval and covers less than its nominal 95 %;
- the share of seeds where ``B`` is ahead (``B − A > 0``; ties count as not ahead);
- the power figures of a two-sided paired t-test at ``alpha`` = 0.05 and power 0.8, from the
  *noncentral t* distribution (exact for that test, not the normal approximation): the
  minimum detectable effect at this ``n`` and the observed ``sd`` (:func:`minimum_detectable_effect`),
  and the seeds needed to detect an effect of one accuracy point, 0.01, at that ``sd``
  (:func:`seeds_needed`). Both treat the observed ``sd`` as the true one, which at small ``n``
  is itself uncertain; they are NaN without spread (``sd`` 0 or fewer than two pairs).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence

import numpy as np
from scipy.optimize import brentq
from scipy.stats import bootstrap, nct
from scipy.stats import t as student_t

ALPHA = 0.05
POWER = 0.8
ONE_POINT = 0.01  # one accuracy point (accuracies are fractions)
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
MAX_SEEDS = 100_000  # seeds_needed gives up (inf) beyond this


def describe(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}``; ``std`` is the sample deviation (NaN below two values)."""
    n = len(values)
    return {"mean": statistics.fmean(values) if n else math.nan,
            "std": statistics.stdev(values) if n > 1 else math.nan, "n": n}


def t_test_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test of ``n`` pairs whose differences have true mean
    ``effect`` and standard deviation ``sd``: ``P(|T| > t_{1−alpha/2, n−1})`` with ``T``
    noncentral t, ``n − 1`` degrees of freedom, noncentrality ``effect · √n / sd``."""
    df = n - 1
    crit = student_t.ppf(1 - alpha / 2, df)
    nc = effect * math.sqrt(n) / sd
    lower = float(nct.cdf(-crit, df, nc))   # scipy gives NaN far in the tail, where it is ~0
    return float(nct.sf(crit, df, nc)) + (0.0 if math.isnan(lower) else lower)


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The smallest true mean difference the paired t-test of ``n`` pairs detects with
    probability ``power`` when the differences have standard deviation ``sd``; NaN when
    ``n < 2`` or ``sd`` is not positive."""
    if n < 2 or not sd > 0:
        return math.nan
    high = sd / math.sqrt(n)
    while t_test_power(high, sd, n, alpha) < power:
        high *= 2
    return float(brentq(lambda e: t_test_power(e, sd, n, alpha) - power, 0.0, high,
                        xtol=1e-12 * sd))


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The fewest pairs (at least 2) with which the paired t-test detects a true mean
    difference ``effect`` with probability ``power`` when the differences have standard
    deviation ``sd``; NaN when ``sd`` is not positive, ``inf`` beyond :data:`MAX_SEEDS`."""
    if not sd > 0 or not effect > 0:
        return math.nan
    counts = range(2, MAX_SEEDS + 1)  # power increases with n: bisect for the first enough
    first = bisect.bisect_left(counts, True,
                               key=lambda n: t_test_power(effect, sd, n, alpha) >= power)
    return counts[first] if first < len(counts) else math.inf


def bootstrap_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(b − a)`` over pairs ``(a[i], b[i])``, resampling
    whole pairs (``scipy.stats.bootstrap(..., paired=True)``). NaN below two pairs."""
    if len(a) != len(b):
        raise ValueError(f"bootstrap_interval: {len(a)} values of a against {len(b)} of b")
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(diffs) < 2:
        return math.nan, math.nan
    if np.all(diffs == diffs[0]):   # no spread: every resample has the same mean
        return float(diffs[0]), float(diffs[0])
    res = bootstrap((np.asarray(a, dtype=float), np.asarray(b, dtype=float)),
                    lambda x, y, axis: np.mean(y - x, axis=axis), paired=True, vectorized=True,
                    confidence_level=confidence, method="percentile",
                    n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_difference(a: dict[int, float], b: dict[int, float],
                      confidence: float = 0.95) -> dict:
    """``b − a`` over the seeds both have: ``mean``, ``std``, ``n``, the t interval (``low``,
    ``high``), the bootstrap interval (``boot_low``, ``boot_high``), ``ahead`` (share of seeds
    with ``b > a``), ``mde`` and ``seeds_for_one_point`` (power figures, see the module), and
    ``seeds``. Intervals are NaN with fewer than two pairs."""
    seeds = sorted(set(a) & set(b))
    diffs = [b[s] - a[s] for s in seeds]
    out: dict = describe(diffs)
    n = out["n"]
    half = (student_t.ppf(0.5 + confidence / 2, n - 1) * out["std"] / math.sqrt(n) if n > 1
            else math.nan)
    out.update(low=out["mean"] - half, high=out["mean"] + half)
    out["boot_low"], out["boot_high"] = bootstrap_interval([a[s] for s in seeds],
                                                        [b[s] for s in seeds], confidence)
    out["ahead"] = sum(d > 0 for d in diffs) / n if n else math.nan
    out["mde"] = minimum_detectable_effect(out["std"], n)
    out["seeds_for_one_point"] = seeds_needed(ONE_POINT, out["std"])
    out["seeds"] = seeds
    return out


def ratio_of_means(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """``mean(numerator) / mean(denominator)`` (a cost ratio); NaN when either is empty or the
    denominator's mean is zero."""
    if not numerator or not denominator:
        return math.nan
    den = statistics.fmean(denominator)
    return statistics.fmean(numerator) / den if den else math.nan
