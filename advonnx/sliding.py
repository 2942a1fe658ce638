"""Sliding-window inference: a segmentation model run on overlapping windows of a larger image or
volume, its scores stitched, and exact gradients through the stitching.

The windows, their weights and the stitching follow MONAI's ``sliding_window_inference`` (the
spec): per spatial axis the scan interval is ``int(roi * (1 - overlap))`` (at least 1; the whole
axis when it equals the roi), windows start at multiples of it and the last one is moved back to
end at the border; an input smaller than the roi is padded with zeros (half before, half after)
and the padding cropped from the scores. Each window's scores are weighted by an importance map
(``constant``: ones; ``gaussian``: a separable Gaussian of sigma ``sigma_scale * roi``, clamped
at its minimum or 1e-3) and the sum is divided by the summed weights.

The stitched scores are linear in the windows' scores, so the input gradient of any loss ``L``
of them is exact: ``dL/dx = sum_w P_wᵀ J(x_w)ᵀ (w ⊙ (dL/dS)[w] / count[w])``, one
vector-Jacobian product of the model per window (``cotangent`` gradient graphs), accumulated.
One query is one stitched evaluation of a whole sample.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import numpy as np

from . import losses
from .errors import AdvonnxError, ModelError
from .oracles import Extras, estimate_value_and_grad
from .spec import channels_first
from .xp import Random, namespace

BLENDS = ("constant", "gaussian")


def scan_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis of ``size`` (already padded to at least ``roi``)."""
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = next((d for d in range(math.ceil(size / interval)) if d * interval + roi >= size), 0) + 1
    return [i * interval - max(i * interval + roi - size, 0) for i in range(count)]


def importance_map(roi: tuple[int, ...], blend: str, sigma_scale: float = 0.125) -> np.ndarray:
    """Per-window weights of shape ``roi`` (float32), as MONAI's ``compute_importance_map``."""
    if blend == "constant":
        return np.ones(roi, np.float32)
    weights = np.ones((), np.float32)
    for size in roi:
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x**2 / np.float32(-2 * (size * sigma_scale) ** 2)).astype(np.float32)
        weights = weights[..., None] * g
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


