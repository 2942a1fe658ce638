"""A small CNN on scikit-learn's digits (8 × 8, 10 classes, values in [0, 1]) trained here in a
few seconds with PyTorch and written to ONNX by hand (Conv, Relu, MaxPool, Flatten, Gemm), so
that ``sequential_from_onnx`` rebuilds the same network for torchattacks references."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def digits_cnn(path, *, epochs: int = 30, seed: int = 0):
    """Train, write ``path``; returns (path, x_test (N, 1, 8, 8) float32, y_test int64)."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:1400], order[1400:]
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 16, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(epochs):
        for i in range(0, len(xt), 100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i : i + 100]), yt[i : i + 100]).backward()
            opt.step()
    w = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    nodes = [
        helper.make_node("Conv", ["x", "c_w", "c_b"], ["h1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MaxPool", ["h2"], ["h3"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["h3"], ["h4"], axis=1),
        helper.make_node("Gemm", ["h4", "l1_w", "l1_b"], ["h5"], transB=1),
        helper.make_node("Relu", ["h5"], ["h6"]),
        helper.make_node("Gemm", ["h6", "l2_w", "l2_b"], ["logits"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(w[k], n)
        for k, n in (
            ("0.weight", "c_w"),
            ("0.bias", "c_b"),
            ("4.weight", "l1_w"),
            ("4.bias", "l1_b"),
            ("6.weight", "l2_w"),
            ("6.bias", "l2_b"),
        )
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="advonnx.value_range", value="0,1")
    onnx.save(model, str(path))
    return str(path), x[test], y[test]
