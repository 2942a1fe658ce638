"""Everything advonnx guesses about a model from its graph: which input is attacked and which
output holds the scores, the input layout, the element types, random ops; then a probe run
(``spec.probe``) reads the scores' shape, kind and the logits-rule tensor. Declared values
(metadata < sidecar < overrides, ``spec.declared``) take precedence over every guess."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError
from ..passes.graph import FLOAT_TYPES, INTEGER_TYPES, NUMPY_TYPES, dims, last_op, opset, producer_map, shape_text
from .core import RANDOMIZED_EOT, RANDOMIZED_VOTES, Layout, ModelSpec, output_perm
from .declared import normalize_declared, read_metadata, read_sidecar
from .probe import attacked_tensor, infer_output, probe_output


def _guess_layout(shape: tuple, first_ops: list[str], notes: list[str]) -> Layout:
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
    cf: Layout = "NCHW" if rank == 4 else "NCDHW"
    cl: Layout = "NHWC" if rank == 4 else "NDHWC"
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


def _guess_signal_layout(shape: tuple, first_ops: list[str], notes: list[str]) -> Layout:
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
    floats = [i for i in inputs if i.type.tensor_type.elem_type in FLOAT_TYPES]
    spatial = [i for i in floats if len(dims(i)) >= 3]
    for pool in (spatial, floats):
        if len(pool) == 1:
            return pool[0], [i for i in inputs if i is not pool[0]]
    listed = ", ".join(f"{i.name} {shape_text(i)}" for i in inputs)
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
    producers = producer_map(graph)
    floats = [o.name for o in graph.output if o.type.tensor_type.elem_type in FLOAT_TYPES]
    zipmaps = [n for n in names if n in producers and producers[n].op_type == "ZipMap"]
    candidates = floats or zipmaps
    if len(candidates) == 1:
        return candidates[0]
    raise ModelError(
        f"{path}: the model has outputs {names} and the scores are ambiguous; "
        "say which one holds the class scores with --output NAME"
    )


def infer_spec(proto: onnx.ModelProto, path: str, overrides: dict[str, Any]) -> ModelSpec:
    """Guess the spec from the graph, then apply metadata < sidecar < overrides."""
    try:
        return _infer_spec(proto, path, overrides)
    except ModelError as err:
        if str(path) in str(err):
            raise
        raise ModelError(f"{path}: {err}") from None


def _declared(proto: onnx.ModelProto, path: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Declared values (metadata < sidecar < overrides) and the origin of each."""
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
    return declared, sources


def _extra_inputs(inp: onnx.ValueInfoProto, others: list, path: str, notes: list[str]) -> list[tuple[str, tuple, str]]:
    """The inputs held fixed: (name, dims, numpy dtype) each."""
    extra_inputs = []
    for other in others:
        elem_o = other.type.tensor_type.elem_type
        if elem_o not in FLOAT_TYPES and elem_o not in NUMPY_TYPES:
            raise ModelError(
                f"{path}: input {other.name!r} has element type {TensorProto.DataType.Name(elem_o)}; "
                "advonnx feeds numeric inputs only"
            )
        if not dims(other):
            raise ModelError(f"{path}: input {other.name!r} has no declared rank; re-export with shaped inputs")
        extra_inputs.append((other.name, dims(other), FLOAT_TYPES.get(elem_o) or NUMPY_TYPES[elem_o]))
    if extra_inputs:
        notes.append(
            f"attacked input {inp.name!r}; held fixed per sample from the data: "
            + ", ".join(f"{n} {shape_text(o)}" for (n, _, _), o in zip(extra_inputs, others))
        )
    return extra_inputs


def _integer_input(inp: onnx.ValueInfoProto, path: str, notes: list[str]) -> str:
    """The attacked input's integer type ("" for a float input); other types are refused."""
    elem = inp.type.tensor_type.elem_type
    integer = INTEGER_TYPES.get(elem, "")
    if integer:
        notes.append(
            f"integer input ({integer}): advonnx feeds floats that the graph rounds to the nearest integer; "
            "exact gradients pass the rounding as identity (BPDA) and adversarial examples stay on the integer grid"
        )
    elif elem not in FLOAT_TYPES:
        raise ModelError(
            f"{path}: input {inp.name!r} has element type "
            f"{TensorProto.DataType.Name(elem) if elem else 'unknown'}; advonnx attacks float inputs and "
            "8/16-bit integer image inputs only: give it a model whose input is an image"
        )
    return integer


