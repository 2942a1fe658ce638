"""``certify``: randomized-smoothing certificates as a suite setting (the lower-bound side of the
attack figures). eps is the noise level σ (L2, value units); the settings are CERTIFY's
(Cohen et al. 2019): ``n0`` selection draws, ``n`` estimation draws, ``alpha``. It produces no
adversarial examples: the suite writes one row per sample with the smoothed prediction (or
abstain) and the certified L2 radius (:mod:`advonnx.certify` does the work). From Python, use
:class:`advonnx.certify.Smoother` directly.
"""

from __future__ import annotations

from ..certify import Certificate, Smoother
from ..errors import AdvonnxError
from .base import Attack, AttackContext


class Certify(Attack):
    name = "certify"
    summary = ("Randomized-smoothing certificate (Cohen et al. 2019): smoothed prediction and certified L2 "
               "radius from queries; eps = the noise sigma (value units)")
    norms = ("l2",)
    needs = "decisions"
    tasks = ("classification",)

    def __init__(self, *, norm: str = "l2", eps: float = 0.25, n0: int = 100, n: int = 10_000,
                 alpha: float = 0.001, block: int = 4096, loss: str = "ce"):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if n0 < 1 or n < 1 or not 0 < alpha < 1 or block < 1:
            raise AdvonnxError(f"certify needs n0 >= 1, n >= 1, 0 < alpha < 1 and block >= 1 (got {n0}, {n}, {alpha}, {block})")
        self.n0, self.n, self.alpha, self.block = int(n0), int(n), float(alpha), int(block)

    def certify(self, model, x, rng) -> Certificate:
        """CERTIFY for every sample of ``x`` with σ = eps."""
        return Smoother(model, sigma=self.eps, block=self.block, rng=rng).certify(x, n0=self.n0, n=self.n,
                                                                                  alpha=self.alpha)

    def run(self, ctx: AttackContext, x, labels):
        raise AdvonnxError("certify gives certificates, not adversarial examples: run it in a suite "
                           "(advonnx run --attack certify) or use advonnx.certify.Smoother")
