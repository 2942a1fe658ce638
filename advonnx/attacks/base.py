"""The attack contract. The base class owns validation, budget enforcement, query counting and
the success decision; an attack only writes ``run`` (foolbox 3's design).

An attack sees a model through :class:`AttackContext` only: ``predict`` and
``value_and_grad``, each counted per sample. advonnx never trusts an attack's own claim: after
``run`` the perturbation is projected onto the eps-ball and the value range, the model is
queried once more and success is decided from ``x_adv`` itself.
"""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, final

import numpy as np

from ..errors import AdvonnxError
from ..metrics import spatial_axes
from ..xp import Random, batch_view, flat, namespace, norms, to_numpy

if TYPE_CHECKING:
    from ..oracles import Model

NORMS = ("linf", "l2", "l0")


@dataclass
class AttackResult:
    """What an attack produced, checked by advonnx (arrays in the namespace of ``x``)."""

    x_adv: Any
    success: Any  # (N,) bool, recomputed from x_adv
    queries: np.ndarray  # (N,) model evaluations spent on each sample
    clean_pred: Any
    adv_pred: Any
    labels: Any  # reference labels (given or clean predictions)
    target: Any | None
    linf: Any
    l2: Any
    l0: Any
    min_norm: Any | None  # minimal-norm attacks: norm of the smallest adversarial found
    gradient: str  # exact | exact+straight-through | estimated | none
    time_s: float
    params: dict = field(default_factory=dict)
    # minimal-norm attacks: ‖r‖₂ / ‖x‖₂ of the smallest adversarial found (NaN where none);
    # DeepFool's robustness measure ρ is its mean (Moosavi-Dezfooli et al. 2016, eq. 15)
    rho: Any | None = None
    l0_pixels: Any | None = None  # changed spatial positions (any channel) of x_adv
    # (N,) bool: the sample's input gradient was exactly zero at the attack's first gradient
    # step (None for attacks that never asked for value_and_grad)
    zero_gradient: Any | None = None
    # cascades (AutoAttack): per sample, the stage whose example broke it ("" = robust)
    broken_by: np.ndarray | None = None
    # multi-label model: predictions and labels are (N, K) 0/1 decision vectors (target: -1 = free)
    multilabel: bool = False

    @property
    def robust(self):
        """Per-sample: the model still answers correctly on ``x_adv`` (multi-label: every finding)."""
        xp = namespace(self.adv_pred)
        if self.multilabel:
            return xp.all(self.adv_pred == self.labels, axis=1)
        return self.adv_pred == self.labels if self.adv_pred.ndim == 1 else xp.zeros(0)


