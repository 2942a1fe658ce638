"""Gradient oracles: exact (from the ONNX gradient graph) and estimated (from queries alone).

The estimated oracle implements the antithetic finite-difference estimators of black-box
attacks:

- ``nes`` (Ilyas et al., ICML 2018): directions ``u_i`` Gaussian, evaluated in antithetic pairs
  ``f(x + σu_i) − f(x − σu_i)``; ``ĝ = Σ_i (f⁺ − f⁻) u_i / (2σ q)``. With ``orthogonal=True``
  (default) the q directions of each sample are orthogonalized (QR of a Gaussian block) and
  scaled to length √d, as in orthogonal evolution strategies (Choromanski et al., ICML 2018):
  still unbiased, lower variance, and exact up to O(σ²) once q ≥ d.
- ``spsa`` (Spall 1992; Uesato et al., ICML 2018): Rademacher ±1 directions, same formula.

Query cost per sample per call: ``2 q + 1`` model evaluations (q antithetic pairs plus the loss
at ``x``). ``σ`` is given relative to the width of the value range (default 1e-3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .xp import Random, namespace

# Cap on elements (samples × draws × features) evaluated per predict batch by the estimator.
_MAX_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class EstimatorConfig:
    """Settings of the estimated gradient: method (nes|spsa), antithetic pairs q, σ, orthogonal."""

    method: str = "nes"
    samples: int = 50
    sigma: float = 1e-3
    orthogonal: bool = True

    def __post_init__(self):
        if self.method not in ("nes", "spsa"):
            raise ValueError(f"unknown estimator {self.method!r}; use 'nes' or 'spsa'")
        if self.samples < 1:
            raise ValueError("estimator samples must be >= 1")
        if not self.sigma > 0:
            raise ValueError("estimator sigma must be > 0")

    @property
    def queries_per_gradient(self) -> int:
        return 2 * self.samples + 1


def _directions(cfg: EstimatorConfig, rng: Random, n: int, d: int, like):
    """(n, q, d) search directions with E[u uᵀ] = I."""
    xp = namespace(like)
    q = cfg.samples
    if cfg.method == "spsa":
        return rng.rademacher((n, q, d), like=like)
    if not cfg.orthogonal:
        return rng.normal((n, q, d), like=like)
    blocks = []
    for start in range(0, q, d):
        k = min(d, q - start)
        g = rng.normal((n, d, k), like=like)
        qmat, _ = xp.linalg.qr(g)  # (n, d, k) orthonormal columns
        blocks.append(xp.permute_dims(qmat, (0, 2, 1)) * (d**0.5))
    return blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=1)


def estimate_value_and_grad(
    loss_of: Callable,
    x,
    cfg: EstimatorConfig,
    rng: Random,
    *,
    value_range: tuple[float, float],
):
    """Loss (N,) at ``x`` and its estimated gradient, from ``loss_of(x_batch, sample_index)``.

    ``loss_of(xb, idx)`` returns the per-row loss (rows of ``xb`` belong to samples ``idx``) and
    is the only access to the model, so every query goes through it and is counted there.
    """
    xp = namespace(x)
    n = x.shape[0]
    d = 1
    for s in x.shape[1:]:
        d *= s
    sigma = cfg.sigma * (value_range[1] - value_range[0])
    all_idx = xp.arange(n, dtype=xp.int64)
    loss = loss_of(x, all_idx)
    grad = xp.zeros((n, d), dtype=x.dtype)
    per_chunk = max(1, _MAX_ELEMENTS // max(1, 2 * cfg.samples * d))
    x_flat = xp.reshape(x, (n, d))
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        m = stop - start
        u = xp.astype(_directions(cfg, rng, m, d, x), x.dtype)  # (m, q, d)
        base = x_flat[start:stop, None, :]
        probes = xp.concat([base + sigma * u, base - sigma * u], axis=1)  # (m, 2q, d)
        probes = xp.reshape(probes, (m * 2 * cfg.samples,) + tuple(x.shape[1:]))
        idx = xp.reshape(
            xp.broadcast_to(all_idx[start:stop, None], (m, 2 * cfg.samples)), (-1,)
        )
        values = xp.reshape(loss_of(probes, idx), (m, 2, cfg.samples))
        diff = (values[:, 0, :] - values[:, 1, :]) / (2.0 * sigma * cfg.samples)  # (m, q)
        diff = xp.astype(diff, x.dtype)
        grad[start:stop, :] = xp.sum(diff[:, :, None] * u, axis=1)
    return loss, xp.reshape(grad, x.shape)
