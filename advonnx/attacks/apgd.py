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

A sample's result is its first adversarial iterate if any iterate was adversarial (it then
leaves the loop: no further model runs; the authors' code iterates it on and keeps the last
one), else its best-loss iterate. Multi-label models: ``ce`` is the binary cross-entropy of the label vector
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

    def _feasible(self, ctx: AttackContext, x):
        """linf: the eps-ball around ``x`` intersected with the value range, as per-element
        bounds (lo, hi) computed once per run, so that projecting and clipping a step is one
        min and one max (the same numbers as the ball projection followed by the range clip,
        also where ``x`` lies outside the range); None for l2."""
        if self.norm != "linf":
            return None
        return ctx.clip(x - self.eps), ctx.clip(x + self.eps)

    def _step_into(self, ctx: AttackContext, x, feasible, z):
        """``z`` projected onto the eps-ball around ``x`` and clipped to the value range."""
        if feasible is None:
            return ctx.clip(self._project(x, z))
        xp = namespace(z)
        return xp.minimum(xp.maximum(z, feasible[0]), feasible[1])

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
        best loss, first adversarial iterate), the authors' ``attack_single_run`` except that a
        sample leaves the loop at its first adversarial iterate (the authors iterate it to the
        end and keep its last one): which samples stay robust is the same, every row's
        schedule is its own, so the others' iterates do not change, and a broken sample costs
        no further model runs."""
        xp = namespace(x)
        loss = self._loss_name(ctx)
        n, steps = x.shape[0], self.steps
        k = max(int(0.22 * steps), 1)
        k_min, k_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
        x_adv = self._start(ctx, x)
        value, grad, scores = self._loss_grad(ctx, x_adv, labels, idx, target, loss)
        fooled = host_bool(self._fooled(ctx, scores, labels))
        # per-row state of the rows still iterated ("live", positions among the n rows)
        rows = _Rows(x_adv, value, fooled)
        live = {
            "x": x,
            "labels": labels,
            "idx": np.asarray(idx),
            "target": target,
            "feasible": self._feasible(ctx, x),
            "x_adv": x_adv,
            "x_old": x_adv,
            "grad": grad,
            "x_best": x_adv,
            "grad_best": grad,
            "loss_best": value,
            "loss_best_last": value,
            "step": xp.full((n,), 2.0 * self.eps, dtype=x.dtype),
            "reduced_last": xp.ones((n,), dtype=xp.bool),
        }
        history: list = [None] * steps  # the authors' loss_steps (None: a row of zeros)
        live, history = rows.retire(live, history, fooled, x_adv)
        since_check = 0
        for i in range(steps):
            if rows.count == 0:
                break
            x0, feasible = live["x"], live["feasible"]
            momentum = live["x_adv"] - live["x_old"]
            x_prev = live["x_adv"]
            a = 0.75 if i > 0 else 1.0
            step = batch_view(live["step"], x0.ndim)
            z = self._step_into(ctx, x0, feasible, x_prev + step * self._direction(live["grad"]))
            x_adv = self._step_into(ctx, x0, feasible, x_prev + (z - x_prev) * a + momentum * (1 - a))
            value, grad, scores = self._loss_grad(ctx, x_adv, live["labels"], live["idx"], live["target"], loss)
            fooled = host_bool(self._fooled(ctx, scores, live["labels"]))
            history[i] = value
            better = value > live["loss_best"]
            bb = batch_view(better, x0.ndim)
            live["x_best"] = xp.where(bb, x_adv, live["x_best"])
            live["grad_best"] = xp.where(bb, grad, live["grad_best"])
            live["loss_best"] = xp.where(better, value, live["loss_best"])
            live["x_old"], live["x_adv"], live["grad"] = x_prev, x_adv, grad
            since_check += 1
            if since_check == k:
                # loss increases over the last k steps (index -1 reads the authors' unfilled last row)
                ups = sum(
                    xp.astype(_row(history, i - c, value) > _row(history, i - c - 1, value), xp.float32)
                    for c in range(k)
                )
                reduce = (ups <= k * self.rho) | (~live["reduced_last"] & (live["loss_best_last"] >= live["loss_best"]))
                live["reduced_last"], live["loss_best_last"] = reduce, live["loss_best"]
                live["step"] = xp.where(reduce, live["step"] / 2.0, live["step"])
                rb = batch_view(reduce, x0.ndim)
                live["x_adv"] = xp.where(rb, live["x_best"], live["x_adv"])
                live["grad"] = xp.where(rb, live["grad_best"], live["grad"])
                since_check = 0
                k = max(k - k_decr, k_min)
            live, history = rows.retire(live, history, fooled, x_adv)
        return rows.finish(live)

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


def _take_rows(value, keep: np.ndarray):
    """Rows ``keep`` of a live-state entry: an array (host or device), a tuple of arrays (the
    linf bounds), or None (no target, no bounds, a step not run yet)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(take(v, keep) for v in value)
    return take(value, keep)


def _row(history: list, i: int, like):
    """``history[i]`` (the losses of step ``i``), zeros where that step has not run yet."""
    got = history[i]
    return namespace(like).zeros_like(like) if got is None else got


class _Rows:
    """The results of one APGD run over all its rows while the live rows shrink: a row leaves
    at its first adversarial iterate (kept as its result) with its best-loss iterate and loss
    so far; :meth:`finish` adds the rows that stayed robust."""

    def __init__(self, x_start, loss_start, fooled: np.ndarray):
        n = fooled.shape[0]
        self.positions = np.arange(n)  # positions (among the run's rows) of the live rows
        self.robust = np.ones(n, dtype=bool)
        self.x_best, self.x_best_adv, self.loss_best = x_start, x_start, loss_start

    @property
    def count(self) -> int:
        return int(self.positions.shape[0])

    def retire(self, live: dict, history: list, fooled: np.ndarray, x_adv):
        """Record and drop the live rows ``fooled`` (host bool over the live rows), whose
        adversarial iterate is their row of ``x_adv`` (the point just evaluated)."""
        if not fooled.any():
            return live, history
        gone, keep = np.nonzero(fooled)[0], np.nonzero(~fooled)[0]
        where = self.positions[gone]
        self.robust[where] = False
        self.x_best_adv = scatter(self.x_best_adv, where, take(x_adv, gone))
        self.x_best = scatter(self.x_best, where, take(live["x_best"], gone))
        self.loss_best = scatter(self.loss_best, where, take(live["loss_best"], gone))
        self.positions = self.positions[keep]
        if keep.shape[0] == 0:
            return {}, history
        return {name: _take_rows(value, keep) for name, value in live.items()}, [_take_rows(h, keep) for h in history]

    def finish(self, live: dict):
        """(best-loss iterate, still robust, best loss, first adversarial iterate) of all rows."""
        if self.count:
            self.x_best = scatter(self.x_best, self.positions, live["x_best"])
            self.loss_best = scatter(self.loss_best, self.positions, live["loss_best"])
        robust = from_numpy(self.loss_best, self.robust)
        return self.x_best, robust, self.loss_best, self.x_best_adv
