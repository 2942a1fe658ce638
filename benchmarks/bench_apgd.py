"""APGD-100 wall time: advonnx (exact ONNX gradients, onnxruntime) vs torchattacks' APGD on the
same weights (the suite's brain_cnn and brain_mobilenet), CPU, 2 threads each, 300 samples,
linf 2/255, CE and DLR losses, measured alternately.

Also prints robust accuracy (correct clean and attacked, AutoAttack's count) and the per-sample
agreement of the robust flags. advonnx spends one forward pass more per step than torchattacks
(the scores, then a vector-Jacobian product; see advonnx/attacks/apgd.py). Writes
benchmarks/results/apgd.json.

    python benchmarks/bench_apgd.py [--repeats 1] [--steps 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from _benchlib import SUITE_MODELS, brain_cnn_case, markdown_table, write_results

import advonnx


def main() -> None:
    import torchattacks
    from reference.sequential_torch import sequential_from_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(2)
    _, x, y = brain_cnn_case()
    y = y.astype(np.int64)
    eps, steps = 2 / 255, args.steps
    results, table = [], []
    load_start = os.getloadavg()
    for name in ("brain_cnn", "brain_mobilenet"):
        path = str(SUITE_MODELS / f"{name}.onnx")
        model = advonnx.load_model(path, threads=2)
        net = sequential_from_onnx(path)
        clean_ok = model.classify(x) == y
        for loss in ("ce", "dlr"):
            atk = torchattacks.APGD(net, eps=eps, steps=steps, loss=loss, seed=0)
            t_ours, t_theirs = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                ours = advonnx.attack(model, x, y, "apgd", eps=eps, steps=steps, loss=loss, gradient="exact", rng=0)
                t_ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                theirs = atk(torch.from_numpy(x), torch.from_numpy(y)).detach().numpy()
                t_theirs.append(time.perf_counter() - t0)
            a = clean_ok & (ours.adv_pred == y)
            b = clean_ok & (model.classify(theirs) == y)
            r = {
                "model": name,
                "loss": loss,
                "samples": int(len(x)),
                "eps": eps,
                "steps": steps,
                "advonnx_s": statistics.median(t_ours),
                "torchattacks_s": statistics.median(t_theirs),
                "ratio": statistics.median(t_ours) / statistics.median(t_theirs),
                "agreement": float((a == b).mean()),
                "robust_acc_advonnx": float(a.mean()),
                "robust_acc_torchattacks": float(b.mean()),
                "clean_acc": float(clean_ok.mean()),
            }
            results.append(r)
            table.append(
                [
                    f"{name} APGD-{loss.upper()}-{steps} linf 2/255",
                    str(len(x)),
                    f"{r['advonnx_s']:.2f}",
                    f"{r['torchattacks_s']:.2f}",
                    f"{r['ratio']:.2f}",
                    f"{r['agreement']:.3f}",
                    f"{r['robust_acc_advonnx']:.3f} / {r['robust_acc_torchattacks']:.3f}",
                ]
            )
    print(
        markdown_table(
            [
                "attack",
                "samples:",
                "advonnx s:",
                "torchattacks s:",
                "ratio:",
                "agreement:",
                "robust acc (ours / theirs)",
            ],
            table,
        )
    )
    write_results(
        "apgd",
        {
            "threads": 2,
            "repeats": args.repeats,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "advonnx": advonnx.__version__,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
