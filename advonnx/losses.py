"""Per-sample losses on model scores, shared by attacks, estimated gradients and the exact
gradient graph (``advonnx.autodiff`` builds the same formulas in ONNX).

Convention: every loss is what an *untargeted* attack ascends for the true label ``y``; a
targeted attack descends the same loss for its target label. All return shape (N,).

- ``ce``: cross-entropy. On logits ``-log_softmax(z)[y]``; on probabilities
  ``-log(clip(p[y], 1e-12, 1))`` (callers pass float64); on a single sigmoid output binary
  cross-entropy. Models give attacks logits whenever the graph has them (the logits rule).
- ``margin``: Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (positive = misclassified).
- ``seg_ce``: segmentation cross-entropy averaged over pixels/voxels (optional mask).
"""

from __future__ import annotations

from .xp import namespace

PROB_FLOOR = 1e-12
LOSSES = ("ce", "margin", "seg_ce")


def _log_softmax(z, axis: int):
    xp = namespace(z)
    m = xp.max(z, axis=axis, keepdims=True)
    s = z - m
    return s - xp.log(xp.sum(xp.exp(s), axis=axis, keepdims=True))


def log_probs(scores, *, probabilities: bool, axis: int = 1):
    """Log class probabilities from logits or probabilities along ``axis``."""
    xp = namespace(scores)
    if probabilities:
        return xp.log(xp.clip(scores, PROB_FLOOR, 1.0))
    return _log_softmax(scores, axis)


def _take_class(a, y, axis: int):
    """``a[n, ..., y[n, ...], ...]`` along the class axis, via a one-hot mask (array API)."""
    xp = namespace(a)
    c = a.shape[axis]
    classes = xp.arange(c, dtype=xp.int64)
    shape = [1] * a.ndim
    shape[axis] = c
    classes = xp.reshape(classes, tuple(shape))
    y_exp = xp.expand_dims(xp.astype(y, xp.int64), axis=axis)
    onehot = xp.astype(y_exp == classes, a.dtype)
    return xp.sum(a * onehot, axis=axis), onehot


def binary_to_two_class(scores, *, probabilities: bool):
    """A single-output binary model's (N, 1) scores as two-class scores (N, 2)."""
    xp = namespace(scores)
    if probabilities:
        return xp.concat([1.0 - scores, scores], axis=1)
    return xp.concat([xp.zeros_like(scores), scores], axis=1)


def cross_entropy(scores, y, *, probabilities: bool, axis: int = 1):
    lp = log_probs(scores, probabilities=probabilities, axis=axis)
    picked, _ = _take_class(lp, y, axis)
    return -picked


def log_odds(scores, y, *, axis: int = 1):
    """``d = log Σ_{j≠y} exp(z_j) − z_y`` per sample from logits: ``CE = softplus(d)`` and
    ``∇CE = σ(d)·∇d``, so ``∇d`` is CE's gradient direction without the factor ``1 − p_y``
    that underflows to 0 for confident logits (any float precision)."""
    xp = namespace(scores)
    z_y, onehot = _take_class(scores, y, axis)
    big = xp.asarray(1e30 if scores.dtype == xp.float64 else 1e9, dtype=scores.dtype)
    masked = scores - onehot * big
    m = xp.max(masked, axis=axis, keepdims=True)
    lse = xp.squeeze(m, axis=axis) + xp.log(xp.sum(xp.exp(masked - m), axis=axis))
    return lse - z_y


def margin(scores, y, *, axis: int = 1):
    """C&W margin ``max_{j != y} z_j - z_y`` per sample (and per pixel for dense outputs)."""
    xp = namespace(scores)
    z_y, onehot = _take_class(scores, y, axis)
    big = xp.asarray(1e30 if scores.dtype == xp.float64 else 1e9, dtype=scores.dtype)
    others = xp.max(scores - onehot * big, axis=axis)
    return others - z_y


def segmentation_ce(scores, y, *, probabilities: bool, axis: int = 1, mask=None):
    """Mean per-pixel cross-entropy per sample; ``mask`` (N, *spatial) weights pixels."""
    xp = namespace(scores)
    per_pixel = cross_entropy(scores, y, probabilities=probabilities, axis=axis)
    per_pixel = xp.reshape(per_pixel, (per_pixel.shape[0], -1))
    if mask is None:
        return xp.mean(per_pixel, axis=1)
    w = xp.reshape(xp.astype(mask, per_pixel.dtype), (per_pixel.shape[0], -1))
    return xp.sum(per_pixel * w, axis=1) / xp.clip(xp.sum(w, axis=1), 1.0, None)


def compute(name: str, scores, y, *, probabilities: bool, axis: int = 1, mask=None):
    """The loss ``name`` per sample (shape (N,))."""
    if name == "ce":
        return cross_entropy(scores, y, probabilities=probabilities, axis=axis)
    if name == "margin":
        return margin(scores, y, axis=axis)
    if name == "seg_ce":
        return segmentation_ce(scores, y, probabilities=probabilities, axis=axis, mask=mask)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
