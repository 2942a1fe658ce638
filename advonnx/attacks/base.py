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
from typing import TYPE_CHECKING, Any, ClassVar, Literal, final, get_args

import numpy as np

from ..errors import AdvonnxError
from ..metrics import spatial_axes
from ..xp import Random, batch_view, flat, namespace, norms, to_numpy
from .context import AttackContext, bounds_for_clip
from .success import adversarial, dense_success, multilabel_success, pixel_hit

if TYPE_CHECKING:
    from ..oracles import Model

__all__ = [
    "NORMS",
    "Norm",
    "Attack",
    "AttackContext",
    "AttackResult",
    "adversarial",
    "changed_pixels",
    "check_multilabel",
    "dense_success",
    "multilabel_success",
    "pixel_hit",
]

# The norms budgets are measured in (eps in input value units; l0 counts changed elements).
Norm = Literal["linf", "l2", "l0"]
NORMS: tuple[Norm, ...] = get_args(Norm)


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
    norms: ClassVar[tuple[Norm, ...]] = ("linf", "l2")
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
        self.norm: Norm = next(n for n in NORMS if n == norm)  # checked above: one of self.norms
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
            x_free = xp.clip(x_adv, *bounds_for_clip(xp, *bounds))
            if on_grid:
                x_free = self._on_integer_grid(x, x_free, free=True)
            free_ok = ctx.is_adversarial(model.classify(x_free, **fixed), target if targeted else labels)
            min_norm = xp.where(free_ok, norms(x_free - x, self.norm), xp.inf)
            size = norms(x, "l2")
            rho = xp.where(free_ok & (size > 0), norms(x_free - x, "l2") / xp.where(size > 0, size, 1.0), xp.nan)
        x_adv = xp.clip(self.project(x, x_adv), *bounds_for_clip(xp, *bounds))
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


MULTILABEL_ATTACKS = "fgsm, bim, pgd, apgd, square, nes, spsa"


def check_multilabel(attack) -> None:
    """Refuse, in one line, an attack (instance or class) that does not attack multi-label models."""
    if not getattr(attack, "multilabel", False):
        raise AdvonnxError(
            f"{attack.name} does not attack multi-label models (independent sigmoid outputs); "
            f"use one of {MULTILABEL_ATTACKS}"
        )


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


def _scatter_true(mask, rows, cols):
    mask[rows, cols] = True
    return mask
