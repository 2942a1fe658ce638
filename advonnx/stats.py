"""Small-sample statistics for robust-accuracy figures: intervals for a proportion and paired tests.

Everything here is exact or closed-form (no resampling) and depends on numpy and the standard
library only, so the leaderboard, the report and the gradient-masking checks (``masking.py``)
can call it on any row table. Proportions are counts ``k`` of ``n`` samples (e.g. robust
samples); results are plain floats.
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_interval", "mcnemar_exact", "binomial_two_sided"]


def wilson_interval(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) for a proportion ``k / n``, as fractions in [0, 1].

    Unlike the normal-approximation (Wald) interval it is never empty or of zero width at
    ``k = 0`` or ``k = n`` (0 robust of 100 gives about [0, 0.037], not [0, 0]). Equals
    ``statsmodels.stats.proportion.proportion_confint(k, n, alpha=1 - confidence,
    method="wilson")``. ``n = 0`` gives (NaN, NaN).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips (p = 1/2):
    ``min(1, 2 · P(X ≤ min(k, n − k)))``, the convention of the exact McNemar test."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    m = min(k, n - k)
    # log-space terms: exact for the sample counts of a run (n up to millions) without overflow
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(m + 1)
    ]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2.0 * tail)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar test on paired binary outcomes (McNemar 1947): two-sided p-value that the
    discordant counts ``b`` (pairs positive only under the first condition) and ``c`` (only under
    the second) come from a fair split, i.e. a binomial test of ``min(b, c)`` in ``b + c`` trials
    at 1/2. Concordant pairs do not enter. Equals ``statsmodels.stats.contingency_tables.mcnemar(
    [[., b], [c, .]], exact=True).pvalue``; 1.0 when there are no discordant pairs."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    return binomial_two_sided(min(b, c), b + c)
