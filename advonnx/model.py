"""OnnxModel: one ONNX file run by onnxruntime, with its spec, batching, query counting and
gradients (exact from the ONNX graph, or estimated from queries).

The file is turned into a *canonical* graph before anything runs:
- the spec's preprocessing ``(x * scale - mean) / std`` is folded in front of the input, so the
  user's values (and ``eps``) are in the declared value range;
- a ZipMap output (scikit-learn converters) is replaced by the probability tensor it reads;
- a single-output binary classifier (one logit ``z`` or one probability ``p``) is presented as
  two class scores ``[0, z]`` (logits; softmax gives ``sigmoid(z)``) or ``[1 - p, p]``;
- the logits rule: when the scores come from a final Softmax/LogSoftmax/Sigmoid (through
  shape-only ops), that node's input, passed through the same shape ops (and the binary
  ``[0, z]`` form), is a second output ``advonnx_attacked``: what losses, gradients and query
  objectives read (``attack_scores``); decisions still come from the first output.
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
from .spec import (
    RANDOMIZED_EOT,
    RANDOMIZED_VOTES,
    ModelSpec,
    canonical_output_perm,
    channel_axis,
    channels_first,
    read_metadata,
    read_sidecar,
)
from .xp import Random, namespace, to_numpy

_FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64", TensorProto.FLOAT16: "float16"}
# Integer image inputs (8/16-bit pipelines, quantized front ends): advonnx feeds floats, the
# canonical graph rounds and casts them (see build_canonical).
_INTEGER_TYPES = {TensorProto.UINT8: "uint8", TensorProto.INT8: "int8", TensorProto.UINT16: "uint16",
                  TensorProto.INT16: "int16"}
# Element types of inputs held fixed (fed per sample from the data, never attacked).
_NUMPY_TYPES = {**_INTEGER_TYPES, TensorProto.INT32: "int32", TensorProto.INT64: "int64", TensorProto.BOOL: "bool"}
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast"}
PROBE_SPATIAL = 64  # spatial size used to probe models whose spatial dims are dynamic
PROBE_SIGNAL = 1024  # time steps used to probe signal models whose length is dynamic (pooling-deep 1-D nets)
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


# Final activations whose input is attacked instead of their output (the logits rule).
_HEADS = {"Softmax", "LogSoftmax", "Sigmoid"}
ATTACKED_OUTPUT = "advonnx_attacked"  # the canonical graph's second output under the logits rule


def _two_class_of(node, producers) -> str | None:
    """``s`` when ``node`` is ``Concat([c − s, s])`` (scikit-learn's binary classifiers write
    ``[1 − σ(z), σ(z)]``; the probe checks that the constant is 1), else None."""
    if node.op_type != "Concat" or len(node.input) != 2:
        return None
    neg = producers.get(node.input[0])
    if neg is None or neg.op_type != "Sub" or neg.input[1] != node.input[1]:
        return None
    return node.input[1]


def _head(graph, name: str):
    """The final Softmax/LogSoftmax/Sigmoid producing ``name`` through shape-only ops (and one
    two-class ``Concat([1 − s, s])`` of a sigmoid ``s``), and those ops in forward order;
    ``(None, [])`` when there is none."""
    producers = _producer_map(graph)
    chain = []
    node = producers.get(name)
    two_class = False
    while node is not None:
        if node.op_type in _PASS_THROUGH and node.input:
            chain.append(node)
            node = producers.get(node.input[0])
            continue
        s = None if two_class else _two_class_of(node, producers)
        if s is None:
            break
        two_class = True
        chain.append(node)
        node = producers.get(s)
    if two_class and (node is None or node.op_type != "Sigmoid"):
        return None, []
    if node is None or node.op_type not in _HEADS or node.domain not in ("", "ai.onnx"):
        return None, []
    return node, chain[::-1]


def _replay(source: str, chain: list, prefix: str) -> tuple[list, str]:
    """Copies of the shape-only ``chain`` applied to ``source`` (same attributes and shape
    inputs), so that the attacked tensor has the scores' shape; returns the nodes and output."""
    nodes, cur = [], source
    for k, node in enumerate(chain):
        new = copy.deepcopy(node)
        new.input[0] = cur
        if node.op_type == "Concat":  # [1 − σ(z), σ(z)] → the logits [0, z] (softmax gives it back)
            zero = f"{prefix}_{k}_zero"
            nodes.append(helper.make_node("Sub", [cur, cur], [zero], name=zero))
            new.input[:] = [zero, cur]
        cur = f"{prefix}_{k}"
        del new.output[:]
        new.output.append(cur)
        new.name = cur
        nodes.append(new)
    return nodes, cur


