"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): score-based random search.

Each iteration proposes, for every still-robust sample, a change of the current perturbation
inside one random square window (a hypercube of side ``s`` over the spatial axes; a run of ``s``
consecutive features for (N, F) inputs) and keeps it when the loss improves. One query per
sample per iteration; samples stop as soon as they are adversarial, so a sample's ``queries``
is the number spent up to its first success.

- ``linf``: vertical-stripe initialization ``±eps``; the window gets one random sign per channel
  (the authors' ``square_attack_linf``).
- ``l2``: a grid of pseudo-Gaussian squares as initialization; each step moves mass between
  two windows keeping ‖δ‖₂ = eps (the authors' ``square_attack_l2``). The authors define it on
  2-D images; here the nested-box pattern and its ± halves extend unchanged to cubes over any
  number of spatial axes (3-D volumes, runs of features), and 2-D results are the authors'.
  Every spatial side must be >= 4.

The square's area is ``p · n_features / channels`` with ``p`` halved at fixed fractions of the
budget (the authors' ``p_selection`` schedule, from ``p_init``). ``loss``: ``margin``
(the paper's default: ``z_y − max_{j≠y} z_j`` on the logits: the input of a final Softmax/Sigmoid
when the model has one, else the scores as given)
or ``ce``. ``max_queries`` is the per-sample budget (the authors' ``n_iters``), counting the
initialization query.
"""

from __future__ import annotations

import itertools
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

_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
    (10000, 512),
)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_iters`` (the authors' schedule)."""
    k = int(it / n_iters * 10000)
    if k <= 10:
        return p_init
    for upper, div in _SCHEDULE[1:]:
        if k <= upper:
            return p_init / div
    return p_init


def _pseudo_gaussian_rectangles(shape: tuple[int, ...]) -> np.ndarray:
    """Nested boxes around the centre weighted 1/(k+1)², unit L2 norm (any number of axes).

    In 2-D this is the authors' ``pseudo_gaussian_pert_rectangles``.
    """
    delta = np.zeros(shape)
    centre = [size // 2 for size in shape]
    for counter in range(max(size // 2 + 1 for size in shape)):
        box = tuple(
            slice(max(c - counter, 0), min(c + counter + 1, size)) for c, size in zip(centre, shape, strict=True)
        )
        delta[box] += 1.0 / (counter + 1) ** 2
    return delta / np.sqrt(np.sum(delta**2))


def _meta_pseudo_gaussian(s: int, ndim: int, axis: int) -> np.ndarray:
    """A cube of side ``s``: +pattern in the first half along ``axis``, −pattern in the second.

    In 2-D, ``axis`` 0 is the authors' ``meta_pseudo_gaussian_pert`` and ``axis`` 1 its transpose.
    """
    first, second = [s] * ndim, [s] * ndim
    first[axis], second[axis] = s // 2, s - s // 2
    delta = np.concatenate(
        [_pseudo_gaussian_rectangles(tuple(first)), -_pseudo_gaussian_rectangles(tuple(second))], axis=axis
    )
    return delta / np.sqrt(np.sum(delta**2))


def _side(area: float, ndim: int) -> float:
    """Side of a hypercube of ``area`` elements over ``ndim`` axes."""
    return math.sqrt(area) if ndim == 2 else area ** (1 / ndim)


class Square(Attack):
    eps: float  # a budgeted attack: the base refuses eps=None
    name = "square"
    aliases = ("square_attack",)
    summary = "Square Attack: score-based random search in square windows (Andriushchenko et al. 2020)"
    norms = ("linf", "l2")
    needs = "scores"
    tasks = ("classification",)
    multilabel = True  # margin → ml_margin, ce → bce (advonnx.attacks._blackbox.objective)

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        max_queries: int = 5000,
        p_init: float = 0.8,
        loss: str = "margin",
    ):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if max_queries < 1:
            raise AdvonnxError("square: max_queries must be >= 1")
        if not 0 < p_init <= 1:
            raise AdvonnxError("square: p_init must be in (0, 1]")
        self.max_queries = int(max_queries)
        self.p_init = float(p_init)

    # -- helpers -----------------------------------------------------------------------------
    def _query(self, ctx: AttackContext, x_cf, idx, labels, layout):
        scores, attacked = ctx.scores(from_channels_first(x_cf, layout), idx)
        return objective(ctx, scores, labels, self.loss, attacked)

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
        xc = to_channels_first(x, layout)
        if self.norm == "l2" and min(xc.shape[2:]) < 4:
            raise AdvonnxError(
                f"square l2 needs every spatial side >= 4 (input {tuple(x.shape[1:])}); use square linf or hsj"
            )
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
        s = int(round(_side(p * math.prod(spatial), len(spatial))))
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
        """A grid of pseudo-Gaussian cubes with random signs per channel, scaled to eps."""
        xp = namespace(xc)
        n, c, spatial = xc.shape[0], xc.shape[1], tuple(xc.shape[2:])
        k = len(spatial)
        s = max(spatial[0] // 5, 1)
        sp = (spatial[0] - s * 5) // 2 if spatial[0] >= 5 else 0
        cube = _meta_pseudo_gaussian(s, k, 0)
        init = xp.zeros(xc.shape, dtype=xc.dtype)
        for cell in itertools.product(*(range(size // s) for size in spatial)):
            starts = [sp + i * s for i in cell]
            box = tuple(slice(b, min(b + s, size)) for b, size in zip(starts, spatial, strict=True))
            patch = np.zeros(spatial)
            patch[box] = cube[tuple(slice(0, sl.stop - sl.start) for sl in box)]
            sign = ctx.rng.rademacher((n, c) + (1,) * k, like=xc)
            init = init + _as(xc, patch)[None, None, ...] * sign
        nrm = _l2(init, tuple(range(1, xc.ndim)))
        return ctx.clip(xc + init / xp.where(nrm > 0, nrm, 1.0) * self.eps)

    def _l2_proposal(self, ctx: AttackContext, xa, xb, p: float):
        xp = namespace(xa)
        rng, eps = ctx.rng, self.eps
        delta = xb - xa
        m, c, spatial = xa.shape[0], xa.shape[1], tuple(xa.shape[2:])
        k = len(spatial)
        every, per_channel = tuple(range(1, xa.ndim)), tuple(range(2, xa.ndim))
        s = max(int(round(_side(p * math.prod(spatial), k))), 3)
        s = s + 1 if s % 2 == 0 else s
        s = min([s] + [size - 1 for size in spatial])
        starts = [[int(v) for v in rng.integers(0, max(size - s, 1), (2,))] for size in spatial]
        win1, win2 = (
            self._window(xp, spatial, [a for a, _ in starts], s),
            self._window(xp, spatial, [b for _, b in starts], s),
        )
        f1 = xp.astype(win1, xa.dtype)
        union = xp.astype(win1 | win2, xa.dtype)
        curr_norm_window = _l2(delta * f1, per_channel)
        curr_norm_image = _l2(delta, every)
        norms_windows = _l2(delta * union, per_channel)
        axis = min(int(float(rng.uniform((1,))[0]) * k), k - 1)
        pert = np.zeros(spatial)
        pert[tuple(slice(a, a + s) for a, _ in starts)] = _meta_pseudo_gaussian(s, k, axis)
        new = _as(xa, pert)[None, None, ...] * rng.rademacher((m, c) + (1,) * k, like=xa)
        new = new + delta * f1 / (1e-10 + curr_norm_window)
        new = new * f1
        avail = xp.sqrt(xp.clip(eps**2 - curr_norm_image**2, 0.0, None) / c + norms_windows**2)
        new_norm = _l2(new, per_channel)
        new = new / xp.where(new_norm > 0, new_norm, 1.0) * avail
        d_new = xp.where(win1, new, xp.where(win2, 0.0, delta))
        dn = _l2(d_new, every)
        return ctx.clip(xa + d_new / xp.where(dn > 0, dn, 1.0) * eps)

    @staticmethod
    def _window(xp, spatial: tuple[int, ...], starts: list[int], s: int):
        """(1, 1, *spatial) boolean mask of the hypercube of side ``s`` at ``starts``."""
        k = len(spatial)
        mask = None
        for axis, (size, b) in enumerate(zip(spatial, starts, strict=True)):
            coords = xp.reshape(xp.arange(size), (1, 1) + tuple(size if d == axis else 1 for d in range(k)))
            inside = (coords >= b) & (coords < b + s)
            mask = inside if mask is None else (mask & inside)
        return mask


def _l2(d, axes):
    xp = namespace(d)
    return xp.sqrt(xp.sum(d * d, axis=axes, keepdims=True))


def _as(like, host: np.ndarray):
    xp = namespace(like)
    from ..xp import from_numpy

    return xp.astype(from_numpy(like, host), like.dtype)
