"""Pass: an integer input (8/16-bit images) becomes a float input, rounded (Round: half to even)
and cast to the file's type before the original graph."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .graph import front_input, insert_front


def round_integer_input(model: onnx.ModelProto, input_name: str, *, relaxed: bool = False) -> onnx.ModelProto:
    """``model`` with its integer input ``input_name`` declared float, and ``Cast(Round(x))`` to
    the file's integer type where the graph read it. ``relaxed=True`` leaves out the rounding and
    the cast, so the float reaches the original consumers: the graph exact gradients are taken on
    (BPDA with the identity for the rounding; Athalye, Carlini, Wagner 2018); it only runs when
    those consumers accept floats (a Cast, typically). Edits ``model`` in place and returns it."""
    g = model.graph
    cur = front_input(g, input_name)
    graph_input = next(i for i in g.input if i.name == input_name)
    file_type = graph_input.type.tensor_type.elem_type
    graph_input.type.tensor_type.elem_type = TensorProto.FLOAT
    if not relaxed:
        nodes = [
            helper.make_node("Round", [cur], ["advonnx_rounded"]),
            helper.make_node("Cast", ["advonnx_rounded"], ["advonnx_integer_input"], to=file_type),
        ]
        insert_front(g, input_name, nodes, "advonnx_integer_input")
    return model
