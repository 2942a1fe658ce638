"""ONNX -> ONNX gradient transform: append a loss head and a reverse-mode (VJP) sweep.

``gradient_model`` returns a model whose outputs are the original scores, the per-sample
loss and the gradient of the summed loss with respect to the input, built from standard
ai.onnx ops only. The loss head is appended as ordinary forward nodes and differentiated by
the same VJP rules as the network, so there is exactly one gradient code path.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ..errors import GradientUnavailable
from ..losses import DLR_DELTA, PROB_FLOOR
from . import rules as _rules  # noqa: F401  (registers the VJP rules)
from .builder import Builder
from .registry import (
    FLOAT_TYPES,
    GraphInfo,
    RuleUnavailable,
    TensorInfo,
    VJPContext,
    find_rule,
)

GRAD_INPUT_LABEL = "advonnx_label"
GRAD_INPUT_MASK = "advonnx_mask"
GRAD_INPUT_COTANGENT = "advonnx_cotangent"
GRAD_OUTPUT_SCORES = "advonnx_scores"
GRAD_OUTPUT_LOSS = "advonnx_loss"
GRAD_OUTPUT_GRAD = "advonnx_grad"
GRAD_OUTPUT_DECISIONS = "advonnx_decisions"  # the model's decision scores, on request

LOSSES = ("ce", "margin", "seg_ce", "dlr", "cotangent", "bce", "ml_margin")
MIN_OPSET = 13

# Ops whose floating outputs carry no gradient (no data dependence, or a discrete output).
# Floor/Ceil/Round/Sign are not here: their derivative is 0 almost everywhere, which would mask
# the gradient; they pass it straight through instead (STRAIGHT_THROUGH, rules/elementwise.py).
NON_DIFFERENTIABLE = {
    "Shape", "Size", "ArgMax", "ArgMin", "NonZero",
    "RandomNormalLike", "RandomUniformLike", "RandomNormal", "RandomUniform", "Bernoulli",
    "EyeLike", "ConstantOfShape", "Constant", "IsNaN", "IsInf", "Multinomial",
}


# -- graph facts ------------------------------------------------------------------------------
def _onnx_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def _initializer_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}


def _real_inputs(graph: onnx.GraphProto) -> list[str]:
    inits = _initializer_names(graph)
    return [i.name for i in graph.input if i.name not in inits]


def _resolve_names(graph, input_name, output_name) -> tuple[str, str]:
    inputs = _real_inputs(graph)
    if input_name is None:
        if len(inputs) != 1:
            raise GradientUnavailable(
                f"the model has {len(inputs)} inputs ({', '.join(inputs)}); pass input_name=")
        input_name = inputs[0]
    elif input_name not in inputs:
        raise GradientUnavailable(f"input {input_name!r} not among the model inputs {inputs}")
    outputs = [o.name for o in graph.output]
    if output_name is None:
        output_name = outputs[0]
    elif output_name not in outputs:
        raise GradientUnavailable(f"output {output_name!r} not among the model outputs {outputs}")
    return input_name, output_name


def _subgraph_inputs(node: onnx.NodeProto) -> list[str]:
    """Outer-scope names a node's subgraphs (If/Loop/Scan bodies) read implicitly."""
    names: list[str] = []
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | _initializer_names(g)
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                names += [i for i in list(n.input) + _subgraph_inputs(n) if i and i not in local]
    return names


def _all_inputs(node: onnx.NodeProto) -> list[str]:
    return [i for i in node.input if i] + _subgraph_inputs(node)


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo | None:
    if not vi.type.HasField("tensor_type"):
        return None
    tt = vi.type.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
        )
    return TensorInfo(tt.elem_type, shape)


