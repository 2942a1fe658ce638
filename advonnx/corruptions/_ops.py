"""Array-namespace building blocks shared by the corruptions.

Everything here takes its namespace from its array arguments (``advonnx.xp.namespace``), so
the corruptions run unchanged on NumPy, CuPy and array-api-strict. Index metadata that depends
only on shapes (resampling positions, block edges) is computed in plain Python and moved to the
array's device; no NumPy call touches image data.
"""

from __future__ import annotations

import math

import array_api_compat

from advonnx.xp import batch_view, namespace

# Pixel-sized parameters (blur sigma, motion length, k-space translation) are stated for a
# 224-pixel field of view, as in ImageNet-C and MedMNIST-C, and scaled to the image's size
# (see fov_scale).
REFERENCE_SIZE = 224


def device(x):
    return array_api_compat.device(x)


def complex_dtype(x):
    xp = namespace(x)
    return xp.complex64 if x.dtype == xp.float32 else xp.complex128


def to_complex(x):
    return namespace(x).astype(x, complex_dtype(x))


def along(v, axis: int, ndim: int):
    """1-D ``v`` reshaped to broadcast along ``axis`` of an ``ndim``-D array."""
    xp = namespace(v)
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return xp.reshape(v, tuple(shape))


def per_sample(v, ndim: int):
    """Per-sample ``v`` (N,) reshaped to broadcast against an ``ndim``-D batch."""
    return batch_view(v, ndim)


def crop(x, axis: int, start: int, stop: int):
    index = tuple(slice(start, stop) if a == axis else slice(None) for a in range(x.ndim))
    return x[index]


def arange_like(x, n: int, *, dtype=None):
    xp = namespace(x)
    return xp.arange(n, dtype=dtype if dtype is not None else x.dtype, device=device(x))


def index_array(x, values: list[int]):
    xp = namespace(x)
    return xp.asarray(values, dtype=xp.int64, device=device(x))


def value_array(x, values: list[float]):
    xp = namespace(x)
    return xp.asarray(values, dtype=x.dtype, device=device(x))


