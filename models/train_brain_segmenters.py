"""Train and export the two brain-tissue segmenters of advonnx's built-in suite.

Paschali et al. (MICCAI 2018) compare a UNet with SD-Net (an encoder-decoder without skip
connections). Tiny versions of both, trained on 64 x 64 axial slices (3 mm pixels) of the MNI
ICBM152 2009a template, 4 classes (background, csf_other, gray_matter, white_matter):

* ``brain_unet``: 3 levels (16-32-64 channels) + 128-channel bottleneck, conv3x3-BN-ReLU x 2
  per level, ConvTranspose2d(2, stride 2) upsampling and Concat skip connections.
* ``brain_sdnet``: SD-Net-style encoder-decoder *without* skips: encoder (conv-BN-ReLU x 2 +
  maxpool) x 2 and a 16 x 16 conv-BN-ReLU bottleneck (32-64-64 channels), decoder (nearest
  Upsample (ONNX Resize, mode nearest) + conv-BN-ReLU x 2) x 2, 1x1 classifier. (A 3-pool
  version with one conv per level plateaued at mean Dice ~0.64.) The original SD-Net decodes with max-unpooling (indices from the encoder's
  pooling); ONNX MaxUnpool is awkward to export and has no simple gradient rule for advonnx's
  ONNX autodiff, so nearest upsampling replaces it.

Standard training (no adversarial training): Adam, loss = cross-entropy + soft Dice (foreground
classes), fixed seeds, deterministic algorithms, 2 CPU threads. Augmentation (training only):
left-right flip, integer shifts of up to 2 pixels (torch.roll; wrapped pixels are background),
global intensity scale 0.95..1.05. Training data: ``models/_work/brain_slices_train.npz``.
Exported to ``advonnx/suites/models/<name>.onnx`` (input "image" (batch, 1, 64, 64) in [0, 1],
output "logits" (batch, 4, 64, 64), raw logits). Test metrics are computed with onnxruntime on
the shipped ``advonnx/suites/data/brain_slices_test.npz`` and written to ``models/metrics.json``:
``test_mean_dice`` = Dice per sample and foreground class (1..3), averaged over classes present
in the sample's truth or prediction, then over samples; ``test_dice_per_class_pooled`` = Dice
per class with all test pixels pooled.

Usage: python models/train_brain_segmenters.py [--only brain_unet|brain_sdnet]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import SUITE_MODELS, dice_per_class, export_and_check, make_deterministic, pytorch_metadata, train_all  # noqa: E402

CLASS_NAMES = "background,csf_other,gray_matter,white_matter"
N_CLASSES = 4


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class BrainUNet(nn.Module):
    def __init__(self, c: int = 16):
        super().__init__()
        self.e1, self.e2, self.e3 = _block(1, c), _block(c, 2 * c), _block(2 * c, 4 * c)
        self.bott = _block(4 * c, 8 * c)
        self.u3 = nn.ConvTranspose2d(8 * c, 4 * c, 2, stride=2)
        self.d3 = _block(8 * c, 4 * c)
        self.u2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.d2 = _block(4 * c, 2 * c)
        self.u1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.d1 = _block(2 * c, c)
        self.out = nn.Conv2d(c, N_CLASSES, 1)

    def forward(self, x):
        e1 = self.e1(x)  # 64
        e2 = self.e2(F.max_pool2d(e1, 2))  # 32
        e3 = self.e3(F.max_pool2d(e2, 2))  # 16
        b = self.bott(F.max_pool2d(e3, 2))  # 8
        d3 = self.d3(torch.cat([self.u3(b), e3], 1))
        d2 = self.d2(torch.cat([self.u2(d3), e2], 1))
        d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
        return self.out(d1)


def _cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class BrainSDNet(nn.Module):
    def __init__(self, c: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            _cbr(1, c),
            _cbr(c, c),
            nn.MaxPool2d(2),  # 32
            _cbr(c, 2 * c),
            _cbr(2 * c, 2 * c),
            nn.MaxPool2d(2),  # 16
            _cbr(2 * c, 2 * c),
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            _cbr(2 * c, 2 * c),
            _cbr(2 * c, c),  # 32
            nn.Upsample(scale_factor=2, mode="nearest"),
            _cbr(c, c),
            _cbr(c, c),  # 64
            nn.Conv2d(c, N_CLASSES, 1),
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))


# name -> (constructor, epochs, learning rate, seed)
CONFIGS = {
    "brain_unet": (BrainUNet, 8, 3e-3, 0),  # 8 epochs: clean Dice matched to brain_sdnet (see README)
    "brain_sdnet": (BrainSDNet, 120, 3e-3, 0),
}
BATCH = 8


def soft_dice_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(1)[:, 1:]
    t = F.one_hot(y, N_CLASSES).permute(0, 3, 1, 2).float()[:, 1:]
    inter = (p * t).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + t.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()


def augment(xb, yb, gen):
    flip = torch.rand(len(xb), generator=gen) < 0.5
    xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
    yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
    xs, ys = [], []
    shifts = torch.randint(-2, 3, (len(xb), 2), generator=gen)
    for i in range(len(xb)):
        s = (int(shifts[i, 0]), int(shifts[i, 1]))
        xs.append(torch.roll(xb[i], s, (-2, -1)))
        ys.append(torch.roll(yb[i], s, (-2, -1)))
    scale = 0.95 + 0.1 * torch.rand(len(xb), 1, 1, 1, generator=gen)
    return (torch.stack(xs) * scale).clamp(0.0, 1.0), torch.stack(ys)


def mean_dice(pred: np.ndarray, y: np.ndarray) -> float:
    per_sample = []
    for p, t in zip(pred, y, strict=True):
        d = [v for v in dice_per_class(p, t, N_CLASSES)[1:] if not np.isnan(v)]
        per_sample.append(np.mean(d))
    return float(np.mean(per_sample))


def train_one(name: str, train: dict, test: dict) -> dict:
    ctor, epochs, lr, seed = CONFIGS[name]
    make_deterministic(seed)
    # denormal floats appeared late in training and made CPU convolutions ~10x slower
    torch.set_flush_denormal(True)
    model = ctor()
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.from_numpy(train["x"])
    y = torch.from_numpy(train["y"])
    steps_per_epoch = len(x) // BATCH
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    xte = torch.from_numpy(test["x"])
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            xb, yb = augment(x[idx], y[idx], gen)
            out = model(xb)
            loss = F.cross_entropy(out, yb) + soft_dice_loss(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        if (epoch + 1) % 10 == 0 or epoch == 0:
            model.eval()
            with torch.no_grad():
                d = mean_dice(model(xte).argmax(1).numpy(), test["y"])
            print(
                f"{name} epoch {epoch + 1}/{epochs}: loss {loss_sum / steps_per_epoch:.4f} "
                f"test mean Dice {d:.4f} ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    train_time = time.perf_counter() - t0

    path = SUITE_MODELS / f"{name}.onnx"
    meta = pytorch_metadata(
        "segmentation",
        "brain-tissue-seg",
        CLASS_NAMES,
        (
            f"standard training, {epochs} epochs, Adam one-cycle max lr {lr:g}, batch {BATCH}, "
            f"cross-entropy + soft Dice, flip/shift/intensity augmentation, seed {seed}"
        ),
    )
    exporter, logits, max_diff = export_and_check(model, test["x"], path, meta, batch=32)
    pred = logits.argmax(1)
    md = mean_dice(pred, test["y"])
    pooled = dice_per_class(pred, test["y"], N_CLASSES)
    pix = float((pred == test["y"]).mean())
    print(
        f"{name}: onnxruntime test mean Dice {md:.4f}, pooled {np.round(pooled, 4).tolist()}, "
        f"pixel acc {pix:.4f} (max |ort - torch| {max_diff:.2e})"
    )
    return {
        "task": "segmentation",
        "dataset": "brain-tissue-seg",
        "test_data": "advonnx/suites/data/brain_slices_test.npz",
        "n_test": int(len(test["y"])),
        "test_mean_dice": round(md, 4),
        "test_dice_per_class_pooled": [round(v, 4) for v in pooled],
        "test_pixel_accuracy": round(pix, 4),
        "params": int(n_params),
        "onnx_bytes": path.stat().st_size,
        "train_time_s": round(train_time, 1),
        "epochs": epochs,
        "exporter": exporter,
        "max_abs_diff_ort_vs_torch": max_diff,
    }


if __name__ == "__main__":
    sys.exit(
        train_all(__doc__, CONFIGS, "brain_slices_train.npz", "brain_slices_test.npz", train_one, "test_mean_dice")
    )