def _guess_layout(shape: tuple, first_ops: list[str], notes: list[str]) -> str:
    rank = len(shape)
    if rank == 2:
        return "NF"
    if rank == 3:
        return _guess_signal_layout(shape, first_ops, notes)
    if rank not in (4, 5):
        raise ModelError(
            f"input of rank {rank} (shape {shape}) is not supported: advonnx expects signals "
            "(N,C,T)/(N,T,C), images (N,C,H,W)/(N,H,W,C), volumes (N,C,D,H,W)/(N,D,H,W,C) or "
            "feature vectors (N,F)"
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


def _guess_signal_layout(shape: tuple, first_ops: list[str], notes: list[str]) -> str:
    """(N, C, T) or (N, T, C): a signal has fewer channels (leads, electrodes) than time steps;
    a dynamic axis is the time axis."""
    mid, last = shape[1], shape[2]
    if mid is not None and last is not None and mid != last:
        return "NCW" if mid < last else "NWC"
    if mid is None and last is not None:
        notes.append(f"layout guessed NWC: time axis 1 is dynamic, {last} channels; declare layout if wrong")
        return "NWC"
    if last is None and mid is not None:
        return "NCW"
    notes.append(f"layout guessed NCW from shape {shape}; declare layout if wrong")
    return "NCW"


def _shape_text(vi) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in _dims(vi)) + ")"


def _select_input(graph, declared: str | None, path: str) -> tuple[onnx.ValueInfoProto, list]:
    """The input to attack and the model's other inputs (fed per sample from the data, held
    fixed). Without a declared name the attacked input is guessed only when that is unambiguous:
    the only input, or the only spatial one (rank >= 3: a signal, image or volume beside vectors
    such as clinical covariates), or the only floating-point one."""
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if declared:
        chosen = [i for i in inputs if i.name == declared]
        if not chosen:
            raise ModelError(f"{path}: no input named {declared!r}; inputs are {[i.name for i in inputs]}")
        return chosen[0], [i for i in inputs if i.name != declared]
    if len(inputs) == 1:
        return inputs[0], []
    floats = [i for i in inputs if i.type.tensor_type.elem_type in _FLOAT_TYPES]
    spatial = [i for i in floats if len(_dims(i)) >= 3]
    for pool in (spatial, floats):
        if len(pool) == 1:
            return pool[0], [i for i in inputs if i is not pool[0]]
    listed = ", ".join(f"{i.name} {_shape_text(i)}" for i in inputs)
    raise ModelError(
        f"{path}: the model has {len(inputs)} inputs ({listed}) and which one to attack is ambiguous; "
        "say which with --input NAME (the others are read per sample from the data)"
    )


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
        c_axis = 1 if spec.layout == "NF" or channels_first(spec.layout) else rank - 1
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
                shape[c_axis] = len(values)
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
    # Logits rule: the input of the final Softmax/LogSoftmax/Sigmoid, through the same shape ops.
    attacked = ""
    if spec.attacked_output:
        head, chain = _head(g, out_name)
        if head is None or head.input[0] != spec.attacked_output:
            raise ModelError(f"{spec.path}: the scores no longer come from {spec.attacked_op or 'a final activation'}; "
                             "reload the model")
        nodes, attacked = _replay(spec.attacked_output, chain, "advonnx_attacked_shape")
        g.node.extend(nodes)
    # A declared output layout (e.g. sequence-first TNC) → batch-first canonical scores (both).
    out_name = _to_canonical_layout(g, out_name, spec)
    if attacked:
        attacked = _to_canonical_layout(g, attacked, spec)
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
        if attacked:  # the pre-sigmoid logit z as [0, z]
            g.node.append(helper.make_node("Sub", [attacked, attacked], ["advonnx_attacked_zero"]))
            g.node.append(helper.make_node("Concat", ["advonnx_attacked_zero", attacked], ["advonnx_attacked_two"],
                                           axis=axis))
            attacked = "advonnx_attacked_two"
    old_out = next((o for o in model.graph.output if o.name == spec.output_name), None)
    elem = TensorProto.FLOAT
    if old_out is not None and old_out.type.tensor_type.elem_type in _FLOAT_TYPES:
        elem = old_out.type.tensor_type.elem_type
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(final, elem, None))
    if attacked:
        g.node.append(helper.make_node("Identity", [attacked], [ATTACKED_OUTPUT], name=ATTACKED_OUTPUT))
        g.output.append(helper.make_tensor_value_info(ATTACKED_OUTPUT, elem, None))
    if spec.label_output:
        g.output.append(helper.make_tensor_value_info(spec.label_output, TensorProto.INT64, None))
    # Older opsets lack CastLike: lift if needed.
    if spec.output_kind == "binary" and spec.scores == "probabilities":
        m = _ensure_opset(m, 15)
    return m