def fft_freq(x, n: int):
    """``fftfreq(n)`` in cycles per sample, in the real dtype and on the device of ``x``."""
    xp = namespace(x)
    k = arange_like(x, n)
    return xp.where(k < (n + 1) // 2, k, k - n) / n


def wrapped_offsets(x, n: int):
    """Signed offsets of a length-``n`` circular grid: 0, 1, ..., -2, -1 (kernels in FFT order)."""
    xp = namespace(x)
    k = arange_like(x, n)
    return xp.where(k <= n // 2, k, k - n)


def edge_pad(x, axis: int, before: int, after: int):
    """Replicate the border samples of ``axis``: ``before`` in front, ``after`` behind."""
    n = x.shape[axis]
    idx = [min(max(i, 0), n - 1) for i in range(-before, n + after)]
    return namespace(x).take(x, index_array(x, idx), axis=axis)


def fov_scale(x, spatial_axes) -> float:
    """Factor from pixels at the 224-pixel reference to pixels of this image.

    Linear (size / 224) from 224 px up: the same field of view gets the same blur. Below 224 px
    it is sqrt(size / 224): ImageNet-C's own 32-pixel tables (CIFAR-10-C: Gaussian blur sigma
    0.4 ... 1 against 1 ... 6 at 224 px) shrink much less than linearly, so that a small image's
    mildest severity still changes it. ``size`` is the largest in-plane side.
    """
    h, w = spatial_axes[-2:]
    ratio = max(x.shape[h], x.shape[w]) / REFERENCE_SIZE
    return ratio if ratio >= 1.0 else math.sqrt(ratio)


# -- filtering ---------------------------------------------------------------------------


# Up to this many taps a kernel is applied as a sum of shifted copies (a few multiply-adds per
# voxel, no complex intermediates); longer ones by FFT. Both equal the same linear convolution.
DIRECT_TAPS = 33


def gaussian_filter1d(x, axis: int, sigma: float):
    """Gaussian smoothing along ``axis`` (truncated at 3 sigma, edge-replicated borders).

    ``sigma`` in samples of that axis. Short kernels are summed directly, long ones by FFT.
    """
    if sigma <= 0:
        return x
    xp = namespace(x)
    n = x.shape[axis]
    radius = max(1, math.ceil(3.0 * sigma))
    padded = edge_pad(x, axis, radius, radius)
    if 2 * radius + 1 <= DIRECT_TAPS:
        taps = [math.exp(-(k * k) / (2.0 * sigma * sigma)) for k in range(-radius, radius + 1)]
        total = math.fsum(taps)
        out = crop(padded, axis, 0, n) * (taps[0] / total)
        for k in range(1, 2 * radius + 1):
            out = out + crop(padded, axis, k, k + n) * (taps[k] / total)
        return out
    length = n + 2 * radius
    d = wrapped_offsets(x, length)
    g = xp.exp(-(d * d) / (2.0 * sigma * sigma))
    g = xp.where(xp.abs(d) <= radius, g, xp.zeros_like(g))
    g = g / xp.sum(g)
    spectrum = xp.fft.rfft(padded, axis=axis) * along(xp.fft.rfft(g), axis, x.ndim)
    out = xp.fft.irfft(spectrum, n=length, axis=axis)
    return crop(out, axis, radius, radius + n)


def convolve_inplane(x, kernel, axes: tuple[int, int], pad: int):
    """Per-sample 2-D convolution over ``axes`` with edge-replicated borders.

    ``kernel`` has shape (N, Hp, Wp) with Hp, Wp = size + 2*pad along ``axes`` and holds the
    kernel in FFT order (offset 0 at index 0, negative offsets wrapped to the end).
    """
    xp = namespace(x)
    h, w = axes
    nh, nw = x.shape[h], x.shape[w]
    padded = edge_pad(edge_pad(x, h, pad, pad), w, pad, pad)
    hp, wp = nh + 2 * pad, nw + 2 * pad
    kf = xp.fft.rfftn(kernel, axes=(1, 2))
    shape = [1] * x.ndim
    shape[0], shape[h], shape[w] = kernel.shape[0], kf.shape[1], kf.shape[2]
    spectrum = xp.fft.rfftn(padded, axes=(h, w)) * xp.reshape(kf, tuple(shape))
    out = xp.fft.irfftn(spectrum, s=(hp, wp), axes=(h, w))
    return crop(crop(out, h, pad, pad + nh), w, pad, pad + nw)


def fourier_shift(z, axis: int, shift, *, spectrum: bool = False):
    """Complex ``z`` translated along ``axis`` by ``shift`` samples (circular, sub-pixel).

    ``shift`` broadcasts against ``z`` with size 1 along ``axis`` (it may vary along the other
    axes, which is how a shear is made). ``spectrum=True`` returns the result's FFT along
    ``axis`` instead (saves the inverse transform when the caller wants k-space anyway).
    """
    xp = namespace(z)
    n = z.shape[axis]
    real = xp.real(z)
    f = along(fft_freq(real, n), axis, z.ndim)
    phase = xp.astype(f * shift, z.dtype) * (-2j * math.pi)
    shifted = xp.fft.fft(z, axis=axis) * xp.exp(phase)
    return shifted if spectrum else xp.fft.ifft(shifted, axis=axis)


# -- resampling --------------------------------------------------------------------------


def cell_edges(n: int, m: int) -> list[int]:
    """Edges of ``m`` cells tiling ``n`` samples: cell i holds samples edges[i] .. edges[i+1]-1."""
    return [(i * n) // m for i in range(m + 1)]


def area_resize(x, axis: int, m: int):
    """Downsample ``axis`` to ``m`` cells (see :func:`cell_edges`), each the mean of its samples."""
    n = x.shape[axis]
    if m >= n:
        return x
    xp = namespace(x)
    edges = cell_edges(n, m)
    cs = xp.cumulative_sum(x, axis=axis, include_initial=True)
    upper = xp.take(cs, index_array(x, edges[1:]), axis=axis)
    lower = xp.take(cs, index_array(x, edges[:-1]), axis=axis)
    counts = value_array(x, [float(b - a) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return (upper - lower) / along(counts, axis, x.ndim)


def cells_to_samples_nearest(x, axis: int, n: int):
    """Inverse of :func:`area_resize` by replication: every sample takes its own cell's value."""
    m = x.shape[axis]
    if m == n:
        return x
    edges = cell_edges(n, m)
    idx = [i for i in range(m) for _ in range(edges[i], edges[i + 1])]
    return namespace(x).take(x, index_array(x, idx), axis=axis)


def cells_to_samples_linear(x, axis: int, n: int):
    """Inverse of :func:`area_resize` by linear interpolation between the cells' centres
    (constant beyond the first and last centre)."""
    m = x.shape[axis]
    if m == n:
        return x
    xp = namespace(x)
    edges = cell_edges(n, m)
    centres = [(edges[i] + edges[i + 1] - 1) / 2.0 for i in range(m)]
    i0, wts = [], []
    k = 0
    for j in range(n):
        while k + 1 < m - 1 and centres[k + 1] <= j:
            k += 1
        if m == 1:
            i0.append(0)
            wts.append(0.0)
            continue
        t = (j - centres[k]) / (centres[k + 1] - centres[k])
        i0.append(k)
        wts.append(min(max(t, 0.0), 1.0))
    i1 = [min(i + 1, m - 1) for i in i0]
    w = along(value_array(x, wts), axis, x.ndim)
    a = xp.take(x, index_array(x, i0), axis=axis)
    b = xp.take(x, index_array(x, i1), axis=axis)
    return a + (b - a) * w


# -- randomness --------------------------------------------------------------------------
# advonnx.xp.Random draws on the host (NumPy PCG64) or, for CuPy arrays, on the device. For
# other namespaces (array-api-strict) we draw on the host and move the result with asarray, so
# that a given seed gives the same numbers on NumPy and array-api-strict.


def _native(like) -> bool:
    xp = namespace(like)
    return array_api_compat.is_numpy_namespace(xp) or array_api_compat.is_cupy_namespace(xp)


def _move(host, like, dtype):
    return namespace(like).asarray(host, dtype=dtype, device=device(like))


def normal(rng, shape, like):
    if _native(like):
        return rng.normal(shape, like=like)
    return _move(rng.normal(shape), like, like.dtype)


def uniform(rng, shape, low, high, like):
    if _native(like):
        return rng.uniform(shape, low, high, like=like)
    return _move(rng.uniform(shape, low, high), like, like.dtype)


def rademacher(rng, shape, like):
    if _native(like):
        return rng.rademacher(shape, like=like)
    return _move(rng.rademacher(shape), like, like.dtype)


def integers(rng, low, high, shape, like):
    xp = namespace(like)
    if _native(like):
        return xp.astype(rng.integers(low, high, shape, like=like), xp.int64)
    return _move(rng.integers(low, high, shape), like, xp.int64)
