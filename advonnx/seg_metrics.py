"""Segmentation metrics per sample and class: Dice, IoU, pixel accuracy, HD95 (host only).

- Dice ``2|A∩B| / (|A|+|B|)`` and IoU ``|A∩B| / |A∪B|`` (from :mod:`advonnx.metrics`): 1 when
  the class is absent from both masks, 0 when it is present in one only.
- HD95 (also for the per-timestep masks of 1-D signals, in samples or seconds): the larger of
  the two directed 95th percentiles of surface distances,
  ``max(P95_{a∈∂A} d(a, ∂B), P95_{b∈∂B} d(b, ∂A))``, in mm. Surfaces are SimpleITK's
  ``LabelContour`` (face connectivity) of each class mask; distances are Euclidean between
  pixel centers in physical units (``SignedMaurerDistanceMap`` with the image spacing) and
  percentiles interpolate linearly (NumPy's default). Spacing comes from the image's metadata
  (SimpleITK readers); ``.npz`` data have none and are measured at 1 mm per pixel. HD95 is
  undefined (NaN) when the class is empty in either mask; such cases are counted by
  :func:`hd95_undefined` and left out of means.

HD95 runs on the host with SimpleITK: keep it out of attack loops (the runner calls it once
per sample on the final predictions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np

from .metrics import confusion_overlap, pixel_accuracy
from .xp import to_numpy

__all__ = ["confusion_overlap", "hd95", "hd95_class", "hd95_undefined", "mean_hd95", "pixel_accuracy"]


def _surface_distance_map(mask: np.ndarray, spacing: Sequence[float]):
    """(surface mask, distance-to-surface map) of one binary mask, in physical units."""
    import SimpleITK as sitk

    if mask.ndim == 1:  # a signal's per-timestep mask: a one-row image (SimpleITK needs >= 2-D)
        surface, dist = _surface_distance_map(mask[None, :], (1.0, *tuple(spacing)))
        return surface[0], dist[0]
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing([float(s) for s in reversed(tuple(spacing))])  # SimpleITK orders axes x, y, z
    contour = sitk.LabelContour(img, fullyConnected=False)
    dist = sitk.SignedMaurerDistanceMap(contour, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    surface = sitk.GetArrayFromImage(contour) > 0
    return surface, np.maximum(sitk.GetArrayFromImage(dist), 0.0)


def hd95_class(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """HD95 in mm between two binary masks of one image (NaN if either is empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() or not b.any():
        return math.nan
    spacing = tuple(spacing) if spacing is not None else (1.0,) * a.ndim
    if len(spacing) != a.ndim:
        raise ValueError(f"spacing {spacing} does not match a {a.ndim}-D mask")
    sa, da = _surface_distance_map(a, spacing)
    sb, db = _surface_distance_map(b, spacing)
    if not sa.any() or not sb.any():
        # a mask filling the whole image has no contour inside it: let the image border bound it
        a, b = np.pad(a, 1), np.pad(b, 1)
        sa, da = _surface_distance_map(a, spacing)
        sb, db = _surface_distance_map(b, spacing)
    return float(max(np.percentile(db[sa], 95), np.percentile(da[sb], 95)))


def hd95(
    pred,
    ref,
    num_classes: int,
    spacing: Sequence[float] | Sequence[Sequence[float]] | None = None,
    *,
    background: int | None = 0,
):
    """(N, C) HD95 per sample and class (mm); the ``background`` column is NaN.

    ``spacing``: one tuple for all samples (numpy axis order of one label map), one per sample,
    or None for 1 mm per pixel.
    """
    p, r = to_numpy(pred), to_numpy(ref)
    n = p.shape[0]
    per_sample = spacing is not None and len(spacing) == n and not np.isscalar(spacing[0])
    rows = cast("Sequence[Sequence[float]]", spacing) if per_sample else None
    one = None if per_sample else cast("Sequence[float] | None", spacing)
    out = np.full((n, num_classes), math.nan)
    for i in range(n):  # host metric per image; SimpleITK works one image at a time
        sp = rows[i] if rows is not None else one
        for c in range(num_classes):
            if c != background:
                out[i, c] = hd95_class(p[i] == c, r[i] == c, sp)
    return out


def mean_hd95(values: np.ndarray, *, background: int | None = 0) -> np.ndarray:
    """Per-sample mean over the classes where HD95 is defined (NaN if none is)."""
    v = np.asarray(values, dtype=np.float64)
    if background is not None:
        v = np.delete(v, background, axis=1)
    defined = np.isfinite(v)
    total = np.where(defined, v, 0.0).sum(axis=1)
    count = defined.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), math.nan)


def hd95_undefined(values: np.ndarray, *, background: int | None = 0) -> int:
    """How many (sample, class) HD95 values are undefined (a class empty in a mask)."""
    v = np.asarray(values, dtype=np.float64)
    if background is not None:
        v = np.delete(v, background, axis=1)
    return int(np.isnan(v).sum())
