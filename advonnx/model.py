"""OnnxModel: one ONNX file run by onnxruntime, with its spec, batching, query counting and
gradients (exact from the ONNX graph, or estimated from queries: ``advonnx.oracles``).

The file is turned into a *canonical* graph before anything runs (``advonnx.canonical``:
preprocessing folded in, one scores output, the logits rule's attacked tensor beside it); what
advonnx knows or guessed about the model is its spec (``advonnx.spec``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from . import oracles
from .backend import BoundRunner, io_binding_requested, is_device_array, resolve_device
from .batches import like as _like
from .batches import take_extras
from .batches import take_rows as _take_rows
from .batches import tile as _tile
from .canonical import build_canonical
from .errors import AdvonnxError, ModelError
from .oracles import EstimatorConfig, ExactGradients
from .passes.graph import ATTACKED_OUTPUT
from .session import first_line as _first_line
from .session import session_options as _session_options
from .spec import (
    MAX_INPUT_ELEMENTS,
    PROBE_SIGNAL,
    PROBE_SPATIAL,
    RANDOM_OPS,
    RANDOMIZED_EOT,
    RANDOMIZED_VOTES,
    ModelSpec,
    infer_spec,
    randomized_ops,
)
from .xp import Random, namespace, to_numpy

# Names that moved out of this module, still importable from it.
__all__ = [
    "ATTACKED_OUTPUT",
    "MAX_INPUT_ELEMENTS",
    "PROBE_SIGNAL",
    "PROBE_SPATIAL",
    "RANDOM_OPS",
    "ModelRunError",
    "OnnxModel",
    "build_canonical",
    "infer_spec",
    "randomized_ops",
    "take_extras",
    "_like",
    "_session_options",
    "_take_rows",
    "_tile",
]


class ModelRunError(AdvonnxError):
    """onnxruntime failed on a batch; the runner records those samples as errored."""


class OnnxModel:
    """An ONNX model ready to be attacked: ``predict`` and ``value_and_grad`` on batches.

    ``x`` is always a batch in the model's own layout, in the user's value range (see
    ``spec.value_range``). ``queries`` counts model evaluations (one per row predicted or
    differentiated).
    """

    def __init__(
        self,
        proto: onnx.ModelProto,
        spec: ModelSpec,
        *,
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 64,
        estimator: EstimatorConfig | None = None,
        io_binding: bool = False,
    ):
        self.spec = spec
        self.original = proto
        self.batch_size = int(batch_size)
        self.estimator = estimator or EstimatorConfig()
        self.queries = 0
        self._lock = threading.Lock()
        tail = tuple(spec.input_shape[1:])
        self._static_tail = tail if all(d is not None for d in tail) else None
        self._dtype = np.dtype(spec.input_dtype)
        self.device = resolve_device(device)
        self._providers, self.cuda_note = self.device.providers, self.device.reason
        self.io_binding = bool(io_binding or io_binding_requested() or self.device.kind == "cuda")
        self._bound: dict[int, BoundRunner] = {}
        self._threads = threads
        self.canonical = build_canonical(proto, spec)
        self._session = self._make_session(self.canonical)
        self._scores_out = self.canonical.graph.output[0].name
        # what losses, margins, gradients and query objectives read (the logits rule)
        self._attacked_out = ATTACKED_OUTPUT if spec.attacked_output else self._scores_out
        self.execution_provider = self._session.get_providers()[0]
        self._exact = ExactGradients(self)  # the exact-gradient oracle (advonnx.oracles)
        self._relaxed: onnx.ModelProto | None = None

    @property
    def differentiable(self) -> onnx.ModelProto:
        """The graph exact gradients are taken on: the canonical one, or for an integer input
        the same without its rounding (see build_canonical)."""
        if not self.spec.input_integer:
            return self.canonical
        if self._relaxed is None:
            self._relaxed = build_canonical(self.original, self.spec, relaxed=True)
        return self._relaxed

    # -- sessions ---------------------------------------------------------------------------
    def _make_session(self, proto: onnx.ModelProto) -> ort.InferenceSession:
        try:
            # onnxruntime's EliminateDropout rewrite drops a Dropout even in training mode: keep
            # a randomized model random, as its graph says (and as its gradient graph is)
            extra = {"disabled_optimizers": ["EliminateDropout"]} if "Dropout" in self.spec.randomized else {}
            return ort.InferenceSession(
                proto.SerializeToString(),
                sess_options=_session_options(self._threads),
                providers=self._providers,
                **extra,
            )
        except Exception as err:  # onnxruntime raises several private exception types
            msg = _first_line(err)
            raise ModelError(f"{self.spec.path}: onnxruntime cannot load the model: {msg}") from None

    @property
    def input_name(self) -> str:
        return self.spec.input_name

    # -- prediction -------------------------------------------------------------------------
    def _chunks(self, n: int):
        size = self.spec.fixed_batch or self.batch_size
        for start in range(0, n, size):
            yield start, min(n, start + size)

    def _call(self, session, feeds, outputs):
        try:
            if self.io_binding or is_device_array(next(iter(feeds.values()))):
                runner = self._bound.get(id(session))
                if runner is None:
                    runner = self._bound[id(session)] = BoundRunner(session, self.device)
                return runner.run(outputs, feeds)
            return session.run(outputs, feeds)
        except Exception as err:  # onnxruntime raises several private exception types
            msg = _first_line(err)
            raise ModelRunError(f"{Path(self.spec.path).name}: onnxruntime failed on a batch: {msg}") from None

    def _run(self, session, feeds: dict[str, Any], outputs: list[str] | None = None):
        """Run ``session`` on feeds whose leading dim is the batch, honouring a fixed batch.

        Feeds are NumPy (host) or CuPy (device, run through IO binding); outputs come back in
        the same namespace.
        """
        n = next(iter(feeds.values())).shape[0]
        fixed = self.spec.fixed_batch
        if (fixed is None and n <= self.batch_size) or n == fixed:  # one call: no slicing or copies
            return self._call(session, feeds, outputs)
        xp = namespace(next(iter(feeds.values())))
        results: list[list] = []
        for start, stop in self._chunks(n):
            chunk = {k: v[start:stop] for k, v in feeds.items()}
            pad = (fixed - (stop - start)) if fixed else 0
            if pad > 0:
                chunk = {k: xp.concat([v, xp.broadcast_to(v[-1:], (pad, *v.shape[1:]))]) for k, v in chunk.items()}
            out = self._call(session, chunk, outputs)
            results.append([o[: stop - start] if pad > 0 else o for o in out])
        return [xp.concat([r[i] for r in results]) for i in range(len(results[0]))]

    def _check_fits(self, shape: tuple) -> None:
        """One-line error when a batch of ``shape`` cannot feed the model's input."""
        want = self.spec.input_shape
        if len(shape) != len(want) or any(w is not None and w != h for w, h in zip(want[1:], shape[1:])):
            raise AdvonnxError(
                f"{Path(self.spec.path).name}: input batch of shape {tuple(shape)} does not fit the "
                f"model input {self.spec.input_name!r} {tuple('?' if d is None else d for d in want)}"
            )

    def _input(self, x):
        """``x`` as a feed: a contiguous host array, or the device array itself (CuPy)."""
        if not is_device_array(x):
            return self._host_input(x)
        self._check_fits(tuple(x.shape))
        return namespace(x).astype(x, self._dtype.name, copy=False)

    def _host_input(self, x) -> np.ndarray:
        host = x if type(x) is np.ndarray else to_numpy(x)
        if host.shape[1:] == self._static_tail and host.dtype == self._dtype and host.flags.c_contiguous:
            return host
        self._check_fits(host.shape)
        return np.ascontiguousarray(host, dtype=self.spec.input_dtype)

    def _feeds(self, feed, extras) -> dict[str, Any]:
        """The feeds of one call: the attacked input ``feed`` and the model's other inputs
        (``extras``: name -> array with one row per row of ``feed``, held fixed)."""
        feeds = {self.spec.input_name: feed}
        if not self.spec.extra_inputs and not extras:
            return feeds
        extras = extras or {}
        missing = [name for name, _, _ in self.spec.extra_inputs if name not in extras]
        unknown = sorted(set(extras) - {name for name, _, _ in self.spec.extra_inputs})
        if unknown:
            raise AdvonnxError(
                f"{Path(self.spec.path).name}: values given for {unknown}, which are not inputs held fixed "
                f"(those are {[name for name, _, _ in self.spec.extra_inputs]}; attacked: {self.spec.input_name!r})"
            )
        if missing:
            raise AdvonnxError(
                f"{Path(self.spec.path).name}: inputs {missing} need per-sample values beside the attacked input "
                f"{self.spec.input_name!r}; give them in the data (npz keys or manifest columns named after the inputs)"
            )
        n = feed.shape[0]
        on_device = is_device_array(feed)
        for name, dims, dtype in self.spec.extra_inputs:
            value = extras[name]
            if (
                value.shape[0] != n
                or len(value.shape) != len(dims)
                or any(w is not None and w != h for w, h in zip(dims[1:], value.shape[1:]))
            ):
                raise AdvonnxError(
                    f"{Path(self.spec.path).name}: input {name!r} got shape {tuple(value.shape)} for a batch of {n}; "
                    f"the model takes {tuple('?' if d is None else d for d in dims)}"
                )
            if on_device:
                xp = namespace(feed)
                feeds[name] = xp.astype(xp.asarray(value), dtype, copy=False)
            else:
                feeds[name] = np.ascontiguousarray(to_numpy(value), dtype=dtype)
        return feeds

    def predict(self, x, *, extras=None):
        """Class scores for the batch ``x`` (logits or probabilities, as ``spec.scores`` says).

        Single-output binary models give two columns (see module docstring). Returns an array
        in the namespace of ``x``. ``extras``: the model's other inputs (``spec.extra_inputs``),
        name -> one row per row of ``x``, held fixed.
        """
        feed = self._input(x)
        (scores,) = self._run(self._session, self._feeds(feed, extras), [self._scores_out])
        with self._lock:
            self.queries += feed.shape[0]
        if type(x) is np.ndarray:
            return scores if scores.dtype == np.float32 else scores.astype(np.float32)
        return _like(x, scores)

    @property
    def votes(self) -> int:
        """Evaluations per decision: ``spec.votes``, else RANDOMIZED_VOTES for a randomized model, 1."""
        return self.spec.votes or (RANDOMIZED_VOTES if self.spec.randomized else 1)

    @property
    def eot(self) -> int:
        """Gradient draws averaged per gradient (EOT): ``spec.eot``, else RANDOMIZED_EOT for a
        randomized model, 1."""
        return self.spec.eot or (RANDOMIZED_EOT if self.spec.randomized else 1)

    def attack_scores(self, x, *, extras=None):
        """The tensor attacks' objectives read for the batch ``x`` (one query per row): the
        input of a final Softmax/LogSoftmax/Sigmoid (logits; see ``spec.attacked_output``),
        shaped like ``predict``'s scores, else the scores themselves. Decisions still come from
        ``predict``/``classify``."""
        return self.predict_both(x, extras=extras)[1]

    def predict_both(self, x, *, extras=None):
        """``(predict(x), attack_scores(x))`` from one run (one query per row)."""
        if self._attacked_out == self._scores_out:
            scores = self.predict(x, extras=extras)
            return scores, scores
        feed = self._input(x)
        outs = self._run(self._session, self._feeds(feed, extras), [self._scores_out, self._attacked_out])
        with self._lock:
            self.queries += feed.shape[0]
        if type(x) is np.ndarray:
            return tuple(o if o.dtype == np.float32 else o.astype(np.float32) for o in outs)
        return tuple(_like(x, o) for o in outs)

    def classify(self, x, *, votes: int | None = None, extras=None):
        """Predicted labels: the model's own label output when it has one (scikit-learn and
        other converters: ties in the probabilities are broken the model's way), else argmax
        over classes (thresholded scores for multi-label).

        With ``votes`` > 1 (default ``self.votes``: > 1 for randomized models) the label is the
        majority over that many evaluations of ``x`` (ties: the lowest label), all counted."""
        k = self.votes if votes is None else int(votes)
        if k > 1:
            xp = namespace(x)
            n = x.shape[0]
            tiled = None if extras is None else {k_: _tile(v, k) for k_, v in extras.items()}
            each = self._classify_once(xp.concat([x] * k), tiled)
            each = xp.reshape(each, (k, n) + tuple(each.shape[1:]))
            c = max(self.spec.num_classes, 2)
            counts = xp.sum(xp.astype(each[..., None] == xp.arange(c, dtype=each.dtype), xp.int64), axis=0)
            return xp.astype(xp.argmax(counts, axis=-1), each.dtype)
        return self._classify_once(x, extras)

    def _classify_once(self, x, extras=None):
        if self.spec.label_output:
            feed = self._input(x)
            (labels,) = self._run(self._session, self._feeds(feed, extras), [self.spec.label_output])
            with self._lock:
                self.queries += feed.shape[0]
            return _like(x, np.asarray(labels, dtype=np.int64)) if not is_device_array(labels) else labels
        scores = self.predict(x, extras=extras)
        xp = namespace(scores)
        if self.spec.output_kind == "multilabel":
            thr = self.spec.threshold if self.spec.scores == "probabilities" else 0.0
            return xp.astype(scores > thr, xp.int64)
        return xp.argmax(scores, axis=self.spec.class_axis)

    def notes_once(self, message: str) -> None:
        """Record a note about this model once (shown by inspect and kept in the spec)."""
        if message not in self.spec.notes:
            self.spec.notes.append(message)

    # -- gradients (advonnx.oracles) ---------------------------------------------------------
    def unsupported_ops(self) -> list[str]:
        """Ops on the input→output path without a VJP rule ([] means exact gradients work)."""
        return self._exact.unsupported_ops()

    def straight_through_ops(self) -> list[str]:
        """Piecewise-constant ops on the attacked path whose exact gradient is replaced by the
        identity (straight-through / BPDA: Round, Floor, Ceil, Sign); [] when none."""
        return self._exact.straight_through_ops()

    def gradient_label(self, mode: str) -> str:
        """``mode`` as results record it: ``exact+straight-through`` when exact gradients pass
        piecewise-constant ops as the identity (see ``straight_through_ops``)."""
        return "exact+straight-through" if mode == "exact" and self.straight_through_ops() else mode

    def gradient_mode(
        self,
        requested: str = "auto",
        *,
        loss: str | None = None,
        scale_free: bool = False,
        with_decisions: bool = False,
    ) -> str:
        """Which gradient ``requested`` (auto|exact|estimated) resolves to for this model.

        With ``auto`` and a ``loss``, the gradient graph for that loss (``scale_free``,
        ``with_decisions``: the variant :meth:`value_and_grad` will run) is built (and cached)
        now, so a graph that defeats a rule falls back to estimated gradients with a note.
        """
        return self._exact.mode(requested, loss=loss, scale_free=scale_free, with_decisions=with_decisions)

    @property
    def _grad_sessions(self) -> dict[tuple, ort.InferenceSession]:
        """The gradient sessions built so far, by (loss, scale-free, decisions)."""
        return self._exact.sessions

    @property
    def one_pass(self) -> bool:
        """Whether the gradient graph computes the same decision scores as :meth:`predict`, so
        one run gives decisions, loss and gradient (``value_and_grad(with_decisions=True)``):
        not for an integer input, whose gradient graph skips the rounding."""
        return not self.spec.input_integer

    def loss(self, scores, y, loss: str = "ce", *, mask=None, cotangent=None, scale_free: bool = False):
        """Per-sample loss (host or device arrays), as in ``advonnx.losses``, from the attacked
        scores (``attack_scores``: logits under the logits rule). Probabilities are taken in
        float64 (log-probabilities of float32 scores). ``scale_free`` with ``ce`` on logits gives
        the log-odds ``LSE_{j≠y} z_j − z_y`` instead (see ``value_and_grad``)."""
        return oracles.model_loss(self.spec, scores, y, loss, mask=mask, cotangent=cotangent, scale_free=scale_free)

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
        extras=None,
    ):
        """Per-sample ``loss`` (N,) and the gradient of ``loss.sum()`` w.r.t. ``x`` (shaped like x).

        Losses are on the attacked scores (``attack_scores``: the logits before a final
        Softmax/LogSoftmax/Sigmoid when the graph has one, see ``spec.attacked_output``).
        ``loss``: ``ce``, ``margin`` or ``seg_ce`` (see ``advonnx.losses``), for labels ``y``;
        multi-label models take (N, K) labels (0/1, -1 = ignored) and read ``ce`` as ``bce`` and
        ``margin`` as ``ml_margin``.
        ``cotangent`` (shaped like the attacked scores) instead gives the vector-Jacobian product
        ``cotangentᵀ ∂scores/∂x`` and ``loss = <cotangent, scores>`` per sample.
        ``scale_free=True`` with ``ce`` on logits differentiates the log-odds
        ``d = LSE_{j≠y} z_j − z_y`` instead: ``∇CE = σ(d)·∇d``, so the direction is CE's, without
        the factor ``1 − p_y`` that underflows to 0 for confident (large) logits; for attacks
        that use only the direction (sign or unit-norm steps). The value returned is then ``d``.
        ``gradient``: ``exact`` (ONNX gradient graph), ``estimated`` (NES/SPSA from queries,
        costing ``2q+1`` queries per sample) or ``auto`` (exact when every op has a rule).
        ``counter(idx)`` is called with the sample indices of every row evaluated.
        ``with_decisions=True`` (exact gradients, a label loss, :meth:`one_pass` true) returns
        ``(loss, grad, predict(x))`` from the one run of the gradient graph.
        ``extras``: the model's other inputs, one row per row of ``x``, held fixed (the gradient
        is w.r.t. the attacked input only).
        """
        return oracles.value_and_grad(
            self,
            x,
            y,
            loss=loss,
            gradient=gradient,
            cotangent=cotangent,
            mask=mask,
            rng=rng,
            counter=counter,
            scale_free=scale_free,
            with_decisions=with_decisions,
            extras=extras,
        )
