"""The model as an attack sees it (:class:`AttackContext`): counted queries and gradients, the
budget, clipping to the value range and the one success rule. Attacks get nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..xp import Random, namespace, to_numpy
from .success import adversarial

if TYPE_CHECKING:
    from ..oracles import Model


class AttackContext:
    """The model as an attack sees it: counted ``predict`` / ``value_and_grad`` and the budget.

    Randomized models (``spec.randomized``): ``classify`` is the majority over ``model.votes``
    evaluations, and ``value_and_grad`` / ``vjp`` average loss and gradient over ``eot`` draws
    (expectation over transformation, Athalye et al. 2018), exact or estimated; every evaluation
    is counted.

    Models with several inputs: ``extras`` (name -> one row per sample of the attacked batch)
    holds the inputs that are not attacked; every method takes the rows ``idx`` of them, so a
    call on a subset of samples feeds each sample's own values."""

    def __init__(
        self,
        model: Model,
        *,
        n: int,
        rng: Random,
        gradient: str,
        targeted: bool,
        value_range,
        max_queries: int | None,
        eot: int | None = None,
        extras=None,
    ):
        self.model = model
        self.extras = extras or None
        self.rng = rng
        self.gradient = gradient
        self.targeted = targeted
        self.lo, self.hi = value_range
        self.max_queries = max_queries
        self.queries = np.zeros(n, dtype=np.int64)
        self.spec = model.spec
        self.eot = int(eot) if eot else int(getattr(model, "eot", 1))
        self.votes = int(getattr(model, "votes", 1))
        # per sample: whether its input gradient was exactly zero at its first value_and_grad
        # (a masked gradient, or a model flat around the sample), and whether that call came
        self._zero_gradient = np.zeros(n, dtype=bool)
        self._gradient_seen = np.zeros(n, dtype=bool)
        self.broken_by: np.ndarray | None = None  # a cascade records its breaking stage per sample

    def count(self, idx) -> None:
        np.add.at(self.queries, to_numpy(idx), 1)

    def rows(self, idx) -> dict[str, Any]:
        """Keyword arguments feeding the held-fixed inputs of samples ``idx`` ({} for a model
        with one input)."""
        if not self.extras:
            return {}
        from ..model import take_extras

        return {"extras": take_extras(self.extras, idx)}

    def predict(self, x, idx):
        """Decision scores of ``x`` (the model's output); rows belong to samples ``idx``
        (indices into the attacked batch)."""
        self.count(idx)
        return self.model.predict(x, **self.rows(idx))

    def attack_scores(self, x, idx):
        """The scores objectives use (margins, losses, candidate classes): the logits before a
        final Softmax/LogSoftmax/Sigmoid when the model has one, else the scores. Counted."""
        self.count(idx)
        return self.model.attack_scores(x, **self.rows(idx))

    def scores(self, x, idx):
        """``(predict, attack_scores)`` of ``x`` from one query per row."""
        self.count(idx)
        return self.model.predict_both(x, **self.rows(idx))

    @property
    def multilabel(self) -> bool:
        """The model has independent sigmoid outputs: decisions are (N, K) 0/1 vectors."""
        return self.spec.output_kind == "multilabel"

    def decide(self, scores):
        """Decisions from decision scores (``predict``'s): argmax over classes, or for a
        multi-label model the (N, K) 0/1 vector of findings above the threshold."""
        xp = namespace(scores)
        if self.multilabel:
            thr = self.spec.threshold if self.spec.scores == "probabilities" else 0.0
            return xp.astype(scores > thr, xp.int64)
        return xp.argmax(scores, axis=self.spec.class_axis)

    def classify(self, x, idx):
        if self.votes > 1:  # a randomized model: the majority over `votes` evaluations
            for _ in range(self.votes):
                self.count(idx)
            return self.model.classify(x, votes=self.votes, **self.rows(idx))
        return self.decide(self.predict(x, idx))

    def value_and_grad(self, x, labels, idx, *, loss: str, mask=None, scale_free: bool = False):
        """Loss per row and its gradient w.r.t. ``x``; every evaluation is counted on ``idx``.

        ``mask`` (segmentation, shaped like the labels) weights the pixels of ``seg_ce``.
        ``scale_free``: CE's gradient direction without the factor that underflows for confident
        logits (see ``OnnxModel.value_and_grad``), for attacks that only use the direction.
        Records per sample whether the gradient of its first call was exactly zero."""
        value, grad = self._expected(x, labels, None, idx, loss=loss, mask=mask, scale_free=scale_free)
        self._record_zero_gradient(grad, idx)
        return value, grad

    def loss_grad_decisions(self, x, labels, idx, *, loss: str, scale_free: bool = False):
        """``(loss, gradient, predict(x))`` per row: from one run of the gradient graph when the
        model allows it (exact gradients, no EOT, ``model.one_pass``), else the scores and the
        gradient from two. ``scale_free`` as in :meth:`value_and_grad`. Counted and recorded as
        :meth:`value_and_grad`."""
        if (
            self.eot == 1
            and getattr(self.model, "one_pass", False)
            and self.model.gradient_mode(self.gradient, loss=loss, scale_free=scale_free, with_decisions=True)
            == "exact"
        ):
            value, grad, scores = self.model.value_and_grad(
                x,
                labels,
                loss=loss,
                gradient=self.gradient,
                counter=lambda rows: self.count(to_numpy(idx)[rows]),
                with_decisions=True,
                scale_free=scale_free,
                **self.rows(idx),
            )
            self._record_zero_gradient(grad, idx)
            return value, grad, scores
        scores = self.predict(x, idx)
        value, grad = self.value_and_grad(x, labels, idx, loss=loss, scale_free=scale_free)
        return value, grad, scores

    def _record_zero_gradient(self, grad, idx) -> None:
        idx_host = to_numpy(idx)
        first = ~self._gradient_seen[idx_host]
        if first.any():
            xp = namespace(grad)
            zero = np.asarray(to_numpy(xp.all(xp.reshape(grad == 0, (grad.shape[0], -1)), axis=1)), dtype=bool)
            self._zero_gradient[idx_host[first]] = zero[first]
            self._gradient_seen[idx_host[first]] = True

    @property
    def zero_gradient(self) -> np.ndarray | None:
        """(N,) object array: True/False per sample whose first gradient was taken (exactly zero
        or not), None for samples never differentiated; None when no gradient was asked for."""
        if not self._gradient_seen.any():
            return None
        return np.where(self._gradient_seen, self._zero_gradient, np.array(None)).astype(object)

    def vjp(self, x, cotangent, idx):
        """``<cotangent, scores>`` per row and ``cotangentᵀ ∂scores/∂x`` (shaped like ``x``), on
        the attacked scores (``attack_scores``: logits before a final Softmax/Sigmoid).

        ``cotangent`` is shaped like the scores (a one-hot difference gives a logit difference
        and its gradient); every row is counted on the sample ``idx`` it belongs to.
        """
        return self._expected(x, None, cotangent, idx, loss="ce")

    def _expected(self, x, labels, cotangent, idx, *, loss: str, mask=None, scale_free: bool = False):
        """The model's value and gradient, averaged over ``eot`` draws (one batched call of the
        ``eot`` copies of ``x``) for a randomized model."""
        k = self.eot
        xp = namespace(x)
        idx_host = to_numpy(idx)
        if k > 1:
            n = x.shape[0]
            tile = lambda a: None if a is None else xp.concat([a] * k)  # noqa: E731
            x, labels, cotangent, mask = tile(x), tile(labels), tile(cotangent), tile(mask)
            idx_host = np.tile(idx_host, k)

        def counter(rows):
            self.count(idx_host[np.asarray(rows)])

        value, grad = self.model.value_and_grad(
            x,
            labels,
            loss=loss,
            cotangent=cotangent,
            gradient=self.gradient,
            rng=self.rng,
            counter=counter,
            mask=mask,
            scale_free=scale_free,
            **self.rows(idx_host),
        )
        if k > 1:
            value = xp.mean(xp.reshape(value, (k, n)), axis=0)
            grad = xp.mean(xp.reshape(grad, (k, n) + tuple(grad.shape[1:])), axis=0)
        return value, grad

    def clip(self, x):
        """``x`` inside the value range (``lo``/``hi``: numbers, or per-element arrays shaped
        like one sample, as a joint attack's packed inputs have, broadcast over the batch)."""
        if type(x) is np.ndarray and x.dtype.kind == "f":
            # NumPy floats: np.clip itself, bounds cast to x.dtype as array_api_compat's wrapper
            # does (same numbers); the wrapper costs ~3x more per call, which adds up over the
            # thousands of small iterations of a query attack
            return np.clip(x, self.lo, self.hi, dtype=x.dtype)
        xp = namespace(x)
        return xp.clip(x, *bounds_for_clip(xp, self.lo, self.hi))

    def is_adversarial(self, pred, ref, *, targeted: bool | None = None):
        """Per-sample success of decisions ``pred`` against ``ref`` (labels, or targets when
        targeted): the one rule every attack and the base's re-judgement use
        (:func:`adversarial`). ``targeted`` defaults to the context's."""
        return adversarial(
            pred, ref, targeted=self.targeted if targeted is None else targeted, multilabel=self.multilabel
        )


def bounds_for_clip(xp, lo, hi):
    """``(lo, hi)`` for ``xp.clip``: numbers as they are, per-element arrays in ``xp``."""
    if isinstance(lo, np.ndarray):
        return xp.asarray(lo), xp.asarray(hi)
    return lo, hi
