"""APGD: Auto-PGD (Croce & Hein, ICML 2020), the first stage of AutoAttack.

The authors' released code (fra31/auto-attack, ``autoattack/autopgd_base.py``) is the spec:

- random start on the eps-sphere: linf ``x + eps · t / ‖t‖∞`` with t uniform in [-1, 1]; l2
  ``x + eps · t / ‖t‖₂`` with t Gaussian; then clipped to the value range;
- step size ``2 · eps`` per sample, momentum 0.75 (``x ← x + 0.75 (z − x) + 0.25 (x − x_prev)``
  with z the projected gradient step; none at the first step), both points projected;
- checkpoints: the first after ``⌈0.22 · steps⌉`` iterations (int, >= 1), each later one
  ``0.03 · steps`` earlier, down to ``0.06 · steps``. At a checkpoint a sample halves its step
  and restarts from its best-loss iterate when the loss rose in at most ``rho`` (0.75) of the
  steps since the last one, or when the step was not halved last time and the best loss did
  not improve;
- ``restarts`` runs, each on the samples no earlier run broke; samples the model misclassifies
  unattacked are not attacked.

A sample's result is its last adversarial iterate if any iterate was adversarial, else its
best-loss iterate. Multi-label models: ``ce`` is the binary cross-entropy of the label vector
(:func:`advonnx.losses.bce`), success a flipped finding. ``loss``: ``ce`` (cross-entropy) or ``dlr`` (difference of logits ratio,
:func:`advonnx.losses.dlr`; for 2 and 3 classes see there). Segmentation models: ``ce`` is
the per-pixel cross-entropy averaged over the image, success is the suite's (>= half of the
pixels flipped).

Gradients: CE, per-pixel CE and untargeted DLR on exact gradients take one run of the gradient
graph per step, which returns the loss, its input gradient and the decision scores
(``ctx.loss_grad_decisions``; the graph's DLR picks the ranked scores with ArgMax one-hots, so its
gradient is the host formula's). CE on logits is taken scale-free: the log-odds
``d = LSE_{j≠y} z_j − z_y`` (CE = softplus(d), so every comparison of losses is unchanged) and
its gradient, CE's direction without the factor that rounds to 0 in float32 for confident
logits (a model with large logits would otherwise mask itself; the authors' code has this
gap). Targeted DLR (APGD-T) queries the scores (``ctx.scores``: decisions and the attacked
logits), computes the loss on the attacked tensor and its gradient w.r.t. the scores in the
array namespace (:func:`advonnx.losses.score_gradient`), and pulls it back to the input with one
vector-Jacobian product (``ctx.vjp``: exact ONNX graph or NES/SPSA): DLR's gradient w.r.t. the
scores is one-hot differences, so a cotangent needs no target input in the gradient graph; the
price is one forward pass more per step. Estimated gradients take the same two calls per step
for every loss. ``eot_iter`` averages the
gradient over that many evaluations (Expectation over Transformation, for randomized models).

eps and step sizes are in the model's value units.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import AdvonnxError
from ..losses import score_gradient
from ..xp import batch_view, from_numpy, namespace, norms, to_numpy
from ._batch import host_bool, scatter, take
from .base import Attack, AttackContext


class APGD(Attack):
    eps: float  # a budgeted attack: the base refuses eps=None
    name = "apgd"
    aliases: ClassVar[tuple[str, ...]] = ("auto_pgd",)  # APGD-T declares its own
    summary = "Auto-PGD: step-size schedule, momentum, CE or DLR loss (Croce & Hein 2020; AutoAttack's first stage)"
    norms = ("linf", "l2")
    needs = "gradient"
    tasks: ClassVar[tuple[str, ...]] = ("classification", "segmentation")
    gradient_loss = "cotangent"
    multilabel = True  # loss ce → bce of the label vectors (dlr has no multi-label form)

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        eot_iter: int = 1,
    ):
        super().__init__(norm=norm, eps=eps)
        if loss not in ("ce", "dlr"):
            raise AdvonnxError(f"{self.name}: loss must be 'ce' or 'dlr', not {loss!r}")
        if steps < 1 or restarts < 1 or eot_iter < 1:
            raise AdvonnxError(f"{self.name}: steps, restarts and eot_iter must be >= 1")
        if not 0 < rho <= 1:
            raise AdvonnxError(f"{self.name}: rho must be in (0, 1]")
        self.steps, self.restarts, self.eot_iter = int(steps), int(restarts), int(eot_iter)
        self.loss, self.rho = loss, float(rho)

    # -- pieces shared with APGD-T ------------------------------------------------------------
    def _loss_name(self, ctx: AttackContext) -> str:
        if ctx.spec.task == "segmentation":
            if self.loss != "ce":
                raise AdvonnxError(f"{self.name}: segmentation models take loss 'ce' (per-pixel), not {self.loss!r}")
            return "seg_ce"
        if ctx.multilabel:
            if self.loss != "ce":
                raise AdvonnxError(
                    f"{self.name}: multi-label models take loss 'ce' (binary cross-entropy per finding), "
                    f"not {self.loss!r}"
                )
            return "bce"
        return self.loss

    def _fooled(self, ctx: AttackContext, scores, labels):
        """Per sample: the scores are adversarial (untargeted, multi-label: as the context;
        dense: >= half the pixels)."""
        return ctx.is_adversarial(ctx.decide(scores), labels, targeted=ctx.multilabel and ctx.targeted)

    def _loss_grad(self, ctx: AttackContext, x, labels, idx, target, loss: str):
        """Loss (N,), its input gradient (averaged over ``eot_iter`` evaluations) and scores."""
        grad = None
        for _ in range(self.eot_iter):
            if target is None and loss in ("ce", "seg_ce", "bce", "dlr"):
                # a label loss the gradient graph computes itself: one forward-backward run per
                # step gives loss, gradient and decisions (as torch's autograd does)
                # scale-free CE: the log-odds d (CE = softplus(d), the same order of iterates) and
                # CE's gradient direction without the factor 1 − p_y that underflows to exact 0
                # for confident logits (only the direction and loss comparisons enter APGD)
                value, g, scores = ctx.loss_grad_decisions(x, labels, idx, loss=loss, scale_free=loss == "ce")
                grad = g if grad is None else grad + g
                continue
            # decisions from the model's output; the loss on the attacked tensor (the logits
            # before a final Softmax/Sigmoid when there is one), the tensor ctx.vjp differentiates
            scores, attacked = ctx.scores(x, idx)
            value, cot = score_gradient(
                loss,
                attacked,
                labels,
                target=target,
                axis=ctx.spec.class_axis,
                probabilities=ctx.spec.attacked_scores == "probabilities",
                threshold=ctx.spec.decision_threshold,
            )
            _, g = ctx.vjp(x, cot, idx)
            grad = g if grad is None else grad + g
        assert grad is not None  # eot_iter >= 1 evaluations
        if self.eot_iter > 1:
            grad = grad / self.eot_iter
        return value, grad, scores

    def _project(self, x, z):
        """``z`` onto the eps-ball around ``x`` (the authors' formulas; range clipping apart)."""
        xp = namespace(x)
        if self.norm == "linf":
            return xp.minimum(xp.maximum(z, x - self.eps), x + self.eps)
        d = z - x
        n = norms(d, "l2")
        scale = xp.minimum(xp.full_like(n, self.eps), n) / (n + 1e-12)
        return x + d * batch_view(xp.astype(scale, d.dtype), d.ndim)

    def _direction(self, g):
        xp = namespace(g)
        if self.norm == "linf":
            return xp.sign(g)
        return g / batch_view(norms(g, "l2") + 1e-12, g.ndim)

    def _start(self, ctx: AttackContext, x):
        xp = namespace(x)
        if self.norm == "linf":
            t = ctx.rng.uniform(x.shape, -1.0, 1.0, like=x)
            t = t / batch_view(norms(t, "linf") + 1e-12, x.ndim)
        else:
            t = ctx.rng.normal(x.shape, like=x)
            t = t / batch_view(norms(t, "l2") + 1e-12, x.ndim)
        return ctx.clip(x + self.eps * xp.astype(t, x.dtype))

    def single_run(self, ctx: AttackContext, x, labels, idx, target=None):
        """One APGD run on the rows ``x`` (samples ``idx``): (best-loss iterate, still robust,
        best loss, last adversarial iterate), the authors' ``attack_single_run``."""
        xp = namespace(x)
        loss = self._loss_name(ctx)
        n, steps = x.shape[0], self.steps
        k = max(int(0.22 * steps), 1)
        k_min, k_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
        x_adv = self._start(ctx, x)
        value, grad, scores = self._loss_grad(ctx, x_adv, labels, idx, target, loss)
        x_best, x_best_adv, grad_best, loss_best = x_adv, x_adv, grad, value
        robust = ~self._fooled(ctx, scores, labels)
        step = xp.full((n,), 2.0 * self.eps, dtype=x.dtype)
        x_old = x_adv
        history = [xp.zeros_like(value) for _ in range(steps)]  # the authors' loss_steps
        since_check = 0
        loss_best_last = loss_best
        reduced_last = xp.ones((n,), dtype=xp.bool)
        for i in range(steps):
            momentum = x_adv - x_old
            x_old = x_adv
            a = 0.75 if i > 0 else 1.0
            z = ctx.clip(self._project(x, x_adv + batch_view(step, x.ndim) * self._direction(grad)))
            x_adv = ctx.clip(self._project(x, x_adv + (z - x_adv) * a + momentum * (1 - a)))
            value, grad, scores = self._loss_grad(ctx, x_adv, labels, idx, target, loss)
            fooled = self._fooled(ctx, scores, labels)
            robust = robust & ~fooled
            x_best_adv = xp.where(batch_view(fooled, x.ndim), x_adv, x_best_adv)
            history[i] = value
            better = value > loss_best
            bb = batch_view(better, x.ndim)
            x_best, grad_best = xp.where(bb, x_adv, x_best), xp.where(bb, grad, grad_best)
            loss_best = xp.where(better, value, loss_best)
            since_check += 1
            if since_check == k:
                # loss increases over the last k steps (index -1 reads the authors' unfilled last row)
                ups = sum(xp.astype(history[i - c] > history[i - c - 1], xp.float32) for c in range(k))
                reduce = (ups <= k * self.rho) | (~reduced_last & (loss_best_last >= loss_best))
                reduced_last, loss_best_last = reduce, loss_best
                step = xp.where(reduce, step / 2.0, step)
                rb = batch_view(reduce, x.ndim)
                x_adv, grad = xp.where(rb, x_best, x_adv), xp.where(rb, grad_best, grad)
                since_check = 0
                k = max(k - k_decr, k_min)
        return x_best, robust, loss_best, x_best_adv

    def _initial(self, ctx: AttackContext, x, labels):
        """The samples to attack (host bool: correct unattacked) and the clean scores."""
        scores = ctx.predict(x, np.arange(x.shape[0]))
        return ~host_bool(self._fooled(ctx, scores, labels)), scores

    def _runs(self, ctx: AttackContext, x, labels, robust: np.ndarray, out, targets=None):
        """``restarts`` runs on the still-robust samples (host bool ``robust``); returns
        (result, still robust). Broken samples keep their adversarial iterate, robust ones the
        highest-loss iterate over runs."""
        xp = namespace(x)
        best_loss = np.full(x.shape[0], -np.inf)
        for _ in range(self.restarts):
            active = np.nonzero(robust)[0]
            if active.shape[0] == 0:
                break
            xa, la = take(x, active), take(labels, active)
            ta = None if targets is None else take(targets, active)
            x_best, still, loss_best, x_best_adv = self.single_run(ctx, xa, la, active, ta)
            still, loss_host = host_bool(still), np.asarray(to_numpy(loss_best), dtype=np.float64)
            take_best = still & (loss_host > best_loss[active])
            pick_adv = from_numpy(x, ~still)
            pick_best = from_numpy(x, take_best)
            rows = xp.where(
                batch_view(pick_adv, x.ndim),
                x_best_adv,
                xp.where(batch_view(pick_best, x.ndim), x_best, take(out, active)),
            )
            out = scatter(out, active, rows)
            best_loss[active] = np.where(take_best, loss_host, best_loss[active])
            robust = robust.copy()
            robust[active] = still
        return out, robust

    def run(self, ctx: AttackContext, x, labels):
        robust, _ = self._initial(ctx, x, labels)
        out, _ = self._runs(ctx, x, labels, robust, x)
        return out
