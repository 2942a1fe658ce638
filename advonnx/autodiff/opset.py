"""Opset lifting: the VJP rules are written for opset >= 13 semantics and some backward ops
need a later opset; a lifted model is checked to compute the same outputs before use."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..errors import GradientUnavailable
from .graph import _copy, _onnx_opset, _random_feed


def lift_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """``model`` converted to ai.onnx opset ``target``, checked to compute the same outputs."""
    from onnx import version_converter

    try:
        lifted = version_converter.convert_version(model, target)
    except Exception as err:  # noqa: BLE001
        raise GradientUnavailable(
            f"cannot lift the model from opset {_onnx_opset(model)} to {target} "
            f"(needed by the gradient ops): {str(err).splitlines()[0]}"
        ) from err
    feed = _random_feed(model)
    try:
        before, after = _run_both(model, lifted, feed)
    except Exception as err:  # noqa: BLE001
        raise GradientUnavailable(
            f"the model lifted to opset {target} could not be checked: {str(err).splitlines()[0]}"
        ) from err
    for a, b in zip(before, after, strict=True):
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
            raise GradientUnavailable(
                f"the model lifted to opset {target} computes different outputs; export it at opset >= 16"
            )
    return lifted


def _run_both(model: onnx.ModelProto, lifted: onnx.ModelProto, feed):
    """Outputs of both models on ``feed``: onnxruntime, or onnx's reference evaluator where
    onnxruntime has no kernel (e.g. float64 Upsample)."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return [
            ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)
            for m in (model, lifted)
        ]
    except Exception:  # noqa: BLE001 - no kernel: compare with the reference evaluator
        return [ReferenceEvaluator(m).run(None, feed) for m in (model, lifted)]


SCATTER_OPSET = 16  # ScatterElements / ScatterND with reduction="add"
CUDA_SCATTER_OPSET = 18  # onnxruntime's CUDA EP has these kernels for opsets 13-15 and 18+


def _lift_for_scatter(model: onnx.ModelProto, opset: int, needed: int):
    """The backward scatters: lift to opset 18 if that converts and checks cleanly (the
    CUDA EP of onnxruntime has scatter-add kernels for opset 18, not for 16-17), else to the
    opset the rules need, else keep the model's own."""
    try:
        return lift_opset(model, CUDA_SCATTER_OPSET), CUDA_SCATTER_OPSET
    except GradientUnavailable:
        if opset >= needed:
            return _copy(model), opset
        return lift_opset(model, needed), needed


def _set_opset(model: onnx.ModelProto, opset: int) -> None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, opset)
            return
    model.opset_import.append(helper.make_opsetid("", opset))