class AttackContext:
    """The model as an attack sees it: counted ``predict`` / ``value_and_grad`` and the budget.

    Randomized models (``spec.randomized``): ``classify`` is the majority over ``model.votes``
    evaluations, and ``value_and_grad`` / ``vjp`` average loss and gradient over ``eot`` draws
    (expectation over transformation, Athalye et al. 2018), exact or estimated; every evaluation
    is counted.

    Models with several inputs: ``extras`` (name -> one row per sample of the attacked batch)
    holds the inputs that are not attacked; every method takes the rows ``idx`` of them, so a
    call on a subset of samples feeds each sample's own values."""

    def __init__(
        self,
        model: Model,
        *,
        n: int,
        rng: Random,
        gradient: str,
        targeted: bool,
        value_range,
        max_queries: int | None,
        eot: int | None = None,
        extras=None,
    ):
        self.model = model
        self.extras = extras or None
        self.rng = rng
        self.gradient = gradient
        self.targeted = targeted
        self.lo, self.hi = value_range
        self.max_queries = max_queries
        self.queries = np.zeros(n, dtype=np.int64)
        self.spec = model.spec
        self.eot = int(eot) if eot else int(getattr(model, "eot", 1))
        self.votes = int(getattr(model, "votes", 1))
        # per sample: whether its input gradient was exactly zero at its first value_and_grad
        # (a masked gradient, or a model flat around the sample), and whether that call came
        self._zero_gradient = np.zeros(n, dtype=bool)
        self._gradient_seen = np.zeros(n, dtype=bool)
        self.broken_by: np.ndarray | None = None  # a cascade records its breaking stage per sample

    def count(self, idx) -> None:
        np.add.at(self.queries, to_numpy(idx), 1)

    def rows(self, idx) -> dict[str, Any]:
        """Keyword arguments feeding the held-fixed inputs of samples ``idx`` ({} for a model
        with one input)."""
        if not self.extras:
            return {}
        from ..model import take_extras

        return {"extras": take_extras(self.extras, idx)}

    def predict(self, x, idx):
        """Decision scores of ``x`` (the model's output); rows belong to samples ``idx``
        (indices into the attacked batch)."""
        self.count(idx)
        return self.model.predict(x, **self.rows(idx))

    def attack_scores(self, x, idx):
        """The scores objectives use (margins, losses, candidate classes): the logits before a
        final Softmax/LogSoftmax/Sigmoid when the model has one, else the scores. Counted."""
        self.count(idx)
        return self.model.attack_scores(x, **self.rows(idx))

    def scores(self, x, idx):
        """``(predict, attack_scores)`` of ``x`` from one query per row."""
        self.count(idx)
        return self.model.predict_both(x, **self.rows(idx))

    @property
    def multilabel(self) -> bool:
        """The model has independent sigmoid outputs: decisions are (N, K) 0/1 vectors."""
        return self.spec.output_kind == "multilabel"

    def decide(self, scores):
        """Decisions from decision scores (``predict``'s): argmax over classes, or for a
        multi-label model the (N, K) 0/1 vector of findings above the threshold."""
        xp = namespace(scores)
        if self.multilabel:
            thr = self.spec.threshold if self.spec.scores == "probabilities" else 0.0
            return xp.astype(scores > thr, xp.int64)
        return xp.argmax(scores, axis=self.spec.class_axis)

    def classify(self, x, idx):
        if self.votes > 1:  # a randomized model: the majority over `votes` evaluations
            for _ in range(self.votes):
                self.count(idx)
            return self.model.classify(x, votes=self.votes, **self.rows(idx))
        return self.decide(self.predict(x, idx))

    def value_and_grad(self, x, labels, idx, *, loss: str, mask=None, scale_free: bool = False):
        """Loss per row and its gradient w.r.t. ``x``; every evaluation is counted on ``idx``.

        ``mask`` (segmentation, shaped like the labels) weights the pixels of ``seg_ce``.
        ``scale_free``: CE's gradient direction without the factor that underflows for confident
        logits (see ``OnnxModel.value_and_grad``), for attacks that only use the direction.
        Records per sample whether the gradient of its first call was exactly zero."""
        value, grad = self._expected(x, labels, None, idx, loss=loss, mask=mask, scale_free=scale_free)
        self._record_zero_gradient(grad, idx)
        return value, grad

    def loss_grad_decisions(self, x, labels, idx, *, loss: str, scale_free: bool = False):
        """``(loss, gradient, predict(x))`` per row: from one run of the gradient graph when the
        model allows it (exact gradients, no EOT, ``model.one_pass``), else the scores and the
        gradient from two. ``scale_free`` as in :meth:`value_and_grad`. Counted and recorded as
        :meth:`value_and_grad`."""
        if (
            self.eot == 1
            and getattr(self.model, "one_pass", False)
            and self.model.gradient_mode(self.gradient, loss=loss, scale_free=scale_free, with_decisions=True)
            == "exact"
        ):
            value, grad, scores = self.model.value_and_grad(
                x,
                labels,
                loss=loss,
                gradient=self.gradient,
                counter=lambda rows: self.count(to_numpy(idx)[rows]),
                with_decisions=True,
                scale_free=scale_free,
                **self.rows(idx),
            )
            self._record_zero_gradient(grad, idx)
            return value, grad, scores
        scores = self.predict(x, idx)
        value, grad = self.value_and_grad(x, labels, idx, loss=loss, scale_free=scale_free)
        return value, grad, scores

    def _record_zero_gradient(self, grad, idx) -> None:
        idx_host = to_numpy(idx)
        first = ~self._gradient_seen[idx_host]
        if first.any():
            xp = namespace(grad)
            zero = np.asarray(to_numpy(xp.all(xp.reshape(grad == 0, (grad.shape[0], -1)), axis=1)), dtype=bool)
            self._zero_gradient[idx_host[first]] = zero[first]
            self._gradient_seen[idx_host[first]] = True

    @property
    def zero_gradient(self) -> np.ndarray | None:
        """(N,) object array: True/False per sample whose first gradient was taken (exactly zero
        or not), None for samples never differentiated; None when no gradient was asked for."""
        if not self._gradient_seen.any():
            return None
        return np.where(self._gradient_seen, self._zero_gradient, np.array(None)).astype(object)

    def vjp(self, x, cotangent, idx):
        """``<cotangent, scores>`` per row and ``cotangentᵀ ∂scores/∂x`` (shaped like ``x``), on
        the attacked scores (``attack_scores``: logits before a final Softmax/Sigmoid).

        ``cotangent`` is shaped like the scores (a one-hot difference gives a logit difference
        and its gradient); every row is counted on the sample ``idx`` it belongs to.
        """
        return self._expected(x, None, cotangent, idx, loss="ce")

    def _expected(self, x, labels, cotangent, idx, *, loss: str, mask=None, scale_free: bool = False):
        """The model's value and gradient, averaged over ``eot`` draws (one batched call of the
        ``eot`` copies of ``x``) for a randomized model."""
        k = self.eot
        xp = namespace(x)
        idx_host = to_numpy(idx)
        if k > 1:
            n = x.shape[0]
            tile = lambda a: None if a is None else xp.concat([a] * k)  # noqa: E731
            x, labels, cotangent, mask = tile(x), tile(labels), tile(cotangent), tile(mask)
            idx_host = np.tile(idx_host, k)

        def counter(rows):
            self.count(idx_host[np.asarray(rows)])

        value, grad = self.model.value_and_grad(
            x,
            labels,
            loss=loss,
            cotangent=cotangent,
            gradient=self.gradient,
            rng=self.rng,
            counter=counter,
            mask=mask,
            scale_free=scale_free,
            **self.rows(idx_host),
        )
        if k > 1:
            value = xp.mean(xp.reshape(value, (k, n)), axis=0)
            grad = xp.mean(xp.reshape(grad, (k, n) + tuple(grad.shape[1:])), axis=0)
        return value, grad

    def clip(self, x):
        """``x`` inside the value range (``lo``/``hi``: numbers, or per-element arrays shaped
        like one sample, as a joint attack's packed inputs have, broadcast over the batch)."""
        xp = namespace(x)
        return xp.clip(x, *_bounds(xp, self.lo, self.hi))

    def is_adversarial(self, pred, ref, *, targeted: bool | None = None):
        """Per-sample success of decisions ``pred`` against ``ref`` (labels, or targets when
        targeted): the one rule every attack and the base's re-judgement use
        (:func:`adversarial`). ``targeted`` defaults to the context's."""
        return adversarial(
            pred, ref, targeted=self.targeted if targeted is None else targeted, multilabel=self.multilabel
        )


