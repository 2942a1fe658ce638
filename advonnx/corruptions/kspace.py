"""MRI k-space artefacts after TorchIO (Pérez-García et al. 2021): ghosting, spike, motion.

The image (shifted so that ``lo`` is zero signal) is taken to k-space with the namespace's FFT,
modified, and brought back; as in TorchIO the real part of the inverse transform is kept. The
phase-encoding axis is H (the second-to-last spatial axis of the layout; rows of an axial
slice), so ghosts and motion artefacts run along H. Only FFTs along the axes a corruption
touches are taken: a modification that depends on k_H alone is a 1-D filter along H.
"""

from __future__ import annotations

import math

from advonnx.corruptions import _ops
from advonnx.xp import namespace

MAX_SPIKES = 4
MAX_MOVEMENTS = 4


def ghosting(x, param, rng, *, spatial_axes, value_range, spacing=None):
    """Every n-th phase-encoding line of k-space scaled by ``1 - intensity`` (TorchIO Ghosting).

    ``param = (n, intensity)``. Multiplying k-space by a comb of period n along k_H adds copies
    of the image shifted by multiples of H/n along H (Fourier shift theorem): the ghosts. The
    comb sits at signed frequencies 0, ±n, ±2n, ... so it stays Hermitian-symmetric whether or
    not n divides H (TorchIO's ``spectrum[::n]`` is not, and then clips low frequencies on one
    side only). The central line (k_H = 0) is kept, as TorchIO's ``restore_center`` does, so the
    mean along each column is preserved. Deterministic: ``rng`` is not used.
    """
    xp = namespace(x)
    n_ghosts, intensity = param
    lo, _ = value_range
    axis = spatial_axes[-2]
    size = x.shape[axis]
    k = _ops.arange_like(x, size, dtype=xp.int64)
    k = xp.abs(xp.where(k < (size + 1) // 2, k, k - size))  # |signed frequency index|
    comb = (k % int(n_ghosts) == 0) & (k != 0)
    factor = _ops.along(1.0 - intensity * xp.astype(comb, x.dtype), axis, x.ndim)
    spectrum = xp.fft.fft(_ops.to_complex(x - lo), axis=axis)
    return xp.real(xp.fft.ifft(spectrum * factor, axis=axis)) + lo


def spike(x, param, rng, *, spatial_axes, value_range, spacing=None):
    """Herringbone artefact: ``k`` spikes of ``intensity`` x the spectrum's peak (TorchIO Spike).

    ``param = (k, intensity)``. Spike positions are uniform over k-space (all spatial axes),
    drawn per sample; each spike adds a plane wave of amplitude ``intensity * mean(x - lo)``
    to the image, i.e. stripes across the whole field of view. The first spikes' positions do
    not depend on ``k``, so higher severities add spikes to the same ones.
    """
    xp = namespace(x)
    n_spikes, intensity = param
    lo, _ = value_range
    n = x.shape[0]
    axes = tuple(spatial_axes)
    positions = [_ops.integers(rng, 0, x.shape[a], (n, MAX_SPIKES), x) for a in axes]
    if int(n_spikes) == 0:
        return x
    shifted = x - lo
    if bool(xp.all(shifted >= 0)):
        # A spike at k adds (A / n_voxels) exp(2 pi i k.r / N) to the image; its real part is a
        # cosine. For a non-negative image the spectrum's peak is the DC term, sum(x - lo), so
        # A / n_voxels = intensity * mean(x - lo): the same image without two FFTs of the volume.
        amplitude = intensity * xp.mean(shifted, axis=axes, keepdims=True)
        waves = None
        for s in range(int(n_spikes)):
            phase = None  # in cycles; (r k mod N) / N per axis is exact in integers
            for a, pos in zip(axes, positions, strict=True):
                grid = _ops.along(_ops.arange_like(x, x.shape[a], dtype=xp.int64), a, x.ndim)
                cycles = (grid * _ops.per_sample(pos[:, s], x.ndim)) % x.shape[a]
                term = xp.astype(cycles, x.dtype) / x.shape[a]
                phase = term if phase is None else phase + term
            wave = xp.cos(2.0 * math.pi * phase)
            waves = wave if waves is None else waves + wave
        return x + amplitude * waves
    spectrum = xp.fft.fftn(_ops.to_complex(shifted), axes=axes)
    peak = xp.max(xp.abs(spectrum), axis=axes, keepdims=True)
    mask = None
    for s in range(int(n_spikes)):
        hit = None
        for a, pos in zip(axes, positions, strict=True):
            grid = _ops.along(_ops.arange_like(x, x.shape[a], dtype=xp.int64), a, x.ndim)
            on = grid == _ops.per_sample(pos[:, s], x.ndim)
            hit = on if hit is None else hit & on
        hit = xp.astype(hit, x.dtype)
        mask = hit if mask is None else mask + hit
    spectrum = spectrum + _ops.to_complex(intensity * peak * mask)
    return xp.real(xp.fft.ifftn(spectrum, axes=axes)) + lo


def _rigid_inplane_spectrum(z, h, w, theta, ty, tx):
    """FFT along H of complex image ``z`` rotated by ``theta`` (radians) about the centre of the
    (H, W) plane and translated by (ty, tx) pixels, per sample, by Fourier shears and shifts.

    A rotation is three shears (Paeth 1986): along W by -tan(theta/2) * (h - ch), along H by
    sin(theta) * (w - cw), along W again. Each shear is a per-line Fourier shift, so the whole
    motion is FFTs and phase ramps; borders wrap (k-space motion is circular anyway). The
    translation along W joins the last W shear (shifts along one axis add) and the one along H
    comes last, left in k-space for the caller: 7 one-axis FFT passes instead of 11.
    """
    xp = namespace(z)
    real = xp.real(z)
    nd = z.ndim
    ch = _ops.along(_ops.arange_like(real, z.shape[h]) - (z.shape[h] - 1) / 2.0, h, nd)
    cw = _ops.along(_ops.arange_like(real, z.shape[w]) - (z.shape[w] - 1) / 2.0, w, nd)
    a = _ops.per_sample(-xp.tan(theta / 2.0), nd)
    b = _ops.per_sample(xp.sin(theta), nd)
    z = _ops.fourier_shift(z, w, a * ch)
    z = _ops.fourier_shift(z, h, b * cw)
    z = _ops.fourier_shift(z, w, a * ch + _ops.per_sample(tx, nd))
    return _ops.fourier_shift(z, h, _ops.per_sample(ty, nd), spectrum=True)


def kspace_motion(x, param, rng, *, spatial_axes, value_range, spacing=None):
    """Patient motion during acquisition, as TorchIO RandomMotion (after Shaw et al. 2019).

    ``param = (degrees, translation, movements)``: the patient takes ``movements`` rigid
    in-plane poses (rotation uniform in ±degrees, translation uniform in ±translation pixels at
    224 px along H and W) at times spread evenly over the scan (jittered by ±30 % of a step).
    k-space is filled line by line along the phase-encoding axis H in acquisition order; each
    segment of lines comes from the pose held at that time, and the segment holding the k-space
    centre comes from the original pose (TorchIO's ``sort_spectra``).
    """
    xp = namespace(x)
    degrees, translation, movements = param
    movements = int(movements)
    lo, _ = value_range
    n = x.shape[0]
    nd = x.ndim
    h, w = spatial_axes[-2:]
    scale = _ops.fov_scale(x, spatial_axes)

    # Draw the largest parameter set regardless of severity: severities share their draws.
    angles = _ops.uniform(rng, (n, MAX_MOVEMENTS), -1.0, 1.0, x) * math.radians(degrees)
    shifts = _ops.uniform(rng, (n, MAX_MOVEMENTS, 2), -1.0, 1.0, x) * (translation * scale)
    jitter = _ops.uniform(rng, (n, MAX_MOVEMENTS), -0.3, 0.3, x)

    step = 1.0 / (movements + 1)
    times = [step * (j + 1) + step * jitter[:, j] for j in range(movements)]  # each (N,)
    # acquisition time of each k_H line: lines are read from -0.5 to 0.5 cycles/sample
    t = _ops.along(_ops.fft_freq(x, x.shape[h]) + 0.5, h, nd)
    bounds = [None, *[_ops.per_sample(tj, nd) for tj in times], None]
    segments = []
    for j in range(movements + 1):
        inside = xp.ones_like(t) > 0
        if bounds[j] is not None:
            inside = inside & (t >= bounds[j])
        if bounds[j + 1] is not None:
            inside = inside & (t < bounds[j + 1])
        segments.append(xp.astype(inside, x.dtype))
    # segment holding the centre (t = 0.5): how many movement times fall at or before 0.5
    centre = sum(xp.astype(tj <= 0.5, x.dtype) for tj in times)
    centre = _ops.per_sample(centre, nd)

    def is_centre(j):
        return xp.astype(centre == float(j), x.dtype)

    y = _ops.to_complex(x - lo)
    original = xp.fft.fft(y, axis=h)
    original_mask = sum(segments[j] * is_centre(j) for j in range(movements + 1))
    result = original * _ops.to_complex(original_mask)
    for j in range(1, movements + 1):
        moved = _rigid_inplane_spectrum(y, h, w, angles[:, j - 1], shifts[:, j - 1, 0], shifts[:, j - 1, 1])
        # pose j fills its own segment, or segment 0 when its own segment holds the centre
        mask = segments[j] * (1.0 - is_centre(j)) + segments[0] * is_centre(j)
        result = result + moved * _ops.to_complex(mask)
    return xp.real(xp.fft.ifft(result, axis=h)) + lo