def _output_perm(spec: ModelSpec) -> tuple[int, ...] | None:
    """The transpose a declared output layout needs (None when it is canonical already)."""
    if not spec.output_layout:
        return None
    perm = canonical_output_perm(spec.output_layout, channels_first(spec.layout) or spec.layout == "NF")
    return None if perm == tuple(range(len(perm))) else perm


def _to_canonical_layout(g, name: str, spec: ModelSpec) -> str:
    """Append a Transpose taking tensor ``name`` to the canonical output layout; its new name."""
    perm = _output_perm(spec)
    if perm is None:
        return name
    out = f"{name}_advonnx_batch_first"
    g.node.append(helper.make_node("Transpose", [name], [out], perm=list(perm)))
    return out


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
        # what losses, margins, gradients and query objectives read (the logits rule)
        self._attacked_out = ATTACKED_OUTPUT if spec.attacked_output else self._scores_out
        self.execution_provider = self._session.get_providers()[0]
        self._grad_sessions: dict[tuple, ort.InferenceSession] = {}
        self._unsupported: list[str] | None = None
        self._straight: list[str] | None = None
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
            if value.shape[0] != n or len(value.shape) != len(dims) or any(
                    w is not None and w != h for w, h in zip(dims[1:], value.shape[1:])):
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

                    self._unsupported = remembered(self, lambda: list(unsupported_ops(
                        self.differentiable, input_name=self.spec.input_name, output_name=self._attacked_out)))
                except Exception as err:  # only the relaxed graph of an integer input can be ill-typed
                    if not self.spec.input_integer:
                        raise
                    self._unsupported = [f"the {self.spec.input_integer} input feeds integer ops ({_first_line(err)})"]
        return self._unsupported

    def straight_through_ops(self) -> list[str]:
        """Piecewise-constant ops on the attacked path whose exact gradient is replaced by the
        identity (straight-through / BPDA: Round, Floor, Ceil, Sign); [] when none."""
        if self._straight is None:
            from .autodiff import straight_through_ops

            try:
                self._straight = straight_through_ops(self.differentiable, input_name=self.spec.input_name,
                                                      output_name=self._attacked_out)
            except Exception:  # noqa: BLE001 - a graph without exact gradients has nothing to report
                self._straight = []
        return self._straight

    def gradient_label(self, mode: str) -> str:
        """``mode`` as results record it: ``exact+straight-through`` when exact gradients pass
        piecewise-constant ops as the identity (see ``straight_through_ops``)."""
        return "exact+straight-through" if mode == "exact" and self.straight_through_ops() else mode

    def _graph_variant(self, loss: str, scale_free: bool, with_decisions: bool) -> tuple[bool, bool]:
        """The gradient graph a label loss runs on: (scale-free CE, the decisions as an extra output).
        Scale-free applies to CE on logits only; the decisions are an output of their own only when
        they are another tensor than the attacked scores (a final Softmax)."""
        return (bool(scale_free) and loss == "ce" and self.spec.attacked_scores == "logits",
                bool(with_decisions) and self._attacked_out != self._scores_out)

    def gradient_mode(self, requested: str = "auto", *, loss: str | None = None, scale_free: bool = False,
                      with_decisions: bool = False) -> str:
        """Which gradient ``requested`` (auto|exact|estimated) resolves to for this model.

        With ``auto`` and a ``loss``, the gradient graph for that loss (``scale_free``,
        ``with_decisions``: the variant :meth:`value_and_grad` will run) is built (and cached)
        now, so a graph that defeats a rule falls back to estimated gradients with a note.
        """
        if requested not in ("auto", "exact", "estimated"):
            raise AdvonnxError(f"unknown gradient mode {requested!r}; use auto, exact or estimated")
        if requested == "estimated":
            return "estimated"
        loss = None if loss is None else losses.for_output_kind(loss, self.spec.output_kind)
        missing = self.unsupported_ops()
        if not missing and requested == "auto" and loss is not None:
            try:
                self._grad_session(loss, *self._graph_variant(loss, scale_free, with_decisions))
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

    def _grad_session(self, loss: str, scale_free: bool = False, decisions: bool = False) -> ort.InferenceSession:
        key = (loss, scale_free, decisions)
        if key not in self._grad_sessions:
            from .autodiff import gradient_model
            from .gradcache import gradient_session  # built once per machine (advonnx/gradcache.py)

            args = dict(loss=loss, input_name=self.spec.input_name, output_name=self._attacked_out,
                        probabilities=self.spec.attacked_scores == "probabilities", class_axis=self.spec.class_axis,
                        scale_free=scale_free)
            if decisions:
                args["decision_output"] = self._scores_out
            if loss == "ml_margin":  # the decision threshold on the attacked scores (multi-label)
                args["threshold"] = self.spec.decision_threshold
            self._grad_sessions[key] = gradient_session(self, args, lambda: gradient_model(self.differentiable, **args))
        return self._grad_sessions[key]

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
        xp = namespace(scores)
        if cotangent is not None:
            return xp.sum(xp.reshape(scores * cotangent, (scores.shape[0], -1)), axis=1)
        probs = self.spec.attacked_scores == "probabilities"
        if scale_free and loss == "ce" and not probs:
            return losses.log_odds(scores, y, axis=self.spec.class_axis)
        if probs and scores.dtype != xp.float64:
            scores = xp.astype(scores, xp.float64)
        loss = losses.for_output_kind(loss, self.spec.output_kind)
        return losses.compute(loss, scores, y, probabilities=probs, axis=self.spec.class_axis, mask=mask,
                              threshold=self.spec.decision_threshold if loss == "ml_margin" else 0.0)

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
        loss = losses.for_output_kind(loss, self.spec.output_kind)  # multi-label: ce → bce, margin → ml_margin
        if cotangent is not None:
            mode, scale_free, separate = self.gradient_mode(gradient, loss="cotangent"), False, False
        else:
            scale_free, separate = self._graph_variant(loss, scale_free, with_decisions)
            mode = self.gradient_mode(gradient, loss=loss, scale_free=scale_free, with_decisions=with_decisions)
        if with_decisions and (mode != "exact" or cotangent is not None or not self.one_pass):
            raise AdvonnxError("value_and_grad(with_decisions=True) needs exact gradients of a label loss "
                               "on a model whose gradient graph computes its decisions (OnnxModel.one_pass)")
        xp = namespace(x)
        n = x.shape[0]
        if cotangent is None and y is None:
            raise AdvonnxError("value_and_grad needs labels y (or a cotangent)")
        if mode == "exact":
            from .autodiff import (
                GRAD_INPUT_COTANGENT,
                GRAD_INPUT_LABEL,
                GRAD_INPUT_MASK,
                GRAD_OUTPUT_DECISIONS,
                GRAD_OUTPUT_GRAD,
                GRAD_OUTPUT_SCORES,
            )

            feed = self._input(x)
            on_device = is_device_array(feed)

            def aux(a, dtype):  # labels, masks, cotangents beside x: same device, right dtype
                if on_device:
                    return xp.astype(xp.asarray(a), dtype)
                return np.ascontiguousarray(to_numpy(a), dtype=dtype)

            feeds = self._feeds(feed, extras)
            if cotangent is not None:
                session = self._grad_session("cotangent")
                feeds[GRAD_INPUT_COTANGENT] = aux(cotangent, "float32")
            else:
                session = self._grad_session(loss, scale_free, decisions=separate)
                feeds[GRAD_INPUT_LABEL] = aux(y, "int64")
                if loss == "seg_ce":
                    feeds[GRAD_INPUT_MASK] = aux(xp.ones(y.shape) if mask is None else mask, "float32")
            names = [GRAD_OUTPUT_SCORES, GRAD_OUTPUT_GRAD] + ([GRAD_OUTPUT_DECISIONS] if separate else [])
            scores, grad, *decided = self._run(session, feeds, names)
            with self._lock:
                self.queries += n
            if counter is not None:
                counter(np.arange(n))
            decisions = decided[0] if decided else scores
            if on_device:
                scores, grad = xp.astype(scores, xp.float32), xp.astype(grad, x.dtype)
                decisions = xp.astype(decisions, xp.float32)
            else:
                scores = _like(x, scores.astype(np.float32, copy=False))
                grad = _like(x, grad.astype(to_numpy(x).dtype, copy=False))
                decisions = _like(x, decisions.astype(np.float32, copy=False))
            value = self.loss(scores, y, loss, mask=mask, cotangent=cotangent, scale_free=scale_free)
            return (value, grad, decisions) if with_decisions else (value, grad)
        rng = rng or Random(0)

        def loss_of(xb, idx):
            if counter is not None:
                counter(to_numpy(idx))
            # float64 loss: a confident model's float32 cross-entropy rounds to 0 and its
            # finite differences vanish (a numerical gradient mask), its float32 logits do not.
            take = lambda a: None if a is None else xp.take(a, idx, axis=0)  # noqa: E731
            scores = xp.astype(self.attack_scores(xb, extras=take_extras(extras, idx)), xp.float64)
            cot = take(cotangent)
            cot = None if cot is None else xp.astype(cot, xp.float64)
            return self.loss(scores, take(y), loss, mask=take(mask), cotangent=cot, scale_free=scale_free)

        return estimate_value_and_grad(
            loss_of, x, self.estimator, rng, value_range=self.spec.value_range
        )


