"""A multi-label image model made in the tests: 4 findings on 1×16×16 images, independent
sigmoid outputs (the shape of a chest X-ray model), trained briefly in torch and exported to
ONNX with its final Sigmoid.

Finding k is a bright 4×4 blob in quadrant k of a noisy image, present with probability 1/2
independently of the others (so decisions are non-trivial: all 16 label vectors occur). The
same weights give a torch module for references (autograd gradients, a plain torch PGD).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FINDINGS = ("effusion", "nodule", "pneumothorax", "cardiomegaly")
SIZE = 16


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (n, 1, 16, 16) in [0, 1] and ``y`` (n, 4) 0/1: finding k = a blob in quadrant k."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(FINDINGS))) < 0.5).astype(np.int64)
    x = rng.uniform(0.0, 0.35, (n, 1, SIZE, SIZE))
    for k in range(len(FINDINGS)):
        r0, c0 = (k // 2) * 8, (k % 2) * 8
        oy, ox = rng.integers(1, 4, n), rng.integers(1, 4, n)
        amp = rng.uniform(0.35, 0.6, n)
        for i in np.flatnonzero(y[:, k]):
            x[i, 0, r0 + oy[i] : r0 + oy[i] + 4, c0 + ox[i] : c0 + ox[i] + 4] += amp[i]
    return np.clip(x, 0.0, 1.0).astype(np.float32), y


def build_net(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, len(FINDINGS)),
    )


def train(seed: int = 0, steps: int = 100):
    """The logits network after ``steps`` Adam steps of BCE on minibatches of synthetic data (CPU, ~2 s)."""
    import torch

    net = build_net(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = make_data(2048, seed + 100)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).float()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (64,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def export(net, folder: str | Path, name: str = "multilabel.onnx") -> str:
    """``net`` followed by a Sigmoid, exported (TorchScript exporter, opset 17, dynamic batch)."""
    import torch

    path = str(Path(folder) / name)
    model = torch.nn.Sequential(net, torch.nn.Sigmoid()).eval()
    torch.onnx.export(
        model,
        torch.zeros(1, 1, SIZE, SIZE),
        path,
        input_names=["image"],
        output_names=["probs"],
        dynamic_axes={"image": {0: "N"}, "probs": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    return path
