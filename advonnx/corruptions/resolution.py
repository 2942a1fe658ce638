"""Resolution loss: down-then-up resampling (thick slices, low-field scanners) and pixelation."""

from __future__ import annotations

from advonnx.corruptions import _ops


def downsample_upsample(x, factor, rng, *, spatial_axes, value_range, spacing=None):
    """Area-average down by ``factor``, then linear interpolation back (TorchIO Anisotropy).

    Every spatial axis loses resolution. With ``spacing`` the target is an isotropic voxel of
    ``factor`` times the finest spacing, so already-coarse axes (thick slices) lose less:
    axis a is downsampled by max(1, factor * min(spacing) / spacing[a]).
    """
    finest = None if spacing is None else min(spacing)
    for i, axis in enumerate(spatial_axes):
        f = factor if spacing is None else max(1.0, factor * finest / spacing[i])
        n = x.shape[axis]
        m = max(1, round(n / f))
        if m < n:
            x = _ops.cells_to_samples_linear(_ops.area_resize(x, axis, m), axis, n)
    return x


def pixelate(x, scale, rng, *, spatial_axes, value_range, spacing=None):
    """Box-average to ``scale`` of the in-plane size, then replicate each cell's mean over its
    pixels (ImageNet-C, MedMNIST-C: PIL box down, nearest up). 3-D volumes are pixelated slice
    by slice in the (H, W) plane."""
    for axis in spatial_axes[-2:]:
        n = x.shape[axis]
        m = max(1, round(n * scale))
        if m < n:
            x = _ops.cells_to_samples_nearest(_ops.area_resize(x, axis, m), axis, n)
    return x
