"""Pass: a single-output binary classifier (one logit ``z`` or one probability ``p``) presented
as two class scores: ``[0, z]`` (logits; softmax gives ``sigmoid(z)``) or ``[1 - p, p]``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .graph import initializer_const, retarget_output


def binary_to_two_class(model: onnx.ModelProto, axis: int, *, probabilities: bool) -> onnx.ModelProto:
    """``model`` whose scores (output 0: one column along ``axis``) become two: ``[1 - p, p]``
    for ``probabilities`` (needs opset 15 for CastLike: see passes.opset), else ``[0, z]``; an
    attacked tensor (output 1: the logit before a final sigmoid) becomes ``[0, z]``.
    Edits ``model`` in place and returns it."""
    g = model.graph
    out_name = g.output[0].name
    if probabilities:
        g.initializer.append(initializer_const("advonnx_one", 1.0, np.float32))
        g.node.extend(
            [
                helper.make_node("CastLike", ["advonnx_one", out_name], ["advonnx_one_like"]),
                helper.make_node("Sub", ["advonnx_one_like", out_name], ["advonnx_neg_class"]),
            ]
        )
    else:
        g.node.append(helper.make_node("Sub", [out_name, out_name], ["advonnx_neg_class"]))
    g.node.append(helper.make_node("Concat", ["advonnx_neg_class", out_name], ["advonnx_two_class"], axis=axis))
    retarget_output(g, 0, "advonnx_two_class")
    if len(g.output) > 1:  # the pre-sigmoid logit z as [0, z]
        attacked = g.output[1].name
        g.node.append(helper.make_node("Sub", [attacked, attacked], ["advonnx_attacked_zero"]))
        g.node.append(
            helper.make_node("Concat", ["advonnx_attacked_zero", attacked], ["advonnx_attacked_two"], axis=axis)
        )
        retarget_output(g, 1, "advonnx_attacked_two")
    return model
