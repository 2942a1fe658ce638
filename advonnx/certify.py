"""Randomized-smoothing certificates for any classification model, from queries alone.

Cohen, Rosenfeld & Kolter, *Certified adversarial robustness via randomized smoothing*, ICML 2019;
their released ``core.py`` is the spec. The smoothed classifier g(x) = argmax_c P(f(x + ε) = c),
ε ~ N(0, σ² I), is certified at x with L2 radius σ·Φ⁻¹(p_A) where p_A is a lower confidence bound
on the top class's probability:

- CERTIFY: ``n0`` noisy draws select the top class ĉ_A; ``n`` further draws count how often the
  model answers ĉ_A (n_A); p_A = the one-sided (1 − alpha) Clopper–Pearson lower bound of
  n_A / n. If p_A < 1/2 the sample is abstained (radius 0); else radius = σ·Φ⁻¹(p_A). With
  probability at least 1 − alpha, g answers ĉ_A everywhere within that radius.
- PREDICT: ``n`` draws; the top two counts are compared with a two-sided binomial test at p = 1/2;
  abstain when its p-value exceeds ``alpha``.

σ is in the model's value units (``sigma_fraction`` gives it as a fraction of the value range);
the noise is not clipped to the value range (as in ``core.py``: the base classifier sees x + ε).
Noisy copies go through onnxruntime in large blocks; every model evaluation is a query.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np

from .binomial import binom_sf, binom_test_two_sided, clopper_pearson_lower
from .errors import AdvonnxError
from .xp import Random, namespace, to_numpy

ABSTAIN = -1
_NORMAL = statistics.NormalDist()


@dataclass
class Certificate:
    """Per sample: the smoothed prediction (``ABSTAIN`` = -1), its certified L2 radius (0 when
    abstaining), the counts behind it and the model evaluations spent."""

    prediction: np.ndarray  # (N,) int64
    radius: np.ndarray  # (N,) float64, value units
    top_count: np.ndarray  # (N,) n_A
    p_lower: np.ndarray  # (N,) Clopper-Pearson lower bound on p_A
    queries: np.ndarray  # (N,) int64
    sigma: float

    def certified_correct(self, labels, radius: float = 0.0) -> np.ndarray:
        """Samples whose smoothed prediction is the label and certified beyond ``radius``."""
        labels = np.asarray(to_numpy(labels))
        return (self.prediction == labels) & (self.prediction != ABSTAIN) & (self.radius > radius)


def certify_counts(n_a: int, n: int, *, sigma: float, alpha: float) -> tuple[float, float]:
    """(p_A lower bound, radius) for ``n_a`` top-class answers in ``n`` draws (``core.py``'s
    CERTIFY after its sampling); radius 0.0 means abstain."""
    p_lower = clopper_pearson_lower(int(n_a), int(n), alpha)
    if p_lower < 0.5:
        return p_lower, 0.0
    return p_lower, sigma * _NORMAL.inv_cdf(p_lower) if p_lower < 1.0 else float("inf")


def predict_counts(counts: np.ndarray, *, alpha: float) -> int:
    """``core.py``'s PREDICT from the class counts of ``n`` draws: the top class, or ABSTAIN."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    c1, c2 = int(counts[order[0]]), int(counts[order[1]]) if len(counts) > 1 else 0
    if binom_test_two_sided(c1, c1 + c2) > alpha:
        return ABSTAIN
    return int(order[0])


