"""OnnxModel: one ONNX file run by onnxruntime, with its spec, batching, query counting and
gradients (exact from the ONNX graph, or estimated from queries).

The file is turned into a *canonical* graph before anything runs:
- the spec's preprocessing ``(x * scale - mean) / std`` is folded in front of the input, so the
  user's values (and ``eps``) are in the declared value range;
- a ZipMap output (scikit-learn converters) is replaced by the probability tensor it reads;
- a single-output binary classifier (one logit ``z`` or one probability ``p``) is presented as
  two class scores ``[0, z]`` (logits; softmax gives ``sigmoid(z)``) or ``[1 - p, p]``.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from . import losses
from .backend import BoundRunner, io_binding_requested, is_device_array, resolve_device
from .errors import AdvonnxError, GradientUnavailable, ModelError
from .loading import load_onnx
from .oracles import EstimatorConfig, estimate_value_and_grad
from .spec import ModelSpec, read_metadata, read_sidecar
from .xp import Random, namespace, to_numpy

_FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16"}
# Integer image inputs (8/16-bit pipelines, quantized front ends): advonnx feeds floats, the
# canonical graph rounds and casts them (see build_canonical).
_INTEGER_TYPES = {TensorProto.UINT8: "uint8", TensorProto.INT8: "int8", TensorProto.UINT16: "uint16",
                  TensorProto.INT16: "int16"}
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast"}
PROBE_SPATIAL = 64  # spatial size used to probe models whose spatial dims are dynamic
# Refuse models whose declared input (at the probe batch) exceeds this many values (2**28 = 1 GiB float32).
MAX_INPUT_ELEMENTS = int(os.environ.get("ADVONNX_MAX_INPUT_ELEMENTS", 2**28))


class ModelRunError(AdvonnxError):
    """onnxruntime failed on a batch; the runner records those samples as errored."""


def _first_line(err: BaseException) -> str:
    """The first line of an onnxruntime error (its messages run to many lines), or its type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _dims(value_info) -> tuple:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)


def _producer_map(graph) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _last_op(graph, name: str) -> str:
    """The op that produces ``name``, looking through shape-only ops."""
    producers = _producer_map(graph)
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        node = producers.get(node.input[0])
    return "" if node is None else node.op_type


def _guess_layout(shape: tuple, first_ops: list[str], notes: list[str]) -> str:
    rank = len(shape)
    if rank == 2:
        return "NF"
    if rank not in (4, 5):
        raise ModelError(
            f"input of rank {rank} (shape {shape}) is not supported: advonnx expects images "
            "(N,C,H,W)/(N,H,W,C), volumes (N,C,D,H,W)/(N,D,H,W,C) or feature vectors (N,F)"
        )
    first, last = shape[1], shape[-1]
    cf, cl = ("NCHW", "NHWC") if rank == 4 else ("NCDHW", "NDHWC")
    small = (1, 2, 3, 4)
    if "Transpose" in first_ops and last in small:
        notes.append(f"layout {cl}: the graph starts with a Transpose and the last dim is {last}")
        return cl
    if first in small and last not in small:
        return cf
    if last in small and first not in small:
        return cl
    if first is None and last is None:
        notes.append(f"layout guessed {cf}: channel dims are dynamic; declare layout if wrong")
        return cf
    notes.append(f"layout guessed {cf} from shape {shape}; declare layout if wrong")
    return cf


def _select_input(graph, declared: str | None, path: str) -> onnx.ValueInfoProto:
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if declared:
        chosen = [i for i in inputs if i.name == declared]
        if not chosen:
            raise ModelError(f"{path}: no input named {declared!r}; inputs are {[i.name for i in inputs]}")
        others = [i.name for i in inputs if i.name != declared]
        if others:
            raise ModelError(
                f"{path}: besides {declared!r} the model requires inputs {others} that advonnx cannot feed; "
                "export a model whose only input is the image (other inputs as initializers)"
            )
        return chosen[0]
    if len(inputs) != 1:
        raise ModelError(
            f"{path}: the model has {len(inputs)} inputs {[i.name for i in inputs]}; "
            "say which one is the image with --input NAME"
        )
    return inputs[0]


