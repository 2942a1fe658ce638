"""Jacobian-based saliency map attack (Papernot et al., EuroS&P 2016), an L0 attack.

Each step changes two input elements by ``theta`` (a fraction of the value-range width
``hi − lo``: 1.0 moves an element across the whole range, the default as in the paper for
[0, 1] inputs, so a [0, 255] model gets the same attack scaled by 255; > 0 increases, < 0
decreases; clipped to the value range) chosen by Papernot's pairwise saliency map: with
``α = ∇F_goal`` and ``β = ∇(Σ F_other)``, in the direction ``s = sign(theta)``, the pair
``(p, q)`` maximizes ``(α_p + α_q)·|β_p + β_q|`` subject to ``s(α_p + α_q) > 0`` and
``s(β_p + β_q) < 0``. Targeted: goal = the target class, other = every other class.
Untargeted: goal = the highest-scoring class other than the label at the current point (re-chosen
every step), other = every other class. An element stays in the
search domain until it reaches the bound ``theta`` pushes it to (as ART). A
sample stops when it is adversarial or when more than ``gamma`` of its elements have changed.

``saliency`` says what ``F`` is. ``probabilities`` (default; JSMA-F in Carlini & Wagner 2017):
the softmax of the logits, as cleverhans (Papernot's library, ``jsma_symbolic`` differentiates
``model.get_probs``). The probabilities sum to one, so ``β = −α`` and the best pair is the two
elements with the largest ``s·∇ log p_goal = s·(∇z_goal − Σ_j p_j ∇z_j)`` (one vector-Jacobian
product per step; ``p_goal`` > 0 only rescales the map). ``logits`` (JSMA-Z): the logits, ``β``
the sum of all other logits' gradients (two products per step). JSMA-Z loses to both JSMA-F and
ART's single-feature shortcut (top two of ``∇z_target``) on models whose other logits move
together: the sum over nine other classes is dominated by classes that do not compete, so the
product rewards elements that push those down (sklearn-digits CNN, θ = 1, γ = 0.1, 100
samples: targeted success JSMA-Z 0.31, ART 0.48, JSMA-F 0.60; untargeted JSMA-F 1.00, ART with
a random target 0.65-0.74; tests/test_paper_attacks_digits.py).
A model whose scores are probabilities is used as it is under either setting.

Memory (why 224×224×3 works): the exact pair search is quadratic in the number of elements
``n`` (n = 150 528 gives 1.1·10¹⁰ pairs per image; torchattacks#187 reports 84 GiB). Here the
pairs are searched exactly among ``pair_candidates`` elements per sample, the ones with the
largest single-element score ``s·(α_i − β_i)`` in the search domain (a pair's saliency is large
only when its elements move the goal up and the others down; under JSMA-F this ranking already
gives the best pair). Memory per step is
O(N·n) for the two gradients plus O(N·m²) for the pair table (m = pair_candidates, 64 → 4 096
pairs), time O(N·n log n) for the ranking; everything is batched over samples. When no pair
satisfies both sign conditions, the pair with the largest ``s·(A − B)`` is taken so the
attack keeps moving (Papernot's version would stop and fail).

L0 is reported as changed elements (``l0``); :func:`changed_pixels` counts changed spatial
positions (any channel).
"""

from __future__ import annotations

import math

from ..errors import AdvonnxError
from ..xp import flat, namespace
from ._batch import candidate_classes, onehot, put_rows, repeat_rows
from .base import Attack, AttackContext, changed_pixels  # noqa: F401 (re-exported)


