"""HopSkipJump (Chen, Jordan, Wainwright, IEEE S&P 2020): a decision-based attack from top-1
labels only.

Starting from an adversarial point (uniform noise that the model misclassifies, blended back
toward ``x`` by binary search), each iteration

1. binary-searches the boundary between ``x`` and the current point (L2: along the segment;
   Linf: shrinking the box ``x ± α``) to precision ``θ`` (``γ/d^{3/2}`` for L2, ``γ/d²`` for
   Linf, as in the paper and ART);
2. estimates the boundary's normal from ``num_evals = init_evals·√(t+1)`` (≤ ``max_evals``)
   sign queries at radius ``δ`` around the boundary point (Gaussian directions for L2, uniform
   for Linf), baseline-corrected; all samples × all directions go to the model in one batch;
3. takes a geometric step: ``ξ = ‖x_t − x‖/√(t+1)``, halved until the point is adversarial.

Every sample is attacked in lockstep with its own query budget (``max_queries``): a sample
whose budget runs out keeps its current adversarial point. With ``eps`` given, a sample stops
as soon as its boundary point lies within ``eps`` (its ``queries`` is then the count at first
success at that budget); without ``eps`` the attack minimizes the norm (``min_norm``).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import AdvonnxError
from ..oracles import _MAX_ELEMENTS
from ..xp import batch_view, from_numpy, namespace, norms
from ._blackbox import flat_dim, host_bool, query_budget, remaining, scatter, take
from .base import Attack, AttackContext


class HopSkipJump(Attack):
    name = "hsj"
    aliases = ("hopskipjump",)
    summary = "HopSkipJump: decision-based boundary attack from top-1 labels (Chen et al. 2020)"
    norms = ("l2", "linf")
    needs = "decisions"
    minimal_norm = True
    tasks = ("classification",)

    def __init__(
        self,
        *,
        norm: str = "l2",
        eps: float | None = None,
        steps: int = 40,
        max_queries: int | None = None,
        init_evals: int = 100,
        max_evals: int = 10000,
        init_size: int = 100,
        gamma: float = 1.0,
    ):
        super().__init__(norm=norm, eps=eps)
        if steps < 1 or init_evals < 1 or max_evals < 1 or init_size < 1:
            raise AdvonnxError("hsj: steps, init_evals, max_evals and init_size must be >= 1")
        if max_queries is not None and max_queries < 1:
            raise AdvonnxError("hsj: max_queries must be >= 1")
        self.steps = int(steps)
        self.max_queries = None if max_queries is None else int(max_queries)
        self.init_evals = int(init_evals)
        self.max_evals = int(max_evals)
        self.init_size = int(init_size)
        self.gamma = float(gamma)

    # -- pieces ------------------------------------------------------------------------------
    def _dist(self, a, b):
        return norms(a - b, self.norm)

    def _interpolate(self, cur, orig, alpha):
        xp = namespace(cur)
        a = batch_view(xp.astype(alpha, cur.dtype), cur.ndim)
        if self.norm == "l2":
            return (1.0 - a) * orig + a * cur
        return xp.clip(cur, orig - a, orig + a)

    def _adversarial(self, ctx: AttackContext, xb, idx: np.ndarray, labels_rows):
        return host_bool(ctx.is_adversarial(ctx.classify(xb, idx), labels_rows))

    def _binary_search(self, ctx, x, cur, labels, act, budget, theta):
        """Move ``cur[act]`` to the boundary toward ``x``; returns the new full ``cur``."""
        xp = namespace(x)
        xo, xc, la = take(x, act), take(cur, act), take(labels, act)
        if self.norm == "l2":
            hi = np.ones(act.shape[0])
            thr = np.full(act.shape[0], theta)
        else:
            hi = np.asarray(self._host(self._dist(xc, xo)), dtype=np.float64)
            thr = np.minimum(hi * theta, theta)
        lo = np.zeros_like(hi)
        for _ in range(64):
            go = ((hi - lo) > thr) & (remaining(ctx, budget, act) >= 1)
            if not go.any():
                break
            sel = np.nonzero(go)[0]
            mid = (hi[sel] + lo[sel]) / 2
            probe = self._interpolate(take(xc, sel), take(xo, sel), from_numpy(x, mid))
            ok = self._adversarial(ctx, probe, act[sel], take(la, sel))
            hi[sel] = np.where(ok, mid, hi[sel])
            lo[sel] = np.where(ok, lo[sel], mid)
        new = self._interpolate(xc, xo, from_numpy(x, hi))
        return scatter(cur, act, xp.astype(new, cur.dtype))

    @staticmethod
    def _host(a):
        from ..xp import to_numpy

        return to_numpy(a)

    def _initialize(self, ctx, x, labels, budget):
        """Adversarial starting points; ``found`` marks samples that have one."""
        xp = namespace(x)
        n = x.shape[0]
        all_idx = np.arange(n)
        cur = x
        # an input that is already adversarial needs no search (one query each)
        found = self._adversarial(ctx, x, all_idx, labels)
        noise_found = np.zeros(n, dtype=bool)
        start = x
        for _ in range(self.init_size):
            need = all_idx[~found & ~noise_found]
            need = need[remaining(ctx, budget, need) >= 1]
            if need.shape[0] == 0:
                break
            noise = ctx.rng.uniform((need.shape[0],) + tuple(x.shape[1:]), ctx.lo, ctx.hi, like=x)
            ok = self._adversarial(ctx, noise, need, take(labels, need))
            start = scatter(start, need[ok], take(noise, np.nonzero(ok)[0]))
            noise_found[need[ok]] = True
        # blend the noise back toward x (ART / the authors: precision 0.001)
        act = all_idx[noise_found]
        if act.shape[0]:
            xo, xs, la = take(x, act), take(start, act), take(labels, act)
            lo, hi = np.zeros(act.shape[0]), np.ones(act.shape[0])
            while True:
                go = ((hi - lo) > 1e-3) & (remaining(ctx, budget, act) >= 1)
                if not go.any():
                    break
                sel = np.nonzero(go)[0]
                mid = (hi[sel] + lo[sel]) / 2
                a = batch_view(xp.astype(from_numpy(x, mid), x.dtype), x.ndim)
                probe = (1.0 - a) * take(xo, sel) + a * take(xs, sel)
                ok = self._adversarial(ctx, probe, act[sel], take(la, sel))
                hi[sel] = np.where(ok, mid, hi[sel])
                lo[sel] = np.where(ok, lo[sel], mid)
            a = batch_view(xp.astype(from_numpy(x, hi), x.dtype), x.ndim)
            cur = scatter(cur, act, (1.0 - a) * xo + a * xs)
        return cur, found | noise_found, found

    def _update_direction(self, ctx, cur, labels, act, delta, num_evals, budget):
        """Estimated boundary normal at ``cur[act]`` from sign queries (batched), normalized."""
        xp = namespace(cur)
        m, d = act.shape[0], flat_dim(cur)
        tail = tuple(cur.shape[1:])
        k = np.minimum(num_evals, remaining(ctx, budget, act))  # directions each sample can pay
        xc, la = take(cur, act), take(labels, act)
        grads = []
        per_chunk = max(1, _MAX_ELEMENTS // max(1, num_evals * d))
        for s0 in range(0, m, per_chunk):
            sl = np.arange(s0, min(m, s0 + per_chunk))
            mc = sl.shape[0]
            shape = (mc, num_evals, d)
            rv = ctx.rng.normal(shape, like=cur) if self.norm == "l2" else ctx.rng.uniform(shape, -1.0, 1.0, like=cur)
            rv = rv / xp.sqrt(xp.sum(rv * rv, axis=2, keepdims=True))
            base = xp.reshape(take(xc, sl), (mc, 1, d))
            dl = xp.reshape(xp.astype(from_numpy(cur, delta[sl]), cur.dtype), (mc, 1, 1))
            probes = xp.clip(base + dl * rv, ctx.lo, ctx.hi)
            rv = (probes - base) / dl
            w = np.arange(num_evals)[None, :] < k[sl][:, None]  # (mc, E) rows actually queried
            rows = np.nonzero(w.reshape(-1))[0]
            flat_probes = take(xp.reshape(probes, (mc * num_evals,) + tail), rows)
            owner = np.repeat(sl, num_evals)[rows]
            dec = self._adversarial(ctx, flat_probes, act[owner], take(la, owner))
            fv = np.zeros(mc * num_evals)
            fv[rows] = 2.0 * dec - 1.0
            fv = fv.reshape(mc, num_evals)
            kk = np.maximum(k[sl], 1)
            mean = (fv * w).sum(axis=1) / kk
            coeff = np.where(mean[:, None] == 1.0, 1.0, np.where(mean[:, None] == -1.0, -1.0, fv - mean[:, None]))
            coeff = coeff * w / kk[:, None]
            c = xp.astype(from_numpy(cur, coeff), cur.dtype)
            grads.append(xp.sum(c[:, :, None] * rv, axis=1))
        g = grads[0] if len(grads) == 1 else xp.concat(grads, axis=0)
        g = xp.reshape(g, xc.shape)
        if self.norm == "l2":
            gn = norms(g, "l2")
            return g / batch_view(xp.where(gn > 0, gn, 1.0), g.ndim)
        return xp.sign(g)

    # -- the attack --------------------------------------------------------------------------
    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        n, d = x.shape[0], flat_dim(x)
        budget = query_budget(ctx, self.max_queries)
        theta = self.gamma / (d * math.sqrt(d)) if self.norm == "l2" else self.gamma / (d * d)
        width = ctx.hi - ctx.lo
        cur, have, already = self._initialize(ctx, x, labels, budget)
        all_idx = np.arange(n)
        done = already.copy()
        eps = self.eps

        def within(act):
            if eps is None:
                return np.zeros(act.shape[0], dtype=bool)
            return np.asarray(self._host(self._dist(take(cur, act), take(x, act)))) <= eps

        for t in range(self.steps):
            act = all_idx[have & ~done]
            act = act[remaining(ctx, budget, act) >= 1]
            if act.shape[0] == 0:
                break
            cur = self._binary_search(ctx, x, cur, labels, act, budget, theta)
            hit = within(act)
            done[act[hit]] = True
            act = act[~hit]
            act = act[remaining(ctx, budget, act) >= 1]
            if act.shape[0] == 0:
                break
            dist = np.asarray(self._host(self._dist(take(cur, act), take(x, act))), dtype=np.float64)
            if t == 0:
                delta = np.full(act.shape[0], 0.1 * width)
            elif self.norm == "l2":
                delta = math.sqrt(d) * theta * dist
            else:
                delta = d * theta * dist
            delta = np.maximum(delta, 1e-12)
            num_evals = min(int(self.init_evals * math.sqrt(t + 1)), self.max_evals)
            update = self._update_direction(ctx, cur, labels, act, delta, num_evals, budget)
            # geometric step search, halving until adversarial
            step = dist / math.sqrt(t + 1)
            xc, la = take(cur, act), take(labels, act)
            searching = np.ones(act.shape[0], dtype=bool)
            new = xc
            for _ in range(30):
                searching &= remaining(ctx, budget, act) >= 1
                if not searching.any():
                    break
                sel = np.nonzero(searching)[0]
                st = batch_view(xp.astype(from_numpy(x, step[sel]), x.dtype), x.ndim)
                probe = ctx.clip(take(xc, sel) + st * take(update, sel))
                ok = self._adversarial(ctx, probe, act[sel], take(la, sel))
                new = scatter(new, sel[ok], take(probe, np.nonzero(ok)[0]))
                searching[sel[ok]] = False
                step[sel[~ok]] /= 2.0
            cur = scatter(cur, act, new)
        # a last boundary search for samples with budget left
        act = all_idx[have & ~done]
        act = act[remaining(ctx, budget, act) >= 1]
        if act.shape[0]:
            cur = self._binary_search(ctx, x, cur, labels, act, budget, theta)
        return cur