class Attack(ABC):
    """Base of all attacks. Subclasses declare ``name`` (and ``aliases``), ``norms``, ``needs``
    and ``run``; ``__call__`` is final: validation, projection and the success decision are the
    base's.

    Keyword-only parameters; unknown ones are rejected. ``repr`` lists the parameters and is
    used as the setting's key in results.
    """

    name: ClassVar[str] = ""
    # other names the registry accepts for this attack (declared here, read by ``register``;
    # not inherited: a subclass declares its own)
    aliases: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    needs: ClassVar[str] = "gradient"  # gradient | scores | decisions
    minimal_norm: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...]] = ("classification", "segmentation")
    # attacks multi-label models (ce → bce, margin → ml_margin, success: a finding flips)
    multilabel: ClassVar[bool] = False
    loss: str = "ce"
    # the loss whose gradient graph decides exact vs estimated (None: ``loss``, seg_ce for
    # segmentation); attacks that differentiate through ``ctx.vjp`` say "cotangent"
    gradient_loss: ClassVar[str | None] = None

    def __init__(self, *, norm: str = "linf", eps: float | None = None, loss: str = "ce"):
        if norm not in self.norms:
            raise AdvonnxError(f"{self.name} supports norms {', '.join(self.norms)}, not {norm!r}")
        if not self.minimal_norm and (eps is None or not eps > 0):
            raise AdvonnxError(f"{self.name} needs a budget eps > 0 (got {eps!r})")
        if loss not in ("ce", "margin"):
            raise AdvonnxError(f"{self.name}: loss must be 'ce' or 'margin', not {loss!r}")
        self.norm = norm
        self.eps = None if eps is None else float(eps)
        self.loss = loss

    # -- description ------------------------------------------------------------------------
    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """Keyword parameters of the constructor and their defaults."""
        return {
            p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.kind == p.KEYWORD_ONLY
        }

    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.parameters() if hasattr(self, k)}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"

    # -- the contract -----------------------------------------------------------------------
    @abstractmethod
    def run(self, ctx: AttackContext, x, labels):
        """Return adversarial candidates for ``x`` (labels: targets if ctx.targeted)."""

    def project(self, x, x_adv):
        """Project ``x_adv`` onto the eps-ball of ``self.norm`` around ``x``."""
        if self.eps is None:
            return x_adv
        xp = namespace(x)
        delta = x_adv - x
        if self.norm == "linf":
            delta = xp.clip(delta, -self.eps, self.eps)
        elif self.norm == "l2":
            n = norms(delta, "l2")
            factor = xp.where(n > self.eps, self.eps / xp.where(n > 0, n, 1.0), 1.0)
            delta = delta * batch_view(xp.astype(factor, delta.dtype), delta.ndim)
        elif self.norm == "l0":
            d = flat(delta)
            k = int(self.eps)
            if d.shape[1] > k:
                order = xp.argsort(-xp.abs(d), axis=1)
                keep = xp.zeros(d.shape, dtype=xp.bool)
                rows = xp.arange(d.shape[0])[:, None]
                keep = _scatter_true(keep, rows, order[:, :k])
                delta = xp.reshape(xp.where(keep, d, 0.0), delta.shape)
        return x + delta

    def _on_integer_grid(self, x, x_adv, *, free: bool = False):
        """An integer-input model sees ``round(x_adv)``: return that input itself, so that norms
        and success describe what the model saw. Rounded samples that leave the eps-ball step
        toward ``x`` instead (``x + trunc(δ)``, inside every norm ball). ``x`` is integral."""
        xp = namespace(x)
        rounded = xp.round(x_adv)
        if free or self.eps is None:
            return rounded
        inside = norms(rounded - x, self.norm) <= self.eps * (1 + 1e-6)
        return xp.where(batch_view(inside, x.ndim), rounded, x + xp.trunc(x_adv - x))

    @final
    def __call__(
        self,
        model: Model,
        x,
        y=None,
        *,
        target=None,
        targeted: bool = False,
        rng: Random | None = None,
        gradient: str = "auto",
        max_queries: int | None = None,
        eot: int | None = None,
        extras=None,
    ) -> AttackResult:
        """Attack the batch ``x`` (model layout, value range units) with labels ``y``.

        ``y=None`` attacks the clean predictions. ``targeted=True`` needs ``target`` labels.
        ``eot``: gradient draws averaged per gradient (default ``model.eot``: 1 for a
        deterministic model, more for a randomized one). ``extras``: for a model with several
        inputs (``spec.extra_inputs``), the others, name -> one row per sample, held fixed.
        """
        spec = model.spec
        fixed = {"extras": extras} if extras else {}
        xp = namespace(x)
        if spec.task not in self.tasks:
            raise AdvonnxError(f"{self.name} does not attack {spec.task} models")
        multilabel = spec.output_kind == "multilabel"
        if multilabel:
            check_multilabel(self)
        rng = rng or Random(0)
        loss = self.gradient_loss or ("seg_ce" if spec.task == "segmentation" else self.loss)
        mode = model.gradient_mode(gradient, loss=loss) if self.needs == "gradient" else "none"
        clean_pred = model.classify(x, **fixed)
        labels = clean_pred if y is None else xp.asarray(y)
        if labels.shape != clean_pred.shape:
            raise AdvonnxError(f"labels of shape {labels.shape} do not match the predictions {clean_pred.shape}")
        if targeted and target is None:
            raise AdvonnxError(f"targeted {self.name} needs target labels")
        # per-element bounds for a joint attack's packed inputs (advonnx.joint), else the range
        bounds: Any = spec.value_range  # (lo, hi), or per-element bounds of a joint model
        if getattr(model, "joint", False):
            from ..joint import check_joint_attack

            check_joint_attack(self.name)
            bounds = getattr(model, "bounds", None)
            if bounds is None:
                raise AdvonnxError(
                    f"{self.name}: pack the inputs first (JointInputModel.pack) and attack the packed vectors"
                )
        ctx = AttackContext(
            model,
            n=x.shape[0],
            rng=rng,
            gradient=mode,
            targeted=targeted,
            value_range=bounds,
            max_queries=max_queries,
            eot=eot,
            extras=extras,
        )
        # integer-input models: results go on the integer grid when the clean inputs lie on it
        on_grid = bool(spec.input_integer) and bool(xp.all(xp.round(x) == x))
        t0 = time.perf_counter()
        x_adv = self.run(ctx, x, target if targeted else labels)
        elapsed = time.perf_counter() - t0
        x_adv = xp.astype(x_adv, x.dtype)
        min_norm = rho = None
        if self.minimal_norm:
            # The smallest adversarial found, judged before any eps projection (a minimal-norm
            # result counts as a break at every eps of its norm at or above min_norm).
            x_free = xp.clip(x_adv, *_bounds(xp, *bounds))
            if on_grid:
                x_free = self._on_integer_grid(x, x_free, free=True)
            free_ok = ctx.is_adversarial(model.classify(x_free, **fixed), target if targeted else labels)
            min_norm = xp.where(free_ok, norms(x_free - x, self.norm), xp.inf)
            size = norms(x, "l2")
            rho = xp.where(free_ok & (size > 0), norms(x_free - x, "l2") / xp.where(size > 0, size, 1.0), xp.nan)
        x_adv = xp.clip(self.project(x, x_adv), *_bounds(xp, *bounds))
        if on_grid:
            x_adv = self._on_integer_grid(x, x_adv)
        adv_pred = model.classify(x_adv, **fixed)
        success = ctx.is_adversarial(adv_pred, target if targeted else labels)
        delta = x_adv - x
        if min_norm is not None:
            # the projected x_adv is an adversarial found too: the smallest norm is the lower one
            min_norm = xp.where(success, xp.minimum(min_norm, norms(delta, self.norm)), min_norm)
        broken_by = None
        if ctx.broken_by is not None:  # the recorded stage stands only where x_adv is adversarial
            broken_by = np.where(to_numpy(success), ctx.broken_by, "").astype(object)
        return AttackResult(
            x_adv=x_adv,
            success=success,
            queries=ctx.queries,
            clean_pred=clean_pred,
            adv_pred=adv_pred,
            labels=labels,
            target=target if targeted else None,
            linf=norms(delta, "linf"),
            l2=norms(delta, "l2"),
            l0=norms(delta, "l0"),
            min_norm=min_norm,
            gradient=model.gradient_label(mode),
            time_s=elapsed,
            params=self.params(),
            rho=rho,
            l0_pixels=changed_pixels(x, x_adv, spec.layout),
            zero_gradient=ctx.zero_gradient,
            broken_by=broken_by,
            multilabel=multilabel,
        )


