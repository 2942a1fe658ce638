"""APGD-T: Auto-PGD on the targeted DLR loss over the top classes (Croce & Hein, ICML 2020),
AutoAttack's second stage; the authors' ``APGDAttack_targeted`` is the spec.

For each of the ``n_target_classes`` classes ranked 2nd, 3rd, ... by the clean scores (at most
classes − 1), APGD (:mod:`advonnx.attacks.apgd`: same start, steps, checkpoints, momentum)
ascends ``dlr_targeted`` (:func:`advonnx.losses.dlr` with a target) for ``restarts`` runs, each
on the samples that no earlier target or run broke. Success is untargeted: any class other than
the label counts, so the attack reports an untargeted result (targets are only its route).
Samples the model misclassifies unattacked are not attacked.
"""

from __future__ import annotations

import numpy as np

from ..errors import AdvonnxError
from ..xp import from_numpy, namespace, to_numpy
from .apgd import APGD
from .base import AttackContext


class APGDT(APGD):
    name = "apgdt"
    aliases = ("apgd-t", "apgd_t")
    summary = "APGD-T: APGD on the targeted DLR loss, one run per top-k class (Croce & Hein 2020)"
    tasks = ("classification",)
    multilabel = False  # targeted DLR ranks classes; multi-label findings are not ranked

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        n_target_classes: int = 9,
        rho: float = 0.75,
        eot_iter: int = 1,
    ):
        super().__init__(norm=norm, eps=eps, steps=steps, restarts=restarts, loss="dlr", rho=rho, eot_iter=eot_iter)
        if n_target_classes < 1:
            raise AdvonnxError(f"{self.name}: n_target_classes must be >= 1")
        self.n_target_classes = int(n_target_classes)

    def run(self, ctx: AttackContext, x, labels):
        robust, scores = self._initial(ctx, x, labels)
        # classes by decreasing clean score (host: a few integers per sample)
        order = np.argsort(-np.asarray(to_numpy(scores), dtype=np.float64), axis=1, kind="stable")
        k = min(self.n_target_classes, order.shape[1] - 1)
        xp = namespace(x)
        out = x
        for rank in range(1, k + 1):
            targets = xp.astype(from_numpy(x, np.ascontiguousarray(order[:, rank])), labels.dtype)
            out, robust = self._runs(ctx, x, labels, robust, out, targets)
        return out
