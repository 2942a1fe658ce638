"""Gradient oracles: exact (from the ONNX gradient graph) and estimated (from queries alone),
and the model protocol attacks are typed with (:class:`Predictor`, :class:`Model`).

The exact oracle (:class:`ExactGradients`, one per :class:`advonnx.model.OnnxModel`) checks
which ops on the attacked path lack a VJP rule, builds one gradient graph per loss variant
(``advonnx.autodiff``; cached on disk by ``advonnx.gradcache``) and runs it: loss, input
gradient and, in one pass, the decisions. :func:`value_and_grad` picks exact or estimated.

The estimated oracle implements the antithetic finite-difference estimators of black-box
attacks:

- ``nes`` (Ilyas et al., ICML 2018): directions ``u_i`` Gaussian, evaluated in antithetic pairs
  ``f(x + σu_i) − f(x − σu_i)``; ``ĝ = Σ_i (f⁺ − f⁻) u_i / (2σ q)``. With ``orthogonal=True``
  (default) the q directions of each sample are orthogonalized (QR of a Gaussian block) and
  scaled to length √d, as in orthogonal evolution strategies (Choromanski et al., ICML 2018):
  still unbiased, lower variance, and exact up to O(σ²) once q ≥ d.
- ``spsa`` (Spall 1992; Uesato et al., ICML 2018): Rademacher ±1 directions, same formula.

Query cost per sample per call: ``2 q + 1`` model evaluations (q antithetic pairs plus the loss
at ``x``). ``σ`` is given relative to the width of the value range (default 1e-3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import losses
from .batches import like, take_extras
from .errors import AdvonnxError, GradientUnavailable, ModelError
from .session import first_line
from .spec import ModelSpec
from .xp import Random, namespace, to_numpy

if TYPE_CHECKING:
    import onnxruntime as ort

    from .model import OnnxModel

Array = Any  # a NumPy, CuPy or array-api-strict array
Extras = Mapping[str, Any] | None  # a model's held-fixed inputs: name -> one row per row of x


class Predictor(Protocol):
    """A model as queries see it: scores and decisions for batches ``x`` (model layout, value
    units), every row counted by the model. ``extras``: its held-fixed inputs."""

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def votes(self) -> int: ...

    @property
    def eot(self) -> int: ...

    def predict(self, x: Array, *, extras: Extras = None) -> Array: ...

    def attack_scores(self, x: Array, *, extras: Extras = None) -> Array: ...

    def predict_both(self, x: Array, *, extras: Extras = None) -> tuple[Array, Array]: ...

    def classify(self, x: Array, *, votes: int | None = None, extras: Extras = None) -> Array: ...


class Model(Predictor, Protocol):
    """A model attacks run on: queries plus gradients, exact or estimated (what
    :class:`advonnx.attacks.base.AttackContext` calls). :class:`advonnx.model.OnnxModel`,
    :class:`advonnx.sliding.SlidingWindowModel` and :class:`advonnx.joint.JointInputModel`
    answer it."""

    @property
    def one_pass(self) -> bool: ...

    def gradient_mode(
        self,
        requested: str = "auto",
        *,
        loss: str | None = None,
        scale_free: bool = False,
        with_decisions: bool = False,
    ) -> str: ...

    def gradient_label(self, mode: str) -> str: ...

    def straight_through_ops(self) -> list[str]: ...

    def value_and_grad(
        self,
        x: Array,
        y: Array | None = None,
        *,
        loss: str = "ce",
        gradient: str = "auto",
        cotangent: Array | None = None,
        mask: Array | None = None,
        rng: Random | None = None,
        counter: Callable[[Any], None] | None = None,
        scale_free: bool = False,
        with_decisions: bool = False,
        extras: Extras = None,
    ) -> tuple[Any, ...]: ...


# Cap on elements (samples × draws × features) evaluated per predict batch by the estimator.
_MAX_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class EstimatorConfig:
    """Settings of the estimated gradient: method (nes|spsa), antithetic pairs q, σ, orthogonal."""

    method: str = "nes"
    samples: int = 50
    sigma: float = 1e-3
    orthogonal: bool = True

    def __post_init__(self):
        if self.method not in ("nes", "spsa"):
            raise ValueError(f"unknown estimator {self.method!r}; use 'nes' or 'spsa'")
        if self.samples < 1:
            raise ValueError("estimator samples must be >= 1")
        if not self.sigma > 0:
            raise ValueError("estimator sigma must be > 0")

    @property
    def queries_per_gradient(self) -> int:
        return 2 * self.samples + 1


def _directions(cfg: EstimatorConfig, rng: Random, n: int, d: int, like):
    """(n, q, d) search directions with E[u uᵀ] = I."""
    xp = namespace(like)
    q = cfg.samples
    if cfg.method == "spsa":
        return rng.rademacher((n, q, d), like=like)
    if not cfg.orthogonal:
        return rng.normal((n, q, d), like=like)
    blocks = []
    for start in range(0, q, d):
        k = min(d, q - start)
        g = rng.normal((n, d, k), like=like)
        qmat, _ = xp.linalg.qr(g)  # (n, d, k) orthonormal columns
        blocks.append(xp.permute_dims(qmat, (0, 2, 1)) * (d**0.5))
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=1)


def estimate_value_and_grad(
    loss_of: Callable, x, cfg: EstimatorConfig, rng: Random, *, value_range: tuple[float, float]
):
    """Loss (N,) at ``x`` and its estimated gradient, from ``loss_of(x_batch, sample_index)``.

    ``loss_of(xb, idx)`` returns the per-row loss (rows of ``xb`` belong to samples ``idx``) and
    is the only access to the model, so every query goes through it and is counted there.
    """
    xp = namespace(x)
    n = x.shape[0]
    d = 1
    for s in x.shape[1:]:
        d *= s
    sigma = cfg.sigma * (value_range[1] - value_range[0])
    all_idx = xp.arange(n, dtype=xp.int64)
    loss = loss_of(x, all_idx)
    grad = xp.zeros((n, d), dtype=x.dtype)
    per_chunk = max(1, _MAX_ELEMENTS // max(1, 2 * cfg.samples * d))
    x_flat = xp.reshape(x, (n, d))
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        m = stop - start
        u = xp.astype(_directions(cfg, rng, m, d, x), x.dtype)  # (m, q, d)
        base = x_flat[start:stop, None, :]
        probes = xp.concat([base + sigma * u, base - sigma * u], axis=1)  # (m, 2q, d)
        probes = xp.reshape(probes, (m * 2 * cfg.samples,) + tuple(x.shape[1:]))
        idx = xp.reshape(xp.broadcast_to(all_idx[start:stop, None], (m, 2 * cfg.samples)), (-1,))
        values = xp.reshape(loss_of(probes, idx), (m, 2, cfg.samples))
        diff = (values[:, 0, :] - values[:, 1, :]) / (2.0 * sigma * cfg.samples)  # (m, q)
        diff = xp.astype(diff, x.dtype)
        grad[start:stop, :] = xp.sum(diff[:, :, None] * u, axis=1)
    return loss, xp.reshape(grad, x.shape)


def model_loss(spec: ModelSpec, scores, y, loss: str = "ce", *, mask=None, cotangent=None, scale_free: bool = False):
    """Per-sample loss (host or device arrays), as in ``advonnx.losses``, from the attacked
    scores of a model of ``spec`` (see :meth:`advonnx.model.OnnxModel.loss`)."""
    xp = namespace(scores)
    if cotangent is not None:
        return xp.sum(xp.reshape(scores * cotangent, (scores.shape[0], -1)), axis=1)
    probs = spec.attacked_scores == "probabilities"
    if scale_free and loss == "ce" and not probs:
        return losses.log_odds(scores, y, axis=spec.class_axis)
    if probs and scores.dtype != xp.float64:
        scores = xp.astype(scores, xp.float64)
    loss = losses.for_output_kind(loss, spec.output_kind)
    return losses.compute(
        loss,
        scores,
        y,
        probabilities=probs,
        axis=spec.class_axis,
        mask=mask,
        threshold=spec.decision_threshold if loss == "ml_margin" else 0.0,
    )


class ExactGradients:
    """The exact-gradient oracle of one OnnxModel: the ops on its attacked path without a VJP
    rule, its gradient sessions (one per loss variant, built once) and their runs."""

    def __init__(self, model: OnnxModel):
        self.model = model
        self.sessions: dict[tuple, ort.InferenceSession] = {}
        self.unsupported: list[str] | None = None
        self.straight: list[str] | None = None

    def unsupported_ops(self) -> list[str]:
        """Ops on the input→output path without a VJP rule ([] means exact gradients work)."""
        model = self.model
        if self.unsupported is None:
            try:
                from .autodiff import unsupported_ops
            except ImportError:
                self.unsupported = ["(advonnx.autodiff not available)"]
            else:
                try:
                    from .gradcache import unsupported_ops as remembered

                    self.unsupported = remembered(
                        model,
                        lambda: list(
                            unsupported_ops(
                                model.differentiable, input_name=model.spec.input_name, output_name=model._attacked_out
                            )
                        ),
                    )
                except Exception as err:  # only the relaxed graph of an integer input can be ill-typed
                    if not model.spec.input_integer:
                        raise
                    self.unsupported = [f"the {model.spec.input_integer} input feeds integer ops ({first_line(err)})"]
        return self.unsupported

    def straight_through_ops(self) -> list[str]:
        """Piecewise-constant ops on the attacked path whose exact gradient is replaced by the
        identity (straight-through / BPDA: Round, Floor, Ceil, Sign); [] when none."""
        if self.straight is None:
            from .autodiff import straight_through_ops

            try:
                self.straight = straight_through_ops(
                    self.model.differentiable,
                    input_name=self.model.spec.input_name,
                    output_name=self.model._attacked_out,
                )
            except Exception:  # noqa: BLE001 - a graph without exact gradients has nothing to report
                self.straight = []
        return self.straight

    def variant(self, loss: str, scale_free: bool, with_decisions: bool) -> tuple[bool, bool]:
        """The gradient graph a label loss runs on: (scale-free CE, the decisions as an extra output).
        Scale-free applies to CE on logits only; the decisions are an output of their own only when
        they are another tensor than the attacked scores (a final Softmax)."""
        model = self.model
        return (
            bool(scale_free) and loss == "ce" and model.spec.attacked_scores == "logits",
            bool(with_decisions) and model._attacked_out != model._scores_out,
        )

    def mode(
        self,
        requested: str = "auto",
        *,
        loss: str | None = None,
        scale_free: bool = False,
        with_decisions: bool = False,
    ) -> str:
        """Which gradient ``requested`` (auto|exact|estimated) resolves to (see
        :meth:`advonnx.model.OnnxModel.gradient_mode`)."""
        if requested not in ("auto", "exact", "estimated"):
            raise AdvonnxError(f"unknown gradient mode {requested!r}; use auto, exact or estimated")
        if requested == "estimated":
            return "estimated"
        loss = None if loss is None else losses.for_output_kind(loss, self.model.spec.output_kind)
        missing = self.unsupported_ops()
        if not missing and requested == "auto" and loss is not None:
            try:
                self.session(loss, *self.variant(loss, scale_free, with_decisions))
            except (GradientUnavailable, ModelError) as err:  # this graph defeats a rule: say so, go on
                self.unsupported = missing = [str(err).split(": ", 1)[-1]]
                self.model.notes_once(f"exact gradients unavailable ({missing[0]}); using estimated gradients")
        if not missing:
            return "exact"
        if requested == "exact":
            raise GradientUnavailable(
                f"{Path(self.model.spec.path).name}: no exact gradient: no VJP rule for {', '.join(missing)}; "
                "use --gradient estimated (or auto)"
            )
        return "estimated"

    def session(self, loss: str, scale_free: bool = False, decisions: bool = False) -> ort.InferenceSession:
        """The gradient session of ``loss`` (or ``cotangent``) in that variant, built once."""
        key = (loss, scale_free, decisions)
        model = self.model
        if key not in self.sessions:
            from .autodiff import gradient_model
            from .gradcache import gradient_session  # built once per machine (advonnx/gradcache.py)

            args: dict[str, Any] = dict(
                loss=loss,
                input_name=model.spec.input_name,
                output_name=model._attacked_out,
                probabilities=model.spec.attacked_scores == "probabilities",
                class_axis=model.spec.class_axis,
                scale_free=scale_free,
            )
            if model.device.kind == "cuda":  # rules pick the constructions its kernels run fastest
                args["kernels"] = "cuda"
            if decisions:
                args["decision_output"] = model._scores_out
            if loss == "ml_margin":  # the decision threshold on the attacked scores (multi-label)
                args["threshold"] = model.spec.decision_threshold
            self.sessions[key] = gradient_session(model, args, lambda: gradient_model(model.differentiable, **args))
        return self.sessions[key]

    def value_and_grad(
        self,
        x,
        y,
        *,
        loss: str,
        cotangent,
        mask,
        counter,
        scale_free: bool,
        separate: bool,
        with_decisions: bool,
        extras,
    ):
        """One run of the gradient graph on ``x``: ``(loss, grad)`` or, ``with_decisions``,
        ``(loss, grad, decisions)`` (``separate``: the decisions are an output of their own)."""
        from .autodiff import (
            GRAD_INPUT_COTANGENT,
            GRAD_INPUT_LABEL,
            GRAD_INPUT_MASK,
            GRAD_OUTPUT_DECISIONS,
            GRAD_OUTPUT_GRAD,
            GRAD_OUTPUT_SCORES,
        )
        from .backend import is_device_array

        model = self.model
        xp = namespace(x)
        n = x.shape[0]
        feed = model._input(x)
        on_device = is_device_array(feed)

        def aux(a, dtype):  # labels, masks, cotangents beside x: same device, right dtype
            if on_device:
                return xp.astype(xp.asarray(a), dtype)
            return np.ascontiguousarray(to_numpy(a), dtype=dtype)

        feeds = model._feeds(feed, extras)
        if cotangent is not None:
            session = self.session("cotangent")
            feeds[GRAD_INPUT_COTANGENT] = aux(cotangent, "float32")
        else:
            session = self.session(loss, scale_free, decisions=separate)
            feeds[GRAD_INPUT_LABEL] = aux(y, "int64")
            if loss == "seg_ce":
                feeds[GRAD_INPUT_MASK] = aux(xp.ones(y.shape) if mask is None else mask, "float32")
        names = [GRAD_OUTPUT_SCORES, GRAD_OUTPUT_GRAD] + ([GRAD_OUTPUT_DECISIONS] if separate else [])
        scores, grad, *decided = model._run(session, feeds, names)
        with model._lock:
            model.queries += n
        if counter is not None:
            counter(np.arange(n))
        decisions = decided[0] if decided else scores
        if on_device:
            scores, grad = xp.astype(scores, xp.float32), xp.astype(grad, x.dtype)
            decisions = xp.astype(decisions, xp.float32)
        else:
            scores = like(x, scores.astype(np.float32, copy=False))
            grad = like(x, grad.astype(to_numpy(x).dtype, copy=False))
            decisions = like(x, decisions.astype(np.float32, copy=False))
        value = model.loss(scores, y, loss, mask=mask, cotangent=cotangent, scale_free=scale_free)
        return (value, grad, decisions) if with_decisions else (value, grad)


def estimated_value_and_grad(
    model: OnnxModel, x, y, *, loss: str, cotangent, mask, rng: Random | None, counter, scale_free: bool, extras
):
    """``(loss, grad)`` of ``model`` at ``x``, the gradient estimated from queries of its
    attacked scores (``model.estimator``; ``2q+1`` queries per sample)."""
    xp = namespace(x)
    rng = rng or Random(0)

    def loss_of(xb, idx):
        if counter is not None:
            counter(to_numpy(idx))
        # float64 loss: a confident model's float32 cross-entropy rounds to 0 and its
        # finite differences vanish (a numerical gradient mask), its float32 logits do not.
        take = lambda a: None if a is None else xp.take(a, idx, axis=0)  # noqa: E731
        scores = xp.astype(model.attack_scores(xb, extras=take_extras(extras, idx)), xp.float64)
        cot = take(cotangent)
        cot = None if cot is None else xp.astype(cot, xp.float64)
        return model.loss(scores, take(y), loss, mask=take(mask), cotangent=cot, scale_free=scale_free)

    return estimate_value_and_grad(loss_of, x, model.estimator, rng, value_range=model.spec.value_range)


def value_and_grad(
    model: OnnxModel,
    x,
    y=None,
    *,
    loss: str = "ce",
    gradient: str = "auto",
    cotangent=None,
    mask=None,
    rng: Random | None = None,
    counter=None,
    scale_free: bool = False,
    with_decisions: bool = False,
    extras=None,
):
    """:meth:`advonnx.model.OnnxModel.value_and_grad`: exact from the gradient graph when
    ``gradient`` resolves to it, else estimated."""
    loss = losses.for_output_kind(loss, model.spec.output_kind)  # multi-label: ce → bce, margin → ml_margin
    exact = model._exact
    if cotangent is not None:
        mode, scale_free, separate = model.gradient_mode(gradient, loss="cotangent"), False, False
    else:
        scale_free, separate = exact.variant(loss, scale_free, with_decisions)
        mode = model.gradient_mode(gradient, loss=loss, scale_free=scale_free, with_decisions=with_decisions)
    if with_decisions and (mode != "exact" or cotangent is not None or not model.one_pass):
        raise AdvonnxError(
            "value_and_grad(with_decisions=True) needs exact gradients of a label loss "
            "on a model whose gradient graph computes its decisions (OnnxModel.one_pass)"
        )
    if cotangent is None and y is None:
        raise AdvonnxError("value_and_grad needs labels y (or a cotangent)")
    if mode == "exact":
        return exact.value_and_grad(
            x,
            y,
            loss=loss,
            cotangent=cotangent,
            mask=mask,
            counter=counter,
            scale_free=scale_free,
            separate=separate,
            with_decisions=with_decisions,
            extras=extras,
        )
    return estimated_value_and_grad(
        model,
        x,
        y,
        loss=loss,
        cotangent=cotangent,
        mask=mask,
        rng=rng,
        counter=counter,
        scale_free=scale_free,
        extras=extras,
    )
