"""Projected gradient ascent on the loss: FGSM, BIM and PGD, one loop with the norm as hooks.

- FGSM (Goodfellow et al., ICLR 2015): one step of size eps, no random start.
- BIM (Kurakin et al., ICLR workshop 2017): ``steps`` steps of size ``1.25 * eps / steps``
  (Kurakin's rule steps ≈ 1.25 eps / α), no random start.
- PGD (Madry et al., ICLR 2018): random start in the eps-ball, ``steps`` steps of size
  ``2.5 * eps / steps`` (Madry et al.'s step rule), ``restarts`` random restarts on the
  samples that are still robust.

Norm hooks: ``linf`` steps along ``sign(g)`` and clips the perturbation to ``[-eps, eps]``;
``l2`` steps along ``g / ‖g‖₂`` and rescales into the L2 ball. eps and the step size are in the
model's value units (the spec's value range). Targeted attacks descend the loss of the target.
"""

from __future__ import annotations

from ..errors import AdvonnxError
from ..xp import batch_view, namespace, norms
from ._batch import put_rows
from .base import Attack, AttackContext


def _normalize(g, norm: str):
    xp = namespace(g)
    if norm == "linf":
        return xp.sign(g)
    n = norms(g, "l2")
    return g / batch_view(xp.where(n > 0, n, 1.0), g.ndim)


def _random_start(ctx: AttackContext, x, eps: float, norm: str):
    xp = namespace(x)
    if norm == "linf":
        return ctx.rng.uniform(x.shape, -eps, eps, like=x)
    # Uniform in the L2 ball (as foolbox): Gaussian direction, radius eps * u^(1/d).
    d = 1
    for s in x.shape[1:]:
        d *= s
    g = ctx.rng.normal(x.shape, like=x)
    g = g / batch_view(norms(g, "l2"), x.ndim)
    r = ctx.rng.uniform((x.shape[0],), like=x) ** (1.0 / d)
    return g * batch_view(xp.astype(r, x.dtype), x.ndim) * eps


class GradientDescentAttack(Attack):
    """One projected-gradient loop; FGSM/BIM/PGD differ only in defaults."""

    eps: float  # a budgeted attack: the base refuses eps=None

    random_start_default = True
    multilabel = True  # ce → bce, margin → ml_margin on multi-label models (advonnx.losses)
    step_rule = 2.5  # step = step_rule * eps / steps unless ``step_size`` is given

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool | None = None,
        restarts: int = 1,
        loss: str = "ce",
    ):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if steps < 1:
            raise AdvonnxError(f"{self.name}: steps must be >= 1")
        if restarts < 1:
            raise AdvonnxError(f"{self.name}: restarts must be >= 1")
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else self.step_rule * self.eps / self.steps
        self.random_start = self.random_start_default if random_start is None else bool(random_start)
        self.restarts = int(restarts)

    def _loss_name(self, ctx: AttackContext) -> str:
        return "seg_ce" if ctx.spec.task == "segmentation" else self.loss

    def gradient(self, ctx: AttackContext, x_adv, labels, idx, *, loss: str, step: int):
        """The ascent direction's gradient at ``x_adv`` in step ``step`` (0-based). Only its
        direction is used (sign / unit norm), so cross-entropy is taken scale-free: it never
        underflows on confident logits."""
        _, g = ctx.value_and_grad(x_adv, labels, idx, loss=loss, scale_free=True)
        return g

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        n = x.shape[0]
        best = x
        broken = xp.zeros((n,), dtype=xp.bool)
        active = xp.arange(n)
        sign = -1.0 if ctx.targeted else 1.0
        loss = self._loss_name(ctx)
        for restart in range(self.restarts):
            xa, la = xp.take(x, active, axis=0), xp.take(labels, active, axis=0)
            if self.random_start:
                x_adv = ctx.clip(xa + _random_start(ctx, xa, self.eps, self.norm))
            else:
                x_adv = xa
            for step in range(self.steps):
                g = self.gradient(ctx, x_adv, la, active, loss=loss, step=step)
                x_adv = x_adv + (sign * self.step_size) * _normalize(g, self.norm)
                x_adv = ctx.clip(self.project(xa, x_adv))
            if self.restarts == 1:
                return _put(best, active, x_adv)
            pred = ctx.classify(x_adv, active)
            hit = ctx.is_adversarial(pred, la)
            keep = hit if restart < self.restarts - 1 else xp.ones_like(hit)
            # First restart fills every sample; later ones replace only newly broken samples.
            if restart == 0:
                best = _put(best, active, x_adv)
            else:
                best = _put(
                    best, xp.take(active, xp.nonzero(keep)[0], axis=0), xp.take(x_adv, xp.nonzero(keep)[0], axis=0)
                )
            broken = _mark(broken, active, hit)
            active = xp.nonzero(~broken)[0]
            if active.shape[0] == 0:
                break
        return best


def _put(base, idx, rows):
    """``base`` with rows ``idx`` (sorted, unique) replaced by ``rows`` (array API: no scatter)."""
    return put_rows(base, idx, rows)


def _mark(flags, idx, values):
    """``flags`` with ``flags[idx] | values`` at rows ``idx`` (sorted, unique)."""
    xp = namespace(flags)
    return put_rows(flags, idx, xp.take(flags, idx, axis=0) | values)


class FGSM(GradientDescentAttack):
    name = "fgsm"
    aliases = ("fgm",)
    summary = "Fast gradient sign method: one step of size eps (Goodfellow et al. 2015); l2 = FGM"
    random_start_default = False

    def __init__(self, *, norm: str = "linf", eps: float = 8 / 255, loss: str = "ce"):
        super().__init__(norm=norm, eps=eps, steps=1, step_size=eps, random_start=False, loss=loss)


class BIM(GradientDescentAttack):
    name = "bim"
    aliases = ("ifgsm", "i-fgsm")
    summary = "Basic iterative method: PGD without random start (Kurakin et al. 2017)"
    random_start_default = False
    step_rule = 1.25


class PGD(GradientDescentAttack):
    name = "pgd"
    aliases = ("pgd_linf",)
    summary = "Projected gradient descent with random start and restarts (Madry et al. 2018)"
    random_start_default = True
    step_rule = 2.5
