"""The suite's brain_cnn as a PyTorch module with the ONNX file's own weights (for references)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def brain_cnn_from_onnx(path: str):
    import torch
    from torch import nn

    class BrainCNN(nn.Module):  # mirrors models/train_brain_classifiers.py
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 3))

        def forward(self, x):
            return self.head(self.features(x))

    net = BrainCNN()
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    state = {k: torch.from_numpy(np.array(weights[k])) for k in net.state_dict()}
    net.load_state_dict(state)
    return net.eval()