def _tile(a, k: int):
    """``k`` copies of the rows of ``a`` stacked (as ``concat([a] * k)``), host or device."""
    xp = namespace(a)
    return xp.concat([a] * k)


def _take_rows(a, idx):
    """Rows ``idx`` of ``a`` (host or device; ``idx`` host or device)."""
    if isinstance(a, np.ndarray):
        return a[to_numpy(idx)]
    xp = namespace(a)
    return xp.take(a, xp.asarray(idx), axis=0)


def take_extras(extras, idx):
    """The rows ``idx`` of every array of ``extras`` (None stays None)."""
    return None if not extras else {k: _take_rows(v, idx) for k, v in extras.items()}


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
    inp, others = _select_input(g, declared.get("input_name"), path)
    extra_inputs = []
    for other in others:
        elem_o = other.type.tensor_type.elem_type
        if elem_o not in _FLOAT_TYPES and elem_o not in _NUMPY_TYPES:
            raise ModelError(f"{path}: input {other.name!r} has element type {TensorProto.DataType.Name(elem_o)}; "
                             "advonnx feeds numeric inputs only")
        if not _dims(other):
            raise ModelError(f"{path}: input {other.name!r} has no declared rank; re-export with shaped inputs")
        extra_inputs.append((other.name, _dims(other), _FLOAT_TYPES.get(elem_o) or _NUMPY_TYPES[elem_o]))
    if extra_inputs:
        notes.append(f"attacked input {inp.name!r}; held fixed per sample from the data: "
                     + ", ".join(f"{n} {_shape_text(o)}" for (n, _, _), o in zip(extra_inputs, others)))
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
    if len(layout) != len(shape):
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
        extra_inputs=tuple(extra_inputs),
        layout=layout,
        fixed_batch=shape[0] if shape[0] is not None else None,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        opset=_opset(proto),
        notes=notes,
    )
    for key in ("scale", "mean", "std", "framework", "exporter", "dataset", "training", "threshold", "votes", "eot",
                "sampling_rate", "output_layout", "patch_size", "overlap", "blend"):
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
    spec.randomized = randomized_ops(g, out_name)
    if spec.randomized:
        notes.append(
            f"randomized model ({', '.join(spec.randomized)} active at inference): every decision is a majority "
            f"over {spec.votes or RANDOMIZED_VOTES} evaluations and every gradient an average over "
            f"{spec.eot or RANDOMIZED_EOT} draws (EOT); declare votes / eot to change that"
        )
    # Probe run of the graph to read the scores' shape and values.
    last = _last_op(g, out_name)
    spec.logits_rule = bool(declared.get("logits_rule", True))
    probe, before = _probe_output(proto, spec, notes)
    _infer_output(spec, probe, last, declared, notes)
    perm = _output_perm(spec)
    if perm is not None:  # judge the attacked tensor in the canonical (batch-first) layout
        probe = np.transpose(probe, perm)
        before = before if before is None or before.ndim != len(perm) else np.transpose(before, perm)
    _attacked_tensor(spec, probe, before, notes)
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


