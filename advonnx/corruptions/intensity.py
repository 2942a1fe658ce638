"""Intensity changes: MRI bias field, gamma, brightness, contrast.

Gamma, brightness and contrast fold MedMNIST-C's ``*_up`` and ``*_down`` pairs into one
corruption: each sample gets a direction (up or down) drawn from the run's generator, and the
severity sets how far it goes. All parameters are relative to the value range.
"""

from __future__ import annotations

import itertools
import math

from advonnx.corruptions import _ops
from advonnx.xp import namespace

BIAS_FIELD_ORDER = 3


def _monomials(ndim: int, order: int):
    """Exponent tuples of all monomials of total degree <= ``order`` in ``ndim`` variables."""
    return [e for e in itertools.product(range(order + 1), repeat=ndim) if sum(e) <= order]


def bias_field(x, coefficient, rng, *, spatial_axes, value_range, spacing=None):
    """Smooth multiplicative field exp(P(r)), P a polynomial of degree 3 (TorchIO BiasField).

    Coordinates run over [-1, 1] on every spatial axis; each monomial's coefficient is uniform
    in ±``coefficient`` per sample (TorchIO RandomBiasField: order 3, coefficients ±0.5). The
    field multiplies the signal above ``lo``.
    """
    xp = namespace(x)
    lo, _ = value_range
    n = x.shape[0]
    nd = x.ndim
    exponents = _monomials(len(spatial_axes), BIAS_FIELD_ORDER)
    coeffs = _ops.uniform(rng, (n, len(exponents)), -1.0, 1.0, x) * coefficient
    coords = []
    for a in spatial_axes:
        size = x.shape[a]
        c = _ops.arange_like(x, size) * (2.0 / max(size - 1, 1)) - 1.0
        coords.append(_ops.along(c, a, nd))
    log_field = None
    for t, powers in enumerate(exponents):
        term = _ops.per_sample(coeffs[:, t], nd)
        for c, p in zip(coords, powers, strict=True):
            if p:
                term = term * c**p
        log_field = term if log_field is None else log_field + term
    return lo + (x - lo) * xp.exp(log_field)


def gamma(x, gamma_value, rng, *, spatial_axes, value_range, spacing=None):
    """x' = lo + range * u ** g, u = (x - lo) / range, g = gamma or 1/gamma (drawn per sample).

    MedMNIST-C gamma_corr_up / gamma_corr_down (torchvision ``adjust_gamma``), folded into one.
    """
    xp = namespace(x)
    lo, hi = value_range
    r = hi - lo
    sign = _ops.rademacher(rng, (x.shape[0],), x)
    g = xp.exp(sign * math.log(gamma_value))
    u = xp.clip((x - lo) / r, 0.0, 1.0)
    return lo + r * xp.pow(u, _ops.per_sample(g, x.ndim))


def brightness(x, amount, rng, *, spatial_axes, value_range, spacing=None):
    """x' = lo + (x - lo) * (1 ± amount), sign drawn per sample (MedMNIST-C brightness_up/down,
    PIL ``ImageEnhance.Brightness`` factors 1.1 ... 1.5 and 0.9 ... 0.5)."""
    lo, _ = value_range
    factor = 1.0 + amount * _ops.rademacher(rng, (x.shape[0],), x)
    return lo + (x - lo) * _ops.per_sample(factor, x.ndim)


def contrast(x, amount, rng, *, spatial_axes, value_range, spacing=None):
    """x' = m + (x - m) * (1 ± amount), m the sample's mean, sign drawn per sample
    (MedMNIST-C contrast_up/down, PIL ``ImageEnhance.Contrast``)."""
    xp = namespace(x)
    axes = tuple(range(1, x.ndim))
    m = xp.mean(x, axis=axes, keepdims=True)
    factor = 1.0 + amount * _ops.rademacher(rng, (x.shape[0],), x)
    return m + (x - m) * _ops.per_sample(factor, x.ndim)