class SlidingWindowModel:
    """``model`` (a segmentation :class:`advonnx.model.OnnxModel`) on windows of ``patch_size``
    (spatial axes in array order) with ``overlap`` (fraction, 0 <= overlap < 1) and ``blend``
    (constant | gaussian). It answers ``predict``, ``classify`` and ``value_and_grad`` for
    samples of any spatial size; everything else is the inner model's."""

    def __init__(
        self,
        model,
        patch_size,
        *,
        overlap: float = 0.25,
        blend: str = "constant",
        sigma_scale: float = 0.125,
        windows_per_call: int | None = None,
    ):
        spec = model.spec
        name = spec.path
        if spec.randomized:
            raise ModelError(
                f"{name}: sliding windows need a deterministic model (it has {', '.join(spec.randomized)})"
            )
        if spec.task != "segmentation":
            raise ModelError(f"{name}: sliding windows need a segmentation model (a dense score map), not {spec.task}")
        nd = len(spec.input_shape) - 2
        roi = tuple(int(s) for s in patch_size)
        if len(roi) != nd or min(roi) < 1:
            raise ModelError(
                f"{name}: patch size {patch_size} must give {nd} positive sizes (spatial axes in array order)"
            )
        fixed = spec.spatial_shape
        if fixed is not None and fixed != roi:
            raise ModelError(
                f"{name}: the model takes windows of {fixed}, not the patch size {roi}; use --patch-size "
                + ",".join(map(str, fixed))
            )
        if not 0 <= float(overlap) < 1:
            raise ModelError(f"{name}: overlap must be in [0, 1), not {overlap}")
        if blend not in BLENDS:
            raise ModelError(f"{name}: blend must be one of {', '.join(BLENDS)}, not {blend!r}")
        self.inner = model
        self.roi, self.overlap, self.blend = roi, float(overlap), blend
        self.weights = importance_map(roi, blend, sigma_scale)
        self.windows_per_call = windows_per_call or model.batch_size
        self.first = channels_first(spec.layout)
        shape = [None, spec.channels] + [None] * nd if self.first else [None] + [None] * nd + [spec.channels]
        self.spec = replace(spec, input_shape=tuple(shape), fixed_batch=None)
        self.spec.notes.append(
            f"sliding windows of {'x'.join(map(str, roi))}, overlap {self.overlap:g}, {blend} blend (MONAI's scheme); "
            "gradients exact through the stitching"
        )

    # windows are stitched outside one graph: decisions and gradients take separate runs
    one_pass = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # -- layout helpers -------------------------------------------------------------------
    def _cf(self, x):
        xp = namespace(x)
        return x if self.first else xp.permute_dims(x, (0, x.ndim - 1, *range(1, x.ndim - 1)))

    def _back(self, x):
        xp = namespace(x)
        return x if self.first else xp.permute_dims(x, (0, *range(2, x.ndim), 1))

    def _plan(self, spatial: tuple[int, ...]):
        padded = tuple(max(s, r) for s, r in zip(spatial, self.roi))
        pads = tuple(((p - s) // 2, p - s - (p - s) // 2) for s, p in zip(spatial, padded))
        starts = [scan_starts(p, r, self.overlap) for p, r in zip(padded, self.roi)]
        slices = [tuple(slice(s, s + r) for s, r in zip(corner, self.roi)) for corner in itertools.product(*starts)]
        return padded, pads, slices

    def _pad(self, xcf, pads):
        if not any(a or b for a, b in pads):
            return xcf
        xp = namespace(xcf)
        out = xp.zeros((*xcf.shape[:2], *(s + a + b for s, (a, b) in zip(xcf.shape[2:], pads))), dtype=xcf.dtype)
        out[(slice(None), slice(None), *(slice(a, a + s) for s, (a, _) in zip(xcf.shape[2:], pads)))] = xcf
        return out

    @staticmethod
    def _crop(a, pads):
        return a[(slice(None), slice(None), *(slice(lo, a.shape[2 + i] - hi) for i, (lo, hi) in enumerate(pads)))]

    def _windows(self, xcf, slices):
        """All windows of all samples, sample-major: (N * W, C, *roi)."""
        xp = namespace(xcf)
        return xp.stack([xcf[(b, slice(None), *sl)] for b in range(xcf.shape[0]) for sl in slices])

    def _batches(self, total: int):
        for start in range(0, total, self.windows_per_call):
            yield start, min(total, start + self.windows_per_call)

    def _count(self, xp, like, padded, slices):
        w = xp.asarray(self.weights, dtype=like.dtype)
        count = xp.zeros(padded, dtype=like.dtype)
        for sl in slices:
            count[sl] += w
        return w, count

    # -- the model interface --------------------------------------------------------------
    def _stitch(self, x, window_fn):
        """``window_fn`` (the inner model's predict or attack_scores) on every window of ``x``,
        stitched (see module docstring), in the model's layout."""
        xp = namespace(x)
        xcf = self._cf(x)
        n = xcf.shape[0]
        padded, pads, slices = self._plan(tuple(xcf.shape[2:]))
        xcf = self._pad(xcf, pads)
        windows = self._windows(xcf, slices)
        out = None
        for start, stop in self._batches(windows.shape[0]):
            scores = self._cf(window_fn(windows[start:stop]))
            if tuple(scores.shape[2:]) != self.roi:
                raise ModelError(
                    f"{self.spec.path}: window scores of spatial size {tuple(scores.shape[2:])} differ from "
                    f"the window {self.roi}; sliding windows need same-size score maps"
                )
            if out is None:
                out = xp.zeros((n, scores.shape[1], *padded), dtype=scores.dtype)
                w, count = self._count(xp, scores, padded, slices)
            for i in range(start, stop):
                b, sl = divmod(i, len(slices))
                out[(b, slice(None), *slices[sl])] += scores[i - start] * w
        return self._back(self._crop(out / count, pads))

    def _one_input(self, extras: Extras) -> None:
        """Refuse held-fixed inputs: sliding windows run models with one input (``extras`` is
        accepted for the model interface, :class:`advonnx.oracles.Model`)."""
        if extras:
            raise AdvonnxError(
                f"{self.spec.path}: sliding windows run models with one input; got values for {sorted(extras)}"
            )

    def predict(self, x, *, extras: Extras = None):
        """Stitched scores of ``x`` (any spatial size), in the model's layout."""
        self._one_input(extras)
        return self._stitch(x, self.inner.predict)

    def attack_scores(self, x, *, extras: Extras = None):
        """Stitched attacked scores (the inner model's logits before a final Softmax, when it has
        one): what losses and gradients read."""
        self._one_input(extras)
        if self.inner.spec.attacked_output:
            return self._stitch(x, self.inner.attack_scores)
        return self.predict(x)

    def predict_both(self, x, *, extras: Extras = None):
        self._one_input(extras)
        return self.predict(x), self.attack_scores(x)

    def classify(self, x, *, votes: int | None = None, extras: Extras = None):
        """Argmax of the stitched scores (sliding windows take deterministic models: ``votes`` is
        accepted for the model interface and must be 1 or None)."""
        self._one_input(extras)
        if votes not in (None, 1):
            raise AdvonnxError(f"{self.spec.path}: sliding windows do not vote over randomized evaluations")
        scores = self.predict(x)
        return namespace(scores).argmax(scores, axis=self.spec.class_axis)

    def gradient_mode(self, requested: str = "auto", *, loss: str | None = None, **_variant) -> str:
        # windows are differentiated through cotangents whatever the loss (no one-pass variants)
        return self.inner.gradient_mode(requested, loss="cotangent" if loss is not None else None)

    def value_and_grad(
        self,
        x,
        y=None,
        *,
        loss: str = "ce",
        gradient: str = "auto",
        cotangent=None,
        mask=None,
        rng: Random | None = None,
        counter=None,
        scale_free: bool = False,
        with_decisions: bool = False,
        extras: Extras = None,
    ):
        """Per-sample loss of the stitched attacked scores and its exact input gradient (see
        module docstring); ``loss``: ``seg_ce`` (or ``ce``: the same per-pixel mean) or a
        ``cotangent`` (on the attacked scores). ``scale_free`` is accepted for the model
        interface: the per-pixel mean cross-entropy's gradient is returned as it is; so are
        ``with_decisions`` (must be False: :attr:`one_pass` is False) and ``extras`` (none)."""
        self._one_input(extras)
        if with_decisions:
            raise AdvonnxError(
                "value_and_grad(with_decisions=True) needs one gradient graph; sliding windows "
                "take decisions from a separate run (one_pass is False)"
            )
        xp = namespace(x)
        n = x.shape[0]
        if cotangent is None and y is None:
            raise AdvonnxError("value_and_grad needs labels y (or a cotangent)")
        if cotangent is None and loss not in ("seg_ce", "ce"):
            raise AdvonnxError(f"sliding windows support the per-pixel cross-entropy and cotangents, not loss {loss!r}")
        mode = self.gradient_mode(gradient, loss="cotangent")
        if mode != "exact":

            def loss_of(xb, idx):
                if counter is not None:
                    counter(np.asarray(idx))
                scores = xp.astype(self.attack_scores(xb), xp.float64)
                take = lambda a: None if a is None else xp.take(a, idx, axis=0)  # noqa: E731
                return self._loss(scores, take(y), loss, take(mask), take(cotangent))[0]

            return estimate_value_and_grad(
                loss_of, x, self.inner.estimator, rng or Random(0), value_range=self.spec.value_range
            )
        scores = self.attack_scores(x)
        value, g_scores = self._loss(scores, y, loss, mask, cotangent)
        if counter is not None:
            counter(np.arange(n))
        xcf = self._cf(x)
        padded, pads, slices = self._plan(tuple(xcf.shape[2:]))
        xcf = self._pad(xcf, pads)
        g = self._pad(self._cf(g_scores), pads)
        w, count = self._count(xp, g, padded, slices)
        g = g / count
        windows = self._windows(xcf, slices)
        grad = xp.zeros(xcf.shape, dtype=x.dtype)
        for start, stop in self._batches(windows.shape[0]):
            cot = xp.stack(
                [g[(b, slice(None), *slices[s])] * w for b, s in (divmod(i, len(slices)) for i in range(start, stop))]
            )
            _, gw = self.inner.value_and_grad(windows[start:stop], None, cotangent=self._back(cot), gradient="exact")
            gw = self._cf(gw)
            for i in range(start, stop):
                b, s = divmod(i, len(slices))
                grad[(b, slice(None), *slices[s])] += gw[i - start]
        return value, self._back(self._crop(grad, pads))

    def _loss(self, scores, y, loss: str, mask, cotangent):
        """Per-sample value and its gradient w.r.t. the stitched ``scores`` (model layout)."""
        xp = namespace(scores)
        if cotangent is not None:
            cot = xp.astype(xp.asarray(cotangent), scores.dtype)
            return xp.sum(xp.reshape(scores * cot, (scores.shape[0], -1)), axis=1), cot
        axis = self.spec.class_axis
        probs = self.spec.attacked_scores == "probabilities"
        value = losses.compute("seg_ce", scores, y, probabilities=probs, axis=axis, mask=mask)
        k = scores.shape[axis]
        shape = [1] * scores.ndim
        shape[axis] = k
        onehot = xp.astype(
            xp.expand_dims(xp.astype(xp.asarray(y), xp.int64), axis=axis)
            == xp.reshape(xp.arange(k, dtype=xp.int64), tuple(shape)),
            scores.dtype,
        )
        if probs:
            picked = xp.sum(scores * onehot, axis=axis, keepdims=True)
            live = xp.astype(picked > losses.PROB_FLOOR, scores.dtype)
            d = -onehot * live / xp.where(picked > losses.PROB_FLOOR, picked, 1.0)
        else:
            z = scores - xp.max(scores, axis=axis, keepdims=True)
            e = xp.exp(z)
            d = e / xp.sum(e, axis=axis, keepdims=True) - onehot
        m = (
            xp.ones(xp.asarray(y).shape, dtype=scores.dtype)
            if mask is None
            else xp.astype(xp.asarray(mask), scores.dtype)
        )
        per = xp.reshape(m, (m.shape[0], -1))
        norm = (
            xp.clip(xp.sum(per, axis=1), 1.0, None)
            if mask is not None
            else xp.asarray(per.shape[1], dtype=scores.dtype)
        )
        weight = xp.expand_dims(m, axis=axis) / xp.reshape(norm, (-1,) + (1,) * (scores.ndim - 1))
        return value, d * weight
