"""DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016), L2 and Linf.

Each step linearizes the model around the current point and moves to the closest linearized
boundary among ``candidates`` classes: for the label ``l`` and each candidate ``k``,
``f_k = z_k - z_l`` and ``w_k = ∇f_k``; the step is ``r = (|f_k| + 1e-4) / ‖w_k‖₂² · w_k`` (L2)
or ``(|f_k| + 1e-4) / ‖w_k‖₁ · sign(w_k)`` (Linf, the dual norm) for the ``k`` with the
smallest ``|f_k| / ‖w_k‖``. As in the paper (Alg. 1/2) and foolbox 3, the overshoot multiplies
the **accumulated** perturbation: ``x = x0 + (1 + overshoot) · Σ r`` (torchattacks applies it per
step, which leaves its points on the boundary). Units: the model's value units.

Batching: all samples still not adversarial and all their ``candidates - 1`` classes go through
one vector-Jacobian product call per step (rows = samples × classes, cotangent = one-hot(k) −
one-hot(l)), whose value is the logit difference ``f_k`` itself. Candidates are the label plus
the ``candidates - 1`` highest-scoring other classes at the clean input; a targeted run has the
target as its only candidate. Samples leave the batch as soon as they are adversarial; samples
already adversarial at ``x`` (misclassified, or at the target) take no step (minimal norm 0).

The robustness measure of the paper, ``ρ = mean ‖r‖₂ / ‖x‖₂`` over the broken samples, is
:func:`rho`.
"""

from __future__ import annotations

from ..errors import AdvonnxError
from ..xp import batch_view, flat, namespace, norms
from ._batch import candidate_classes, onehot, put_rows, repeat_rows
from .base import Attack, AttackContext


def rho(x, x_adv, success):
    """DeepFool's robustness measure: mean over broken samples of ‖x_adv − x‖₂ / ‖x‖₂."""
    xp = namespace(x)
    r = norms(x_adv - x, "l2") / xp.clip(norms(x, "l2"), 1e-12, None)
    n = xp.sum(xp.astype(success, r.dtype))
    return float(xp.sum(xp.where(success, r, 0.0)) / n) if float(n) > 0 else float("nan")


class DeepFool(Attack):
    name = "deepfool"
    summary = "DeepFool minimal perturbation, overshoot on the accumulated step (Moosavi-Dezfooli et al. 2016)"
    norms = ("l2", "linf")
    minimal_norm = True
    tasks = ("classification",)

    def __init__(
        self,
        *,
        norm: str = "l2",
        eps: float | None = None,
        steps: int = 50,
        candidates: int = 10,
        overshoot: float = 0.02,
    ):
        super().__init__(norm=norm, eps=eps)
        if steps < 1:
            raise AdvonnxError("deepfool: steps must be >= 1")
        if candidates < 2:
            raise AdvonnxError("deepfool: candidates must be >= 2 (the label and one other class)")
        if overshoot < 0:
            raise AdvonnxError("deepfool: overshoot must be >= 0")
        self.steps = int(steps)
        self.candidates = int(candidates)
        self.overshoot = float(overshoot)

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        n = x.shape[0]
        every = xp.arange(n)
        scores, logits = ctx.scores(x, every)  # decisions; the logits the linearization uses
        c = scores.shape[1]
        if ctx.targeted:
            # labels are targets: move from the clean prediction towards the target only.
            source = xp.argmax(scores, axis=1)
            cands = labels[:, None]
        else:
            source = labels
            cands = candidate_classes(logits, labels, min(self.candidates, c))
        k = cands.shape[1]
        p_total = xp.zeros_like(x)
        x_adv = x
        # samples already adversarial at x (misclassified, or at the target) take no step: norm 0
        done = ctx.is_adversarial(xp.argmax(scores, axis=1), labels)
        active = xp.take(every, xp.nonzero(~done)[0], axis=0)
        for _ in range(self.steps):
            if active.shape[0] == 0:
                break
            xa = xp.take(x_adv, active, axis=0)
            src = xp.take(source, active, axis=0)
            ca = xp.take(cands, active, axis=0)
            na = active.shape[0]
            cot = onehot(xp.reshape(ca, (-1,)), c, x.dtype) - onehot(repeat_rows(src, k), c, x.dtype)
            f, w = ctx.vjp(repeat_rows(xa, k), cot, repeat_rows(active, k))
            f = xp.reshape(xp.astype(f, xp.float64), (na, k))  # z_k - z_l (< 0 until crossed)
            wf = xp.astype(flat(w), xp.float64)
            dual = xp.sum(xp.abs(wf), axis=1) if self.norm == "linf" else xp.sqrt(xp.sum(wf * wf, axis=1))
            dist = xp.abs(f) / (xp.reshape(dual, (na, k)) + 1e-8)
            best = xp.argmin(dist, axis=1)
            pick = xp.arange(na) * k + best
            w_best = xp.take(w, pick, axis=0)
            d_best = xp.take(xp.reshape(dist, (-1,)), pick, axis=0) + 1e-4
            if self.norm == "linf":
                step = batch_view(xp.astype(d_best, x.dtype), x.ndim) * xp.sign(w_best)
            else:
                scale = d_best / (xp.take(dual, pick, axis=0) + 1e-8)
                step = batch_view(xp.astype(scale, x.dtype), x.ndim) * w_best
            pa = xp.take(p_total, active, axis=0) + step
            p_total = put_rows(p_total, active, pa)
            x0a = xp.take(x, active, axis=0)
            xa = ctx.clip(x0a + (1.0 + self.overshoot) * pa)
            x_adv = put_rows(x_adv, active, xa)
            pred = ctx.classify(xa, active)
            done = ctx.is_adversarial(pred, xp.take(labels, active, axis=0))
            active = xp.take(active, xp.nonzero(~done)[0], axis=0)
        return x_adv
