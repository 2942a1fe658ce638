"""PGD-20 wall time: advonnx (exact ONNX gradients, onnxruntime) vs torchattacks on the same
weights (the suite's brain_cnn), CPU, 2 threads each, 300 samples, measured alternately.

Also prints the per-sample agreement of the success decisions. Writes
benchmarks/results/attacks.json.

    python benchmarks/bench_attacks.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _benchlib import brain_cnn_case, markdown_table, write_results

import advonnx


def main() -> None:
    import torchattacks
    from reference.brain_cnn_torch import brain_cnn_from_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    path, x, y = brain_cnn_case()
    model = advonnx.load_model(path, threads=2)
    net = brain_cnn_from_onnx(path)
    eps, alpha, steps = 4 / 255, 1 / 255, 20
    atk = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False)
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = advonnx.attack(
            model, x, y, "pgd", eps=eps, steps=steps, step_size=alpha, random_start=False, gradient="exact"
        )
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = atk(torch.from_numpy(x), torch.from_numpy(y)).numpy()
        t_theirs.append(time.perf_counter() - t0)
    a, b = model.classify(ours.x_adv) != y, model.classify(theirs) != y
    result = {
        "model": "brain_cnn",
        "samples": int(len(x)),
        "eps": eps,
        "alpha": alpha,
        "steps": steps,
        "advonnx_s": statistics.median(t_ours),
        "torchattacks_s": statistics.median(t_theirs),
        "ratio": statistics.median(t_ours) / statistics.median(t_theirs),
        "agreement": float((a == b).mean()),
        "robust_acc_advonnx": float(1 - a.mean()),
        "robust_acc_torchattacks": float(1 - b.mean()),
    }
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
            [
                [
                    "PGD-20 linf 4/255",
                    str(len(x)),
                    f"{result['advonnx_s']:.2f}",
                    f"{result['torchattacks_s']:.2f}",
                    f"{result['ratio']:.2f}",
                    f"{result['agreement']:.3f}",
                    f"{result['robust_acc_advonnx']:.3f} / {result['robust_acc_torchattacks']:.3f}",
                ]
            ],
        )
    )
    write_results("attacks", result)


if __name__ == "__main__":
    main()
