"""Resolution loss: down-then-up resampling (thick slices, low-field scanners) and pixelation."""

from __future__ import annotations

from advonnx.corruptions import _ops
from advonnx.xp import namespace


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


#: pixelate's kept fraction of the in-plane size, severity 1..5 (ImageNet-C)
PIXELATE_SCALES = (0.6, 0.5, 0.4, 0.3, 0.25)


def pixelate_edges(n: int, scale: float, ladder=PIXELATE_SCALES) -> list[int]:
    """Cell edges of ``n`` samples at ``scale``: about ``round(n * scale)`` cells, nested across
    the severity ladder. The coarsest scale of ``ladder`` at or below ``scale`` tiles the axis
    evenly; each finer scale splits the largest cells of the next coarser one (spread evenly
    among equals) until it has its count. Every edge of a coarser scale is an edge of every
    finer one, so each severity's cells are unions of the previous severity's cells: the
    result is an orthogonal projection onto a smaller subspace, and the L2 distance to the
    clean image cannot shrink from one severity to the next, at any image size."""
    chain = sorted({t for t in ladder if t < scale} | {scale})
    counts = [max(1, min(n, round(n * t))) for t in chain]
    edges = _ops.cell_edges(n, counts[0])
    for m in counts[1:]:
        while len(edges) - 1 < m:
            sizes = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
            big = max(sizes)
            if big < 2:
                break
            largest = [i for i, size in enumerate(sizes) if size == big]
            need = m - (len(edges) - 1)
            pick = (
                largest
                if need >= len(largest)
                else [largest[int((j + 0.5) * len(largest) / need)] for j in range(need)]
            )
            edges = sorted(set(edges) | {edges[i] + sizes[i] // 2 for i in pick})
    return edges


def _block_means(x, axis: int, edges: list[int]):
    """Every sample along ``axis`` replaced by the mean of its cell (``edges``)."""
    xp = namespace(x)
    cs = xp.cumulative_sum(x, axis=axis, include_initial=True)
    upper = xp.take(cs, _ops.index_array(x, edges[1:]), axis=axis)
    lower = xp.take(cs, _ops.index_array(x, edges[:-1]), axis=axis)
    counts = _ops.value_array(x, [float(b - a) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    cells = (upper - lower) / _ops.along(counts, axis, x.ndim)
    owner = [i for i in range(len(edges) - 1) for _ in range(edges[i], edges[i + 1])]
    return xp.take(cells, _ops.index_array(x, owner), axis=axis)


def pixelate(x, scale, rng, *, spatial_axes, value_range, spacing=None):
    """Box-average to ``scale`` of the in-plane size, then replicate each cell's mean over its
    pixels (ImageNet-C, MedMNIST-C: PIL box down, nearest up). 3-D volumes are pixelated slice
    by slice in the (H, W) plane. Cells come from :func:`pixelate_edges` (nested across
    severities), so distance to the clean image grows with severity at any size, 8 x 8 too."""
    for axis in spatial_axes[-2:]:
        n = x.shape[axis]
        edges = pixelate_edges(n, scale)
        if len(edges) - 1 < n:
            x = _block_means(x, axis, edges)
    return x
