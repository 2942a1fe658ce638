"""Pass (the logits rule): expose the input of the final Softmax/LogSoftmax/Sigmoid the scores
come from, passed through the same shape-only ops, as a second output: what losses, gradients
and query objectives read. Decisions still come from the first output."""

from __future__ import annotations

import onnx
from onnx import helper

from ..errors import ModelError
from .graph import head, replay


def expose_attacked(model: onnx.ModelProto, attacked: str, *, op: str = "", path: str = "") -> onnx.ModelProto:
    """``model`` with a second output: ``attacked`` (the input of the final activation ``op``
    that makes output 0, as the spec's probe found it) shaped like the scores. Raises
    ``ModelError`` (naming ``path``) when the scores no longer come from that activation.
    Edits ``model`` in place and returns it."""
    g = model.graph
    scores = g.output[0]
    node, chain = head(g, scores.name)
    if node is None or node.input[0] != attacked:
        raise ModelError(f"{path}: the scores no longer come from {op or 'a final activation'}; reload the model")
    nodes, name = replay(attacked, chain, "advonnx_attacked_shape")
    g.node.extend(nodes)
    g.output.append(helper.make_tensor_value_info(name, scores.type.tensor_type.elem_type, None))
    return model
