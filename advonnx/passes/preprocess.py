"""Pass: fold the preprocessing ``(x * scale - mean) / std`` in front of the input, so that the
user's values (and ``eps``) are in the declared value range."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from .graph import dims, front_input, initializer_const, insert_front


def fold_preprocessing(
    model: onnx.ModelProto,
    input_name: str,
    *,
    scale: float = 1.0,
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    channel_axis: int = 1,
    dtype: str = "float32",
) -> onnx.ModelProto:
    """``model`` reading ``(x * scale - mean) / std`` where it read its input ``x``.

    ``mean`` and ``std`` hold one value, or one per channel along ``channel_axis`` of the input;
    constants are stored in ``dtype`` (the input's float type). Nothing changes for ``scale`` 1
    and no mean or std. Edits ``model`` in place and returns it.
    """
    if scale == 1.0 and not mean and not std:
        return model
    g = model.graph
    graph_input = next(i for i in g.input if i.name == input_name)
    rank = len(dims(graph_input))
    np_dtype = np.dtype(dtype)
    prefix, cur = [], front_input(g, input_name)
    if scale != 1.0:
        g.initializer.append(initializer_const("advonnx_scale", scale, np_dtype))
        prefix.append(helper.make_node("Mul", [cur, "advonnx_scale"], ["advonnx_scaled"]))
        cur = "advonnx_scaled"
    for key, op, values in (("mean", "Sub", mean), ("std", "Div", std)):
        if not values:
            continue
        shape = [1] * rank
        if len(values) > 1:
            shape[channel_axis] = len(values)
        g.initializer.append(initializer_const(f"advonnx_{key}", np.reshape(values, shape), np_dtype))
        prefix.append(helper.make_node(op, [cur, f"advonnx_{key}"], [f"advonnx_{key}_out"]))
        cur = f"advonnx_{key}_out"
    insert_front(g, input_name, prefix, cur)
    return model
