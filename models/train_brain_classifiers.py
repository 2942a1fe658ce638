"""Train and export the two brain-tissue patch classifiers of advonnx's built-in suite.

In the spirit of Paschali et al. (MICCAI 2018): two different architectures trained to about the
same clean accuracy, so that the suite shows how far their robustness can differ.

* ``brain_cnn``: plain CNN, 3 x (conv3x3 - ReLU - maxpool2), then linear - ReLU - linear.
* ``brain_mobilenet``: MobileNet-style: conv3x3 stem, depthwise-separable blocks
  (depthwise conv3x3 - BN - ReLU - pointwise conv1x1 - BN - ReLU), global average pool, linear.
* ``brain_cnn_noise``: ``brain_cnn``'s architecture trained with Gaussian noise augmentation of
  sigma 0.25 (value units of [0, 1] inputs) on every batch, as Cohen et al. (ICML 2019) train
  the base classifiers of randomized smoothing: the model whose certificates mean something.

Standard training (no adversarial training; brain_cnn_noise: Gaussian noise), Adam, cross-entropy, fixed seeds, deterministic
algorithms, 2 CPU threads. Training data: ``models/_work/brain_patches_train.npz`` from
``models/build_brain_data.py``. Exported to ``advonnx/suites/models/<name>.onnx`` (input
"image" (batch, 1, 32, 32) in [0, 1], output "logits" (batch, 3), raw logits). Clean accuracy is
measured with onnxruntime on the shipped ``advonnx/suites/data/brain_patches_test.npz`` and
written to ``models/metrics.json``.

Usage: python models/train_brain_classifiers.py [--only brain_cnn|brain_mobilenet|brain_cnn_noise]
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import SUITE_MODELS, export_and_check, make_deterministic, per_class_accuracy, pytorch_metadata, train_all  # noqa: E402

CLASS_NAMES = "csf_other,gray_matter,white_matter"


class BrainCNN(nn.Module):
    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x):
        return self.head(self.features(x))


def _sep(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class BrainMobileNet(nn.Module):
    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            _sep(16, 32, 2),  # 16x16
            _sep(32, 32, 1),
            _sep(32, 64, 2),  # 8x8
            _sep(64, 64, 1),
            _sep(64, 128, 2),  # 4x4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, n_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# name -> (constructor, epochs, learning rate, seed, Gaussian noise sigma of the augmentation)
CONFIGS = {
    "brain_cnn": (BrainCNN, 8, 1e-3, 0, 0.0),
    "brain_mobilenet": (BrainMobileNet, 8, 1e-3, 0, 0.0),
    "brain_cnn_noise": (BrainCNN, 12, 1e-3, 0, 0.25),
}
BATCH = 128


def train_one(name: str, train: dict, test: dict) -> dict:
    ctor, epochs, lr, seed, sigma = CONFIGS[name]
    make_deterministic(seed)
    model = ctor()
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.from_numpy(train["x"])
    y = torch.from_numpy(train["y"])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * (len(x) // BATCH))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x) - BATCH + 1, BATCH):
            idx = perm[i : i + BATCH]
            xb, yb = x[idx], y[idx]
            # light augmentation: global intensity scale 0.95..1.05 (clipped to [0, 1])
            scale = 0.95 + 0.1 * torch.rand(len(xb), 1, 1, 1, generator=gen)
            xb = (xb * scale).clamp_(0.0, 1.0)
            if sigma:  # randomized-smoothing training: the noise is not clipped (Cohen et al.)
                xb = xb + sigma * torch.randn(xb.shape, generator=gen)
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            total += len(yb)
        model.eval()
        with torch.no_grad():
            te_acc = float((model(torch.from_numpy(test["x"])).argmax(1).numpy() == test["y"]).mean())
        print(
            f"{name} epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f} "
            f"train acc {correct / total:.4f} test acc {te_acc:.4f} "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    train_time = time.perf_counter() - t0

    path = SUITE_MODELS / f"{name}.onnx"
    meta = pytorch_metadata(
        "classification",
        "brain-tissue-patch",
        CLASS_NAMES,
        (
            (
                f"Gaussian noise augmentation sigma {sigma:g} (randomized smoothing), "
                if sigma
                else "standard training, "
            )
            + f"{epochs} epochs, Adam lr {lr:g} cosine, batch {BATCH}, "
            f"intensity-scale augmentation 0.95-1.05, seed {seed}"
        ),
    )
    exporter, logits, max_diff = export_and_check(model, test["x"], path, meta)
    acc = float((logits.argmax(1) == test["y"]).mean())
    per_class = per_class_accuracy(logits.argmax(1), test["y"], len(test["class_names"]))
    print(f"{name}: onnxruntime test accuracy {acc:.4f} (max |ort - torch| {max_diff:.2e})")
    return {
        "task": "classification",
        "dataset": "brain-tissue-patch",
        "test_data": "advonnx/suites/data/brain_patches_test.npz",
        "n_test": int(len(test["y"])),
        "test_accuracy": round(acc, 4),
        "test_accuracy_per_class": per_class,
        "params": int(n_params),
        "onnx_bytes": path.stat().st_size,
        "train_time_s": round(train_time, 1),
        "epochs": epochs,
        **({"noise_sigma": sigma} if sigma else {}),
        "exporter": exporter,
        "max_abs_diff_ort_vs_torch": max_diff,
    }


if __name__ == "__main__":
    sys.exit(
        train_all(__doc__, CONFIGS, "brain_patches_train.npz", "brain_patches_test.npz", train_one, "test_accuracy")
    )
