"""SegPGD (Gu, Zhao, Tresp, Torr, ECCV 2022) for segmentation models, Linf and L2.

PGD whose per-pixel cross-entropy is split by the current prediction: at step ``t`` (1-based,
of ``T = steps``) the pixels ``P^T`` still classified as their label and the pixels ``P^F``
already wrong enter the loss as (the paper's Alg. 1 and eq. 4)

    L(x^{t-1}) = (1 − λ_t) / (H·W) Σ_{j∈P^T} CE_j + λ_t / (H·W) Σ_{k∈P^F} CE_k,
    λ_t = (t − 1) / (2T),

so the first steps push the pixels that are still correct and the weight moves towards the
wrong ones as λ_t grows to (T − 1)/(2T) < 1/2. The update is PGD's: random start in the
eps-ball (Linf: uniform in [−ε, ε]; L2: uniform in the ball), ``x^t = Π_ε(x^{t-1} + α
sign(∇L))`` (L2: ``α ∇L / ‖∇L‖₂``), clipped to the value range. The split uses the prediction
at ``x^{t-1}`` (one forward pass per step before the gradient: ~1.3× PGD's cost per step).

advonnx computes the weighted loss as ``seg_ce`` with the pixel weights as its mask; that
loss divides by the sum of the weights instead of H·W, a positive factor per sample that
changes neither ``sign(∇L)`` nor ``∇L / ‖∇L‖₂``. Targeted (a target map): "correct" pixels are
those not yet at their target, and the loss is descended. Step size: ``step_size`` or
``2.5 · eps / steps`` (PGD's rule, so that PGD and SegPGD compare at the same budget).
eps and the step size are in the model's value units.
"""

from __future__ import annotations

from ..xp import namespace
from .base import AttackContext, pixel_hit
from .gradient_descent import GradientDescentAttack


def segpgd_lambda(step: int, steps: int) -> float:
    """λ_t = (t − 1) / (2T) for the 0-based ``step`` = t − 1."""
    return step / (2.0 * steps)


def segpgd_weights(pred, labels, lam: float, dtype, *, targeted: bool = False):
    """Per-pixel weights: (1 − λ) where the pixel is not yet adversarial, λ where it is."""
    xp = namespace(pred)
    done = pixel_hit(pred, labels, targeted)
    return xp.where(done, xp.asarray(lam, dtype=dtype), xp.asarray(1.0 - lam, dtype=dtype))


class SegPGD(GradientDescentAttack):
    name = "segpgd"
    aliases = ("seg_pgd", "seg-pgd")
    summary = "PGD on per-pixel CE weighted by correct/wrong pixels, λ_t = (t−1)/2T (Gu et al. 2022)"
    tasks = ("segmentation",)
    multilabel = False  # per-pixel scores, not findings
    random_start_default = True
    step_rule = 2.5

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool | None = None,
        restarts: int = 1,
    ):
        super().__init__(
            norm=norm, eps=eps, steps=steps, step_size=step_size, random_start=random_start, restarts=restarts
        )

    def gradient(self, ctx: AttackContext, x_adv, labels, idx, *, loss: str, step: int):
        xp = namespace(x_adv)
        pred = ctx.classify(x_adv, idx)
        w = segpgd_weights(
            pred, xp.astype(labels, pred.dtype), segpgd_lambda(step, self.steps), x_adv.dtype, targeted=ctx.targeted
        )
        _, g = ctx.value_and_grad(x_adv, labels, idx, loss="seg_ce", mask=w)
        return g
