"""Blur: isotropic Gaussian (defocus, partial volume) and linear motion blur.

Convolutions are FFTs of edge-replicated images, so they run in any array namespace. Sigmas and
lengths are in pixels of a 224-pixel field of view (as ImageNet-C / MedMNIST-C state them) and
scaled to the image's in-plane size.
"""

from __future__ import annotations

import math

from advonnx.corruptions import _ops
from advonnx.xp import namespace


def axis_sigmas(x, sigma_px: float, spatial_axes, spacing) -> list[float]:
    """Per-axis sigma (in voxels) of a blur that is isotropic in physical units.

    ``sigma_px`` is in pixels of the finest axis; with ``spacing`` (one value per spatial axis,
    ordered D, H, W) coarser axes get proportionally less blur, measured in their own voxels.
    """
    s = sigma_px * _ops.fov_scale(x, spatial_axes)
    if spacing is None:
        return [s] * len(spatial_axes)
    finest = min(spacing)
    return [s * finest / sp for sp in spacing]


def gaussian_blur(x, sigma, rng, *, spatial_axes, value_range, spacing=None):
    """Separable Gaussian blur over every spatial axis (sigma in pixels at 224 px)."""
    for axis, s in zip(spatial_axes, axis_sigmas(x, sigma, spatial_axes, spacing), strict=True):
        x = _ops.gaussian_filter1d(x, axis, s)
    return x


def motion_blur(x, param, rng, *, spatial_axes, value_range, spacing=None):
    """Linear motion blur in the (H, W) plane, one random direction per sample.

    ``param = (radius, sigma)`` as in ImageNet-C (ImageMagick's motion blur): a one-sided line
    kernel of ``2 * radius + 1`` taps with Gaussian weights of ``sigma`` along it, both in pixels
    at 224 px. The direction is uniform over the full circle; each tap is splatted bilinearly so
    that oblique lines are not staircased. 3-D volumes are blurred slice by slice.
    """
    xp = namespace(x)
    radius, sigma = param
    scale = _ops.fov_scale(x, spatial_axes)
    taps = int(math.floor(2 * radius * scale)) + 1
    sig = max(sigma * scale, 1e-3)
    n = x.shape[0]
    h, w = spatial_axes[-2:]
    pad = taps + 1

    theta = _ops.uniform(rng, (n,), -math.pi, math.pi, x)
    d = _ops.arange_like(x, taps)
    weights = xp.exp(-(d * d) / (2.0 * sig * sig))
    weights = weights / xp.sum(weights)
    dy = _ops.per_sample(xp.sin(theta), 2) * d  # (N, taps)
    dx = _ops.per_sample(xp.cos(theta), 2) * d
    uh = _ops.wrapped_offsets(x, x.shape[h] + 2 * pad)
    uw = _ops.wrapped_offsets(x, x.shape[w] + 2 * pad)
    # Bilinear splat of tap t at (dy, dx): hat(u - dy) * hat(v - dx); the sum over taps is a
    # batched matrix product (N, Hp, taps) @ (N, taps, Wp).
    a = xp.clip(1.0 - xp.abs(uh[None, None, :] - dy[:, :, None]), 0.0, None)
    a = a * weights[None, :, None]
    b = xp.clip(1.0 - xp.abs(uw[None, None, :] - dx[:, :, None]), 0.0, None)
    kernel = xp.matmul(xp.matrix_transpose(a), b)
    return _ops.convolve_inplane(x, kernel, (h, w), pad)
