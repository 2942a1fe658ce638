"""Acquisition noise: Gaussian (additive), Rician (MRI magnitude), Poisson (photon counting),
speckle (ultrasound, multiplicative).

Each function has the corruption signature ``fn(x, param, rng, *, spatial_axes, value_range,
spacing)``; ``param`` is relative to the value range ``hi - lo`` (a [0, 1] image reads it
unchanged). Noise is drawn independently per element, so these four are the only corruptions
whose draws depend on the layout.
"""

from __future__ import annotations

from advonnx.corruptions import _ops
from advonnx.xp import namespace


def gaussian_noise(x, sigma, rng, *, spatial_axes, value_range, spacing=None):
    """x + N(0, (sigma * range)^2), independently per element (ImageNet-C, MedMNIST-C)."""
    lo, hi = value_range
    return x + (sigma * (hi - lo)) * _ops.normal(rng, x.shape, x)


def rician_noise(x, sigma, rng, *, spatial_axes, value_range, spacing=None):
    """MRI magnitude noise: |(x - lo) + n1 + i n2| + lo with n1, n2 ~ N(0, (sigma * range)^2).

    Complex Gaussian noise on the (real, zero-phase) signal followed by a magnitude image
    (Gudbjartsson & Patz 1995): a positive bias in the dark background, Gaussian-like in bright
    tissue.
    """
    xp = namespace(x)
    lo, hi = value_range
    s = sigma * (hi - lo)
    real = (x - lo) + s * _ops.normal(rng, x.shape, x)
    imag = s * _ops.normal(rng, x.shape, x)
    return xp.sqrt(real * real + imag * imag) + lo


def poisson_noise(x, photons, rng, *, spatial_axes, value_range, spacing=None):
    """Shot noise of a photon-counting detector (CT, X-ray) with ``photons`` counts at ``hi``.

    lambda = photons * (x - lo) / range; the count is drawn from N(lambda, lambda), the normal
    approximation of Poisson(lambda) with its exact mean and variance (the run's generator has
    no Poisson draw on the device), and mapped back: x' = lo + count / photons * range.
    """
    xp = namespace(x)
    lo, hi = value_range
    r = hi - lo
    lam = xp.clip(x - lo, 0.0, None) * (photons / r)
    counts = lam + xp.sqrt(lam) * _ops.normal(rng, x.shape, x)
    return lo + counts * (r / photons)


def speckle_noise(x, sigma, rng, *, spatial_axes, value_range, spacing=None):
    """Ultrasound speckle: multiplicative x' = lo + (x - lo) * (1 + sigma * n), n ~ N(0, 1)."""
    lo, _ = value_range
    return x + (x - lo) * (sigma * _ops.normal(rng, x.shape, x))