def _select_output(graph, declared: str | None, path: str) -> str:
    names = [o.name for o in graph.output]
    if declared:
        if declared not in names:
            raise ModelError(f"{path}: no output named {declared!r}; outputs are {names}")
        return declared
    if len(names) == 1:
        return names[0]
    producers = _producer_map(graph)
    floats = [o.name for o in graph.output if o.type.tensor_type.elem_type in _FLOAT_TYPES]
    zipmaps = [n for n in names if n in producers and producers[n].op_type == "ZipMap"]
    candidates = floats or zipmaps
    if len(candidates) == 1:
        return candidates[0]
    raise ModelError(
        f"{path}: the model has outputs {names} and the scores are ambiguous; "
        "say which one holds the class scores with --output NAME"
    )


def _initializer_const(name: str, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def build_canonical(model: onnx.ModelProto, spec: ModelSpec, *, relaxed: bool = False) -> onnx.ModelProto:
    """The graph advonnx runs: preprocessing folded in, one canonical scores output.

    An integer input (``spec.input_integer``) becomes a float input that is rounded (Round:
    half to even) and cast to the file's type before the original graph. ``relaxed=True``
    leaves out the rounding and the cast, so the float reaches the original consumers: the
    graph exact gradients are taken on (BPDA with the identity for the rounding; Athalye,
    Carlini, Wagner 2018). It only builds when those consumers accept floats (a Cast, typically).
    """
    m = copy.deepcopy(model)
    g = m.graph
    producers = _producer_map(g)
    out_name = spec.output_name
    # ZipMap → the probability tensor it reads.
    zip_node = producers.get(out_name)
    if zip_node is not None and zip_node.op_type == "ZipMap":
        out_name = zip_node.input[0]
        g.node.remove(zip_node)
    dtype = np.dtype(spec.input_dtype)
    # Preprocessing prefix (and the integer input's rounding).
    if spec.scale != 1.0 or spec.mean or spec.std or spec.input_integer:
        inner = "advonnx_preprocessed"
        for node in g.node:
            for k, name in enumerate(node.input):
                if name == spec.input_name:
                    node.input[k] = inner
        for out in g.output:
            if out.name == spec.input_name:
                raise ModelError("the input is also an output; cannot fold preprocessing")
        rank = len(spec.input_shape)
        cshape = [1] * rank
        channel_axis = 1 if spec.layout in ("NCHW", "NCDHW", "NF") else rank - 1
        prefix, cur = [], spec.input_name
        if spec.scale != 1.0:
            g.initializer.append(_initializer_const("advonnx_scale", spec.scale, dtype))
            prefix.append(helper.make_node("Mul", [cur, "advonnx_scale"], ["advonnx_scaled"]))
            cur = "advonnx_scaled"
        for key, op in (("mean", "Sub"), ("std", "Div")):
            values = getattr(spec, key)
            if not values:
                continue
            shape = list(cshape)
            if len(values) > 1:
                shape[channel_axis] = len(values)
            g.initializer.append(_initializer_const(f"advonnx_{key}", np.reshape(values, shape), dtype))
            prefix.append(helper.make_node(op, [cur, f"advonnx_{key}"], [f"advonnx_{key}_out"]))
            cur = f"advonnx_{key}_out"
        if spec.input_integer:
            graph_input = next(i for i in g.input if i.name == spec.input_name)
            file_type = graph_input.type.tensor_type.elem_type
            graph_input.type.tensor_type.elem_type = TensorProto.FLOAT
            if not relaxed:
                prefix.append(helper.make_node("Round", [cur], ["advonnx_rounded"]))
                prefix.append(helper.make_node("Cast", ["advonnx_rounded"], ["advonnx_integer_input"], to=file_type))
                cur = "advonnx_integer_input"
        prefix.append(helper.make_node("Identity", [cur], [inner]))
        for node in reversed(prefix):
            g.node.insert(0, node)
    # Binary single output → two class scores.
    final = out_name
    if spec.output_kind == "binary":
        axis = spec.class_axis
        if spec.scores == "probabilities":
            g.initializer.append(_initializer_const("advonnx_one", 1.0, np.float32))
            g.node.extend([
                helper.make_node("CastLike", ["advonnx_one", out_name], ["advonnx_one_like"]),
                helper.make_node("Sub", ["advonnx_one_like", out_name], ["advonnx_neg_class"]),
            ])
        else:
            g.node.append(helper.make_node("Sub", [out_name, out_name], ["advonnx_neg_class"]))
        g.node.append(helper.make_node("Concat", ["advonnx_neg_class", out_name], ["advonnx_two_class"], axis=axis))
        final = "advonnx_two_class"
    old_out = next((o for o in model.graph.output if o.name == spec.output_name), None)
    elem = TensorProto.FLOAT
    if old_out is not None and old_out.type.tensor_type.elem_type in _FLOAT_TYPES:
        elem = old_out.type.tensor_type.elem_type
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(final, elem, None))
    if spec.label_output:
        g.output.append(helper.make_tensor_value_info(spec.label_output, TensorProto.INT64, None))
    # Older opsets lack CastLike: lift if needed.
    if spec.output_kind == "binary" and spec.scores == "probabilities":
        m = _ensure_opset(m, 15)
    return m


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def _ensure_opset(model: onnx.ModelProto, minimum: int) -> onnx.ModelProto:
    if _opset(model) >= minimum:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, minimum)


