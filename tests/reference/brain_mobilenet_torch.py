"""The suite's brain_mobilenet as a PyTorch module with the ONNX file's own weights (for references).

The exported graph has its BatchNorms folded into the convolutions (``<conv>.weight`` and
``<conv>.weight_bias``), so the twin is convolutions with bias and ReLUs, as the ONNX graph runs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def brain_mobilenet_from_onnx(path: str):
    import torch
    from torch import nn

    def sep(cin: int, cout: int, stride: int):  # mirrors models/train_brain_classifiers.py _sep
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin), nn.ReLU(), nn.Conv2d(cin, cout, 1), nn.ReLU()
        )

    class BrainMobileNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
            self.blocks = nn.Sequential(sep(16, 32, 2), sep(32, 32, 1), sep(32, 64, 2), sep(64, 64, 1), sep(64, 128, 2))
            self.fc = nn.Linear(128, 3)

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    net = BrainMobileNet()
    w = {t.name: np.array(numpy_helper.to_array(t)) for t in onnx.load(path).graph.initializer}
    state = {
        "stem.0.weight": w["features.0.weight"],
        "stem.0.bias": w["features.0.weight_bias"],
        "fc.weight": w["fc.weight"],
        "fc.bias": w["fc.bias"],
    }
    for i in range(5):
        for j, k in ((0, 0), (3, 2)):  # depthwise (ONNX .0) → blocks.i.0, pointwise (.3) → blocks.i.2
            state[f"blocks.{i}.{k}.weight"] = w[f"features.{i + 3}.{j}.weight"]
            state[f"blocks.{i}.{k}.bias"] = w[f"features.{i + 3}.{j}.weight_bias"]
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return net.eval()
