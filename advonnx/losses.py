"""Per-sample losses on model scores, shared by attacks, estimated gradients and the exact
gradient graph (``advonnx.autodiff`` builds the same formulas in ONNX).

Convention: every loss is what an *untargeted* attack ascends for the true label ``y``; a
targeted attack descends the same loss for its target label. All return shape (N,).

- ``ce``: cross-entropy. On logits ``-log_softmax(z)[y]``; on probabilities
  ``-log(clip(p[y], 1e-12, 1))`` (callers pass float64); on a single sigmoid output binary
  cross-entropy. Models give attacks logits whenever the graph has them (the logits rule).
- ``margin``: Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (positive = misclassified).
- ``seg_ce``: segmentation cross-entropy averaged over pixels/voxels (optional mask).
- ``dlr``: Croce & Hein's difference of logits ratio (ICML 2020), shift- and scale-invariant;
  ``dlr_targeted`` its targeted form (used by APGD-T). See :func:`dlr` for 2 and 3 classes.
- ``bce`` / ``ml_margin``: multi-label models (independent sigmoids), labels (N, K) of 0/1 and
  -1 (a finding the loss ignores: targeted attacks name one finding). ``bce``: binary
  cross-entropy averaged over the labelled findings; ``ml_margin``: the largest per-finding
  wrong-side margin (positive = some finding flipped). See :func:`bce`, :func:`multilabel_margin`.
  Attacks ask for ``ce`` / ``margin``; multi-label models read them as ``bce`` / ``ml_margin``
  (:func:`for_output_kind`).

:func:`score_gradient` gives a loss and its gradient w.r.t. the scores, the cotangent that
turns a model's vector-Jacobian product into the loss gradient w.r.t. the input.
"""

from __future__ import annotations

from .xp import namespace

PROB_FLOOR = 1e-12
LOSSES = ("ce", "margin", "seg_ce", "dlr", "bce", "ml_margin")
MULTILABEL_LOSSES = {"ce": "bce", "margin": "ml_margin"}
DLR_DELTA = 1e-12  # the authors' guard in the DLR denominator


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


def _order(scores, axis: int):
    """Descending class order along ``axis``: (values, one-hot masks) of ranks 1..C."""
    xp = namespace(scores)
    idx = xp.flip(xp.argsort(scores, axis=axis, stable=True), axis=axis)
    c = scores.shape[axis]
    classes = xp.reshape(xp.arange(c, dtype=idx.dtype), tuple(c if a == axis else 1 for a in range(scores.ndim)))
    vals, hots = [], []
    for r in range(c):
        pick = xp.take(idx, xp.asarray([r], dtype=idx.dtype), axis=axis)
        hot = xp.astype(pick == classes, scores.dtype)
        hots.append(hot)
        vals.append(xp.sum(scores * hot, axis=axis))
    return vals, hots


def _dlr_parts(scores, y, target, axis: int):
    """Numerator ``z_y − z_o`` (o: the best other class, or the target), denominator and the
    gradients of both w.r.t. the scores."""
    xp = namespace(scores)
    c = scores.shape[axis]
    z_y, e_y = _take_class(scores, y, axis)
    if target is None:
        big = xp.asarray(1e30 if scores.dtype == xp.float64 else 1e9, dtype=scores.dtype)
        masked = scores - e_y * big
        o = xp.argmax(masked, axis=axis)
    else:
        o = target
    z_o, e_o = _take_class(scores, o, axis)
    num, d_num = z_y - z_o, e_y - e_o
    if c == 2:  # see dlr(): no third score to scale by, the margin itself
        return num, d_num, xp.ones_like(num), xp.zeros_like(scores)
    vals, hots = _order(scores, axis)
    if target is None or c == 3:
        den, d_den = vals[0] - vals[2], hots[0] - hots[2]
    else:
        den, d_den = vals[0] - 0.5 * (vals[2] + vals[3]), hots[0] - 0.5 * (hots[2] + hots[3])
    return num, d_num, den + DLR_DELTA, d_den


