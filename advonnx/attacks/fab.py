"""FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020), Linf and L2; FAB-T.

A minimal-norm attack that follows the authors' released code, fra31/auto-attack @ a392200
(``autoattack/fab_base.py`` ``attack_single_run`` / ``perturb``, ``fab_projections.py``). Each
step linearizes the model at ``x1``: for the label ``l`` and each other class ``k``,
``f_k = z_k − z_l`` and ``w_k = ∇f_k`` (one vector-Jacobian product per row, cotangent
one-hot(k) − one-hot(l)); the closest linearized boundary ``k*`` (smallest
``|f_k| / ‖w_k‖_dual``) gives the hyperplane ``w·u = b`` with ``b = w·x1 − f``. Both ``x1``
and the original ``x0`` are projected onto it inside the box (``projection_linf`` /
``projection_l2``, exact box-constrained projections), giving ``d1`` and ``d2``; with
``α = min(max(‖d1‖ / (‖d1‖ + ‖d2‖), 0), alpha_max)`` the next point is
``x1 ← clip((x1 + η d1)(1 − α) + (x0 + η d2) α)`` (``eta`` overshoots, the ``x0`` term keeps the
iterate close to the original). Whenever ``x1`` is adversarial it is kept if it is the
smallest so far and then pulled back, ``x1 ← x0 + β (x1 − x0)`` (``beta``). Every step runs on
every attacked sample (no early stop: later steps shrink the norm).

- Restarts: restart ``r > 0`` starts from a random point at radius ``0.5 · min(best, ε_rs)``
  (Linf: uniform noise scaled to that max-norm; L2: a Gaussian direction), ``ε_rs`` = ``eps``
  or, without ``eps``, the authors' default 0.3 (Linf) / 1.0 (L2) of the value range.
- ``eps`` given (AutoAttack's use): as ``perturb``, later runs attack only the samples not yet
  broken within ``eps``, and advonnx projects onto the eps-ball and judges at ``eps``. Without
  ``eps`` every run attacks every sample and the smallest adversarial of all runs is kept.
- ``targeted=True`` is FAB-T as AutoAttack runs it: one run per target class among the
  ``k = min(n_target_classes, classes − 1)`` highest-scoring other classes at the clean input,
  each with the single hyperplane ``z_t − z_l``, and *untargeted* success (any wrong class).
  Target labels (``targeted=True`` in ``advonnx.attack`` or a suite, which name the call's
  target mode) are refused: FAB's targeted hyperplane does not make a target reachable. In a
  suite or on the command line, FAB-T is the attack ``fab_t`` (``fab`` with targeted=True).

Only samples classified as their label are attacked (the others are returned unchanged, broken
at norm 0). The box of the authors' projections is [0, 1]: the attack works in
``u = (x − lo) / (hi − lo)``, so any value range works and every norm is in the model's value
units. Cost per step: ``classes − 1`` (FAB-T: 1) vector-Jacobian rows and one prediction per
attacked sample. The batch is processed at once (projections and their binary searches
included: no loop over samples).
"""

from __future__ import annotations

import math

from ..errors import AdvonnxError
from ..xp import batch_view, flat, namespace, norms
from ._batch import candidate_classes, onehot, put_rows, repeat_rows
from .base import Attack, AttackContext

RESTART_RADIUS = {"linf": 0.3, "l2": 1.0}  # fab_base.py DEFAULT_EPS_DICT_BY_NORM (unit box)
_BIG = 1e12


def _pick(a, idx):
    """``a[i, idx[i]]`` for a 2-D ``a`` and integer ``idx`` (R,)."""
    xp = namespace(a)
    return xp.take_along_axis(a, xp.astype(idx, xp.int64)[:, None], axis=1)[:, 0]


def _safe(v, tiny: float = 0.0):
    """``v`` with (|v| ≤ tiny) entries replaced by 1, for denominators selected away later."""
    xp = namespace(v)
    return xp.where(xp.abs(v) <= tiny, xp.ones_like(v), v)


def _pm(cond, dtype):
    """+1 where ``cond``, -1 elsewhere."""
    xp = namespace(cond)
    return 2 * xp.astype(cond, dtype) - 1


