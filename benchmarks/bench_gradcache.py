"""First-setting overhead of exact gradients with and without the on-disk gradient cache
(advonnx/gradcache.py), on a VGG16-sized network.

The network: VGG16's 13 convolutions (64-64-M-128-128-M-256x3-M-512x3-M-512x3-M, each with
BatchNorm and ReLU) and a 512-512-10 head on 3x32x32 inputs, 15 M parameters, random weights,
exported with torch.onnx. Each measurement is a fresh process (as a second `advonnx run` is):
load the model, predict once (a run predicts the clean samples before attacking) and import
array-api-compat's NumPy namespace (the attack loop's first, gradient-free cost), time the
first ``value_and_grad`` (batch 8, cross-entropy) and three more.
Overhead = first call - median of the later ones (building and opening the gradient session).
Cases: ``off`` (ADVONNX_CACHE=0, what every run paid before), ``cold`` (empty cache: builds
and stores) and ``warm`` (the same cache again: the second run). Writes
benchmarks/results/gradcache.json and prints a Markdown table.

    python benchmarks/bench_gradcache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _benchlib import ROOT, markdown_table, write_results

CHILD = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import advonnx
m = advonnx.load_model(sys.argv[1], device="cpu", value_range="0,1")
load = time.perf_counter() - t0
x = np.random.default_rng(0).uniform(0, 1, (8, 3, 32, 32)).astype(np.float32)
y = np.arange(8) % 10
m.predict(x)  # a run predicts the clean samples first: imports and the inference session are warm
from advonnx.xp import namespace
namespace(x)  # array-api-compat's lazy NumPy wrapper (about 1 s under load), not a gradient cost
times = []
for _ in range(4):
    t = time.perf_counter()
    loss, grad = m.value_and_grad(x, y, loss="ce", gradient="exact")
    times.append(time.perf_counter() - t)
np.save(sys.argv[2], grad)
print(json.dumps({"load_s": load, "first_s": times[0], "later_s": times[1:]}))
"""


def vgg16_like(path: Path) -> int:
    import torch
    from torch import nn

    torch.manual_seed(0)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    torch.onnx.export(
        net,
        torch.zeros(1, 3, 32, 32),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}},
        dynamo=False,
    )
    return sum(p.numel() for p in net.parameters())


def measure(model: Path, cache: Path, grad_out: Path, enabled: bool) -> dict:
    env = {
        **os.environ,
        "ADVONNX_CACHE_DIR": str(cache),
        "ADVONNX_CACHE": "1" if enabled else "0",
        "PYTHONPATH": str(ROOT),
    }
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(grad_out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=True,
    )
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["steady_s"] = statistics.median(out["later_s"])
    out["overhead_s"] = out["first_s"] - out["steady_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="cold/warm pairs, each with a fresh cache")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gradcache-"))
    model = tmp / "vgg16_like.onnx"
    params = vgg16_like(model)
    runs: dict[str, list[dict]] = {"off": [], "cold": [], "warm": []}
    grads = {}
    for i in range(args.repeats):
        cache = tmp / f"cache{i}"
        for case, enabled in (("off", False), ("cold", True), ("warm", True)):
            runs[case].append(measure(model, cache, tmp / f"{case}.npy", enabled))
            grads[case] = np.load(tmp / f"{case}.npy")
        entry_bytes = sum(p.stat().st_size for p in (cache / "grad").glob("*.onnx"))
    med = {
        case: {k: statistics.median(r[k] for r in rs) for k in ("load_s", "first_s", "steady_s", "overhead_s")}
        for case, rs in runs.items()
    }
    ratio = med["warm"]["overhead_s"] / med["cold"]["overhead_s"]
    ratio_off = med["warm"]["overhead_s"] / med["off"]["overhead_s"]
    diff = max(float(np.abs(grads[c] - grads["off"]).max()) for c in ("cold", "warm"))
    print(
        markdown_table(
            ["case", "model load s:", "first value_and_grad s:", "later calls s:", "first-setting overhead s:"],
            [
                [c, f"{m['load_s']:.2f}", f"{m['first_s']:.2f}", f"{m['steady_s']:.2f}", f"{m['overhead_s']:.2f}"]
                for c, m in med.items()
            ],
        )
    )
    print(
        f"\nwarm overhead / cold overhead = {ratio:.3f}; warm / off = {ratio_off:.3f}; "
        f"cache entry {entry_bytes / 1e6:.0f} MB; max |grad difference| vs off = {diff:.2e}"
    )
    write_results(
        "gradcache",
        {
            "model": "VGG16-like (13 conv + BN + ReLU, 512-512-10 head), 3x32x32",
            "parameters": params,
            "batch": 8,
            "threads": os.environ.get("ADVONNX_THREADS", "onnxruntime default"),
            "load_average": os.getloadavg(),
            "repeats": args.repeats,
            "median": med,
            "runs": runs,
            "warm_over_cold_overhead": ratio,
            "warm_over_off_overhead": ratio_off,
            "entry_bytes": entry_bytes,
            "max_abs_grad_difference": diff,
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
    )


if __name__ == "__main__":
    main()
