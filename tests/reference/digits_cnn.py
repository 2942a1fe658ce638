"""Small CNNs unlike the suite's, trained in seconds on sklearn's 8×8 digits (for references).

``digits_cnn(folder, arch=...)`` trains a PyTorch CNN on ``load_digits`` (pixels / 16, so
values in [0, 1]; 10 classes), exports it to ONNX with ``torch.onnx.export`` under ``folder``
(a pytest tmp folder: nothing is cached elsewhere) and returns the ONNX path, the trained
module (same weights, for foolbox / ART) and the held-out split (x: (N, 1, 8, 8) float32,
y: int64). Deterministic for a seed on one thread.
"""

from __future__ import annotations

import numpy as np

ARCHS = ("conv", "wide")


def _net(arch: str):
    from torch import nn

    if arch == "conv":  # two 3×3 convolutions, one max pool, a linear head
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )
    if arch == "wide":  # a 5×5 convolution, average pool, tanh hidden layer
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.Tanh(),
            nn.Linear(64, 10),
        )
    raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")


def digits_cnn(folder, *, arch: str = "conv", seed: int = 0, epochs: int = 30):
    """Train ``arch`` on 1 200 digits, export to ``folder/digits_<arch>.onnx``; return
    ``(path, net, x_test, y_test)`` with the 597 held-out digits."""
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[:1200], order[1200:]
    torch.manual_seed(seed)
    net = _net(arch)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    net.eval()
    path = str(folder / f"digits_{arch}.onnx")
    torch.onnx.export(
        net,
        torch.zeros(1, 1, 8, 8),
        path,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    return path, net, x[test], y[test]
