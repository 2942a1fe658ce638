"""Universal adversarial perturbation: one perturbation for every input, the scanner-level threat
(Moosavi-Dezfooli et al., CVPR 2017; for medical imaging Hirano et al., BMC Med Imaging 2021).

The SGD variant is used (Shafahi et al., AAAI 2020, "Universal adversarial training";
Mummadi et al., ICCV 2019): δ is updated by the sign (linf) or the normalized (l2) gradient of
the summed loss over mini-batches of the fitting samples, projected onto the eps-ball, for
``epochs`` passes. It is faster than the original DeepFool-driven loop and, per those papers,
at least as strong. A ``fit_fraction`` of the attacked batch, interleaved over its order
(:func:`fit_mask`), is used for fitting; the fooling rate (f(x + δ) ≠ f(x), the paper's
definition) is reported on the others, the held-out samples. In a suite the whole dataset is one batch
(one work unit whatever ``chunk_size``), so there is one δ per model × dataset × setting; rows
carry ``uap_split`` and the leaderboard counts the held-out samples (``universal_summary.py``).
"""

from __future__ import annotations

import numpy as np

from ..errors import AdvonnxError
from ..xp import namespace, norms, to_numpy
from .base import Attack, AttackContext


def fit_mask(n: int, fit_fraction: float) -> np.ndarray:
    """(n,) bool: the samples a universal perturbation is fitted on, ``fit_fraction`` of them spread
    evenly over the batch order (sample i when frac(i · fit_fraction) < fit_fraction); the rest
    are held out."""
    i = np.arange(n)
    return np.mod(i * fit_fraction, 1.0) < fit_fraction - 1e-12


class UniversalPerturbation(Attack):
    eps: float  # a budgeted attack: the base refuses eps=None
    name = "uap"
    aliases = ("universal",)
    summary = (
        "Universal adversarial perturbation (SGD variant): one delta for all inputs, fooling rate on held-out samples"
    )

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        epochs: int = 10,
        batch_size: int = 32,
        step_size: float | None = None,
        fit_fraction: float = 0.5,
        loss: str = "ce",
    ):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if epochs < 1 or batch_size < 1:
            raise AdvonnxError("uap: epochs and batch_size must be >= 1")
        if not 0 < fit_fraction < 1:
            raise AdvonnxError(f"uap: fit_fraction must be in (0, 1), not {fit_fraction}")
        self.epochs, self.batch_size, self.fit_fraction = int(epochs), int(batch_size), float(fit_fraction)
        self.step_size = float(step_size) if step_size is not None else self.eps / 10

    def run(self, ctx: AttackContext, x, labels):
        xp = namespace(x)
        idx = np.flatnonzero(fit_mask(x.shape[0], self.fit_fraction))
        delta = xp.zeros((1, *x.shape[1:]), dtype=x.dtype)
        sign = -1.0 if ctx.targeted else 1.0
        for _ in range(self.epochs):
            order = idx[ctx.rng.permutation(len(idx))]
            for s in range(0, len(order), self.batch_size):
                rows = order[s : s + self.batch_size]
                take = xp.asarray(rows)
                xb = ctx.clip(xp.take(x, take, axis=0) + delta)
                _, g = ctx.value_and_grad(xb, xp.take(labels, take, axis=0), take, loss=self.loss)
                g = sign * xp.sum(g, axis=0, keepdims=True)
                if self.norm == "linf":
                    delta = xp.clip(delta + self.step_size * xp.sign(g), -self.eps, self.eps)
                else:
                    gn = float(to_numpy(norms(g, "l2"))[0])
                    delta = delta + (self.step_size * g / gn if gn > 0 else 0.0)
                    dn = float(to_numpy(norms(delta, "l2"))[0])
                    delta = delta * (min(1.0, self.eps / dn) if dn > 0 else 1.0)
        return ctx.clip(x + delta)
