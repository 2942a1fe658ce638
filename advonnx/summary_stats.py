"""Intervals and paired tests for the figures the leaderboard, the report and ``compare`` show.

Samples may come in groups (patient, subject, volume, study: the ``group`` column of the rows;
a row without one is its own group). Samples of one group are not independent, so every
resampling here resamples *groups* (cluster bootstrap, Davison & Hinkley 1997 §3.8), seeded.

- Proportions (clean / robust accuracy, the worst case over attacks): the Wilson score interval
  (never empty or of zero width at 0 % or 100 %) on the *effective* sample size
  ``n / deff``, where the design effect ``deff`` is the ratio of the cluster-robust variance of
  the proportion to the binomial one (Kish 1965), kept within [1, n / groups]. With one sample
  per group this is exactly Wilson's interval; at 0 % or 100 % (where no within-group
  correlation can be estimated) the effective size is the number of groups.
- Means of other values (Dice, mean corruption accuracy, mCE, differences): percentile cluster
  bootstrap, ``BOOTSTRAP`` resamples of the groups.
- Paired comparisons of two models on the same samples: the difference with a paired cluster
  bootstrap interval (both models' outcomes of a resampled group travel together), the exact
  McNemar test on discordant samples (binary outcomes; it treats samples as independent), and
  for equivalence the two one-sided paired t-tests (TOST, Schuirmann 1987) on the per-group mean
  differences.

The intervals describe test-set sampling only: which samples (patients) happened to be in the
test set. They say nothing about how strong the attack was; attack-based robust accuracy stays
an upper bound whatever its interval.

NumPy and the standard library only (Student's t from ``binomial.betainc``).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from .binomial import betainc
from .stats import mcnemar_exact

BOOTSTRAP = 1000
CONFIDENCE = 0.95
EQUIVALENCE_MARGIN = 0.02  # ±2 points: "equal clean" in the contrast test
ALPHA = 0.05

PROPORTION_METHOD = "Wilson score, effective n for groups (design effect)"
BOOTSTRAP_METHOD = f"percentile cluster bootstrap over groups ({BOOTSTRAP} resamples, seed 0)"


def group_codes(groups, n: int | None = None) -> np.ndarray:
    """Integer codes 0..G-1 of ``groups`` (any hashable ids; None: each sample its own group)."""
    if groups is None:
        return np.arange(n or 0)
    keys = [str(g) for g in groups]
    _, codes = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    return codes.reshape(-1)


def n_groups(groups) -> int:
    return int(len(set(groups))) if groups is not None else 0


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``p`` of ``n`` (n may be fractional)."""
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(max(p * (1 - p), 0.0) / n + z2n / (4 * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def effective_n(values, groups=None) -> float:
    """``n / deff`` for a proportion of binary ``values`` in ``groups`` (see module docstring):
    n with one sample per group, between the number of groups and n otherwise."""
    y = np.asarray(values, dtype=np.float64)
    n = y.size
    codes = group_codes(groups, n)
    g = int(codes.max()) + 1 if n else 0
    if n == 0 or g == n:
        return float(n)
    p = y.mean()
    if p in (0.0, 1.0) or g < 2:
        return float(g)
    sums = np.bincount(codes, weights=y, minlength=g)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)
    v_cluster = g / (g - 1) * np.sum((sums - p * sizes) ** 2) / n**2
    deff = v_cluster / (p * (1 - p) / n)
    return float(n / min(max(deff, 1.0), n / g))


def proportion_interval(values, groups=None, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of the share of True in ``values``: Wilson on the effective sample size."""
    y = np.asarray(values, dtype=np.float64)
    if y.size == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    return _wilson(float(y.mean()), effective_n(y, groups), z)


def _resample_counts(g: int, seed: int, b: int) -> np.ndarray:
    """(b, g) matrix: how often each group is drawn in each of ``b`` cluster resamples."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, g, size=(b, g))
    counts = np.zeros((b, g), dtype=np.float64)
    np.add.at(counts, (np.arange(b)[:, None], idx), 1.0)
    return counts


def cluster_bootstrap(
    values, groups=None, *, seed: int = 0, b: int = BOOTSTRAP, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile cluster-bootstrap interval of the mean of ``values`` (NaN ignored): groups are
    drawn with replacement, each bringing all its samples; the mean of a resample is its sum
    over its size. NaN for fewer than 2 values or fewer than 2 groups."""
    y = np.asarray(values, dtype=np.float64)
    codes = group_codes(groups, y.size)
    keep = ~np.isnan(y)
    y, codes = y[keep], codes[keep]
    if y.size < 2:
        return (math.nan, math.nan)
    _, codes = np.unique(codes, return_inverse=True)
    g = int(codes.max()) + 1
    if g < 2:
        return (math.nan, math.nan)
    sums = np.bincount(codes, weights=y, minlength=g)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)
    counts = _resample_counts(g, seed, b)
    means = (counts @ sums) / (counts @ sizes)
    tail = 100 * (1 - confidence) / 2
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def interval(values, groups=None, *, proportion: bool) -> tuple[float, float]:
    """The interval the summaries show: Wilson (proportions) or the cluster bootstrap."""
    return proportion_interval(values, groups) if proportion else cluster_bootstrap(values, groups)


def t_sf(t: float, df: float) -> float:
    """``P(T > t)`` for Student's t with ``df`` degrees of freedom (exact, via betainc)."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _group_means(d: np.ndarray, groups) -> np.ndarray:
    codes = group_codes(groups, d.size)
    g = int(codes.max()) + 1 if d.size else 0
    if g == d.size:
        return d
    return np.bincount(codes, weights=d, minlength=g) / np.bincount(codes, minlength=g)


def tost_paired(a, b, groups=None, *, margin: float = EQUIVALENCE_MARGIN) -> dict[str, float]:
    """Two one-sided paired t-tests that the mean of ``a − b`` lies within ``±margin``.

    With groups the units are the per-group mean differences (one per group); with one sample per
    group this equals ``statsmodels.stats.weightstats.ttost_paired(a, b, -margin, margin)``.
    ``p`` (the larger one-sided p-value) below 0.05 means equivalent within the margin."""
    d = _group_means(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), groups)
    k = d.size
    mean = float(d.mean()) if k else math.nan
    if k < 2:
        return {"p": math.nan, "p_lower": math.nan, "p_upper": math.nan, "diff": mean, "df": 0, "margin": margin}
    se = float(d.std(ddof=1)) / math.sqrt(k)
    df = k - 1
    if se == 0:
        inside = -margin < mean < margin
        p_lo = p_up = 0.0 if inside else 1.0
    else:
        p_lo = t_sf((mean + margin) / se, df)  # H0: mean <= -margin
        p_up = t_sf(-(mean - margin) / se, df)  # H0: mean >= +margin
    return {"p": max(p_lo, p_up), "p_lower": p_lo, "p_upper": p_up, "diff": mean, "df": df, "margin": margin}


def paired_t(a, b, groups=None) -> float:
    """Two-sided paired t-test p-value of ``a − b`` on the per-group mean differences."""
    d = _group_means(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), groups)
    if d.size < 2:
        return math.nan
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    if se == 0:
        return 1.0 if d.mean() == 0 else 0.0
    return min(1.0, 2 * t_sf(abs(float(d.mean())) / se, d.size - 1))


def paired_difference(a, b, groups=None, *, binary: bool, seed: int = 0) -> dict[str, Any]:
    """``mean(a) − mean(b)`` for two models' outcomes on the same samples (aligned arrays), its
    paired cluster-bootstrap interval, and a p-value: exact McNemar for binary outcomes (``b`` /
    ``c`` discordant counts), else the paired t-test on per-group means."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    out: dict[str, Any] = {
        "n": int(x.size),
        "groups": n_groups(groups) if groups is not None else int(x.size),
        "a": float(x.mean()) if x.size else math.nan,
        "b": float(y.mean()) if y.size else math.nan,
    }
    out["diff"] = out["a"] - out["b"]
    out["ci"] = cluster_bootstrap(x - y, groups, seed=seed)
    if binary:
        only_a = int(np.sum((x > 0.5) & (y < 0.5)))
        only_b = int(np.sum((x < 0.5) & (y > 0.5)))
        out.update(only_a=only_a, only_b=only_b, p=mcnemar_exact(only_a, only_b), test="exact McNemar")
    else:
        out.update(p=paired_t(x, y, groups), test="paired t on group means")
    return out


__all__ = [
    "proportion_interval",
    "effective_n",
    "cluster_bootstrap",
    "interval",
    "tost_paired",
    "paired_t",
    "paired_difference",
    "t_sf",
    "group_codes",
    "PROPORTION_METHOD",
    "BOOTSTRAP_METHOD",
]
