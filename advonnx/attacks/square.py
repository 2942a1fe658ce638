"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): score-based random search.

Each iteration proposes, for every still-robust sample, a change of the current perturbation
inside one random square window (a hypercube of side ``s`` over the spatial axes; a run of ``s``
consecutive features for (N, F) inputs) and keeps it when the loss improves. One query per
sample per iteration; samples stop as soon as they are adversarial, so a sample's ``queries``
is the number spent up to its first success.

- ``linf``: vertical-stripe initialization ``±eps``; the window gets one random sign per channel
  (the authors' ``square_attack_linf``).
- ``l2`` (images only): a grid of pseudo-Gaussian squares as initialization; each step moves
  mass between two windows keeping ‖δ‖₂ = eps (the authors' ``square_attack_l2``).

The square's area is ``p · n_features / channels`` with ``p`` halved at fixed fractions of the
budget (the authors' ``p_selection`` schedule, from ``p_init``). ``loss``: ``margin``
(the paper's default: ``z_y − max_{j≠y} z_j`` on the scores as given, logits or probabilities)
or ``ce``. ``max_queries`` is the per-sample budget (the authors' ``n_iters``), counting the
initialization query.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import AdvonnxError
from ..xp import namespace
from ._blackbox import (
    from_channels_first,
    host_bool,
    objective,
    query_budget,
    remaining,
    scatter,
    take,
    to_channels_first,
)
from .base import Attack, AttackContext

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
             (6000, 128), (8000, 256), (10000, 512))


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_iters`` (the authors' schedule)."""
    k = int(it / n_iters * 10000)
    if k <= 10:
        return p_init
    for upper, div in _SCHEDULE[1:]:
        if k <= upper:
            return p_init / div
    return p_init


def _pseudo_gaussian_rectangles(h: int, w: int) -> np.ndarray:
    delta = np.zeros((h, w))
    ch, cw = h // 2 + 1, w // 2 + 1
    c0, c1 = ch - 1, cw - 1
    for counter in range(max(ch, cw)):
        delta[max(c0, 0):min(c0 + 2 * counter + 1, h), max(0, c1):min(c1 + 2 * counter + 1, w)] += 1.0 / (counter + 1) ** 2
        c0 -= 1
        c1 -= 1
    return delta / np.sqrt(np.sum(delta**2))


def _meta_pseudo_gaussian(s: int, flip: bool) -> np.ndarray:
    delta = np.zeros((s, s))
    delta[: s // 2] = _pseudo_gaussian_rectangles(s // 2, s)
    delta[s // 2:] = -_pseudo_gaussian_rectangles(s - s // 2, s)
    delta /= np.sqrt(np.sum(delta**2))
    return delta.T if flip else delta


class Square(Attack):
    name = "square"
    summary = "Square Attack: score-based random search in square windows (Andriushchenko et al. 2020)"
    norms = ("linf", "l2")
    needs = "scores"
    tasks = ("classification",)

    def __init__(self, *, norm: str = "linf", eps: float = 8 / 255, max_queries: int = 5000,
                 p_init: float = 0.8, loss: str = "margin"):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if max_queries < 1:
            raise AdvonnxError("square: max_queries must be >= 1")
        if not 0 < p_init <= 1:
            raise AdvonnxError("square: p_init must be in (0, 1]")
        self.max_queries = int(max_queries)
        self.p_init = float(p_init)

    # -- helpers -----------------------------------------------------------------------------
    def _query(self, ctx: AttackContext, x_cf, idx, labels, layout):
        scores = ctx.predict(from_channels_first(x_cf, layout), idx)
        return objective(ctx, scores, labels, self.loss)

    @staticmethod
    def _window_mask(ctx, m: int, spatial: tuple[int, ...], s: int, like):
        """(m, 1, *spatial) boolean masks of one random hypercube of side ``s`` per sample."""
        xp = namespace(like)
        mask = None
        k = len(spatial)
        for axis, size in enumerate(spatial):
            start = ctx.rng.integers(0, max(size - s, 1), (m,), like=like)
            coords = xp.arange(size, dtype=start.dtype)
            inside = (coords[None, :] >= start[:, None]) & (coords[None, :] < start[:, None] + s)
            shape = [m, 1] + [1] * k
            shape[2 + axis] = size
            inside = xp.reshape(inside, tuple(shape))
            mask = inside if mask is None else (mask & inside)
        return mask

    # -- the attack --------------------------------------------------------------------------
    def run(self, ctx: AttackContext, x, labels):
        layout = ctx.spec.layout
        if self.norm == "l2" and layout not in ("NCHW", "NHWC"):
            raise AdvonnxError("square l2 attacks 2-D images; use square linf or hsj for other inputs")
        xc = to_channels_first(x, layout)
        budget = query_budget(ctx, self.max_queries)
        n_iters = min(budget, self.max_queries)
        if self.norm == "l2":
            x_init, propose = self._l2_init(ctx, xc), self._l2_proposal
        else:
            x_init, propose = self._linf_init(ctx, xc), self._linf_proposal
        return from_channels_first(self._search(ctx, xc, x_init, labels, budget, n_iters, propose), layout)

    def _search(self, ctx: AttackContext, xc, x_best, labels, budget: int, n_iters: int, propose):
        """Random search shared by both norms: keep a sample's proposal when its loss drops.

        ``propose(ctx, xa, xb, p)`` returns candidate inputs for the still-robust clean rows
        ``xa``, whose best inputs so far are ``xb``, with square-area fraction ``p``.
        """
        xp = namespace(xc)
        layout = ctx.spec.layout
        all_idx = np.arange(xc.shape[0])
        loss_min, done = self._query(ctx, x_best, all_idx, labels, layout)
        done = host_bool(done)
        for it in range(n_iters - 1):
            act = all_idx[~done]
            act = act[remaining(ctx, budget, act) >= 1]
            if act.shape[0] == 0:
                break
            m = act.shape[0]
            xa, xb, la = take(xc, act), take(x_best, act), take(labels, act)
            x_new = propose(ctx, xa, xb, p_selection(self.p_init, it, n_iters))
            loss, hit = self._query(ctx, x_new, act, la, layout)
            lm = take(loss_min, act)
            better = loss < lm
            keep = xp.reshape(better, (m,) + (1,) * (xa.ndim - 1))
            x_best = scatter(x_best, act, xp.where(keep, x_new, xb))
            loss_min = scatter(loss_min, act, xp.where(better, loss, lm))
            done[act] = host_bool(hit & better) | done[act]
        return x_best

    # -- linf: sign changes in one window ----------------------------------------------------
    def _linf_init(self, ctx: AttackContext, xc):
        n, c, spatial = xc.shape[0], xc.shape[1], tuple(xc.shape[2:])
        # vertical stripes: one sign per (channel, last spatial index)
        stripe = (n, c) + (1,) * (len(spatial) - 1) + (spatial[-1],)
        return ctx.clip(xc + self.eps * ctx.rng.rademacher(stripe, like=xc))

    def _linf_proposal(self, ctx: AttackContext, xa, xb, p: float):
        xp = namespace(xa)
        m, c, spatial = xa.shape[0], xa.shape[1], tuple(xa.shape[2:])
        eps = self.eps
        delta = xb - xa
        area = p * math.prod(spatial)
        s = int(round(math.sqrt(area) if len(spatial) == 2 else area ** (1 / len(spatial))))
        s = min(max(s, 1), max(min(spatial) - 1, 1))
        mask = self._window_mask(ctx, m, spatial, s, xa)
        signs = eps * ctx.rng.rademacher((m, c) + (1,) * len(spatial), like=xa)
        cand = xp.where(mask, signs, delta)
        # the authors redraw the sign while the window would not change x_best
        for _ in range(8):
            changed = xp.abs(ctx.clip(xa + cand) - xb) >= 1e-7
            same = ~xp.any(xp.reshape(changed & mask, (m, -1)), axis=1)
            if not bool(xp.any(same)):
                break
            resign = eps * ctx.rng.rademacher((m, c) + (1,) * len(spatial), like=xa)
            redo = xp.reshape(same, (m,) + (1,) * (xa.ndim - 1)) & mask
            cand = xp.where(redo, resign, cand)
        return ctx.clip(xa + cand)

    # -- l2: move mass between two windows at constant norm ----------------------------------
    def _l2_init(self, ctx: AttackContext, xc):
        """A grid of pseudo-Gaussian squares with random signs per channel, scaled to eps."""
        xp = namespace(xc)
        n, c, h, w = xc.shape
        s = max(h // 5, 1)
        sp = (h - s * 5) // 2 if h >= 5 else 0
        init = xp.zeros(xc.shape, dtype=xc.dtype)
        ch = sp
        for _ in range(h // s):
            cw = sp
            for _ in range(w // s):
                patch = np.zeros((h, w))
                bh, bw = min(ch + s, h) - ch, min(cw + s, w) - cw
                patch[ch:ch + bh, cw:cw + bw] = _meta_pseudo_gaussian(s, False)[:bh, :bw]
                sign = ctx.rng.rademacher((n, c, 1, 1), like=xc)
                init = init + _as(xc, patch)[None, None, :, :] * sign
                cw += s
            ch += s
        nrm = _l2(init, (1, 2, 3))
        return ctx.clip(xc + init / xp.where(nrm > 0, nrm, 1.0) * self.eps)

    def _l2_proposal(self, ctx: AttackContext, xa, xb, p: float):
        xp = namespace(xa)
        rng, eps = ctx.rng, self.eps
        delta = xb - xa
        m, c, h, w = xa.shape
        rows = xp.reshape(xp.arange(h), (1, 1, h, 1))
        cols = xp.reshape(xp.arange(w), (1, 1, 1, w))
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = s + 1 if s % 2 == 0 else s
        s = min(s, h - 1, w - 1)
        h1, h2 = (int(v) for v in rng.integers(0, max(h - s, 1), (2,)))
        w1, w2 = (int(v) for v in rng.integers(0, max(w - s, 1), (2,)))
        win1 = (rows >= h1) & (rows < h1 + s) & (cols >= w1) & (cols < w1 + s)
        win2 = (rows >= h2) & (rows < h2 + s) & (cols >= w2) & (cols < w2 + s)
        f1 = xp.astype(win1, xa.dtype)
        union = xp.astype(win1 | win2, xa.dtype)
        curr_norm_window = _l2(delta * f1, (2, 3))
        curr_norm_image = _l2(delta, (1, 2, 3))
        norms_windows = _l2(delta * union, (2, 3))
        pert = np.zeros((h, w))
        pert[h1:h1 + s, w1:w1 + s] = _meta_pseudo_gaussian(s, bool(rng.uniform((1,))[0] > 0.5))
        new = _as(xa, pert)[None, None, :, :] * rng.rademacher((m, c, 1, 1), like=xa)
        new = new + delta * f1 / (1e-10 + curr_norm_window)
        new = new * f1
        avail = xp.sqrt(xp.clip(eps**2 - curr_norm_image**2, 0.0, None) / c + norms_windows**2)
        new = new / xp.where(_l2(new, (2, 3)) > 0, _l2(new, (2, 3)), 1.0) * avail
        d_new = xp.where(win1, new, xp.where(win2, 0.0, delta))
        dn = _l2(d_new, (1, 2, 3))
        return ctx.clip(xa + d_new / xp.where(dn > 0, dn, 1.0) * eps)


def _l2(d, axes):
    xp = namespace(d)
    return xp.sqrt(xp.sum(d * d, axis=axes, keepdims=True))


def _as(like, host: np.ndarray):
    xp = namespace(like)
    from ..xp import from_numpy

    return xp.astype(from_numpy(like, host), like.dtype)
