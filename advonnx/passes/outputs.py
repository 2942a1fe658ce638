"""Passes on the outputs: keep the scores alone (``select_scores``), then, once every rewrite is
done, name the attacked tensor and add the model's own label output (``finish_outputs``).

Between the two the graph's outputs are the canonical pipeline's working state: output 0 the
scores, output 1 (under the logits rule) the attacked tensor."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .graph import ATTACKED_OUTPUT, FLOAT_TYPES, retarget_output


def select_scores(model: onnx.ModelProto, output_name: str) -> onnx.ModelProto:
    """``model`` with the one output ``output_name`` (the scores), typed as the file declares it
    when that is a float tensor, else float32 (a ZipMap's map sequence; see passes.zipmap).
    Edits ``model`` in place and returns it."""
    g = model.graph
    old_out = next((o for o in g.output if o.name == output_name), None)
    elem = TensorProto.FLOAT
    if old_out is not None and old_out.type.tensor_type.elem_type in FLOAT_TYPES:
        elem = old_out.type.tensor_type.elem_type
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(output_name, elem, None))
    return model


def finish_outputs(model: onnx.ModelProto, label_output: str = "") -> onnx.ModelProto:
    """The attacked tensor (output 1, when there is one) renamed ``advonnx_attacked`` through an
    Identity, and ``label_output`` (the model's own int64 decisions) added as the last output.
    Edits ``model`` in place and returns it."""
    g = model.graph
    if len(g.output) > 1:
        g.node.append(helper.make_node("Identity", [g.output[1].name], [ATTACKED_OUTPUT], name=ATTACKED_OUTPUT))
        retarget_output(g, 1, ATTACKED_OUTPUT)
    if label_output:
        g.output.append(helper.make_tensor_value_info(label_output, TensorProto.INT64, None))
    return model