# Ops whose first output has the shape and type of their first input, for the few that
# onnx's shape inference leaves without a shape (it has no inference for GroupNormalization).
SHAPE_PRESERVING = {"GroupNormalization", "LayerNormalization", "InstanceNormalization",
                    "BatchNormalization", "LpNormalization", "MeanVarianceNormalization"}


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to the declared value infos
        return model
    for _ in range(8):  # fill in shape-preserving ops and propagate again
        known = {vi.name: vi for vi in list(inferred.graph.input) + list(inferred.graph.value_info)
                 + list(inferred.graph.output)}
        added = []
        for n in inferred.graph.node:
            if n.op_type not in SHAPE_PRESERVING or not n.output or n.input[0] not in known:
                continue
            out = known.get(n.output[0])
            if out is None or not out.type.tensor_type.HasField("shape"):
                vi = onnx.ValueInfoProto()
                vi.CopyFrom(known[n.input[0]])
                vi.name = n.output[0]
                added.append(vi)
        if not added:
            break
        names = {vi.name for vi in added}
        patched = _copy(model)
        keep = [vi for vi in patched.graph.value_info if vi.name not in names]
        del patched.graph.value_info[:]
        patched.graph.value_info.extend(keep + added)
        for o in patched.graph.output:
            if o.name in names:
                o.CopyFrom(next(vi for vi in added if vi.name == o.name))
        model = patched
        try:
            inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001
            return model
    return inferred