RANDOM_OPS = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial")


def _constant_value(graph, name: str) -> np.ndarray | None:
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name in ("value_int", "value_float"):
                    return np.asarray(helper.get_attribute_value(a))
    return None


def randomized_ops(graph, output_name: str) -> tuple[str, ...]:
    """Op types that make the output random at inference: a Random*/Bernoulli/Multinomial node,
    or a Dropout whose ``training_mode`` input is true (a constant, or not constant at all), among
    the nodes the output depends on. Sorted; () for a deterministic graph."""
    producer = {o: n for n in graph.node for o in n.output if o}
    seen: set[int] = set()
    found: set[str] = set()
    stack = [output_name]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.domain in ("", "ai.onnx"):
            if node.op_type in RANDOM_OPS:
                found.add(node.op_type)
            elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
                mode = _constant_value(graph, node.input[2])
                if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                    found.add("Dropout")
        stack.extend(i for i in node.input if i)
    return tuple(sorted(found))


def _framework_from_producer(producer: str) -> str:
    p = producer.lower()
    for key, name in (("pytorch", "pytorch"), ("torch", "pytorch"), ("tf2onnx", "tensorflow"),
                      ("keras", "tensorflow"), ("skl2onnx", "scikit-learn"), ("jax", "jax"),
                      ("onnxmltools", "onnxmltools")):
        if key in p:
            return name
    return producer


