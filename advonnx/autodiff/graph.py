"""Facts about the forward graph: names, shapes and types, constants, and the activity analysis
(which tensors and nodes lie on a differentiable path from the input to the output)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ..errors import GradientUnavailable
from .registry import FLOAT_TYPES, GraphInfo, Rule, TensorInfo, find_rule

MIN_OPSET = 13

# Ops whose floating outputs carry no gradient (no data dependence, or a discrete output).
# Floor/Ceil/Round/Sign are not here: their derivative is 0 almost everywhere, which would mask
# the gradient; they pass it straight through instead (STRAIGHT_THROUGH, rules/elementwise.py).
NON_DIFFERENTIABLE = {
    "Shape",
    "Size",
    "ArgMax",
    "ArgMin",
    "NonZero",
    "RandomNormalLike",
    "RandomUniformLike",
    "RandomNormal",
    "RandomUniform",
    "Bernoulli",
    "EyeLike",
    "ConstantOfShape",
    "Constant",
    "IsNaN",
    "IsInf",
    "Multinomial",
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
            raise GradientUnavailable(f"the model has {len(inputs)} inputs ({', '.join(inputs)}); pass input_name=")
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
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
    return TensorInfo(tt.elem_type, shape)


# Ops whose first output has the shape and type of their first input, for the few that
# onnx's shape inference leaves without a shape (it has no inference for GroupNormalization).
SHAPE_PRESERVING = {
    "GroupNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "BatchNormalization",
    "LpNormalization",
    "MeanVarianceNormalization",
}


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to the declared value infos
        return model
    for _ in range(8):  # fill in shape-preserving ops and propagate again
        known = {
            vi.name: vi
            for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)
        }
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
            sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
            values = sess.run(names, _random_feed(model, free_dim))
        except Exception:  # noqa: BLE001 - another size, or give up (rules then refuse)
            continue
        return {
            n: TensorInfo(helper.np_dtype_to_tensor_dtype(v.dtype), (None,) * v.ndim)
            for n, v in zip(names, values, strict=True)
            if isinstance(v, np.ndarray)
        }
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
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        runs = [sess.run(names, _random_feed(model, free, batch)) for batch, free in ((1, 32), (3, 24))]
    except Exception:  # noqa: BLE001 - rules then refuse the dynamic dims
        return {}
    return {
        n: tuple(int(x) if x == y else None for x, y in zip(a.shape, c.shape, strict=True))
        for n, a, c in zip(names, *runs, strict=True)
        if isinstance(a, np.ndarray) and isinstance(c, np.ndarray) and a.ndim == c.ndim
    }


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
    untyped = [o for n in model.graph.node for o in n.output if o and (o not in tensors or tensors[o].shape is None)]
    if untyped and not any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        tensors.update(_probe(model, untyped))
    unknown = sorted(
        {
            n.input[0]
            for n in model.graph.node
            if n.op_type in STATIC_DIMS_NEEDED
            and n.domain in ("", "ai.onnx")
            and n.input
            and n.input[0] in tensors
            and not all(isinstance(d, int) for d in tensors[n.input[0]].shape or [None])
        }
    )
    if unknown and not any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        for name, dims in _probe_static_dims(model, unknown).items():
            old = tensors[name].shape or (None,) * len(dims)
            if len(old) == len(dims):
                merged = tuple(o if isinstance(o, int) or d is None else d for o, d in zip(old, dims, strict=True))
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
    on_path = [n for n in graph.node if any(o in active for o in n.output) and any(i in active for i in _all_inputs(n))]
    return active, on_path


def _op_label(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


# Ops that lifting a model to MIN_OPSET rewrites into ops that have rules.
LIFTED_AWAY = {"Upsample"}


def _rule_of(node: onnx.NodeProto, opset: int) -> Rule:
    """The rule of a node on the path (``_missing`` found none lacking there)."""
    rule = find_rule(node.domain, node.op_type, opset)
    if rule is None:
        raise GradientUnavailable(f"no exact gradient: no VJP rule for {_op_label(node)}")
    return rule


def _missing(on_path, opset: int, model_opset: int | None = None) -> list[str]:
    missing = set()
    for n in on_path:
        if model_opset is not None and model_opset < MIN_OPSET and n.op_type in LIFTED_AWAY:
            continue
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)
        if has_subgraph or find_rule(n.domain, n.op_type, opset) is None:
            missing.add(_op_label(n))
    return sorted(missing)


def _random_feed(model: onnx.ModelProto, free_dim: int = 32, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    inits = _initializer_names(model.graph)
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        # free dims: batch 1, any other (spatial) 32, so that pooling stacks still fit
        shape = [
            d.dim_value if d.HasField("dim_value") else (batch if i == 0 else free_dim)
            for i, d in enumerate(tt.shape.dim)
        ]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feed[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[vi.name] = np.zeros(shape, dtype=dtype)
    return feed


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
