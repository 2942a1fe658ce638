"""A chain-shaped ONNX classifier (Conv, Relu, MaxPool, ReduceMean, Reshape/Flatten, Gemm) as a
PyTorch module with the file's own weights: the twin that torchattacks attacks in references.

Covers the suite's brain_cnn and brain_mobilenet (batch norm folded into the convolutions by
the exporter) and small test CNNs; any other op is refused.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def sequential_from_onnx(path: str):
    import torch
    from torch import nn

    proto = onnx.load(path)
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    layers: list[nn.Module] = []

    def param(name):
        return nn.Parameter(torch.from_numpy(np.array(weights[name], dtype=np.float32)), requires_grad=False)

    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "Conv":
            w = weights[node.input[1]]
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            assert pads[:2] == pads[2:], "asymmetric padding"
            conv = nn.Conv2d(
                w.shape[1] * attrs.get("group", 1),
                w.shape[0],
                tuple(w.shape[2:]),
                stride=tuple(attrs.get("strides", [1, 1])),
                padding=tuple(pads[:2]),
                groups=attrs.get("group", 1),
                bias=len(node.input) > 2,
            )
            conv.weight = param(node.input[1])
            if len(node.input) > 2:
                conv.bias = param(node.input[2])
            layers.append(conv)
        elif op == "Relu":
            layers.append(nn.ReLU())
        elif op == "MaxPool":
            layers.append(
                nn.MaxPool2d(tuple(attrs["kernel_shape"]), stride=tuple(attrs.get("strides", attrs["kernel_shape"])))
            )
        elif op == "ReduceMean":
            layers.append(nn.AdaptiveAvgPool2d(1))
        elif op in ("Reshape", "Flatten"):
            layers.append(nn.Flatten())
        elif op == "Gemm":
            assert attrs.get("transB", 0) == 1 and attrs.get("alpha", 1.0) == 1.0
            w = weights[node.input[1]]
            lin = nn.Linear(w.shape[1], w.shape[0])
            lin.weight, lin.bias = param(node.input[1]), param(node.input[2])
            layers.append(lin)
        else:
            raise NotImplementedError(f"sequential_from_onnx: op {op}")
    return nn.Sequential(*layers).eval()