def _probe_length(layout: str) -> int:
    return PROBE_SIGNAL if len(layout) == 3 else PROBE_SPATIAL


def _probe_output(proto: onnx.ModelProto, spec: ModelSpec, notes: list[str]):
    """Scores of the raw graph (no folding) on a small random batch, and the input of a final
    Softmax/LogSoftmax/Sigmoid passed through the same shape ops (None when there is none)."""
    shape = list(spec.input_shape)
    shape[0] = spec.fixed_batch or 2
    for k in range(1, len(shape)):
        if shape[k] is None:
            is_channel = k == channel_axis(spec.layout, len(shape))
            shape[k] = 1 if is_channel else (8 if spec.layout == "NF" else _probe_length(spec.layout))
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
    head, chain = _head(bare.graph, out)
    names = [out]
    if head is not None:
        nodes, before = _replay(head.input[0], chain, "advonnx_probe_attacked")
        bare.graph.node.extend(nodes)
        bare.graph.output.append(onnx.ValueInfoProto(name=before))
        names.append(before)
    try:
        so = _session_options(1)
        sess = ort.InferenceSession(bare.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
        feeds = {spec.input_name: x, **_probe_extras(spec, shape, rng)}
        values = [np.asarray(v) for v in sess.run(names, feeds)]
        if head is not None:
            spec.attacked_output, spec.attacked_op = head.input[0], head.op_type
        return values[0], (values[1] if len(values) > 1 else None)
    except Exception as err:
        msg = _first_line(err)
        raise ModelError(f"{spec.path}: onnxruntime cannot run the model on a probe batch of shape {tuple(shape)}: {msg}") from None


def _probe_extras(spec: ModelSpec, shape: list, rng) -> dict[str, np.ndarray]:
    """Values for the inputs held fixed on a probe batch of ``shape`` (the attacked input's):
    uniform [0, 1) floats, zeros for integers; a dynamic axis takes the attacked input's size at
    that position (a scalogram's time axis), else 8."""
    out = {}
    for name, dims, dtype in spec.extra_inputs:
        want = [shape[0]] + [d if d is not None else (shape[k] if k < len(shape) else 8) for k, d in
                             enumerate(dims[1:], start=1)]
        out[name] = (rng.uniform(0.0, 1.0, size=want) if np.dtype(dtype).kind == "f" else np.zeros(want)).astype(dtype)
    return out


def _attacked_tensor(spec: ModelSpec, scores: np.ndarray, before: np.ndarray | None, notes: list[str]) -> None:
    """Keep ``spec.attacked_output`` (set by the probe) when the logits rule is on and the final
    activation, applied along the class axis to the probe's pre-activation tensor, gives the
    scores; else clear it and say why."""
    op, name = spec.attacked_op, spec.attacked_output
    spec.attacked_output = spec.attacked_op = ""
    if before is None or not op:
        return
    if not spec.logits_rule:
        notes.append(f"logits rule off: attacks use the {op} output itself, not its input {name!r}")
        return
    z = before.astype(np.float64)
    if z.shape != scores.shape:
        notes.append(f"the input of the final {op} has shape {z.shape}, not the scores' {scores.shape}: attacks use the scores")
        return
    ax = spec.class_axis
    shifted = z - z.max(axis=ax, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=ax, keepdims=True))
    expect = [log_p] if op == "LogSoftmax" else [np.exp(log_p)]
    if op == "Sigmoid":  # sigmoid(z); or softmax([0, z]) = [1 − σ(z), σ(z)] for the two-class form
        expect = [1.0 / (1.0 + np.exp(-z))] + (expect if scores.shape[ax] == 2 else [])
    if not any(np.allclose(e, scores.astype(np.float64), rtol=1e-3, atol=1e-5, equal_nan=True) for e in expect):
        notes.append(f"the final {op} does not act along the class axis {ax}: attacks use its output, not its input {name!r}")
        return
    spec.attacked_output, spec.attacked_op = name, op
    notes.append(f"attacked tensor: {name!r} (input of the final {op}); decisions from {spec.output_name!r}")