def _probe(model: onnx.ModelProto, names: list[str]) -> dict[str, TensorInfo]:
    """Ranks and element types of ``names`` from one onnxruntime run on a random input, for
    tensors onnx's shape inference could not type (dims stay unknown: they may vary)."""
    import onnxruntime as ort

    probe = _copy(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    for free_dim in (32, 1):
        try:
            sess = ort.InferenceSession(probe.SerializeToString(), so,
                                        providers=["CPUExecutionProvider"])
            values = sess.run(names, _random_feed(model, free_dim))
        except Exception:  # noqa: BLE001 - another size, or give up (rules then refuse)
            continue
        return {n: TensorInfo(helper.np_dtype_to_tensor_dtype(v.dtype), (None,) * v.ndim)
                for n, v in zip(names, values, strict=True) if isinstance(v, np.ndarray)}
    return {}


# Ops whose rules need static sizes on some input axes (the recurrent ones unroll over T).
STATIC_DIMS_NEEDED = {"LSTM", "GRU", "RNN"}


def _probe_static_dims(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple]:
    """Dims of ``names`` that stay the same in two onnxruntime runs whose batch and free
    input dims differ (1 and 32, then 3 and 24): static in fact though shape inference could
    not tell (e.g. a Reshape whose shape went through ``Mod``). Rules that rely on such a dim
    still check it at run time (a Split with static sizes fails on any other length)."""
    import onnxruntime as ort

    probe = _copy(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        runs = [sess.run(names, _random_feed(model, free, batch))
                for batch, free in ((1, 32), (3, 24))]
    except Exception:  # noqa: BLE001 - rules then refuse the dynamic dims
        return {}
    return {n: tuple(int(x) if x == y else None for x, y in zip(a.shape, c.shape, strict=True))
            for n, a, c in zip(names, *runs, strict=True)
            if isinstance(a, np.ndarray) and isinstance(c, np.ndarray) and a.ndim == c.ndim}


def _graph_info(model: onnx.ModelProto) -> GraphInfo:
    g = _infer(model).graph
    tensors: dict[str, TensorInfo] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        info = _tensor_info(vi)
        if info is not None:
            tensors[vi.name] = info
    constants: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        tensors.setdefault(t.name, TensorInfo(t.data_type, tuple(t.dims)))
        if t.data_location != TensorProto.EXTERNAL and np.prod(t.dims) <= 4096:
            constants[t.name] = numpy_helper.to_array(t)
    untyped = [o for n in model.graph.node for o in n.output
               if o and (o not in tensors or tensors[o].shape is None)]
    if untyped and not any(t.data_location == TensorProto.EXTERNAL
                           for t in model.graph.initializer):
        tensors.update(_probe(model, untyped))
    unknown = sorted({n.input[0] for n in model.graph.node
                      if n.op_type in STATIC_DIMS_NEEDED and n.domain in ("", "ai.onnx")
                      and n.input and n.input[0] in tensors
                      and not all(isinstance(d, int) for d in tensors[n.input[0]].shape or [None])})
    if unknown and not any(t.data_location == TensorProto.EXTERNAL
                           for t in model.graph.initializer):
        for name, dims in _probe_static_dims(model, unknown).items():
            old = tensors[name].shape or (None,) * len(dims)
            if len(old) == len(dims):
                merged = tuple(o if isinstance(o, int) or d is None else d
                               for o, d in zip(old, dims, strict=True))
                tensors[name] = TensorInfo(tensors[name].elem_type, merged)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    constants[n.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_float", "value_int"):
                    constants[n.output[0]] = np.asarray(helper.get_attribute_value(a))
                elif a.name in ("value_floats", "value_ints"):
                    constants[n.output[0]] = np.asarray(helper.get_attribute_value(a))
    return GraphInfo(tensors, constants)


def _is_float(info: GraphInfo, name: str) -> bool:
    t = info.tensors.get(name)
    return t is None or t.elem_type in FLOAT_TYPES


def _active(graph: onnx.GraphProto, info: GraphInfo, source: str, target: str):
    """Tensors on a differentiable path from ``source`` to ``target``, and the nodes on it."""
    forward = {source}
    for node in graph.node:
        if node.op_type in NON_DIFFERENTIABLE and node.domain in ("", "ai.onnx"):
            continue
        if any(i in forward for i in _all_inputs(node)):
            quantized = node.op_type == "QuantizeLinear"  # integer output, straight-through to its DQ
            forward.update(o for o in node.output if o and (quantized or _is_float(info, o)))
    backward = {target}
    for node in reversed(graph.node):
        if any(o in backward for o in node.output):
            backward.update(_all_inputs(node))
    active = forward & backward
    on_path = [
        n for n in graph.node
        if any(o in active for o in n.output) and any(i in active for i in _all_inputs(n))
    ]
    return active, on_path


def _op_label(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


# Ops that lifting a model to MIN_OPSET rewrites into ops that have rules.
LIFTED_AWAY = {"Upsample"}


def _missing(on_path, opset: int, model_opset: int | None = None) -> list[str]:
    missing = set()
    for n in on_path:
        if model_opset is not None and model_opset < MIN_OPSET and n.op_type in LIFTED_AWAY:
            continue
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                           for a in n.attribute)
        if has_subgraph or find_rule(n.domain, n.op_type, opset) is None:
            missing.add(_op_label(n))
    return sorted(missing)


def unsupported_ops(model: onnx.ModelProto, *, input_name: str | None = None,
                    output_name: str | None = None) -> list[str]:
    """Sorted op types on the differentiable path from input to output that lack a VJP rule.

    Non-ai.onnx ops are written ``domain::OpType``. ``[]`` means exact gradients exist: when
    every op has a rule, the gradient graph is built once (without running it) so that rules
    refusing a node's particular attributes or shapes are reported too.
    """
    input_name, output_name = _resolve_names(model.graph, input_name, output_name)
    info = _graph_info(model)
    _, on_path = _active(model.graph, info, input_name, output_name)
    opset = _onnx_opset(model)
    missing = _missing(on_path, max(opset, MIN_OPSET), opset)
    if missing:
        return missing
    try:
        gradient_model(model, loss="cotangent", input_name=input_name, output_name=output_name)
    except RuleUnavailable as err:
        return [err.op]
    except GradientUnavailable:
        # the opset lift the backward ops need failed: blame the ops that need it
        lifting = sorted({_op_label(n) for n in on_path
                          if find_rule(n.domain, n.op_type, max(opset, MIN_OPSET))
                          .required_opset(n) > opset})
        if lifting:
            return lifting
        raise
    return []


# Ops whose gradient is the straight-through identity (BPDA), see rules/elementwise.py.
STRAIGHT_THROUGH = ("Ceil", "DequantizeLinear", "Floor", "QuantizeLinear", "Round", "Sign")


def straight_through_ops(model: onnx.ModelProto, *, input_name: str | None = None,
                         output_name: str | None = None) -> list[str]:
    """Sorted op types on the input→output path whose gradient is the straight-through
    identity (:data:`STRAIGHT_THROUGH`); ``[]`` means the gradient is exact everywhere."""
    input_name, output_name = _resolve_names(model.graph, input_name, output_name)
    info = _graph_info(model)
    _, on_path = _active(model.graph, info, input_name, output_name)
    return sorted({n.op_type for n in on_path
                   if n.op_type in STRAIGHT_THROUGH and n.domain in ("", "ai.onnx")})


# -- opset lifting ------------------------------------------------------------------------------
def _random_feed(model: onnx.ModelProto, free_dim: int = 32,
                 batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    inits = _initializer_names(model.graph)
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        # free dims: batch 1, any other (spatial) 32, so that pooling stacks still fit
        shape = [d.dim_value if d.HasField("dim_value") else (batch if i == 0 else free_dim)
                 for i, d in enumerate(tt.shape.dim)]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feed[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[vi.name] = np.zeros(shape, dtype=dtype)
    return feed


def lift_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """``model`` converted to ai.onnx opset ``target``, checked to compute the same outputs."""
    from onnx import version_converter

    try:
        lifted = version_converter.convert_version(model, target)
    except Exception as err:  # noqa: BLE001
        raise GradientUnavailable(
            f"cannot lift the model from opset {_onnx_opset(model)} to {target} "
            f"(needed by the gradient ops): {str(err).splitlines()[0]}") from err
    feed = _random_feed(model)
    try:
        before, after = _run_both(model, lifted, feed)
    except Exception as err:  # noqa: BLE001
        raise GradientUnavailable(
            f"the model lifted to opset {target} could not be checked: {str(err).splitlines()[0]}"
        ) from err
    for a, b in zip(before, after, strict=True):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise GradientUnavailable(
                f"the model lifted to opset {target} computes different outputs; "
                "export it at opset >= 16")
    return lifted


def _run_both(model: onnx.ModelProto, lifted: onnx.ModelProto, feed):
    """Outputs of both models on ``feed``: onnxruntime, or onnx's reference evaluator where
    onnxruntime has no kernel (e.g. float64 Upsample)."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return [ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
                .run(None, feed) for m in (model, lifted)]
    except Exception:  # noqa: BLE001 - no kernel: compare with the reference evaluator
        return [ReferenceEvaluator(m).run(None, feed) for m in (model, lifted)]


SCATTER_OPSET = 16  # ScatterElements / ScatterND with reduction="add"
CUDA_SCATTER_OPSET = 18  # onnxruntime's CUDA EP has these kernels for opsets 13-15 and 18+


def _lift_for_scatter(model: onnx.ModelProto, opset: int, needed: int):
    """The backward scatters: lift to opset 18 if that converts and checks cleanly (the
    CUDA EP of onnxruntime has scatter-add kernels for opset 18, not for 16-17), else to the
    opset the rules need, else keep the model's own."""
    try:
        return lift_opset(model, CUDA_SCATTER_OPSET), CUDA_SCATTER_OPSET
    except GradientUnavailable:
        if opset >= needed:
            return _copy(model), opset
        return lift_opset(model, needed), needed


# -- loss head ---------------------------------------------------------------------------------
def _multilabel_head(b: Builder, scores: str, sinfo: TensorInfo, *, loss: str, probabilities: bool,
                     threshold: float) -> tuple[str, list[onnx.ValueInfoProto], str]:
    """``bce`` / ``ml_margin`` of (N, K) multi-label scores against (N, K) int64 labels (0/1;
    -1 ignored), the formulas of ``advonnx.losses.bce`` / ``multilabel_margin``."""
    shape = sinfo.shape
    if shape is None or len(shape) != 2:
        raise GradientUnavailable(f"loss {loss!r} needs (N, findings) scores, the output has shape {shape}")
    dt = helper.tensor_dtype_to_np_dtype(sinfo.elem_type)
    inputs = [helper.make_tensor_value_info(GRAD_INPUT_LABEL, TensorProto.INT64, list(shape))]
    t = b.op("Cast", [b.op("Equal", [GRAD_INPUT_LABEL, b.const(np.int64(1))])], to=sinfo.elem_type)
    w = b.op("Cast", [b.op("Not", [b.op("Less", [GRAD_INPUT_LABEL, b.const(np.int64(0))])])], to=sinfo.elem_type)
    if loss == "ml_margin":
        sign = b.op("Sub", [b.op("Mul", [t, b.scalar(2.0, dt)]), b.scalar(1.0, dt)])
        wrong = b.op("Neg", [b.op("Mul", [sign, b.op("Sub", [scores, b.scalar(threshold, dt)])])])
        big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)
        off = b.op("Mul", [b.op("Sub", [b.scalar(1.0, dt), w]), big])
        value = b.reduce("ReduceMax", b.op("Sub", [wrong, off]), [1], keepdims=False)
        return value, inputs, value
    if probabilities:
        p64 = b.op("Cast", [scores], to=TensorProto.DOUBLE)
        lo, hi = b.scalar(PROB_FLOOR, np.float64), b.scalar(1.0, np.float64)
        logp = b.op("Cast", [b.op("Log", [b.op("Clip", [p64, lo, hi])])], to=sinfo.elem_type)
        one_minus = b.op("Sub", [b.scalar(1.0, np.float64), p64])
        logq = b.op("Cast", [b.op("Log", [b.op("Clip", [one_minus, lo, hi])])], to=sinfo.elem_type)
        per = b.op("Neg", [b.op("Add", [b.op("Mul", [t, logp]),
                                         b.op("Mul", [b.op("Sub", [b.scalar(1.0, dt), t]), logq])])])
    else:  # max(z, 0) − t·z + log(1 + exp(−|z|))
        soft = b.op("Log", [b.op("Add", [b.scalar(1.0, dt), b.op("Exp", [b.op("Neg", [b.op("Abs", [scores])])])])])
        per = b.op("Add", [b.op("Sub", [b.op("Relu", [scores]), b.op("Mul", [t, scores])]), soft])
    num = b.reduce("ReduceSum", b.op("Mul", [per, w]), [1], keepdims=False)
    den = b.op("Max", [b.reduce("ReduceSum", w, [1], keepdims=False), b.scalar(1.0, dt)])
    value = b.op("Div", [num, den])
    return value, inputs, value


def _dlr_head(b: Builder, scores: str, onehot: str, classes: str, n_classes, ax: int, dt, elem_type: int,
              pick) -> str:
    """Untargeted DLR of ``advonnx.losses.dlr``: ``−(z_y − z_o) / (z_π1 − z_π3 + 1e-12)``, o the
    best other class; 2 classes: ``−(z_y − z_o)``. Every ranked score is picked with a one-hot of
    an ArgMax (first index on ties, as the host formula), so its gradient is the host's one-hot
    difference; no TopK, no opset lift."""
    if not isinstance(n_classes, int):
        raise GradientUnavailable("loss 'dlr' needs a static number of classes")
    big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)

    def top_hot(t: str) -> str:  # one-hot of the first largest entry along the class axis
        return b.op("Cast", [b.op("Equal", [b.op("ArgMax", [t], axis=ax, keepdims=1), classes])], to=elem_type)

    def drop(t: str, hot: str) -> str:
        return b.op("Sub", [t, b.op("Mul", [hot, big])])

    num = b.op("Sub", [pick(scores), pick(scores, top_hot(drop(scores, onehot)))])
    if n_classes == 2:
        return b.op("Neg", [num])
    h1 = top_hot(scores)
    rest = drop(scores, h1)
    h3 = top_hot(drop(rest, top_hot(rest)))
    den = b.op("Add", [b.op("Sub", [pick(scores, h1), pick(scores, h3)]), b.scalar(DLR_DELTA, dt)])
    return b.op("Neg", [b.op("Div", [num, den])])


def _loss_head(b: Builder, scores: str, sinfo: TensorInfo, *, loss: str, probabilities: bool,
               class_axis: int, scale_free: bool = False, threshold: float = 0.0
               ) -> tuple[str, list[onnx.ValueInfoProto], str]:
    """Nodes computing the per-sample loss from ``scores``, the same formulas as
    ``advonnx.losses``; returns the loss name, the new graph inputs and the tensor to
    differentiate (the loss; for ``scale_free`` CE on logits the log-odds, see gradient_model).

    On probabilities the log is taken in float64 (``Log(Clip(p))`` of the float32 scores)."""
    if loss in ("bce", "ml_margin"):
        return _multilabel_head(b, scores, sinfo, loss=loss, probabilities=probabilities, threshold=threshold)
    shape = sinfo.shape
    if shape is None:
        raise GradientUnavailable("the rank of the scores output is unknown; cannot build a loss")
    rank = len(shape)
    ax = class_axis % rank
    if loss in ("ce", "margin") and rank != 2:
        raise GradientUnavailable(
            f"loss {loss!r} needs (N, classes) scores, the output has rank {rank}; "
            "use loss='seg_ce' for dense outputs")
    dt = helper.tensor_dtype_to_np_dtype(sinfo.elem_type)
    label_shape = [d for i, d in enumerate(shape) if i != ax]
    if loss in ("ce", "margin"):
        label_shape = label_shape[:1]
    inputs = [helper.make_tensor_value_info(GRAD_INPUT_LABEL, TensorProto.INT64, label_shape)]
    n_classes = shape[ax]
    if n_classes == 1:  # a single sigmoid/logit output: two-class scores as advonnx.losses does
        if probabilities:
            other = b.op("Sub", [b.scalar(1.0, dt), scores])
        else:
            other = b.zeros_like(scores, None, dt)
        scores = b.op("Concat", [other, scores], axis=ax)
        n_classes = 2
    if isinstance(n_classes, int):
        cshape = [1] * rank
        cshape[ax] = n_classes
        classes = b.const(np.arange(n_classes, dtype=np.int64).reshape(cshape))
    else:
        depth = b.op("Gather", [b.shape(scores), b.ints([ax])])
        rng = b.op("Range", [b.const(np.int64(0)), b.op("Squeeze", [depth]),
                             b.const(np.int64(1))])
        cshape = b.op("ScatterElements", [b.ints([1] * rank), b.ints([ax]), depth])
        classes = b.op("Reshape", [rng, cshape])
    label = b.op("Unsqueeze", [GRAD_INPUT_LABEL, b.ints([ax])])
    onehot = b.op("Cast", [b.op("Equal", [label, classes])], to=sinfo.elem_type)

    def pick(t: str, hot: str = onehot) -> str:
        return b.reduce("ReduceSum", b.op("Mul", [t, hot]), [ax], keepdims=False)

    if loss == "dlr":
        value = _dlr_head(b, scores, onehot, classes, n_classes, ax, dt, sinfo.elem_type, pick)
        return value, inputs, value
    if loss == "margin":
        big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)
        others = b.reduce("ReduceMax", b.op("Sub", [scores, b.op("Mul", [onehot, big])]), [ax],
                          keepdims=False)
        value = b.op("Sub", [others, pick(scores)])
        return value, inputs, value
    if probabilities:
        p64 = b.op("Cast", [scores], to=TensorProto.DOUBLE)
        logp64 = b.op("Log", [b.op("Clip", [p64, b.scalar(PROB_FLOOR, np.float64), b.scalar(1.0, np.float64)])])
        logp = b.op("Cast", [logp64], to=sinfo.elem_type)
    else:
        logp = b.op("LogSoftmax", [scores], axis=ax)
    per_item = b.op("Neg", [pick(logp)])
    if loss == "ce" and scale_free and not probabilities:
        big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)
        others = b.reduce("ReduceLogSumExp", b.op("Sub", [scores, b.op("Mul", [onehot, big])]), [ax],
                          keepdims=False)
        return per_item, inputs, b.op("Sub", [others, pick(scores)])
    if loss == "ce":
        return per_item, inputs, per_item
    inputs.append(helper.make_tensor_value_info(GRAD_INPUT_MASK, sinfo.elem_type, label_shape))
    flat = b.op("Flatten", [per_item], axis=1)
    w = b.op("Flatten", [GRAD_INPUT_MASK], axis=1)
    num = b.reduce("ReduceSum", b.op("Mul", [flat, w]), [1], keepdims=False)
    den = b.op("Max", [b.reduce("ReduceSum", w, [1], keepdims=False), b.scalar(1.0, dt)])
    value = b.op("Div", [num, den])
    return value, inputs, value


# -- the transform ------------------------------------------------------------------------------
def gradient_model(model: onnx.ModelProto, *, loss: str, input_name: str | None = None,
                   output_name: str | None = None, probabilities: bool = False,
                   class_axis: int = 1, scale_free: bool = False, threshold: float = 0.0,
                   decision_output: str | None = None) -> onnx.ModelProto:
    """A model computing ``advonnx_scores``, ``advonnx_loss`` (N,) and ``advonnx_grad``.

    ``decision_output`` (a tensor of ``model``, e.g. the Softmax after the attacked logits) is
    also returned as ``advonnx_decisions``, so an attack gets decisions, loss and gradient from
    one forward pass.

    ``advonnx_grad`` is d(sum of the loss over the batch)/d(input), or the vector-Jacobian
    product ``cotangent^T J`` of the scores for ``loss="cotangent"``. Losses follow
    :mod:`advonnx.losses`. ``scale_free`` (``ce`` on logits only): ``advonnx_grad`` is the
    gradient of the log-odds ``d = LSE_{j≠y} z_j − z_y`` (``∇CE = σ(d)·∇d``: CE's direction per
    sample, never underflowing to 0); ``advonnx_loss`` stays CE. ``bce`` / ``ml_margin``:
    multi-label (N, K) scores and (N, K) labels; ``threshold`` is ml_margin's decision threshold
    on the scores. Piecewise-constant ops
    (:data:`STRAIGHT_THROUGH`) pass the cotangent unchanged (BPDA). Raises
    :class:`GradientUnavailable` naming ops without a rule.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    input_name, output_name = _resolve_names(model.graph, input_name, output_name)

    opset = _onnx_opset(model)
    info = _graph_info(model)
    _, on_path = _active(model.graph, info, input_name, output_name)
    missing = _missing(on_path, max(opset, MIN_OPSET), opset)
    if missing:
        raise GradientUnavailable(
            f"no exact gradient: no VJP rule for {', '.join(missing)}; use estimated gradients")
    if opset < MIN_OPSET:  # rules are written for opset >= 13 semantics
        model = lift_opset(model, MIN_OPSET)
        opset = MIN_OPSET
        info = _graph_info(model)
        _, on_path = _active(model.graph, info, input_name, output_name)
        missing = _missing(on_path, opset)
    if missing:
        raise GradientUnavailable(
            f"no exact gradient: no VJP rule for {', '.join(missing)}; use estimated gradients")
    needed = max([MIN_OPSET] + [find_rule(n.domain, n.op_type, max(opset, MIN_OPSET))
                                .required_opset(n) for n in on_path])
    if needed >= SCATTER_OPSET and opset < CUDA_SCATTER_OPSET:
        model, opset = _lift_for_scatter(model, opset, needed)
    elif opset < needed:
        model, opset = lift_opset(model, needed), needed
    else:
        model = _copy(model)

    graph = model.graph
    facts = _graph_info(model)
    in_info = facts.tensors.get(input_name)
    if in_info is not None and in_info.elem_type not in FLOAT_TYPES:
        raise GradientUnavailable(f"input {input_name!r} is not floating point; no gradient")
    taken = _all_names(graph)

    # 1. loss head, appended as forward nodes
    head = Builder(taken, opset, prefix="advonnx_loss")
    sinfo = facts.tensors.get(output_name)
    if sinfo is None or sinfo.elem_type not in FLOAT_TYPES:
        raise GradientUnavailable(f"output {output_name!r} is not a floating-point tensor")
    new_inputs: list[onnx.ValueInfoProto] = []
    if loss == "cotangent":
        target = output_name
        new_inputs.append(helper.make_tensor_value_info(
            GRAD_INPUT_COTANGENT, sinfo.elem_type, _dims(sinfo.shape)))
        loss_name = None
    else:
        loss_name, new_inputs, target = _loss_head(head, output_name, sinfo, loss=loss,
                                                   probabilities=probabilities, class_axis=class_axis,
                                                   scale_free=scale_free, threshold=threshold)
    graph.node.extend(head.nodes)
    graph.initializer.extend(head.initializers)
    graph.input.extend(new_inputs)

    # 2. facts about the forward graph (with its loss head) and the path to differentiate
    info = _graph_info(model)
    active, on_path = _active(graph, info, input_name, target)
    on_path_ids = {id(n) for n in on_path}

    # 3. reverse sweep
    b = Builder(_all_names(graph), opset)
    grads: dict[str, list[str]] = {}
    if loss == "cotangent":
        grads[target] = [GRAD_INPUT_COTANGENT]
    else:
        dt = helper.tensor_dtype_to_np_dtype(sinfo.elem_type)
        grads[target] = [b.op("ConstantOfShape", [b.shape(target)],
                              value=numpy_helper.from_array(np.ones((1,), dt)))]

    def total(name: str) -> str | None:
        parts = grads.get(name)
        if not parts:
            return None
        if len(parts) > 1:
            grads[name] = [b.op("Sum", parts)]
        return grads[name][0]

    forward_nodes = list(graph.node)
    for node in reversed(forward_nodes):
        if id(node) not in on_path_ids:
            continue
        out_grads = [total(o) if o in active else None for o in node.output]
        if all(g is None for g in out_grads):
            continue
        needs = [bool(i) and i in active for i in node.input]
        rule = find_rule(node.domain, node.op_type, opset)
        ctx = VJPContext(node, b, info, out_grads, needs, opset)
        in_grads = list(rule.fn(ctx))
        for i, gi in enumerate(in_grads):
            if gi is not None and i < len(needs) and needs[i]:
                grads.setdefault(node.input[i], []).append(gi)

    grad = total(input_name)
    if grad is None:  # the output does not depend on the input
        in_dt = helper.tensor_dtype_to_np_dtype(in_info.elem_type if in_info else sinfo.elem_type)
        grad = b.zeros_like(input_name, None, in_dt)

    # 4. outputs
    b.op("Identity", [output_name], output=GRAD_OUTPUT_SCORES)
    b.op("Identity", [grad], output=GRAD_OUTPUT_GRAD)
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    in_vi = next(vi for vi in graph.input if vi.name == input_name)
    outputs = [helper.make_tensor_value_info(GRAD_OUTPUT_SCORES, sinfo.elem_type,
                                             _dims(sinfo.shape))]
    if loss_name is not None:
        b2 = helper.make_node("Identity", [loss_name], [GRAD_OUTPUT_LOSS],
                              name=b.fresh("loss_out"))
        graph.node.append(b2)
        n_dim = (sinfo.shape or [None])[0]
        outputs.append(helper.make_tensor_value_info(GRAD_OUTPUT_LOSS, sinfo.elem_type, [n_dim]))
    outputs.append(_renamed(in_vi, GRAD_OUTPUT_GRAD))
    if decision_output is not None:
        dinfo = facts.tensors.get(decision_output)
        if dinfo is None:
            raise ValueError(f"no tensor named {decision_output!r} in the graph")
        graph.node.append(helper.make_node("Identity", [decision_output], [GRAD_OUTPUT_DECISIONS],
                                           name=b.fresh("decisions_out")))
        outputs.append(helper.make_tensor_value_info(GRAD_OUTPUT_DECISIONS, dinfo.elem_type, _dims(dinfo.shape)))
    del graph.output[:]
    graph.output.extend(outputs)
    _set_opset(model, opset)
    return model


def _dims(shape: tuple | None) -> list | None:
    return None if shape is None else list(shape)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _renamed(vi: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(vi)
    out.name = name
    return out


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {vi.name for vi in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= _initializer_names(graph)
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
        names.add(n.name)
        names.update(_subgraph_inputs(n))
    return names


def _set_opset(model: onnx.ModelProto, opset: int) -> None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, opset)
            return
    model.opset_import.append(helper.make_opsetid("", opset))
