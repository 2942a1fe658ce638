"""Helpers shared by the query-only attacks (NES/SPSA PGD, Square, HopSkipJump): the query
budget, the objective they minimize, channel-first views. Row bookkeeping (``take``,
``scatter``, ``host_bool``) lives in :mod:`advonnx.attacks._batch`.
"""

from __future__ import annotations

import numpy as np

from .. import losses
from ..errors import AdvonnxError
from ..xp import namespace
from ._batch import host_bool, scatter, take  # noqa: F401 (the query-only attacks import them here)
from .base import AttackContext

UNBOUNDED = np.iinfo(np.int64).max // 4


def query_budget(ctx: AttackContext, own: int | None) -> int:
    """The per-sample query budget: the attack's ``max_queries`` and the caller's, whichever is smaller."""
    caps = [int(b) for b in (own, ctx.max_queries) if b is not None]
    if any(b < 1 for b in caps):
        raise AdvonnxError(f"max_queries must be >= 1 (got {min(caps)})")
    return min(caps) if caps else UNBOUNDED


def remaining(ctx: AttackContext, budget: int, idx: np.ndarray) -> np.ndarray:
    """Queries each sample of ``idx`` (host indices) may still spend."""
    return budget - ctx.queries[idx]


def to_channels_first(x, layout: str):
    """``x`` as (N, C, *spatial); feature vectors (N, F) become (N, 1, F)."""
    xp = namespace(x)
    if layout == "NF":
        return xp.reshape(x, (x.shape[0], 1, x.shape[1]))
    if layout in ("NWC", "NHWC", "NDHWC"):  # channels last → (N, C, *spatial)
        return xp.permute_dims(x, (0, x.ndim - 1, *range(1, x.ndim - 1)))
    return x


def from_channels_first(x, layout: str):
    xp = namespace(x)
    if layout == "NF":
        return xp.reshape(x, (x.shape[0], x.shape[2]))
    if layout in ("NWC", "NHWC", "NDHWC"):
        return xp.permute_dims(x, (0, *range(2, x.ndim), 1))
    return x


def objective(ctx: AttackContext, scores, labels, loss: str, attacked=None):
    """Per-sample value the attack *minimizes* (float64), and per-sample success from argmax.

    Untargeted (``labels`` true): margin ``z_y − max_{j≠y} z_j`` or ``−CE(y)``; targeted
    (``labels`` targets): ``max_{j≠t} z_j − z_t`` or ``CE(t)``. The value is computed on the
    ``attacked`` scores (``ctx.scores``: logits before a final Softmax/Sigmoid when the model
    has one; probabilities as log-probabilities in float64 otherwise), success on the
    decision ``scores``. Multi-label models: ``ml_margin`` / ``bce`` of the label vectors
    (:mod:`advonnx.losses`), success as :func:`advonnx.attacks.base.multilabel_success`.
    """
    xp = namespace(scores)
    s = xp.astype(scores if attacked is None else attacked, xp.float64)
    probs = ctx.spec.attacked_scores == "probabilities"
    axis = ctx.spec.class_axis
    if ctx.multilabel:  # margin → ml_margin (the worst finding's wrong-side margin), ce → bce
        name = losses.for_output_kind(loss, "multilabel")
        value = losses.compute(name, s, labels, probabilities=probs, threshold=ctx.spec.decision_threshold)
        return (value if ctx.targeted else -value), ctx.is_adversarial(ctx.decide(scores), labels)
    if loss == "margin":
        value = losses.margin(s, labels, axis=axis)
        value = value if ctx.targeted else -value
    else:
        value = losses.cross_entropy(s, labels, probabilities=probs, axis=axis)
        value = value if ctx.targeted else -value
    pred = xp.argmax(scores, axis=axis)
    return value, ctx.is_adversarial(pred, labels)


def flat_dim(x) -> int:
    d = 1
    for s in x.shape[1:]:
        d *= s
    return d