def _infer_output(spec: ModelSpec, scores: np.ndarray, last_op: str, declared: dict, notes: list[str]):
    in_rank = len(spec.input_shape)
    if spec.output_layout:
        if scores.ndim != len(spec.output_layout):
            raise ModelError(
                f"{spec.path}: declared output layout {spec.output_layout} has {len(spec.output_layout)} axes but "
                f"output {spec.output_name!r} has shape {scores.shape}; declare a layout of its rank"
            )
        batch = scores.shape[spec.output_layout.index("N")]
        probe_batch = spec.fixed_batch or 2
        if batch != probe_batch:
            raise ModelError(
                f"{spec.path}: declared output layout {spec.output_layout} puts the batch on an axis of size {batch} "
                f"(probe batch {probe_batch}, output shape {scores.shape}); check the N axis"
            )
        perm = _output_perm(spec)
        if perm is not None:
            scores = np.transpose(scores, perm)
            notes.append(f"output layout {spec.output_layout} (declared): scores transposed to batch-first")
    elif scores.ndim >= 2 and scores.shape[0] != (spec.fixed_batch or 2):
        raise ModelError(
            f"{spec.path}: output {spec.output_name!r} has shape {scores.shape} for a batch of {spec.fixed_batch or 2}: "
            "the batch is not its first axis; declare its axes with --output-layout (e.g. TNC for (time, batch, "
            "classes))"
        )
    if scores.ndim == 2:
        task = "classification"
        class_axis = 1
    elif scores.ndim == in_rank and scores.ndim >= 3:
        task = "segmentation"
        class_axis = 1 if channels_first(spec.layout) else scores.ndim - 1
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
    framework, threshold, votes (evaluations per decision), eot (gradient draws averaged per
    gradient; both 0 = automatic: 1, or 11 and 20 for a randomized model), sampling_rate (Hz,
    signals), output_layout (e.g. TNC), patch_size, overlap, blend (sliding-window inference:
    returns a :class:`advonnx.sliding.SlidingWindowModel`), logits_rule (default True: losses,
    gradients and query objectives use the input of a final Softmax/LogSoftmax/Sigmoid; False
    attacks the output itself, for masking checks), attack_inputs (``a,b`` or ``a=0.01,b=0.05``:
    several inputs attacked jointly, returns a :class:`advonnx.joint.JointInputModel`; the other
    overrides apply to each input's model). ``device``: auto|cpu|cuda[:N]; ``io_binding`` binds buffers even on
    the CPU (always on with CUDA); ``batch_size``: rows per onnxruntime call.
    """
    path = str(path)
    if overrides.get("attack_inputs"):  # several inputs attacked jointly: one model per input, packed
        from .joint import JointInputModel, parse_attack_inputs

        pairs = parse_attack_inputs(str(overrides.pop("attack_inputs")))
        overrides.pop("input_name", None)
        models = [load_model(path, device=device, threads=threads, batch_size=batch_size, estimator=estimator,
                             io_binding=io_binding, input_name=name, **overrides) for name, _ in pairs]
        ref = pairs[0][1]
        return JointInputModel(models, [1.0 if ref is None else e / ref for _, e in pairs])
    overrides.pop("attack_inputs", None)
    proto = load_onnx(path)
    spec = infer_spec(proto, path, overrides)
    model = OnnxModel(proto, spec, device=device, threads=threads, batch_size=batch_size, estimator=estimator,
                      io_binding=io_binding)
    if spec.patch_size and spec.extra_inputs:
        raise ModelError(f"{path}: sliding windows (patch_size) need a model with one input; this one also takes "
                         f"{', '.join(n for n, _, _ in spec.extra_inputs)} (held fixed per sample): drop --patch-size")
    if spec.patch_size:  # run on overlapping windows of larger inputs, scores stitched
        from .sliding import SlidingWindowModel

        return SlidingWindowModel(model, spec.patch_size, overlap=spec.overlap, blend=spec.blend)
    return model


def with_spec(model: OnnxModel, **changes: Any) -> OnnxModel:
    """A new OnnxModel on the same file with spec fields replaced (used by tests and the CLI)."""
    return OnnxModel(model.original, replace(model.spec, **changes), batch_size=model.batch_size,
                     estimator=model.estimator, io_binding=model.io_binding)