class JSMA(Attack):
    name = "jsma"
    aliases = ("saliency", "jsm")
    summary = (
        "Jacobian saliency map attack, pairwise map on softmax probabilities, L0 (Papernot et al. 2016); "
        "theta in fractions of the value range"
    )
    norms = ("l0",)
    minimal_norm = True
    tasks = ("classification",)

    def __init__(
        self,
        *,
        norm: str = "l0",
        eps: float | None = None,
        theta: float = 1.0,
        gamma: float = 0.1,
        pair_candidates: int = 64,
        saliency: str = "probabilities",
    ):
        super().__init__(norm=norm, eps=eps)
        if theta == 0:
            raise AdvonnxError("jsma: theta must be nonzero (> 0 increases, < 0 decreases elements)")
        if not 0 < gamma <= 1:
            raise AdvonnxError("jsma: gamma (largest fraction of changed elements) must lie in (0, 1]")
        if pair_candidates < 2:
            raise AdvonnxError("jsma: pair_candidates must be >= 2")
        if saliency not in ("probabilities", "logits"):
            raise AdvonnxError(f"jsma: saliency must be 'probabilities' or 'logits', not {saliency!r}")
        self.theta = float(theta)
        self.gamma = float(gamma)
        self.pair_candidates = int(pair_candidates)
        self.saliency = saliency

    @staticmethod
    def _runner_up(scores, labels, c: int, dtype):
        return onehot(candidate_classes(scores, labels, 2)[:, 0], c, dtype)

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        n = x.shape[0]
        shape = tuple(x.shape[1:])
        nf = math.prod(shape)
        s = 1.0 if self.theta > 0 else -1.0
        bound = ctx.hi if self.theta > 0 else ctx.lo
        every = xp.arange(n)
        scores, logits = ctx.scores(x, every)  # decisions; logits pick the runner-up
        c = scores.shape[1]
        goal = onehot(labels, c, x.dtype) if ctx.targeted else self._runner_up(logits, labels, c, x.dtype)
        xf = xp.astype(flat(x), x.dtype)
        x0f = xf
        pred = xp.argmax(scores, axis=1)
        active = xp.nonzero(~ctx.is_adversarial(pred, labels))[0]
        # the map differentiates the attacked tensor (logits before a final Softmax, when there is
        # one): JSMA-F takes its softmax here; a probability-only model's scores are used as they are
        softmax = self.saliency == "probabilities" and ctx.spec.attacked_scores != "probabilities"
        m = min(self.pair_candidates, nf)
        pos = xp.arange(nf)
        upper = xp.triu(xp.ones((m, m), dtype=xp.bool), k=1)
        for _ in range(nf // 2 + 1):
            if active.shape[0] == 0:
                break
            na = active.shape[0]
            xa = xp.take(xf, active, axis=0)
            ga = xp.take(goal, active, axis=0)
            if softmax:  # ∇ log p_goal = ∇z_goal − Σ_j p_j ∇z_j; β = −α (module docstring)
                sc = xp.astype(xp.take(logits, active, axis=0), xp.float64)
                p = xp.exp(sc - xp.max(sc, axis=1, keepdims=True))
                p = p / xp.sum(p, axis=1, keepdims=True)
                cot = xp.astype(xp.astype(ga, xp.float64) - p, x.dtype)
                _, g = ctx.vjp(xp.reshape(xa, (na,) + shape), cot, active)
                alpha = s * xp.reshape(xp.astype(g, xp.float64), (na, nf))
                beta = -alpha
            else:
                cot = xp.reshape(xp.stack([ga, 1.0 - ga], axis=1), (2 * na, c))
                _, g = ctx.vjp(xp.reshape(repeat_rows(xa, 2), (2 * na,) + shape), cot, repeat_rows(active, 2))
                g = xp.reshape(xp.astype(g, xp.float64), (na, 2, nf))
                alpha, beta = s * g[:, 0, :], s * g[:, 1, :]
            domain = (xa < bound) if self.theta > 0 else (xa > bound)
            single = xp.where(domain, alpha - beta, -xp.inf)
            cand = xp.argsort(-single, axis=1, stable=True)[:, :m]
            a = xp.take_along_axis(alpha, cand, axis=1)
            b = xp.take_along_axis(beta, cand, axis=1)
            ok = xp.take_along_axis(domain, cand, axis=1)
            pair_a = a[:, :, None] + a[:, None, :]
            pair_b = b[:, :, None] + b[:, None, :]
            usable = upper[None, :, :] & ok[:, :, None] & ok[:, None, :]
            valid = usable & (pair_a > 0) & (pair_b < 0)
            sal = xp.where(valid, pair_a * -pair_b, -xp.inf)
            fallback = xp.where(usable, pair_a - pair_b, -xp.inf)
            has_valid = xp.any(xp.reshape(valid, (na, -1)), axis=1)
            best = xp.where(
                has_valid,
                xp.argmax(xp.reshape(sal, (na, -1)), axis=1),
                xp.argmax(xp.reshape(fallback, (na, -1)), axis=1),
            )
            pi = xp.take_along_axis(cand, (best // m)[:, None], axis=1)
            qi = xp.take_along_axis(cand, (best % m)[:, None], axis=1)
            hit = ((pos[None, :] == pi) | (pos[None, :] == qi)) & domain
            moved = xp.clip(xa + self.theta * (ctx.hi - ctx.lo), ctx.lo, ctx.hi)
            xa = xp.where(hit, moved, xa)
            xf = put_rows(xf, active, xa)
            sa, za = ctx.scores(xp.reshape(xa, (na,) + shape), active)
            scores = put_rows(scores, active, sa)
            logits = put_rows(logits, active, za)
            pred = xp.argmax(sa, axis=1)
            if not ctx.targeted:
                goal = put_rows(goal, active, self._runner_up(za, xp.take(labels, active, axis=0), c, x.dtype))
            done = ctx.is_adversarial(pred, xp.take(labels, active, axis=0))
            changed = xp.sum(xp.astype(xa != xp.take(x0f, active, axis=0), xp.float64), axis=1)
            still = xp.any(xa < bound, axis=1) if self.theta > 0 else xp.any(xa > bound, axis=1)
            keep = ~done & (changed / nf <= self.gamma) & still
            active = xp.take(active, xp.nonzero(keep)[0], axis=0)
        return xp.reshape(xf, x.shape)
