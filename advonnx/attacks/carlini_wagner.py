"""Carlini-Wagner L2 (Carlini & Wagner, IEEE S&P 2017), a minimal-norm attack.

Minimizes ``‖x' − x‖₂² + c · max(z_y − max_{j≠y} z_j + κ, 0)`` (targeted:
``max(max_{j≠t} z_j − z_t + κ, 0)``) over ``w`` with ``x' = mid + half · tanh(w)`` (the tanh
box keeps x' inside the value range ``[mid − half, mid + half]``), by Adam (``steps`` steps of
size ``step_size``), for each ``c`` of a binary search: starting at ``initial_const``, ``c`` is
multiplied by 10 while no adversarial was found, then bisected between the largest failing and
the smallest succeeding value (``binary_search_steps`` rounds). The result is the smallest-L2
adversarial seen over all rounds (foolbox 3's ``L2CarliniWagnerAttack`` follows the same plan).
On a model whose scores are probabilities the margin is taken on log-probabilities (floored at
1e-37), which is the logit margin of a softmax: Carlini & Wagner (objective f6) define it on
the logits Z, and a margin of probabilities saturates (digits CNN with a Softmax output, 100 steps,
5 searches: success 0.27 on probabilities, 0.96 on log-probabilities as foolbox on the logits).
Early abort as in Carlini's code and foolbox: the round ends when the objective summed over the
batch has not fallen by 0.01 % over ``steps / 10`` steps (a per-sample abort stops samples that
are only slow and loses success at few steps). Per active sample and step: one prediction (to pick the best other
class) and one vector-Jacobian product of the margin (exact or estimated). Units: the model's value units.
"""

from __future__ import annotations

import math

from ..errors import AdvonnxError
from ..xp import batch_view, flat, namespace
from ._batch import candidate_classes, onehot, put_rows
from .base import Attack, AttackContext