def _session_options(threads: int | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    env_threads = os.environ.get("ADVONNX_THREADS")
    n = threads if threads is not None else (int(env_threads) if env_threads else 0)
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    return so


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
        self.execution_provider = self._session.get_providers()[0]
        self._grad_sessions: dict[tuple, ort.InferenceSession] = {}
        self._unsupported: list[str] | None = None
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
            return ort.InferenceSession(
                proto.SerializeToString(),
                sess_options=_session_options(self._threads),
                providers=self._providers,
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

    def predict(self, x):
        """Class scores for the batch ``x`` (logits or probabilities, as ``spec.scores`` says).

        Single-output binary models give two columns (see module docstring). Returns an array
        in the namespace of ``x``.
        """
        feed = self._input(x)
        (scores,) = self._run(self._session, {self.spec.input_name: feed}, [self._scores_out])
        with self._lock:
            self.queries += feed.shape[0]
        if type(x) is np.ndarray:
            return scores if scores.dtype == np.float32 else scores.astype(np.float32)
        return _like(x, scores)

    def classify(self, x):
        """Predicted labels: the model's own label output when it has one (scikit-learn and
        other converters: ties in the probabilities are broken the model's way), else argmax
        over classes (thresholded scores for multi-label)."""
        if self.spec.label_output:
            feed = self._input(x)
            (labels,) = self._run(self._session, {self.spec.input_name: feed}, [self.spec.label_output])
            with self._lock:
                self.queries += feed.shape[0]
            return _like(x, np.asarray(labels, dtype=np.int64)) if not is_device_array(labels) else labels
        scores = self.predict(x)
        xp = namespace(scores)
        if self.spec.output_kind == "multilabel":
            thr = self.spec.threshold if self.spec.scores == "probabilities" else 0.0
            return xp.astype(scores > thr, xp.int64)
        return xp.argmax(scores, axis=self.spec.class_axis)

    def notes_once(self, message: str) -> None:
        """Record a note about this model once (shown by inspect and kept in the spec)."""
        if message not in self.spec.notes:
            self.spec.notes.append(message)

    # -- gradients --------------------------------------------------------------------------
    def unsupported_ops(self) -> list[str]:
        """Ops on the input→output path without a VJP rule ([] means exact gradients work)."""
        if self._unsupported is None:
            try:
                from .autodiff import unsupported_ops
            except ImportError:
                self._unsupported = ["(advonnx.autodiff not available)"]
            else:
                try:
                    from .gradcache import unsupported_ops as remembered
                    self._unsupported = remembered(self, lambda: list(unsupported_ops(self.differentiable, input_name=self.spec.input_name)))
                except Exception as err:  # only the relaxed graph of an integer input can be ill-typed
                    if not self.spec.input_integer:
                        raise
                    self._unsupported = [f"the {self.spec.input_integer} input feeds integer ops ({_first_line(err)})"]
        return self._unsupported

    def gradient_mode(self, requested: str = "auto", *, loss: str | None = None) -> str:
        """Which gradient ``requested`` (auto|exact|estimated) resolves to for this model.

        With ``auto`` and a ``loss``, the gradient graph for that loss is built (and cached)
        now, so a graph that defeats a rule falls back to estimated gradients with a note.
        """
        if requested not in ("auto", "exact", "estimated"):
            raise AdvonnxError(f"unknown gradient mode {requested!r}; use auto, exact or estimated")
        if requested == "estimated":
            return "estimated"
        missing = self.unsupported_ops()
        if not missing and requested == "auto" and loss is not None:
            try:
                self._grad_session(loss)
            except (GradientUnavailable, ModelError) as err:  # this graph defeats a rule: say so, go on
                self._unsupported = missing = [str(err).split(": ", 1)[-1]]
                self.notes_once(f"exact gradients unavailable ({missing[0]}); using estimated gradients")
        if not missing:
            return "exact"
        if requested == "exact":
            raise GradientUnavailable(
                f"{Path(self.spec.path).name}: no exact gradient: no VJP rule for {', '.join(missing)}; "
                "use --gradient estimated (or auto)"
            )
        return "estimated"

    def _grad_session(self, loss: str) -> ort.InferenceSession:
        key = (loss,)
        if key not in self._grad_sessions:
            from .autodiff import gradient_model
            from .gradcache import gradient_session  # built once per machine (advonnx/gradcache.py)

            args = dict(loss=loss, input_name=self.spec.input_name,
                        probabilities=self.spec.scores == "probabilities", class_axis=self.spec.class_axis)
            self._grad_sessions[key] = gradient_session(self, args, lambda: gradient_model(self.differentiable, **args))
        return self._grad_sessions[key]

    def loss(self, scores, y, loss: str = "ce", *, mask=None, cotangent=None):
        """Per-sample loss from scores (host or device arrays), as in ``advonnx.losses``."""
        if cotangent is not None:
            xp = namespace(scores)
            return xp.sum(xp.reshape(scores * cotangent, (scores.shape[0], -1)), axis=1)
        return losses.compute(
            loss,
            scores,
            y,
            probabilities=self.spec.scores == "probabilities",
            axis=self.spec.class_axis,
            mask=mask,
        )

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
    ):
        """Per-sample ``loss`` (N,) and the gradient of ``loss.sum()`` w.r.t. ``x`` (shaped like x).

        ``loss``: ``ce``, ``margin`` or ``seg_ce`` (see ``advonnx.losses``), for labels ``y``.
        ``cotangent`` (shaped like the scores) instead gives the vector-Jacobian product
        ``cotangentᵀ ∂scores/∂x`` and ``loss = <cotangent, scores>`` per sample.
        ``gradient``: ``exact`` (ONNX gradient graph), ``estimated`` (NES/SPSA from queries,
        costing ``2q+1`` queries per sample) or ``auto`` (exact when every op has a rule).
        ``counter(idx)`` is called with the sample indices of every row evaluated.
        """
        mode = self.gradient_mode(gradient, loss="cotangent" if cotangent is not None else loss)
        xp = namespace(x)
        n = x.shape[0]
        if cotangent is None and y is None:
            raise AdvonnxError("value_and_grad needs labels y (or a cotangent)")
        if mode == "exact":
            from .autodiff import (
                GRAD_INPUT_COTANGENT,
                GRAD_INPUT_LABEL,
                GRAD_INPUT_MASK,
                GRAD_OUTPUT_GRAD,
                GRAD_OUTPUT_SCORES,
            )

            feed = self._input(x)
            on_device = is_device_array(feed)

            def aux(a, dtype):  # labels, masks, cotangents beside x: same device, right dtype
                if on_device:
                    return xp.astype(xp.asarray(a), dtype)
                return np.ascontiguousarray(to_numpy(a), dtype=dtype)

            feeds = {self.spec.input_name: feed}
            if cotangent is not None:
                session = self._grad_session("cotangent")
                feeds[GRAD_INPUT_COTANGENT] = aux(cotangent, "float32")
            else:
                session = self._grad_session(loss)
                feeds[GRAD_INPUT_LABEL] = aux(y, "int64")
                if loss == "seg_ce":
                    feeds[GRAD_INPUT_MASK] = aux(xp.ones(y.shape) if mask is None else mask, "float32")
            scores, grad = self._run(session, feeds, [GRAD_OUTPUT_SCORES, GRAD_OUTPUT_GRAD])
            with self._lock:
                self.queries += n
            if counter is not None:
                counter(np.arange(n))
            if on_device:
                scores, grad = xp.astype(scores, xp.float32), xp.astype(grad, x.dtype)
            else:
                scores = _like(x, scores.astype(np.float32, copy=False))
                grad = _like(x, grad.astype(to_numpy(x).dtype, copy=False))
            value = self.loss(scores, y, loss, mask=mask, cotangent=cotangent)
            return value, grad
        rng = rng or Random(0)

        def loss_of(xb, idx):
            if counter is not None:
                counter(to_numpy(idx))
            # float64 loss: a confident model's float32 cross-entropy rounds to 0 and its
            # finite differences vanish (a numerical gradient mask), its float32 logits do not.
            scores = xp.astype(self.predict(xb), xp.float64)
            take = lambda a: None if a is None else xp.take(a, idx, axis=0)  # noqa: E731
            cot = take(cotangent)
            cot = None if cot is None else xp.astype(cot, xp.float64)
            return self.loss(scores, take(y), loss, mask=take(mask), cotangent=cot)

        return estimate_value_and_grad(
            loss_of, x, self.estimator, rng, value_range=self.spec.value_range
        )


def _like(x, host: np.ndarray):
    if isinstance(x, np.ndarray):
        return host
    xp = namespace(x)
    return xp.asarray(host)


# -- spec inference ---------------------------------------------------------------------------


def infer_spec(proto: onnx.ModelProto, path: str, overrides: dict[str, Any]) -> ModelSpec:
    """Guess the spec from the graph, then apply metadata < sidecar < overrides."""
    try:
        return _infer_spec(proto, path, overrides)
    except ModelError as err:
        if str(path) in str(err):
            raise
        raise ModelError(f"{path}: {err}") from None


def _infer_spec(proto: onnx.ModelProto, path: str, overrides: dict[str, Any]) -> ModelSpec:
    from .spec import normalize_declared

    declared: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for origin, values in (
        ("metadata", read_metadata(proto)),
        ("sidecar", read_sidecar(path)),
        ("override", normalize_declared({k: v for k, v in overrides.items() if v is not None}, "overrides")),
    ):
        for k, v in values.items():
            declared[k] = v
            sources[k] = origin
    g = proto.graph
    notes: list[str] = []
    inp = _select_input(g, declared.get("input_name"), path)
    elem = inp.type.tensor_type.elem_type
    integer = _INTEGER_TYPES.get(elem, "")
    if integer:
        notes.append(
            f"integer input ({integer}): advonnx feeds floats that the graph rounds to the nearest integer; "
            "exact gradients pass the rounding as identity (BPDA) and adversarial examples stay on the integer grid"
        )
    elif elem not in _FLOAT_TYPES:
        raise ModelError(
            f"{path}: input {inp.name!r} has element type "
            f"{TensorProto.DataType.Name(elem) if elem else 'unknown'}; advonnx attacks float inputs and "
            "8/16-bit integer image inputs only: give it a model whose input is an image"
        )
    shape = _dims(inp)
    if not shape:
        raise ModelError(f"{path}: input {inp.name!r} has no declared rank; re-export with a shaped input")
    consumers = [n.op_type for n in g.node if inp.name in n.input]
    layout = declared.get("layout") or _guess_layout(shape, consumers, notes)
    if len(shape) == 2 and layout != "NF" or len(shape) == 4 and layout not in ("NCHW", "NHWC") or len(shape) == 5 and layout not in ("NCDHW", "NDHWC"):
        raise ModelError(f"{path}: declared layout {layout} does not fit input shape {shape}")
    out_name = _select_output(g, declared.get("output_name"), path)
    labels = [o.name for o in g.output if o.name != out_name and o.type.tensor_type.elem_type == TensorProto.INT64
              and len(_dims(o)) <= 1]
    spec = ModelSpec(
        path=str(path),
        input_name=inp.name,
        output_name=out_name,
        input_shape=shape,
        input_dtype=_FLOAT_TYPES.get(elem, "float32"),
        input_integer=integer,
        layout=layout,
        fixed_batch=shape[0] if shape[0] is not None else None,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        opset=_opset(proto),
        notes=notes,
    )
    for key in ("scale", "mean", "std", "framework", "exporter", "dataset", "training", "threshold"):
        if key in declared:
            setattr(spec, key, declared[key])
    if spec.framework == "unknown" and proto.producer_name:
        spec.framework = _framework_from_producer(proto.producer_name)
        sources["framework"] = "graph"
    if "value_range" in declared:
        spec.value_range = declared["value_range"]
    elif integer and spec.scale == 1.0 and not spec.mean and not spec.std:
        info = np.iinfo(integer)
        spec.value_range = (float(info.min), float(info.max))
        sources["value_range"] = "input type"
    else:
        sources["value_range"] = "assumed"
        notes.append("value range not declared: assuming [0, 1]; declare it (sidecar, metadata or --value-range) if wrong")
    if spec.mean and spec.std and len(spec.mean) != len(spec.std) and min(len(spec.mean), len(spec.std)) > 1:
        raise ModelError(f"{path}: mean has {len(spec.mean)} values but std has {len(spec.std)}")
    # Probe run of the graph to read the scores' shape and values.
    last = _last_op(g, out_name)
    probe = _probe_output(proto, spec, notes)
    _infer_output(spec, probe, last, declared, notes)
    if "class_names" in declared:
        names = declared["class_names"]
        if spec.num_classes and len(names) != spec.num_classes and spec.output_kind != "binary":
            raise ModelError(
                f"{path}: {len(names)} class names declared but the model outputs {spec.num_classes} classes"
            )
        spec.class_names = names
    elif spec.num_classes:
        spec.class_names = tuple(str(i) for i in range(spec.num_classes))
    spec.sources = {**{k: "graph" for k in ("layout", "scores", "task")}, **sources}
    if len(labels) == 1 and spec.task == "classification" and spec.output_kind in ("softmax", "binary"):
        spec.label_output = labels[0]
        notes.append(f"decisions come from the model's own label output {labels[0]!r}")
    return spec


def _framework_from_producer(producer: str) -> str:
    p = producer.lower()
    for key, name in (("pytorch", "pytorch"), ("torch", "pytorch"), ("tf2onnx", "tensorflow"),
                      ("keras", "tensorflow"), ("skl2onnx", "scikit-learn"), ("jax", "jax"),
                      ("onnxmltools", "onnxmltools")):
        if key in p:
            return name
    return producer


def _probe_output(proto: onnx.ModelProto, spec: ModelSpec, notes: list[str]) -> np.ndarray | None:
    """Scores of the raw graph (no folding) on a small random batch; None if it cannot run."""
    shape = list(spec.input_shape)
    shape[0] = spec.fixed_batch or 2
    for k in range(1, len(shape)):
        if shape[k] is None:
            is_channel = (k == 1 and spec.layout in ("NCHW", "NCDHW")) or (
                k == len(shape) - 1 and spec.layout in ("NHWC", "NDHWC")
            )
            shape[k] = 1 if is_channel else (8 if spec.layout == "NF" else PROBE_SPATIAL)
    elements = int(np.prod(shape, dtype=np.float64))
    if elements > MAX_INPUT_ELEMENTS:
        raise ModelError(
            f"{spec.path}: input {spec.input_name!r} declares {elements:,} values per batch of {shape[0]} "
            f"(shape {tuple(shape)}), above the limit of {MAX_INPUT_ELEMENTS:,}; "
            "raise ADVONNX_MAX_INPUT_ELEMENTS if this is intended"
        )
    rng = np.random.default_rng(0)
    if spec.input_integer:
        info = np.iinfo(spec.input_integer)
        x = rng.integers(max(int(info.min), 0), min(int(info.max), 255), size=shape, endpoint=True).astype(spec.input_integer)
    else:
        x = rng.uniform(0.0, 1.0, size=shape).astype(spec.input_dtype)
    bare = copy.deepcopy(proto)
    producers = _producer_map(bare.graph)
    out = spec.output_name
    zip_node = producers.get(out)
    if zip_node is not None and zip_node.op_type == "ZipMap":
        out = zip_node.input[0]
        bare.graph.node.remove(zip_node)
        del bare.graph.output[:]
        bare.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    try:
        so = _session_options(1)
        sess = ort.InferenceSession(bare.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
        return np.asarray(sess.run([out], {spec.input_name: x})[0])
    except Exception as err:
        msg = _first_line(err)
        raise ModelError(f"{spec.path}: onnxruntime cannot run the model on a probe batch of shape {tuple(shape)}: {msg}") from None


def _infer_output(spec: ModelSpec, scores: np.ndarray, last_op: str, declared: dict, notes: list[str]):
    in_rank = len(spec.input_shape)
    if scores.ndim == 2:
        task = "classification"
        class_axis = 1
    elif scores.ndim == in_rank and scores.ndim >= 3:
        task = "segmentation"
        class_axis = 1 if spec.layout in ("NCHW", "NCDHW") else scores.ndim - 1
    elif scores.ndim == in_rank - 1 and scores.ndim >= 3:
        # (N, H, W) dense output: one channel squeezed away
        raise ModelError(
            f"{spec.path}: output {spec.output_name!r} of shape {scores.shape} has no class axis; "
            "export the model with a (N, C, H, W) score map"
        )
    else:
        raise ModelError(
            f"{spec.path}: output {spec.output_name!r} of shape {scores.shape} is neither class scores (N, C) "
            "nor a score map of the input's rank; choose another output with --output NAME"
        )
    spec.task = declared.get("task", task)
    spec.class_axis = class_axis
    n_out = scores.shape[class_axis]
    if not np.all(np.isfinite(scores)):
        notes.append("the probe batch gave NaN/Inf scores; results on such samples are marked invalid")
    # scores kind
    if "scores" in declared:
        spec.scores = declared["scores"]
    elif last_op in ("Softmax", "Sigmoid"):
        spec.scores = "probabilities"
        notes.append(f"scores are probabilities: the output comes from {last_op}")
    elif last_op == "ZipMap":
        spec.scores = "probabilities"
    else:
        finite = scores[np.isfinite(scores)]
        in_unit = finite.size and finite.min() >= 0 and finite.max() <= 1
        sums = np.sum(scores, axis=class_axis)
        if in_unit and n_out > 1 and np.allclose(sums, 1.0, atol=1e-3):
            spec.scores = "probabilities"
            notes.append("scores guessed to be probabilities: probe outputs lie in [0,1] and sum to 1")
        else:
            spec.scores = "logits"
    if n_out == 1:
        spec.output_kind = "binary"
        spec.num_classes = 2
        notes.append("single-output binary model: presented as two class scores")
    elif last_op == "Sigmoid" and spec.task == "classification":
        spec.output_kind = "multilabel"
        spec.num_classes = n_out
        notes.append(f"multi-label output ({n_out} independent sigmoids, threshold {spec.threshold})")
    else:
        spec.output_kind = "softmax" if spec.task == "classification" else "dense"
        spec.num_classes = n_out


def load_model(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = 64,
    estimator: EstimatorConfig | None = None,
    io_binding: bool = False,
    **overrides: Any,
) -> OnnxModel:
    """Load an ONNX model, infer or read its spec, and open an onnxruntime session.

    ``overrides`` (highest precedence) may set: input_name, output_name, layout (NCHW, NHWC,
    NCDHW, NDHWC, NF), scores (logits|probabilities), task, class_names, value_range (LO, HI in
    the user's units), scale, mean, std (the model sees ``(x * scale - mean) / std``),
    framework, threshold. ``device``: auto|cpu|cuda[:N]; ``io_binding`` binds buffers even on
    the CPU (always on with CUDA); ``batch_size``: rows per onnxruntime call.
    """
    path = str(path)
    proto = load_onnx(path)
    spec = infer_spec(proto, path, overrides)
    return OnnxModel(proto, spec, device=device, threads=threads, batch_size=batch_size, estimator=estimator,
                     io_binding=io_binding)


def with_spec(model: OnnxModel, **changes: Any) -> OnnxModel:
    """A new OnnxModel on the same file with spec fields replaced (used by tests and the CLI)."""
    return OnnxModel(model.original, replace(model.spec, **changes), batch_size=model.batch_size,
                     estimator=model.estimator, io_binding=model.io_binding)
