"""Exact input gradients computed from the ONNX graph itself.

:func:`gradient_model` turns an inference model into one that also returns a loss and its
gradient with respect to the input, built from standard ai.onnx ops only, so that a stock
onnxruntime (CPU or CUDA) runs it. :func:`unsupported_ops` says beforehand whether it can.
"""

from .registry import supported_ops
from .transform import (
    GRAD_INPUT_COTANGENT,
    GRAD_INPUT_LABEL,
    GRAD_INPUT_MASK,
    GRAD_OUTPUT_DECISIONS,
    GRAD_OUTPUT_GRAD,
    GRAD_OUTPUT_LOSS,
    GRAD_OUTPUT_SCORES,
    LOSSES,
    STRAIGHT_THROUGH,
    gradient_model,
    lift_opset,
    straight_through_ops,
    unsupported_ops,
)

__all__ = [
    "GRAD_INPUT_COTANGENT",
    "GRAD_INPUT_LABEL",
    "GRAD_INPUT_MASK",
    "GRAD_OUTPUT_DECISIONS",
    "GRAD_OUTPUT_GRAD",
    "GRAD_OUTPUT_LOSS",
    "GRAD_OUTPUT_SCORES",
    "LOSSES",
    "STRAIGHT_THROUGH",
    "gradient_model",
    "lift_opset",
    "straight_through_ops",
    "supported_ops",
    "unsupported_ops",
]
