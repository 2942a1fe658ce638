"""Throughput on each usable device: predictions/s, PGD steps/s (gradient evaluations of a
batch per second) and a PGD-10 comparison against torchattacks on the same network and device.

Networks: the suite's brain_cnn (1×32×32) and a 224×224×3 CNN built here with random weights
(exported with torch.onnx). CPU always; CUDA when `advonnx doctor` says it is usable (then
inputs are CuPy arrays and onnxruntime reads them through IO binding). Writes
benchmarks/results/throughput.json and prints a Markdown table.

    python benchmarks/bench_throughput.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _benchlib import brain_cnn_case, markdown_table, write_results

import advonnx
from advonnx.backend import cuda_status


def cnn224():
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 5),
    ).eval()


def rate(fn, seconds: float, items: int) -> float:
    fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn()
        n += items
    return n / (time.perf_counter() - t0)


def main() -> None:
    import torchattacks
    from reference.brain_cnn_torch import brain_cnn_from_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    brain = brain_cnn_case()[0]
    tmp = Path(tempfile.mkdtemp())
    net224 = cnn224()
    torch.onnx.export(
        net224,
        torch.zeros(1, 3, 224, 224),
        str(tmp / "cnn224.onnx"),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}},
        dynamo=False,
    )
    nets = {
        "brain_cnn": (brain, brain_cnn_from_onnx(brain), (1, 32, 32), 256),
        "cnn224": (str(tmp / "cnn224.onnx"), net224, (3, 224, 224), 32),
    }
    devices = ["cpu"] + (["cuda"] if cuda_status(0)[0] else [])
    rows = []
    for dev in devices:
        for name, (path, net, shape, batch) in nets.items():
            m = advonnx.load_model(path, device=dev, batch_size=batch, value_range="0,1")
            x = np.random.default_rng(0).uniform(0, 1, (batch, *shape)).astype(np.float32)
            y = np.zeros(batch, np.int64)
            xs, ys = x, y
            if dev == "cuda":
                import cupy

                xs, ys = cupy.asarray(x), cupy.asarray(y)
            pred = rate(lambda: m.predict(xs), args.seconds, batch)
            grad = rate(lambda: m.value_and_grad(xs, ys), args.seconds, 1)
            t0 = time.perf_counter()
            advonnx.attack(m, xs, ys, "pgd", eps=4 / 255, steps=10, step_size=1 / 255, random_start=False)
            ours = time.perf_counter() - t0
            tnet = net.to(dev)
            atk = torchattacks.PGD(tnet, eps=4 / 255, alpha=1 / 255, steps=10, random_start=False)
            tx, ty = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
            t0 = time.perf_counter()
            atk(tx, ty)
            if dev == "cuda":
                torch.cuda.synchronize()
            theirs = time.perf_counter() - t0
            rows.append(
                {
                    "device": dev,
                    "net": name,
                    "batch": batch,
                    "predictions_per_s": pred,
                    "pgd_steps_per_s": grad,
                    "pgd10_s": ours,
                    "torchattacks_pgd10_s": theirs,
                    "ratio": ours / theirs,
                }
            )
    print(
        markdown_table(
            [
                "device",
                "net",
                "batch:",
                "predictions/s:",
                "PGD steps/s:",
                "PGD-10 s (advonnx):",
                "PGD-10 s (torchattacks):",
                "ratio:",
            ],
            [
                [
                    r["device"],
                    r["net"],
                    str(r["batch"]),
                    f"{r['predictions_per_s']:,.0f}",
                    f"{r['pgd_steps_per_s']:.1f}",
                    f"{r['pgd10_s']:.2f}",
                    f"{r['torchattacks_pgd10_s']:.2f}",
                    f"{r['ratio']:.2f}",
                ]
                for r in rows
            ],
        )
    )
    write_results("throughput", {"devices": devices, "threads": 2, "rows": rows})


if __name__ == "__main__":
    main()