def projection_linf(t, w, b):
    """Per row: the smallest-Linf ``d`` with ``w·(t + d) = b`` and ``t + d`` in [0, 1]^D (when no
    such point exists, the box point closest to the plane). Rows (R, D); ``b`` (R,).
    Transcribes fab_projections.py ``projection_linf`` with masks in place of boolean indexing."""
    xp = namespace(t)
    n_dim = t.shape[1]
    sign = _pm(xp.sum(w * t, axis=1) - b >= 0, t.dtype)
    w = w * sign[:, None]
    b = b * sign
    nz = xp.astype(w != 0, t.dtype)
    a = xp.astype(w < 0, t.dtype)
    d = (a - t) * nz
    p = a - t * (2 * a - 1)
    indp = xp.argsort(p, axis=1)
    b = b - xp.sum(w * t, axis=1)
    b0 = xp.sum(w * d, axis=1)
    indp2 = xp.flip(indp, axis=1)
    ws = xp.take_along_axis(w, indp2, axis=1)
    bs2 = -ws * xp.take_along_axis(d, indp2, axis=1)
    s = xp.cumulative_sum(xp.abs(ws), axis=1)
    sb = xp.cumulative_sum(bs2, axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * xp.take_along_axis(p, indp[:, 0:1], axis=1)[:, 0]
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & ~c_l
    lb = xp.zeros(t.shape[0], dtype=t.dtype)
    ub = xp.full((t.shape[0],), float(n_dim - 1), dtype=t.dtype)
    for _ in range(math.ceil(math.log2(n_dim))):  # binary search, every row at once
        counter4 = xp.floor((lb + ub) / 2)
        counter2 = xp.astype(counter4, xp.int64)
        indcurr = _pick(indp, (n_dim - 1) - counter2)
        b2 = _pick(sb, counter2) - _pick(s, counter2) * _pick(p, indcurr)
        c = b - b2 > 0
        lb = xp.where(c, counter4, lb)
        ub = xp.where(c, ub, counter4)
    lbi = xp.astype(lb, xp.int64)
    lmbd_l = xp.clip((b - sb[:, -1]) / -_safe(s[:, -1]), 0.0, None)[:, None]
    d_l = (2 * a - 1) * lmbd_l
    lmbd_2 = xp.clip((b - _pick(sb, lbi)) / -_safe(_pick(s, lbi)), 0.0, None)[:, None]
    d_2 = xp.minimum(lmbd_2, d) * a + xp.maximum(-lmbd_2, d) * (1 - a)
    d = xp.where(c_l[:, None], d_l, xp.where(c2[:, None], d_2, d))
    return d * nz


def projection_l2(t, w, b):
    """Per row: the smallest-L2 ``d`` with ``w·(t + d) = b`` and ``t + d`` in [0, 1]^D (or the
    box point closest to the plane). Transcribes fab_projections.py ``projection_l2``."""
    xp = namespace(t)
    n_dim = t.shape[1]
    c = xp.sum(w * t, axis=1) - b
    ind2 = _pm(c >= 0, t.dtype)
    w = w * ind2[:, None]
    c = c * ind2
    small = xp.abs(w) < 1e-8
    ws_ = _safe(w)
    r = xp.clip(xp.maximum(t / ws_, (t - 1) / ws_), -_BIG, _BIG)
    r = xp.where(small, _BIG, r)
    r = xp.where(r == -_BIG, _BIG, r)  # r[r == -1e12] *= -1
    indr = xp.argsort(r, axis=1)
    rs = xp.take_along_axis(r, indr, axis=1)
    rs2 = xp.concat([rs[:, 1:], xp.zeros_like(rs[:, :1])], axis=1)  # F.pad(rs[:, 1:], (0, 1))
    rs = xp.where(rs == _BIG, 0.0, rs)
    rs2 = xp.where(rs2 == _BIG, 0.0, rs2)
    w3s = xp.take_along_axis(w * w, indr, axis=1)
    w5 = xp.sum(w3s, axis=1, keepdims=True)
    ws = w5 - xp.cumulative_sum(w3s, axis=1)
    keep = xp.astype(~small, t.dtype)
    d = -(r * w) * keep
    s = xp.concat([-w5 * rs[:, 0:1], xp.cumulative_sum((-rs2 + rs) * ws, axis=1) - w5 * rs[:, 0:1]], axis=1)
    c4 = s[:, 0] + c < 0
    c3 = xp.sum(d * w, axis=1) + c > 0
    c2 = ~(c4 | c3)
    lb = xp.zeros(t.shape[0], dtype=t.dtype)
    ub = xp.full((t.shape[0],), float(n_dim - 1), dtype=t.dtype)
    for _ in range(math.ceil(math.log2(n_dim))):
        counter4 = xp.floor((lb + ub) / 2)
        c3_ = _pick(s, xp.astype(counter4, xp.int64)) + c > 0
        lb = xp.where(c3_, counter4, lb)
        ub = xp.where(c3_, ub, counter4)
    lbi = xp.astype(lb, xp.int64)
    d4 = -(c / _safe(w5[:, 0]))[:, None] * w
    ws_lb = _pick(ws, lbi)
    alpha = xp.where(ws_lb == 0, 0.0, (_pick(s, lbi) + c) / _safe(ws_lb) + _pick(rs, lbi))
    c5 = xp.astype(alpha[:, None] > r, t.dtype)
    d2 = d * c5 - alpha[:, None] * w * (1 - c5)
    d = xp.where(c4[:, None], d4, xp.where(c2[:, None], d2, d))
    return d * keep


PROJECTIONS = {"linf": projection_linf, "l2": projection_l2}


class FAB(Attack):
    name = "fab"
    summary = "Fast adaptive boundary attack, minimal norm; targeted=True is FAB-T (Croce & Hein 2020)"
    norms = ("linf", "l2")
    minimal_norm = True
    tasks = ("classification",)

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | None = None,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        targeted: bool = False,
        n_target_classes: int = 9,
    ):
        super().__init__(norm=norm, eps=eps)
        if eps is not None and not eps > 0:
            raise AdvonnxError(f"fab: eps must be > 0 (got {eps!r})")
        if steps < 1 or restarts < 1:
            raise AdvonnxError("fab: steps and restarts must be >= 1")
        if not 0 <= alpha_max <= 1 or not eta >= 1 or not 0 < beta < 1:
            raise AdvonnxError("fab: needs 0 <= alpha_max <= 1, eta >= 1 and 0 < beta < 1")
        if n_target_classes < 1:
            raise AdvonnxError("fab: n_target_classes must be >= 1")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.alpha_max = float(alpha_max)
        self.eta = float(eta)
        self.beta = float(beta)
        self.targeted = bool(targeted)
        self.n_target_classes = int(n_target_classes)

    # -- one run (fab_base.py attack_single_run) ---------------------------------------------
    def _diffs(self, ctx, x1, scale, lo, src, tgt, idx):
        """(f, w): logit differences (R, K) and their gradients w.r.t. the unit-box point
        (R, K, D) for the K classes of ``tgt`` (R, K) against ``src``."""
        xp = namespace(x1)
        r, k = tgt.shape
        c = ctx.spec.num_classes
        cot = onehot(xp.reshape(tgt, (-1,)), c, x1.dtype) - onehot(repeat_rows(src, k), c, x1.dtype)
        f, g = ctx.vjp(repeat_rows(lo + scale * x1, k), cot, repeat_rows(idx, k))
        return xp.reshape(xp.astype(f, x1.dtype), (r, k)), xp.reshape(flat(g) * scale, (r, k, -1))

    def _single_run(self, ctx: AttackContext, u0, la, tgt, idx, start_radius, scale, lo):
        """Best adversarial (unit box) per row and its norm (inf where none was found)."""
        xp = namespace(u0)
        n = u0.shape[0]
        x0 = flat(u0)
        x1 = x0
        if start_radius is not None:
            if self.norm == "linf":
                t = ctx.rng.uniform(x0.shape, -1.0, 1.0, like=x0)
                t = t / xp.max(xp.abs(t), axis=1, keepdims=True)
            else:
                t = ctx.rng.normal(x0.shape, like=x0)
                t = t / xp.sqrt(xp.sum(t * t, axis=1, keepdims=True))
            x1 = xp.clip(x0 + xp.astype(start_radius, x0.dtype)[:, None] * t * 0.5, 0.0, 1.0)
        adv = x0
        best = xp.full((n,), xp.inf, dtype=xp.float64)
        project = PROJECTIONS[self.norm]
        rows = xp.arange(n)
        for _ in range(self.steps):
            f, w = self._diffs(ctx, xp.reshape(x1, u0.shape), scale, lo, la, tgt, idx)
            dual = xp.sum(xp.abs(w), axis=2) if self.norm == "linf" else xp.sqrt(xp.sum(w * w, axis=2))
            ind = xp.argmin(xp.abs(f) / (1e-12 + dual), axis=1)
            k = tgt.shape[1]
            w_best = xp.take(xp.reshape(w, (n * k, -1)), rows * k + ind, axis=0)
            f_best = xp.take(xp.reshape(f, (-1,)), rows * k + ind, axis=0)
            b = -f_best + xp.sum(w_best * x1, axis=1)
            d3 = project(xp.concat([x1, x0], axis=0), xp.concat([w_best, w_best], axis=0), xp.concat([b, b], axis=0))
            d1, d2 = d3[:n, :], d3[n:, :]
            a0 = xp.max(xp.abs(d3), axis=1) if self.norm == "linf" else xp.sqrt(xp.sum(d3 * d3, axis=1))
            a0 = xp.maximum(a0, 1e-8)
            a1, a2 = a0[:n], a0[n:]
            alpha = xp.clip(a1 / (a1 + a2), 0.0, self.alpha_max)[:, None]
            x1 = xp.clip((x1 + self.eta * d1) * (1 - alpha) + (x0 + d2 * self.eta) * alpha, 0.0, 1.0)
            pred = ctx.classify(lo + scale * xp.reshape(x1, u0.shape), idx)
            is_adv = pred != la
            dist = xp.astype(norms(x1 - x0, self.norm), xp.float64)
            better = is_adv & (dist < best)
            adv = xp.where(better[:, None], x1, adv)
            best = xp.where(better, dist, best)
            x1 = xp.where(is_adv[:, None], x0 + (x1 - x0) * self.beta, x1)
        return xp.reshape(adv, u0.shape), best

    # -- all runs (fab_base.py perturb) --------------------------------------------------------
    def run(self, ctx: AttackContext, x, labels):
        if ctx.targeted:
            raise AdvonnxError(
                "fab takes no target labels: FAB-T (setting targeted=True, or attack fab_t) "
                "runs over the top-k other classes with untargeted success"
            )
        xp = namespace(x)
        n = x.shape[0]
        every = xp.arange(n)
        lo, hi = float(ctx.lo), float(ctx.hi)
        scale = hi - lo
        u = (x - lo) / scale
        scores = ctx.predict(x, every)
        pred = xp.argmax(scores, axis=1)
        c = scores.shape[1]
        attack_me = ~ctx.is_adversarial(pred, labels)
        if self.targeted:
            k = min(self.n_target_classes, c - 1)
            order = candidate_classes(scores, labels, k + 1)
            target_sets = [order[:, i : i + 1] for i in range(k)]
        else:
            target_sets = [candidate_classes(scores, labels, c)]  # every class but the label
        eps_u = None if self.eps is None else self.eps / scale
        radius_default = eps_u if eps_u is not None else RESTART_RADIUS[self.norm]
        best = xp.where(attack_me, xp.full((n,), xp.inf, dtype=xp.float64), xp.zeros((n,), dtype=xp.float64))
        x_best = u
        for tgt in target_sets:
            for restart in range(self.restarts):
                todo = attack_me if eps_u is None else attack_me & ~(best <= eps_u * (1 + 1e-6))
                idx = xp.nonzero(todo)[0]
                if idx.shape[0] == 0:
                    break
                take = lambda a: xp.take(a, idx, axis=0)  # noqa: E731
                radius = None
                if restart > 0:
                    radius = xp.clip(take(best), None, radius_default)
                adv, dist = self._single_run(ctx, take(u), take(labels), take(tgt), idx, radius, scale, lo)
                better = dist < take(best)
                x_best = put_rows(x_best, idx, xp.where(batch_view(better, adv.ndim), adv, take(x_best)))
                best = put_rows(best, idx, xp.where(better, dist, take(best)))
        return lo + scale * x_best


class FABT(FAB):
    """FAB-T under its own name, for suites and the CLI, where ``targeted`` means target labels."""

    name = "fab_t"
    aliases = ("fab-t", "fabt")
    summary = "FAB-T: FAB towards each of the top-k other classes, untargeted success (AutoAttack's)"

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | None = None,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        targeted: bool = True,
        n_target_classes: int = 9,
    ):
        super().__init__(
            norm=norm,
            eps=eps,
            steps=steps,
            restarts=restarts,
            alpha_max=alpha_max,
            eta=eta,
            beta=beta,
            targeted=targeted,
            n_target_classes=n_target_classes,
        )
