"""``certify``: randomized-smoothing certificates as a suite setting (the lower-bound side of the
attack figures). eps is the noise level σ (L2, value units); the settings are CERTIFY's
(Cohen et al. 2019): ``n0`` selection draws, ``n`` estimation draws, ``alpha``. It produces no
adversarial examples: the suite writes one row per sample with the smoothed prediction (or
abstain) and the certified L2 radius (:mod:`advonnx.certify` does the work). Segmentation models
get SEGCERTIFY (Fischer, Baader & Vechev 2021; ``tau``, the paper's defaults n0 = 10, n = 300
apply when given): per pixel the smoothed class or abstain, Holm–Bonferroni over the map, one
radius σ·Φ⁻¹(τ); rows carry the certified pixel accuracy and Dice (abstained pixels count as
wrong). From Python, use :class:`advonnx.certify.Smoother` directly.
"""

from __future__ import annotations

from ..certify import Certificate, DenseCertificate, Smoother
from ..errors import AdvonnxError
from .base import Attack, AttackContext


class Certify(Attack):
    name = "certify"
    summary = (
        "Randomized-smoothing certificate (Cohen et al. 2019): smoothed prediction and certified L2 "
        "radius from queries; eps = the noise sigma (value units)"
    )
    norms = ("l2",)
    needs = "decisions"
    tasks = ("classification", "segmentation")

    def __init__(
        self,
        *,
        norm: str = "l2",
        eps: float = 0.25,
        n0: int = 100,
        n: int = 10_000,
        alpha: float = 0.001,
        block: int = 4096,
        tau: float = 0.75,
        loss: str = "ce",
    ):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if n0 < 1 or n < 1 or not 0 < alpha < 1 or block < 1 or not 0.5 <= tau < 1:
            raise AdvonnxError(
                f"certify needs n0 >= 1, n >= 1, 0 < alpha < 1, block >= 1 and 0.5 <= tau < 1 "
                f"(got {n0}, {n}, {alpha}, {block}, {tau})"
            )
        self.n0, self.n, self.alpha, self.block, self.tau = int(n0), int(n), float(alpha), int(block), float(tau)

    def certify(self, model, x, rng) -> Certificate:
        """CERTIFY for every sample of ``x`` with σ = eps."""
        return Smoother(model, sigma=self.eps, block=self.block, rng=rng).certify(
            x, n0=self.n0, n=self.n, alpha=self.alpha
        )

    def certify_dense(self, model, x, rng) -> DenseCertificate:
        """SEGCERTIFY for every map of ``x`` (a segmentation model) with σ = eps."""
        return Smoother(model, sigma=self.eps, block=self.block, rng=rng).certify_dense(
            x, n0=self.n0, n=self.n, alpha=self.alpha, tau=self.tau
        )

    def run(self, ctx: AttackContext, x, labels):
        raise AdvonnxError(
            "certify gives certificates, not adversarial examples: run it in a suite "
            "(advonnx run --attack certify) or use advonnx.certify.Smoother"
        )
