"""Graph facts the passes and the spec guesses share: element types, dims, producers, the final
activation a score tensor comes from (the logits rule), and small node builders."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError

FLOAT_TYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
}
# Integer image inputs (8/16-bit pipelines, quantized front ends): advonnx feeds floats, the
# canonical graph rounds and casts them (see passes.integer).
INTEGER_TYPES: dict[int, str] = {
    TensorProto.UINT8: "uint8",
    TensorProto.INT8: "int8",
    TensorProto.UINT16: "uint16",
    TensorProto.INT16: "int16",
}
# Element types of inputs held fixed (fed per sample from the data, never attacked).
NUMPY_TYPES: dict[int, str] = {
    **INTEGER_TYPES,
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.BOOL: "bool",
}
PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast"}
# Final activations whose input is attacked instead of their output (the logits rule).
HEADS = {"Softmax", "LogSoftmax", "Sigmoid"}
ATTACKED_OUTPUT = "advonnx_attacked"  # the canonical graph's second output under the logits rule
PREPROCESSED = "advonnx_preprocessed"  # what the file's graph reads in place of its input


def dims(value_info: onnx.ValueInfoProto) -> tuple:
    """Declared dims of a tensor value (None where dynamic); () when it declares no shape."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)


def shape_text(vi: onnx.ValueInfoProto) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims(vi)) + ")"


def producer_map(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def last_op(graph: onnx.GraphProto, name: str) -> str:
    """The op that produces ``name``, looking through shape-only ops."""
    producers = producer_map(graph)
    node = producers.get(name)
    while node is not None and node.op_type in PASS_THROUGH and node.input:
        node = producers.get(node.input[0])
    return "" if node is None else node.op_type


def _two_class_of(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> str | None:
    """``s`` when ``node`` is ``Concat([c − s, s])`` (scikit-learn's binary classifiers write
    ``[1 − σ(z), σ(z)]``; the probe checks that the constant is 1), else None."""
    if node.op_type != "Concat" or len(node.input) != 2:
        return None
    neg = producers.get(node.input[0])
    if neg is None or neg.op_type != "Sub" or neg.input[1] != node.input[1]:
        return None
    return node.input[1]


def head(graph: onnx.GraphProto, name: str) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto]]:
    """The final Softmax/LogSoftmax/Sigmoid producing ``name`` through shape-only ops (and one
    two-class ``Concat([1 − s, s])`` of a sigmoid ``s``), and those ops in forward order;
    ``(None, [])`` when there is none."""
    producers = producer_map(graph)
    chain = []
    node = producers.get(name)
    two_class = False
    while node is not None:
        if node.op_type in PASS_THROUGH and node.input:
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
    if node is None or node.op_type not in HEADS or node.domain not in ("", "ai.onnx"):
        return None, []
    return node, chain[::-1]


def replay(source: str, chain: list[onnx.NodeProto], prefix: str) -> tuple[list[onnx.NodeProto], str]:
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


def opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset (0 when it imports none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def initializer_const(name: str, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def input_front(graph: onnx.GraphProto, input_name: str) -> int:
    """Index of the Identity ``advonnx_preprocessed`` through which the file's graph reads the
    input ``input_name``; created first (every consumer rewired to it) when absent. Passes put
    the nodes that transform the input in front of it."""
    for k, node in enumerate(graph.node):
        if node.op_type == "Identity" and list(node.output) == [PREPROCESSED]:
            return k
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = PREPROCESSED
    for out in graph.output:
        if out.name == input_name:
            raise ModelError("the input is also an output; cannot fold preprocessing")
    graph.node.insert(0, helper.make_node("Identity", [input_name], [PREPROCESSED]))
    return 0


def insert_front(graph: onnx.GraphProto, input_name: str, nodes: list[onnx.NodeProto], out: str) -> None:
    """Insert ``nodes`` (a chain reading the current front's input, ending in ``out``) before the
    Identity ``advonnx_preprocessed``, which then reads ``out``."""
    k = input_front(graph, input_name)
    for j, node in enumerate(nodes):
        graph.node.insert(k + j, node)
    graph.node[k + len(nodes)].input[0] = out


def front_input(graph: onnx.GraphProto, input_name: str) -> str:
    """The tensor the Identity ``advonnx_preprocessed`` reads (creating it when absent)."""
    return graph.node[input_front(graph, input_name)].input[0]


def retarget_output(graph: onnx.GraphProto, k: int, name: str) -> None:
    """Output ``k`` of ``graph`` becomes tensor ``name`` (same element type, shape left to
    onnxruntime: a rewrite may change it)."""
    elem = graph.output[k].type.tensor_type.elem_type
    graph.output[k].CopyFrom(helper.make_tensor_value_info(name, elem, None))
