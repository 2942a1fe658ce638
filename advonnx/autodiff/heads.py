"""Loss heads: the per-sample losses of :mod:`advonnx.losses` as ONNX nodes appended to the
forward graph (differentiated by the same VJP rules as the network), and the names of the
gradient model's inputs and outputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import GradientUnavailable
from ..losses import DLR_DELTA, PROB_FLOOR
from .builder import Builder
from .registry import TensorInfo

GRAD_INPUT_LABEL = "advonnx_label"
GRAD_INPUT_MASK = "advonnx_mask"
GRAD_INPUT_COTANGENT = "advonnx_cotangent"
GRAD_OUTPUT_SCORES = "advonnx_scores"
GRAD_OUTPUT_LOSS = "advonnx_loss"
GRAD_OUTPUT_GRAD = "advonnx_grad"
GRAD_OUTPUT_DECISIONS = "advonnx_decisions"  # the model's decision scores, on request

LOSSES = ("ce", "margin", "seg_ce", "dlr", "cotangent", "bce", "ml_margin")


# -- loss head ---------------------------------------------------------------------------------
def _multilabel_head(
    b: Builder, scores: str, sinfo: TensorInfo, *, loss: str, probabilities: bool, threshold: float
) -> tuple[str, list[onnx.ValueInfoProto], str]:
    """``bce`` / ``ml_margin`` of (N, K) multi-label scores against (N, K) int64 labels (0/1;
    -1 ignored), the formulas of ``advonnx.losses.bce`` / ``multilabel_margin``."""
    shape = sinfo.shape
    if shape is None or len(shape) != 2:
        raise GradientUnavailable(f"loss {loss!r} needs (N, findings) scores, the output has shape {shape}")
    dt = helper.tensor_dtype_to_np_dtype(sinfo.elem_type)
    inputs = [helper.make_tensor_value_info(GRAD_INPUT_LABEL, TensorProto.INT64, list(shape))]
    t = b.op("Cast", [b.op("Equal", [GRAD_INPUT_LABEL, b.const(np.int64(1))])], to=sinfo.elem_type)
    w = b.op("Cast", [b.op("Not", [b.op("Less", [GRAD_INPUT_LABEL, b.const(np.int64(0))])])], to=sinfo.elem_type)
    if loss == "ml_margin":
        sign = b.op("Sub", [b.op("Mul", [t, b.scalar(2.0, dt)]), b.scalar(1.0, dt)])
        wrong = b.op("Neg", [b.op("Mul", [sign, b.op("Sub", [scores, b.scalar(threshold, dt)])])])
        big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)
        off = b.op("Mul", [b.op("Sub", [b.scalar(1.0, dt), w]), big])
        value = b.reduce("ReduceMax", b.op("Sub", [wrong, off]), [1], keepdims=False)
        return value, inputs, value
    if probabilities:
        p64 = b.op("Cast", [scores], to=TensorProto.DOUBLE)
        lo, hi = b.scalar(PROB_FLOOR, np.float64), b.scalar(1.0, np.float64)
        logp = b.op("Cast", [b.op("Log", [b.op("Clip", [p64, lo, hi])])], to=sinfo.elem_type)
        one_minus = b.op("Sub", [b.scalar(1.0, np.float64), p64])
        logq = b.op("Cast", [b.op("Log", [b.op("Clip", [one_minus, lo, hi])])], to=sinfo.elem_type)
        per = b.op(
            "Neg", [b.op("Add", [b.op("Mul", [t, logp]), b.op("Mul", [b.op("Sub", [b.scalar(1.0, dt), t]), logq])])]
        )
    else:  # max(z, 0) − t·z + log(1 + exp(−|z|))
        soft = b.op("Log", [b.op("Add", [b.scalar(1.0, dt), b.op("Exp", [b.op("Neg", [b.op("Abs", [scores])])])])])
        per = b.op("Add", [b.op("Sub", [b.op("Relu", [scores]), b.op("Mul", [t, scores])]), soft])
    num = b.reduce("ReduceSum", b.op("Mul", [per, w]), [1], keepdims=False)
    den = b.op("Max", [b.reduce("ReduceSum", w, [1], keepdims=False), b.scalar(1.0, dt)])
    value = b.op("Div", [num, den])
    return value, inputs, value


def _dlr_head(b: Builder, scores: str, onehot: str, classes: str, n_classes, ax: int, dt, elem_type: int, pick) -> str:
    """Untargeted DLR of ``advonnx.losses.dlr``: ``−(z_y − z_o) / (z_π1 − z_π3 + 1e-12)``, o the
    best other class; 2 classes: ``−(z_y − z_o)``. Every ranked score is picked with a one-hot of
    an ArgMax (first index on ties, as the host formula), so its gradient is the host's one-hot
    difference; no TopK, no opset lift."""
    if not isinstance(n_classes, int):
        raise GradientUnavailable("loss 'dlr' needs a static number of classes")
    big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)

    def top_hot(t: str) -> str:  # one-hot of the first largest entry along the class axis
        return b.op("Cast", [b.op("Equal", [b.op("ArgMax", [t], axis=ax, keepdims=1), classes])], to=elem_type)

    def drop(t: str, hot: str) -> str:
        return b.op("Sub", [t, b.op("Mul", [hot, big])])

    num = b.op("Sub", [pick(scores), pick(scores, top_hot(drop(scores, onehot)))])
    if n_classes == 2:
        return b.op("Neg", [num])
    h1 = top_hot(scores)
    rest = drop(scores, h1)
    h3 = top_hot(drop(rest, top_hot(rest)))
    den = b.op("Add", [b.op("Sub", [pick(scores, h1), pick(scores, h3)]), b.scalar(DLR_DELTA, dt)])
    return b.op("Neg", [b.op("Div", [num, den])])


def _loss_head(
    b: Builder,
    scores: str,
    sinfo: TensorInfo,
    *,
    loss: str,
    probabilities: bool,
    class_axis: int,
    scale_free: bool = False,
    threshold: float = 0.0,
) -> tuple[str, list[onnx.ValueInfoProto], str]:
    """Nodes computing the per-sample loss from ``scores``, the same formulas as
    ``advonnx.losses``; returns the loss name, the new graph inputs and the tensor to
    differentiate (the loss; for ``scale_free`` CE on logits the log-odds, see gradient_model).

    On probabilities the log is taken in float64 (``Log(Clip(p))`` of the float32 scores)."""
    if loss in ("bce", "ml_margin"):
        return _multilabel_head(b, scores, sinfo, loss=loss, probabilities=probabilities, threshold=threshold)
    shape = sinfo.shape
    if shape is None:
        raise GradientUnavailable("the rank of the scores output is unknown; cannot build a loss")
    rank = len(shape)
    ax = class_axis % rank
    if loss in ("ce", "margin") and rank != 2:
        raise GradientUnavailable(
            f"loss {loss!r} needs (N, classes) scores, the output has rank {rank}; use loss='seg_ce' for dense outputs"
        )
    dt = helper.tensor_dtype_to_np_dtype(sinfo.elem_type)
    label_shape = [d for i, d in enumerate(shape) if i != ax]
    if loss in ("ce", "margin"):
        label_shape = label_shape[:1]
    inputs = [helper.make_tensor_value_info(GRAD_INPUT_LABEL, TensorProto.INT64, label_shape)]
    n_classes = shape[ax]
    if n_classes == 1:  # a single sigmoid/logit output: two-class scores as advonnx.losses does
        if probabilities:
            other = b.op("Sub", [b.scalar(1.0, dt), scores])
        else:
            other = b.zeros_like(scores, None, dt)
        scores = b.op("Concat", [other, scores], axis=ax)
        n_classes = 2
    if isinstance(n_classes, int):
        cshape = [1] * rank
        cshape[ax] = n_classes
        classes = b.const(np.arange(n_classes, dtype=np.int64).reshape(cshape))
    else:
        depth = b.op("Gather", [b.shape(scores), b.ints([ax])])
        rng = b.op("Range", [b.const(np.int64(0)), b.op("Squeeze", [depth]), b.const(np.int64(1))])
        class_shape = b.op("ScatterElements", [b.ints([1] * rank), b.ints([ax]), depth])
        classes = b.op("Reshape", [rng, class_shape])
    label = b.op("Unsqueeze", [GRAD_INPUT_LABEL, b.ints([ax])])
    onehot = b.op("Cast", [b.op("Equal", [label, classes])], to=sinfo.elem_type)

    def pick(t: str, hot: str = onehot) -> str:
        return b.reduce("ReduceSum", b.op("Mul", [t, hot]), [ax], keepdims=False)

    if loss == "dlr":
        value = _dlr_head(b, scores, onehot, classes, n_classes, ax, dt, sinfo.elem_type, pick)
        return value, inputs, value
    if loss == "margin":
        big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)
        others = b.reduce("ReduceMax", b.op("Sub", [scores, b.op("Mul", [onehot, big])]), [ax], keepdims=False)
        value = b.op("Sub", [others, pick(scores)])
        return value, inputs, value
    if probabilities:
        p64 = b.op("Cast", [scores], to=TensorProto.DOUBLE)
        logp64 = b.op("Log", [b.op("Clip", [p64, b.scalar(PROB_FLOOR, np.float64), b.scalar(1.0, np.float64)])])
        logp = b.op("Cast", [logp64], to=sinfo.elem_type)
    else:
        logp = b.op("LogSoftmax", [scores], axis=ax)
    per_item = b.op("Neg", [pick(logp)])
    if loss == "ce" and scale_free and not probabilities:
        big = b.scalar(1e30 if dt == np.float64 else 1e9, dt)
        others = b.reduce("ReduceLogSumExp", b.op("Sub", [scores, b.op("Mul", [onehot, big])]), [ax], keepdims=False)
        return per_item, inputs, b.op("Sub", [others, pick(scores)])
    if loss == "ce":
        return per_item, inputs, per_item
    inputs.append(helper.make_tensor_value_info(GRAD_INPUT_MASK, sinfo.elem_type, label_shape))
    flat = b.op("Flatten", [per_item], axis=1)
    w = b.op("Flatten", [GRAD_INPUT_MASK], axis=1)
    num = b.reduce("ReduceSum", b.op("Mul", [flat, w]), [1], keepdims=False)
    den = b.op("Max", [b.reduce("ReduceSum", w, [1], keepdims=False), b.scalar(1.0, dt)])
    value = b.op("Div", [num, den])
    return value, inputs, value