def _apply_declared(
    spec: ModelSpec, proto: onnx.ModelProto, declared: dict[str, Any], sources: dict[str, str], notes: list[str]
) -> None:
    """Declared fields onto ``spec``; the framework from the producer and the value range from
    the input type when not declared."""
    path, integer = spec.path, spec.input_integer
    for key in (
        "scale",
        "mean",
        "std",
        "framework",
        "exporter",
        "dataset",
        "training",
        "threshold",
        "votes",
        "eot",
        "sampling_rate",
        "output_layout",
        "patch_size",
        "overlap",
        "blend",
    ):
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
        notes.append(
            "value range not declared: assuming [0, 1]; declare it (sidecar, metadata or --value-range) if wrong"
        )
    if spec.mean and spec.std and len(spec.mean) != len(spec.std) and min(len(spec.mean), len(spec.std)) > 1:
        raise ModelError(f"{path}: mean has {len(spec.mean)} values but std has {len(spec.std)}")


def _probe(spec: ModelSpec, proto: onnx.ModelProto, declared: dict[str, Any], notes: list[str]) -> None:
    """Probe run of the graph to read the scores' shape and values (task, kind, classes) and
    judge the logits-rule tensor."""
    last = last_op(proto.graph, spec.output_name)
    spec.logits_rule = bool(declared.get("logits_rule", True))
    probe, before = probe_output(proto, spec, notes)
    infer_output(spec, probe, last, declared, notes)
    perm = output_perm(spec)
    if perm is not None:  # judge the attacked tensor in the canonical (batch-first) layout
        probe = np.transpose(probe, perm)
        before = before if before is None or before.ndim != len(perm) else np.transpose(before, perm)
    attacked_tensor(spec, probe, before, notes)


def _class_names(spec: ModelSpec, declared: dict[str, Any]) -> None:
    if "class_names" in declared:
        names = declared["class_names"]
        if spec.num_classes and len(names) != spec.num_classes and spec.output_kind != "binary":
            raise ModelError(
                f"{spec.path}: {len(names)} class names declared but the model outputs {spec.num_classes} classes"
            )
        spec.class_names = names
    elif spec.num_classes:
        spec.class_names = tuple(str(i) for i in range(spec.num_classes))


def _infer_spec(proto: onnx.ModelProto, path: str, overrides: dict[str, Any]) -> ModelSpec:
    declared, sources = _declared(proto, path, overrides)
    g = proto.graph
    notes: list[str] = []
    inp, others = _select_input(g, declared.get("input_name"), path)
    extra_inputs = _extra_inputs(inp, others, path, notes)
    integer = _integer_input(inp, path, notes)
    shape = dims(inp)
    if not shape:
        raise ModelError(f"{path}: input {inp.name!r} has no declared rank; re-export with a shaped input")
    consumers = [n.op_type for n in g.node if inp.name in n.input]
    layout = declared.get("layout") or _guess_layout(shape, consumers, notes)
    if len(layout) != len(shape):
        raise ModelError(f"{path}: declared layout {layout} does not fit input shape {shape}")
    out_name = _select_output(g, declared.get("output_name"), path)
    labels = [
        o.name
        for o in g.output
        if o.name != out_name and o.type.tensor_type.elem_type == TensorProto.INT64 and len(dims(o)) <= 1
    ]
    spec = ModelSpec(
        path=str(path),
        input_name=inp.name,
        output_name=out_name,
        input_shape=shape,
        input_dtype=FLOAT_TYPES.get(inp.type.tensor_type.elem_type, "float32"),
        input_integer=integer,
        extra_inputs=tuple(extra_inputs),
        layout=layout,
        fixed_batch=shape[0] if shape[0] is not None else None,
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        opset=opset(proto),
        notes=notes,
    )
    _apply_declared(spec, proto, declared, sources, notes)
    spec.randomized = randomized_ops(g, out_name)
    if spec.randomized:
        notes.append(
            f"randomized model ({', '.join(spec.randomized)} active at inference): every decision is a majority "
            f"over {spec.votes or RANDOMIZED_VOTES} evaluations and every gradient an average over "
            f"{spec.eot or RANDOMIZED_EOT} draws (EOT); declare votes / eot to change that"
        )
    _probe(spec, proto, declared, notes)
    _class_names(spec, declared)
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
    for key, name in (
        ("pytorch", "pytorch"),
        ("torch", "pytorch"),
        ("tf2onnx", "tensorflow"),
        ("keras", "tensorflow"),
        ("skl2onnx", "scikit-learn"),
        ("jax", "jax"),
        ("onnxmltools", "onnxmltools"),
    ):
        if key in p:
            return name
    return producer