def _bounds(xp, lo, hi):
    """``(lo, hi)`` for ``xp.clip``: numbers as they are, per-element arrays in ``xp``."""
    if isinstance(lo, np.ndarray):
        return xp.asarray(lo), xp.asarray(hi)
    return lo, hi


MULTILABEL_ATTACKS = "fgsm, bim, pgd, apgd, square, nes, spsa"


def check_multilabel(attack) -> None:
    """Refuse, in one line, an attack (instance or class) that does not attack multi-label models."""
    if not getattr(attack, "multilabel", False):
        raise AdvonnxError(
            f"{attack.name} does not attack multi-label models (independent sigmoid outputs); "
            f"use one of {MULTILABEL_ATTACKS}"
        )


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


def changed_pixels(x, x_adv, layout: str):
    """Per sample: spatial positions where any channel changed (= changed elements for NF)."""
    xp = namespace(x)
    d = x_adv != x
    axes = spatial_axes(layout, x.ndim)
    if axes:
        channel = [a for a in range(1, x.ndim) if a not in axes]
        if channel:
            d = xp.any(d, axis=tuple(channel))
    return xp.sum(xp.astype(flat(d), xp.int64), axis=1)


def dense_success(pred, ref, targeted: bool):
    """Segmentation: success when at least half the pixels are flipped (or reach the target)."""
    xp = namespace(pred)
    hit = pixel_hit(pred, ref, targeted)
    frac = xp.mean(xp.astype(flat(hit), xp.float32), axis=1)
    return frac >= 0.5


def _scatter_true(mask, rows, cols):
    mask[rows, cols] = True
    return mask
