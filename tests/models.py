"""Tiny ONNX models built in code for tests (onnx.helper), with known weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, inputs, outputs, inits, metadata=None, opset=OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="advonnx-tests")
    m.ir_version = 8
    for k, v in (metadata or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    return m


def softmax_regression(
    d: int = 784, classes: int = 10, *, seed: int = 0, probabilities: bool = False, batch=None
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """z = x W + b on (N, d) features; returns (model, W, b)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1.0 / np.sqrt(d), (d, classes)).astype(np.float32) * 8
    b = rng.normal(0, 0.1, classes).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["logits"])]
    out = "logits"
    if probabilities:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    m = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch or "N", d])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch or "N", classes])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return m, w, b


def small_cnn(
    *,
    channels: int = 1,
    size: int = 8,
    classes: int = 3,
    nhwc: bool = False,
    head: str = "logits",
    batch=None,
    seed: int = 0,
) -> onnx.ModelProto:
    """Conv3x3 → Relu → GlobalAveragePool → Flatten → Gemm, optional Softmax/Sigmoid head.

    ``head``: logits | softmax | sigmoid_binary (one output) | sigmoid_multilabel.
    """
    rng = np.random.default_rng(seed)
    hidden = 6
    out_classes = 1 if head == "sigmoid_binary" else classes
    w = rng.normal(0, 0.5, (hidden, channels, 3, 3)).astype(np.float32)
    cb = rng.normal(0, 0.1, hidden).astype(np.float32)
    fw = rng.normal(0, 1.0, (hidden, out_classes)).astype(np.float32)
    fb = rng.normal(0, 0.1, out_classes).astype(np.float32)
    nodes = []
    x = "image"
    shape = [batch or "N", size, size, channels] if nhwc else [batch or "N", channels, size, size]
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"]),
    ]
    out = "logits"
    if head == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    elif head.startswith("sigmoid"):
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probs"]))
        out = "probs"
    return _model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch or "N", out_classes])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "cw"), (cb, "cb"), (fw, "fw"), (fb, "fb"))],
    )


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)
