"""Pass: a declared output layout (e.g. sequence-first ``TNC``) → batch-first canonical scores."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

from .graph import retarget_output


def to_batch_first(model: onnx.ModelProto, perm: Sequence[int] | None) -> onnx.ModelProto:
    """``model`` whose outputs (the scores and, when there is one, the attacked tensor) are
    transposed by ``perm`` (None: unchanged). Edits ``model`` in place and returns it."""
    if perm is None:
        return model
    g = model.graph
    for k, out in enumerate(g.output):
        name = f"{out.name}_advonnx_batch_first"
        g.node.append(helper.make_node("Transpose", [out.name], [name], perm=list(perm)))
        retarget_output(g, k, name)
    return model
