"""Exact binomial statistics without SciPy: the regularized incomplete beta function, binomial
tails, the two-sided binomial test and Clopper–Pearson bounds.

advonnx's runtime needs NumPy only; these are the few exact quantities its certificates and tests
of proportions rest on. ``betainc`` is the continued fraction of Numerical Recipes (Press et al.,
3rd ed., §6.4, modified Lentz) evaluated to double precision; quantiles are found by bisection on
it (monotone in p), to 1e-15 absolute.
"""

from __future__ import annotations

import math

_TINY = 1e-300
_EPS = 1e-16


def _betacf(a: float, b: float, x: float) -> float:
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)`` for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0 (got {a}, {b})")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return betainc(k, n - k + 1, p)


def binom_test_two_sided(k: int, n: int) -> float:
    """Two-sided exact binomial test of ``p = 1/2`` (SciPy's ``binomtest(k, n).pvalue``): the
    probability of an outcome at least as far from n/2 as ``k``."""
    if n == 0:
        return 1.0
    far = max(k, n - k)
    if 2 * far == n:
        return 1.0
    return min(1.0, 2.0 * binom_sf(far, n, 0.5))


def _bisect(f, target: float) -> float:
    """The p in [0, 1] with increasing ``f(p) = target``."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper–Pearson lower bound on a proportion with ``k`` of ``n``:
    the ``alpha`` quantile of Beta(k, n - k + 1) (0 when k = 0). Equals
    ``statsmodels.stats.proportion.proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]``,
    the bound of Cohen et al.'s ``core.py``."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1 (got k={k}, n={n})")
    if k == 0:
        return 0.0
    return _bisect(lambda p: betainc(k, n - k + 1, p), alpha)


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper–Pearson upper bound (1 when k = n)."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1 (got k={k}, n={n})")
    if k == n:
        return 1.0
    return 1.0 - clopper_pearson_lower(n - k, n, alpha)