class CarliniWagnerL2(Attack):
    name = "cw"
    aliases = ("cw_l2", "carlini_wagner")
    summary = "Carlini-Wagner L2: tanh box, Adam, binary search on c (Carlini & Wagner 2017)"
    norms = ("l2",)
    minimal_norm = True
    tasks = ("classification",)

    def __init__(
        self,
        *,
        norm: str = "l2",
        eps: float | None = None,
        steps: int = 100,
        binary_search_steps: int = 9,
        step_size: float = 0.01,
        initial_const: float = 1e-3,
        confidence: float = 0.0,
        abort_early: bool = True,
    ):
        super().__init__(norm=norm, eps=eps)
        if steps < 1 or binary_search_steps < 1:
            raise AdvonnxError("cw: steps and binary_search_steps must be >= 1")
        if not step_size > 0 or not initial_const > 0 or confidence < 0:
            raise AdvonnxError("cw: step_size and initial_const must be > 0, confidence >= 0")
        self.steps = int(steps)
        self.binary_search_steps = int(binary_search_steps)
        self.step_size = float(step_size)
        self.initial_const = float(initial_const)
        self.confidence = float(confidence)
        self.abort_early = bool(abort_early)

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        n = x.shape[0]
        mid, half = (ctx.hi + ctx.lo) / 2.0, (ctx.hi - ctx.lo) / 2.0
        xd = xp.astype(x, xp.float64)
        w0 = xp.atanh(xp.clip((xd - mid) / half, -1.0, 1.0) * 0.999999)
        x_rec = mid + half * xp.tanh(w0)
        consts = xp.full((n,), self.initial_const, dtype=xp.float64)
        lower = xp.zeros((n,), dtype=xp.float64)
        upper = xp.full((n,), xp.inf, dtype=xp.float64)
        best = xp.asarray(x, copy=True)
        best_norm = xp.full((n,), xp.inf, dtype=xp.float64)
        sign = 1.0 if ctx.targeted else -1.0  # objective term: c·max(sign·margin + κ, 0)
        check_every = max(1, math.ceil(self.steps / 10))
        every = xp.arange(n)
        b1, b2, eps_adam = 0.9, 0.999, 1e-8
        probs = ctx.spec.attacked_scores == "probabilities"  # no logits to read (the logits rule)
        tiny = 1e-37  # probabilities floor (float32 normal range), also bounds the cotangent 1/p
        for round_ in range(self.binary_search_steps):
            if round_ == self.binary_search_steps - 1 and self.binary_search_steps >= 10:
                consts = xp.minimum(upper, 1e10)
            delta = xp.zeros_like(xd)
            m1, m2 = xp.zeros_like(xd), xp.zeros_like(xd)
            found = xp.zeros((n,), dtype=xp.bool)
            previous = math.inf
            active = every
            for step in range(self.steps):
                wa = xp.take(w0, active, axis=0) + xp.take(delta, active, axis=0)
                th = xp.tanh(wa)
                xa = mid + half * th
                xa32 = xp.astype(xa, x.dtype)
                la = xp.take(labels, active, axis=0)
                scores = ctx.attack_scores(xa32, active)  # logits (the margin's own scores)
                other = candidate_classes(scores, la, 2)[:, 0]
                c = scores.shape[1]
                # margin = z_other − z_label (untargeted; > 0 is adversarial), for targets z_other − z_t
                cot_o, cot_l = onehot(other, c, xp.float64), onehot(la, c, xp.float64)
                if probs:  # log p_other − log p_label: the logit margin of a softmax (docstring)
                    sd = xp.astype(scores, xp.float64)
                    p_o = xp.clip(xp.sum(sd * cot_o, axis=1), tiny, None)
                    p_l = xp.clip(xp.sum(sd * cot_l, axis=1), tiny, None)
                    cot = cot_o / p_o[:, None] - cot_l / p_l[:, None]
                    _, g = ctx.vjp(xa32, xp.astype(cot, x.dtype), active)
                    margin = xp.log(p_o) - xp.log(p_l)
                else:
                    margin, g = ctx.vjp(xa32, xp.astype(cot_o - cot_l, x.dtype), active)
                    margin = xp.astype(margin, xp.float64)
                ca = xp.take(consts, active, axis=0)
                term = sign * margin + self.confidence
                diff = xa - xp.take(x_rec, active, axis=0)
                objective = xp.sum(flat(diff * diff), axis=1) + ca * xp.clip(term, 0.0, None)
                adv = (margin > self.confidence) if not ctx.targeted else (margin < -self.confidence)
                dist = xp.sqrt(xp.sum(flat((xa - xp.take(xd, active, axis=0)) ** 2), axis=1))
                better = adv & (dist < xp.take(best_norm, active, axis=0))
                best = put_rows(
                    best,
                    active,
                    xp.where(batch_view(better, x.ndim), xp.astype(xa, x.dtype), xp.take(best, active, axis=0)),
                )
                best_norm = put_rows(best_norm, active, xp.where(better, dist, xp.take(best_norm, active, axis=0)))
                found = put_rows(found, active, xp.take(found, active, axis=0) | adv)
                # gradient of the objective w.r.t. x', then through the tanh box to w
                coef = xp.where(term > 0, sign * ca, 0.0)
                gx = 2.0 * diff + batch_view(coef, x.ndim) * xp.astype(g, xp.float64)
                gw = gx * half * (1.0 - th * th)
                t = step + 1
                m1a = b1 * xp.take(m1, active, axis=0) + (1 - b1) * gw
                m2a = b2 * xp.take(m2, active, axis=0) + (1 - b2) * gw * gw
                m1, m2 = put_rows(m1, active, m1a), put_rows(m2, active, m2a)
                upd = -self.step_size * (m1a / (1 - b1**t)) / (xp.sqrt(m2a / (1 - b2**t)) + eps_adam)
                delta = put_rows(delta, active, xp.take(delta, active, axis=0) + upd)
                if self.abort_early and step % check_every == 0:
                    total = float(xp.sum(objective))
                    if not total <= 0.9999 * previous:
                        break
                    previous = total
            upper = xp.where(found, xp.minimum(upper, consts), upper)
            lower = xp.where(found, lower, xp.maximum(lower, consts))
            consts = xp.where(xp.isinf(upper), consts * 10.0, (lower + upper) / 2.0)
        return best
