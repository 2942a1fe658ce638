"""Pass: lift the default-domain opset to a minimum (older opsets lack ops the passes emit, such
as CastLike, opset 15), with onnx's version converter."""

from __future__ import annotations

import onnx

from .graph import opset


def lift_opset(model: onnx.ModelProto, minimum: int) -> onnx.ModelProto:
    """``model`` itself when its opset is at least ``minimum``, else a converted copy."""
    if opset(model) >= minimum:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, minimum)
