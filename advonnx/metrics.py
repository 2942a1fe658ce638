"""Per-sample metrics: classification outcome, perturbation size and perceptibility, and
segmentation overlap. Written against the array namespace of the inputs.

- PSNR in dB with the value range width as the peak: ``10 log10(range² / MSE)`` (inf when equal).
- SSIM (Wang et al. 2004) with scikit-image's defaults: 7-pixel uniform window over the
  spatial axes, K1 = 0.01, K2 = 0.03, sample covariance, data range = value range width,
  averaged over the valid windows and the channels.
- Dice ``2|A∩B| / (|A|+|B|)`` and IoU ``|A∩B| / |A∪B|`` per class; when a class is absent from
  both masks Dice = IoU = 1, when present in one only they are 0.
"""

from __future__ import annotations

import math

from .spec import channels_first
from .xp import flat, namespace

SSIM_WINDOW = 7


def psnr(x, x_adv, value_range: tuple[float, float]):
    """Peak signal-to-noise ratio per sample (dB); inf where ``x_adv == x``."""
    xp = namespace(x)
    mse = xp.mean(flat((x_adv - x) * (x_adv - x)), axis=1)
    peak = (value_range[1] - value_range[0]) ** 2
    safe = xp.where(mse > 0, mse, 1.0)
    return xp.where(mse > 0, 10.0 * xp.log10(peak / safe), xp.inf)


def _box_mean(a, axes: tuple[int, ...], w: int):
    """Mean over ``w``-wide windows along ``axes`` ('valid' windows), by cumulative sums."""
    xp = namespace(a)
    for ax in axes:
        c = xp.cumulative_sum(a, axis=ax, include_initial=True)
        n = a.shape[ax]
        hi = _slice(c, ax, w, n + 1)
        lo = _slice(c, ax, 0, n + 1 - w)
        a = (hi - lo) / w
    return a


def _slice(a, axis: int, start: int, stop: int):
    key = [slice(None)] * a.ndim
    key[axis] = slice(start, stop)
    return a[tuple(key)]


def spatial_axes(layout: str, ndim: int) -> tuple[int, ...]:
    """Axes of D, H, W (images, volumes) or W (the time axis of a 1-D signal); () for NF."""
    if layout == "NF":
        return ()
    return tuple(range(2, ndim)) if channels_first(layout) else tuple(range(1, ndim - 1))


def ssim(x, x_adv, value_range: tuple[float, float], layout: str):
    """Structural similarity per sample (NaN for feature vectors or images under 7 pixels)."""
    xp = namespace(x)
    axes = spatial_axes(layout, x.ndim)
    if not axes or any(x.shape[a] < SSIM_WINDOW for a in axes):
        return xp.full((x.shape[0],), math.nan, dtype=xp.float64)
    a = xp.astype(x, xp.float64)
    b = xp.astype(x_adv, xp.float64)
    w = SSIM_WINDOW
    npix = w ** len(axes)
    cov_norm = npix / (npix - 1.0)
    data_range = value_range[1] - value_range[0]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ux, uy = _box_mean(a, axes, w), _box_mean(b, axes, w)
    uxx, uyy, uxy = _box_mean(a * a, axes, w), _box_mean(b * b, axes, w), _box_mean(a * b, axes, w)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return xp.mean(flat(s), axis=1)


def confusion_overlap(pred, ref, num_classes: int):
    """Dice and IoU per sample and class: two (N, C) arrays (see module docstring)."""
    xp = namespace(pred)
    p, r = flat(pred), flat(ref)
    dice_cols, iou_cols = [], []
    for c in range(num_classes):
        pc = xp.astype(p == c, xp.float64)
        rc = xp.astype(r == c, xp.float64)
        inter = xp.sum(pc * rc, axis=1)
        total = xp.sum(pc, axis=1) + xp.sum(rc, axis=1)
        union = total - inter
        empty = total == 0
        dice_cols.append(xp.where(empty, 1.0, 2 * inter / xp.where(empty, 1.0, total)))
        iou_cols.append(xp.where(empty, 1.0, inter / xp.where(empty, 1.0, union)))
    return xp.stack(dice_cols, axis=1), xp.stack(iou_cols, axis=1)


def pixel_accuracy(pred, ref):
    xp = namespace(pred)
    return xp.mean(xp.astype(flat(pred == ref), xp.float64), axis=1)


def confidence(scores, pred, *, probabilities: bool, class_axis: int = 1):
    """Probability of the predicted class per sample (softmax of logits when needed)."""
    xp = namespace(scores)
    if scores.ndim != 2:
        return xp.full((scores.shape[0],), math.nan, dtype=xp.float64)
    if probabilities:
        p = scores
    else:
        z = scores - xp.max(scores, axis=1, keepdims=True)
        e = xp.exp(z)
        p = e / xp.sum(e, axis=1, keepdims=True)
    onehot = xp.astype(pred[:, None] == xp.arange(scores.shape[1])[None, :], p.dtype)
    return xp.astype(xp.sum(p * onehot, axis=1), xp.float64)
