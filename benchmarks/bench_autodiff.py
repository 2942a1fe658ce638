"""Forward + backward time of advonnx's ONNX gradient graph (onnxruntime) vs torch.autograd.

Same nets, same weights, batch 32, CPU, 2 threads on both sides; the two are measured
alternately in one process and the median of the repeats is reported. Run:

    python benchmarks/bench_autodiff.py [--batch 32] [--repeats 15] [--exporters torchscript]

Prints a Markdown table and writes benchmarks/results/autodiff.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# On a shared or busy host, spinning worker threads (OpenMP in torch, onnxruntime's pool)
# make both sides many times slower and the comparison meaningless: threads wait passively
# unless --spin is given. Must be set before torch is imported.
SPIN = "--spin" in sys.argv
if not SPIN:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from _benchlib import markdown_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from advonnx.autodiff import GRAD_INPUT_LABEL, GRAD_INPUT_MASK, gradient_model  # noqa: E402
from tests.autodiff.nets import export, make_net  # noqa: E402

NETS = ("small_cnn", "resnet", "mobilenet", "unet")
THREADS = 2


def session(model) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN else "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def bench(name: str, batch: int, repeats: int, dynamo: bool) -> dict:
    net = make_net(name)
    for p in net.parameters():
        p.requires_grad_(False)
    seg = name == "unet"
    loss = "seg_ce" if seg else "ce"
    gm = gradient_model(export(net, dynamo=dynamo), loss=loss)
    sess = session(gm)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *net.input_shape)).astype(np.float32)
    with torch.no_grad():
        z = net(torch.as_tensor(x))
    y = rng.integers(0, z.shape[1], (batch, *z.shape[2:]) if seg else (batch,)).astype(np.int64)
    feed = {gm.graph.input[0].name: x, GRAD_INPUT_LABEL: y}
    if seg:
        feed[GRAD_INPUT_MASK] = np.ones(y.shape, np.float32)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)

    def run_ort():
        return sess.run(None, feed)

    def run_torch():
        xr = xt.clone().requires_grad_(True)
        per = F.cross_entropy(net(xr), yt, reduction="none")
        if seg:
            per = per.flatten(1).mean(1)
        (g,) = torch.autograd.grad(per.sum(), xr)
        return g

    for _ in range(3):
        run_ort()
        run_torch()
    t_ort, t_torch = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_ort()
        t1 = time.perf_counter()
        run_torch()
        t2 = time.perf_counter()
        t_ort.append(t1 - t0)
        t_torch.append(t2 - t1)
    g_ort = run_ort()[2]
    g_torch = run_torch().numpy()
    err = float(np.linalg.norm(g_ort - g_torch) / np.linalg.norm(g_torch))
    mo, mt = statistics.median(t_ort), statistics.median(t_torch)
    return {
        "net": name,
        "batch": batch,
        "exporter": "dynamo" if dynamo else "torchscript",
        "ort_ms": mo * 1e3,
        "torch_ms": mt * 1e3,
        "ratio": mo / mt,
        "grad_rel_err": err,
        "ort_min_ms": min(t_ort) * 1e3,
        "torch_min_ms": min(t_torch) * 1e3,
        "grad_nodes": len(gm.graph.node),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument(
        "--exporters",
        default="torchscript,dynamo",
        help="torch.onnx exporters to compare: torchscript (dynamo=False), dynamo",
    )
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--spin", action="store_true", help="let worker threads spin (faster on an otherwise idle machine)")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()[0]
    rows = [
        bench(n, args.batch, args.repeats, exporter == "dynamo")
        for exporter in args.exporters.split(",")
        for n in args.nets.split(",")
    ]
    load = max(load_before, os.getloadavg()[0])
    print(
        f"\nforward+backward, batch {args.batch}, CPU, {THREADS} threads "
        f"({'spinning' if SPIN else 'passive wait'}), median of "
        f"{args.repeats} (onnxruntime {ort.__version__}, torch {torch.__version__}); "
        f"host load average {load:.1f} on {os.cpu_count()} cores\n"
    )
    print(
        markdown_table(
            [
                "net",
                "exporter",
                "onnxruntime (ms):",
                "torch (ms):",
                "ort / torch:",
                "min: ort / torch (ms):",
                "grad rel. err:",
            ],
            [
                [
                    r["net"],
                    r["exporter"],
                    f"{r['ort_ms']:.1f}",
                    f"{r['torch_ms']:.1f}",
                    f"{r['ratio']:.2f}x",
                    f"{r['ort_min_ms']:.1f} / {r['torch_min_ms']:.1f}",
                    f"{r['grad_rel_err']:.1e}",
                ]
                for r in rows
            ],
        )
    )
    write_results(
        "autodiff",
        {
            "threads": THREADS,
            "spin": SPIN,
            "load_average": load,
            "batch": args.batch,
            "repeats": args.repeats,
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