def dlr(scores, y, *, axis: int = 1, target=None):
    """Difference of logits ratio (Croce & Hein 2020, eq. 3), per sample; ascended.

    Untargeted: ``−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3)``; targeted (``target`` t, APGD-T):
    ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)``, with π the classes by decreasing score and
    the authors' 1e-12 in the denominator. Invariant to shifting and scaling the scores.

    Fewer classes than the formula reads (the paper assumes >= 4 for the targeted form):

    - 3 classes: untargeted is the paper's formula as written (π3 is the lowest class);
      targeted uses z_π3 for the missing z_π4, i.e. the denominator ``z_π1 − z_π3``, the
      untargeted one. Both keep the shift and scale invariance that motivates DLR and a
      positive denominator unless all scores tie.
    - 2 classes: any shift- and scale-invariant function of the one difference ``z_y − z_o``
      is constant where it does not change sign (its gradient vanishes), so DLR cannot exist;
      both forms become the margin ``−(z_y − z_o)`` (denominator 1): same sign, same
      ascent direction, only the scale invariance is lost.
    """
    num, _, den, _ = _dlr_parts(scores, y, target, axis)
    return -num / den


def for_output_kind(name: str, output_kind: str) -> str:
    """The loss ``name`` as a model of ``output_kind`` computes it: multi-label models read
    ``ce`` as ``bce`` and ``margin`` as ``ml_margin``; other names and kinds are unchanged."""
    return MULTILABEL_LOSSES.get(name, name) if output_kind == "multilabel" else name


def _multilabel_parts(scores, y):
    """Float labels (1 where present) and weights (1 where labelled, 0 for -1) shaped like the scores."""
    xp = namespace(scores)
    y = xp.astype(y, xp.int64)
    return xp.astype(y == 1, scores.dtype), xp.astype(y >= 0, scores.dtype)


def logit_threshold(threshold: float) -> float:
    """The decision threshold on logits of a probability threshold ``threshold`` (0 for 0.5)."""
    import math

    return math.log(threshold / (1.0 - threshold))


def bce(scores, y, *, probabilities: bool):
    """Binary cross-entropy per sample of (N, K) multi-label scores, the mean over labelled
    findings (``y`` 0/1; -1 = ignored), as torch's ``BCEWithLogitsLoss`` averages per sample.

    Logits: ``softplus(z) − y·z`` written ``max(z, 0) − y·z + log(1 + exp(−|z|))`` (no
    overflow); probabilities: ``−y·log p − (1−y)·log(1−p)`` with both clipped at 1e-12 (callers
    pass float64). Ascended by untargeted attacks, descended toward a targeted label vector."""
    xp = namespace(scores)
    t, w = _multilabel_parts(scores, y)
    if probabilities:
        per = -(
            t * xp.log(xp.clip(scores, PROB_FLOOR, 1.0)) + (1.0 - t) * xp.log(xp.clip(1.0 - scores, PROB_FLOOR, 1.0))
        )
    else:
        per = xp.maximum(scores, 0.0) - t * scores + xp.log(1.0 + xp.exp(-xp.abs(scores)))
    return xp.sum(per * w, axis=1) / xp.clip(xp.sum(w, axis=1), 1.0, None)


def multilabel_margin(scores, y, *, threshold: float):
    """``max_k −(2y_k − 1)(s_k − τ)`` over labelled findings, per sample: how far the worst
    finding sits on the wrong side of its decision threshold τ (``threshold``: 0 on logits for
    p = 0.5, see :func:`logit_threshold`; the probability threshold on probabilities). Positive
    exactly when some labelled finding is decided wrong; the C&W margin of multi-label models."""
    xp = namespace(scores)
    t, w = _multilabel_parts(scores, y)
    big = 1e30 if scores.dtype == xp.float64 else 1e9
    wrong = -(2.0 * t - 1.0) * (scores - threshold) - (1.0 - w) * big
    return xp.max(wrong, axis=1)