class Smoother:
    """Noise draws of a model's decisions. ``block`` rows go to onnxruntime per call."""

    def __init__(
        self,
        model,
        *,
        sigma: float | None = None,
        sigma_fraction: float | None = None,
        block: int = 4096,
        rng: Random | None = None,
    ):
        spec = model.spec
        if spec.output_kind == "multilabel":
            raise AdvonnxError(f"{spec.path}: randomized-smoothing certificates need single-label decisions")
        lo, hi = spec.value_range
        if (sigma is None) == (sigma_fraction is None):
            raise AdvonnxError(
                "certify needs exactly one of sigma (value units) or sigma_fraction (of the value range)"
            )
        self.sigma = float(sigma) if sigma is not None else float(cast(float, sigma_fraction)) * (hi - lo)
        if not self.sigma > 0:
            raise AdvonnxError(f"certify needs sigma > 0 (got {self.sigma})")
        self.model = model
        self.classes = spec.num_classes
        self.block = int(block)
        self.rng = rng or Random(0)

    def counts(self, x, num: int) -> np.ndarray:
        """Counts of the model's answers on ``num`` noisy copies of each sample: (N, classes), or
        (N, classes, *positions) for a segmentation model (per pixel)."""
        xp = namespace(x)
        n = x.shape[0]
        out = None
        # a block holds all draws of several samples, or part of one sample's draws
        group, draws = (max(1, self.block // num), num) if num <= self.block else (1, self.block)
        plan = [
            (s0, min(n, s0 + group), min(draws, num - done))
            for s0 in range(0, n, group)
            for done in range(0, num, draws)
        ]
        tail = tuple(x.shape[1:])

        def noisy_block(block):
            # the next block's noisy inputs (draws, scaling, adding x) are made in this thread
            # while onnxruntime runs the current one: the main thread only classifies
            s0, s1, m = block
            g = s1 - s0
            eps = self.rng.normal_native((g, m, *tail), like=x)
            eps *= self.sigma
            eps += x[s0:s1, None]
            return xp.reshape(eps, (g * m, *tail))

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(noisy_block, plan[0]) if plan else None
            for k, (s0, s1, m) in enumerate(plan):
                assert pending is not None  # one submitted per block of the plan
                noisy = pending.result()
                pending = pool.submit(noisy_block, plan[k + 1]) if k + 1 < len(plan) else None
                g = s1 - s0
                pred = np.asarray(to_numpy(self.model.classify(noisy)), np.int64)
                pred = pred.reshape(g, m, *pred.shape[1:])
                if out is None:
                    out = np.zeros((n, self.classes, *pred.shape[2:]), np.int64)
                if pred.ndim == 2:  # one bincount per block: counts of (sample, class) pairs
                    valid = (pred >= 0) & (pred < self.classes)
                    keys = (np.arange(g)[:, None] * self.classes + pred)[valid]
                    out[s0:s1] += np.bincount(keys, minlength=g * self.classes).reshape(g, self.classes)
                else:
                    for c in range(self.classes):
                        out[s0:s1, c] += np.sum(pred == c, axis=1)
        return np.zeros((0, self.classes), np.int64) if out is None else out

    def certify(self, x, *, n0: int = 100, n: int = 100_000, alpha: float = 0.001) -> Certificate:
        if self.model.spec.task != "classification":
            raise AdvonnxError(f"{self.model.spec.path}: use certify_dense for a segmentation model")
        return self._certify(x, n0=n0, n=n, alpha=alpha)

    def _certify(self, x, *, n0: int, n: int, alpha: float) -> Certificate:
        """CERTIFY for every sample of ``x`` (see module docstring)."""
        if n0 < 1 or n < 1 or not 0 < alpha < 1:
            raise AdvonnxError(f"certify needs n0 >= 1, n >= 1 and 0 < alpha < 1 (got {n0}, {n}, {alpha})")
        selection = self.counts(x, n0)
        top = np.argmax(selection, axis=1)
        estimation = self.counts(x, n)
        n_a = estimation[np.arange(len(top)), top]
        p_lower = np.zeros(len(top))
        radius = np.zeros(len(top))
        for i, k in enumerate(n_a):
            p_lower[i], radius[i] = certify_counts(int(k), n, sigma=self.sigma, alpha=alpha)
        prediction = np.where(radius > 0, top, ABSTAIN).astype(np.int64)
        queries = np.full(len(top), n0 + n, np.int64)
        return Certificate(prediction, radius, n_a, p_lower, queries, self.sigma)

    def certify_dense(
        self, x, *, n0: int = 10, n: int = 300, alpha: float = 0.001, tau: float = 0.75
    ) -> DenseCertificate:
        """SEGCERTIFY (Fischer, Baader & Vechev, NeurIPS 2021) for a segmentation model: per-pixel
        smoothed classes with abstention, Holm–Bonferroni over each map's pixels, one radius
        σ·Φ⁻¹(τ) for every certified pixel. Defaults are the paper's (n0 = 10, n = 300, τ = 0.75)."""
        if self.model.spec.task != "segmentation":
            raise AdvonnxError(f"{self.model.spec.path}: certify_dense is for segmentation models; use certify")
        if not 0.5 <= tau < 1 or n0 < 1 or n < 1 or not 0 < alpha < 1:
            raise AdvonnxError("certify_dense needs 0.5 <= tau < 1, n0, n >= 1 and 0 < alpha < 1")
        selection = self.counts(x, n0)
        estimation = self.counts(x, n)
        preds, radius = [], 0.0
        for i in range(len(selection)):
            pred, radius = certify_dense_counts(
                selection[i], estimation[i], n=n, sigma=self.sigma, tau=tau, alpha=alpha
            )
            preds.append(pred)
        prediction = np.stack(preds) if preds else np.zeros((0,), np.int64)
        return DenseCertificate(
            prediction,
            radius if preds else self.sigma * _NORMAL.inv_cdf(tau),
            tau,
            np.full(len(preds), n0 + n, np.int64),
        )

    def predict(self, x, *, n: int = 10_000, alpha: float = 0.001) -> np.ndarray:
        """PREDICT for every sample: the smoothed class or ABSTAIN (-1)."""
        counts = self.counts(x, n)
        return np.array([predict_counts(c, alpha=alpha) for c in counts], np.int64)


@dataclass
class DenseCertificate:
    """Per pixel: the smoothed class or ``ABSTAIN``; every certified pixel holds within
    ``radius`` = σ·Φ⁻¹(τ) (L2, value units), jointly for the whole map with probability ≥ 1 − alpha."""

    prediction: np.ndarray  # (N, *positions) int64
    radius: float
    tau: float
    queries: np.ndarray

    def pixel_accuracy(self, labels) -> np.ndarray:
        """Per sample: certified-and-correct pixels over all pixels (abstentions count as wrong)."""
        labels = np.asarray(to_numpy(labels))
        good = (self.prediction == labels) & (self.prediction != ABSTAIN)
        return good.reshape(len(good), -1).mean(axis=1)

    def abstain_rate(self) -> np.ndarray:
        return (self.prediction == ABSTAIN).reshape(len(self.prediction), -1).mean(axis=1)


def holm_bonferroni(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Rejections of Holm's step-down procedure at family-wise level ``alpha`` (same shape)."""
    p = np.asarray(p_values, np.float64).ravel()
    order = np.argsort(p, kind="stable")
    thresholds = alpha / (len(p) - np.arange(len(p)))
    passed = p[order] <= thresholds
    k = len(p) if passed.all() else int(np.argmin(passed))
    reject = np.zeros(len(p), bool)
    reject[order[:k]] = True
    return reject.reshape(np.shape(p_values))


def certify_dense_counts(
    selection: np.ndarray, estimation: np.ndarray, *, n: int, sigma: float, tau: float, alpha: float
) -> tuple[np.ndarray, float]:
    """Fischer, Baader & Vechev's SEGCERTIFY after its sampling, for one sample: per pixel the top
    class of the ``selection`` counts (classes, *positions), a one-sided binomial p-value of its
    ``estimation`` count against p ≤ τ, Holm–Bonferroni at ``alpha`` over the pixels; rejected
    pixels keep their class, the others abstain. Radius σ·Φ⁻¹(τ)."""
    top = np.argmax(selection, axis=0)
    n_a = np.take_along_axis(estimation, top[None], axis=0)[0]
    table = {int(k): binom_sf(int(k), n, tau) for k in np.unique(n_a)}  # P(X >= n_A | p = τ)
    p_values = np.vectorize(table.__getitem__, otypes=[np.float64])(n_a)
    certified = holm_bonferroni(p_values, alpha)
    return np.where(certified, top, ABSTAIN).astype(np.int64), sigma * _NORMAL.inv_cdf(tau)
