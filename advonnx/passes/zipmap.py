"""Pass: a ZipMap output (scikit-learn converters: one ``{class: probability}`` map per row)
is replaced by the probability tensor it reads."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .graph import producer_map


def remove_zipmap(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` whose first output, when a ZipMap makes it, is the (N, classes) float tensor
    the ZipMap reads instead (the ZipMap node removed). Edits ``model`` in place and returns it."""
    g = model.graph
    zip_node = producer_map(g).get(g.output[0].name)
    if zip_node is None or zip_node.op_type != "ZipMap":
        return model
    g.node.remove(zip_node)
    g.output[0].CopyFrom(helper.make_tensor_value_info(zip_node.input[0], TensorProto.FLOAT, None))
    return model