def _multilabel_score_gradient(name: str, scores, y, *, probabilities: bool, threshold: float):
    xp = namespace(scores)
    t, w = _multilabel_parts(scores, y)
    if name == "bce":
        den = xp.clip(xp.sum(w, axis=1, keepdims=True), 1.0, None)
        if probabilities:
            p = xp.clip(scores, PROB_FLOOR, 1.0 - PROB_FLOOR)
            g = (p - t) / (p * (1.0 - p))
        else:
            g = 1.0 / (1.0 + xp.exp(-scores)) - t
        return bce(scores, y, probabilities=probabilities), g * w / den
    value = multilabel_margin(scores, y, threshold=threshold)
    big = 1e30 if scores.dtype == xp.float64 else 1e9
    wrong = -(2.0 * t - 1.0) * (scores - threshold) - (1.0 - w) * big
    k = xp.argmax(wrong, axis=1)
    hot = xp.astype(
        xp.expand_dims(k, axis=1) == xp.reshape(xp.arange(scores.shape[1], dtype=k.dtype), (1, -1)), scores.dtype
    )
    return value, -(2.0 * t - 1.0) * hot


def score_gradient(name: str, scores, y, *, probabilities: bool, axis: int = 1, target=None, threshold: float = 0.0):
    """Loss ``name`` per sample and its gradient w.r.t. ``scores`` (shaped like ``scores``).

    ``name``: ``ce``, ``seg_ce`` (mean over pixels), ``dlr`` (``target`` given: targeted DLR).
    ``dlr`` reads the scores as logits (on probabilities it is DLR of the probabilities, as the
    authors' code would compute). ``bce`` / ``ml_margin``: multi-label (N, K) scores, labels
    (N, K), ``threshold`` the decision threshold on these scores (ml_margin). The gradient is
    the cotangent for ``AttackContext.vjp``.
    """
    xp = namespace(scores)
    if name in ("bce", "ml_margin"):
        return _multilabel_score_gradient(name, scores, y, probabilities=probabilities, threshold=threshold)
    if name in ("ce", "seg_ce"):
        lp = log_probs(scores, probabilities=probabilities, axis=axis)
        picked, onehot = _take_class(lp, y, axis)
        if probabilities:
            p_y, _ = _take_class(scores, y, axis)
            inside = p_y > PROB_FLOOR
            safe = xp.where(inside, p_y, 1.0)
            g = -onehot * xp.expand_dims(xp.where(inside, 1.0 / safe, 0.0), axis=axis)
        else:
            g = xp.exp(lp) - onehot
        value = -picked
        if name == "seg_ce" or value.ndim > 1:
            per = xp.reshape(value, (value.shape[0], -1))
            value = xp.mean(per, axis=1)
            g = g / per.shape[1]
        return value, g
    if name == "dlr":
        num, d_num, den, d_den = _dlr_parts(scores, y, target, axis)
        value = -num / den
        g = -d_num / xp.expand_dims(den, axis=axis) + xp.expand_dims(num / (den * den), axis=axis) * d_den
        return value, g
    raise ValueError(f"no score gradient for loss {name!r}; use ce, seg_ce, dlr, bce or ml_margin")


def compute(name: str, scores, y, *, probabilities: bool, axis: int = 1, mask=None, threshold: float = 0.0):
    """The loss ``name`` per sample (shape (N,)); ``threshold``: ml_margin's decision threshold."""
    if name == "bce":
        return bce(scores, y, probabilities=probabilities)
    if name == "ml_margin":
        return multilabel_margin(scores, y, threshold=threshold)
    if name == "dlr":
        return dlr(scores, y, axis=axis)
    if name == "ce":
        return cross_entropy(scores, y, probabilities=probabilities, axis=axis)
    if name == "margin":
        return margin(scores, y, axis=axis)
    if name == "seg_ce":
        return segmentation_ce(scores, y, probabilities=probabilities, axis=axis, mask=mask)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
