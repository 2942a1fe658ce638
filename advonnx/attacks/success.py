"""THE adversarial-success rule (one class per sample, multi-label decision vectors, dense maps),
used by the base class's re-judgement, by attacks to stop early and by the runner for
corruptions."""

from __future__ import annotations

from ..xp import flat, namespace


def adversarial(pred, ref, *, targeted: bool, multilabel: bool = False):
    """THE adversarial-success rule, per sample, for decisions ``pred`` against ``ref`` (labels,
    or targets when ``targeted``): multi-label (N, K) decision vectors as
    :func:`multilabel_success`; one class per sample, ``pred`` differs from the label (targeted:
    equals the target); dense maps (segmentation) as :func:`dense_success`."""
    if multilabel:
        return multilabel_success(pred, ref, targeted)
    if pred.ndim == 1:
        return pixel_hit(pred, ref, targeted)
    return dense_success(pred, ref, targeted)


def pixel_hit(pred, ref, targeted: bool):
    """Element-wise: the decision is adversarial (targeted: at its target; else off its label)."""
    return (pred == ref) if targeted else (pred != ref)


def multilabel_success(pred, ref, targeted: bool):
    """Multi-label success per sample from (N, K) 0/1 decisions: untargeted, any finding differs
    from the reference vector ``ref``; targeted, every finding that ``ref`` names (>= 0; -1 =
    free) takes its named state."""
    xp = namespace(pred)
    if targeted:
        return xp.all((ref < 0) | (pred == ref), axis=1)
    return xp.any(pred != ref, axis=1)


def dense_success(pred, ref, targeted: bool):
    """Segmentation: success when at least half the pixels are flipped (or reach the target)."""
    xp = namespace(pred)
    hit = pixel_hit(pred, ref, targeted)
    frac = xp.mean(xp.astype(flat(hit), xp.float32), axis=1)
    return frac >= 0.5
