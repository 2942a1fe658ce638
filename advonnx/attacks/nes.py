"""Score-based PGD with estimated gradients: NES (Ilyas et al., ICML 2018) and SPSA (Uesato et
al., ICML 2018).

Each step estimates the gradient of the loss for every still-robust sample from ``samples``
antithetic pairs ``f(x ± σu)`` (NES: orthogonalized Gaussian directions; SPSA: Rademacher
directions; see :mod:`advonnx.oracles`) and takes a projected step along ``sign(ĝ)`` (linf) or
``ĝ/‖ĝ‖₂`` (l2). The probes of all samples and the current points are sent to the model in one
batch per step: ``2·samples + 1`` queries per sample per step. A sample stops once its current
point is adversarial, or when its budget (``max_queries``) cannot pay for another step, so
``queries`` never exceeds the budget and, for a broken sample, is the count at first success.

``sigma`` is relative to the width of the value range; ``step_size`` defaults to
``2.5 · eps / steps`` (Madry et al.'s rule). ``loss``: ``margin`` (default) or ``ce``.
"""

from __future__ import annotations

import numpy as np

from ..errors import AdvonnxError
from ..oracles import _MAX_ELEMENTS, EstimatorConfig, _directions
from ..xp import batch_view, namespace, norms
from ._blackbox import flat_dim, host_bool, objective, query_budget, remaining, scatter, take
from .base import Attack, AttackContext


class ScoreBasedPGD(Attack):
    """One loop for NES and SPSA; they differ in the direction distribution and default σ."""

    eps: float  # a budgeted attack: the base refuses eps=None

    norms = ("linf", "l2")
    needs = "scores"
    tasks = ("classification",)
    multilabel = True  # margin → ml_margin, ce → bce (advonnx.attacks._blackbox.objective)
    method = "nes"
    sigma_default = 1e-3

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 50,
        step_size: float | None = None,
        samples: int = 25,
        sigma: float | None = None,
        max_queries: int | None = None,
        loss: str = "margin",
    ):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if steps < 1 or samples < 1:
            raise AdvonnxError(f"{self.name}: steps and samples must be >= 1")
        if max_queries is not None and max_queries < 1:
            raise AdvonnxError(f"{self.name}: max_queries must be >= 1")
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 * self.eps / self.steps
        self.samples = int(samples)
        self.sigma = float(sigma) if sigma is not None else self.sigma_default
        self.max_queries = None if max_queries is None else int(max_queries)
        self._cfg = EstimatorConfig(method=self.method, samples=self.samples, sigma=self.sigma)

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        n, d = x.shape[0], flat_dim(x)
        q = self.samples
        per_step = 2 * q + 1
        budget = query_budget(ctx, self.max_queries)
        sigma = self.sigma * (ctx.hi - ctx.lo)
        tail = tuple(x.shape[1:])
        x_adv = x
        done = np.zeros(n, dtype=bool)
        all_idx = np.arange(n)
        per_chunk = max(1, _MAX_ELEMENTS // max(1, per_step * d))
        for _ in range(self.steps):
            act = all_idx[~done]
            act = act[remaining(ctx, budget, act) >= per_step]
            if act.shape[0] == 0:
                break
            for start in range(0, act.shape[0], per_chunk):
                idx = act[start : start + per_chunk]
                m = idx.shape[0]
                xa, xo, la = take(x_adv, idx), take(x, idx), take(labels, idx)
                u = xp.astype(_directions(self._cfg, ctx.rng, m, d, xa), xa.dtype)  # (m, q, d)
                base = xp.reshape(xa, (m, 1, d))
                probes = xp.concat([base, base + sigma * u, base - sigma * u], axis=1)
                probes = xp.reshape(probes, (m * per_step,) + tail)
                rows = np.repeat(idx, per_step)
                scores, attacked = ctx.scores(probes, rows)
                value, hit = objective(ctx, scores, take(la, np.repeat(np.arange(m), per_step)), self.loss, attacked)
                value = xp.reshape(value, (m, per_step))
                hit = host_bool(xp.reshape(hit, (m, per_step))[:, 0])
                diff = (value[:, 1 : q + 1] - value[:, q + 1 :]) / (2.0 * sigma * q)
                g = xp.reshape(xp.sum(xp.astype(diff, xa.dtype)[:, :, None] * u, axis=1), xa.shape)
                # descend the objective (margin / -CE): the point moves toward misclassification
                if self.norm == "linf":
                    step = xp.sign(g)
                else:
                    gn = norms(g, "l2")
                    step = g / batch_view(xp.where(gn > 0, gn, 1.0), g.ndim)
                stepped = ctx.clip(self.project(xo, xa - self.step_size * step))
                keep = xp.reshape(_like_bool(xa, hit), (m,) + (1,) * (xa.ndim - 1))
                x_adv = scatter(x_adv, idx, xp.where(keep, xa, stepped))
                done[idx] |= hit
        return x_adv


def _like_bool(like, host: np.ndarray):
    from ..xp import from_numpy

    return from_numpy(like, np.asarray(host, dtype=bool))


class NES(ScoreBasedPGD):
    name = "nes"
    aliases = ("nes_pgd",)
    summary = "PGD on NES gradient estimates from scores (Ilyas et al. 2018); batched, query-counted"
    method = "nes"
    sigma_default = 1e-3


class SPSA(ScoreBasedPGD):
    name = "spsa"
    aliases = ("spsa_pgd",)
    summary = "PGD on SPSA gradient estimates from scores (Uesato et al. 2018); batched, query-counted"
    method = "spsa"
    sigma_default = 1e-2
