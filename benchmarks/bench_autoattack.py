"""AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square-5000; cascade) on exact ONNX gradients
vs the faithful torchattacks composition on the same weights (tests/reference/autoattack_torch.py),
CPU, 2 threads each: robust accuracy (AutoAttack's count) and wall time.

Cases: the suite's brain_cnn and brain_mobilenet at linf 2/255 and 4/255 on their test patches,
and a small CNN on scikit-learn's 8x8 digits at linf 0.05 and 0.1 (trained here in seconds). Writes
benchmarks/results/autoattack.json.

    python benchmarks/bench_autoattack.py [--samples 100] [--models brain_cnn,brain_mobilenet,digits]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _benchlib import SUITE_MODELS, brain_cnn_case, markdown_table, write_results

import advonnx


def _cases(names: list[str], tmp: Path):
    from reference.digits_cnn_onnx import digits_cnn
    from reference.sequential_torch import sequential_from_onnx

    _, x, y = brain_cnn_case()
    for name in names:
        if name == "digits":
            path, xd, yd = digits_cnn(tmp / "digits.onnx")
            yield name, str(path), xd, yd, (0.05, 0.1), sequential_from_onnx(path)
        else:
            path = str(SUITE_MODELS / f"{name}.onnx")
            yield name, path, x, y, (2 / 255, 4 / 255), sequential_from_onnx(path)


def main() -> None:
    from reference.autoattack_torch import autoattack_standard

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--models", default="brain_cnn,brain_mobilenet,digits")
    args = ap.parse_args()
    torch.set_num_threads(2)
    results, table = [], []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, x, y, budgets, net in _cases(args.models.split(","), Path(tmp)):
            x, y = x[: args.samples], y[: args.samples].astype(np.int64)
            model = advonnx.load_model(path, threads=2)
            clean_ok = model.classify(x) == y
            for eps in budgets:
                t0 = time.perf_counter()
                ours = advonnx.attack(model, x, y, "autoattack", eps=eps, version="standard", gradient="exact", rng=0)
                t_ours = time.perf_counter() - t0
                t0 = time.perf_counter()
                theirs = autoattack_standard(net, model.classify, x, y, eps=eps, n_classes=model.spec.num_classes)
                t_theirs = time.perf_counter() - t0
                a = clean_ok & (np.asarray(ours.adv_pred) == y)
                stages = {s: int((np.asarray(ours.broken_by) == s).sum()) for s in set(ours.broken_by) if s}
                r = {
                    "model": name,
                    "eps": eps,
                    "samples": int(len(x)),
                    "clean_acc": float(clean_ok.mean()),
                    "robust_acc_advonnx": float(a.mean()),
                    "robust_acc_torchattacks": float(theirs.mean()),
                    "agreement": float((a == theirs).mean()),
                    "advonnx_s": t_ours,
                    "torchattacks_s": t_theirs,
                    "ratio": t_ours / t_theirs,
                    "broken_by_stage": stages,
                }
                results.append(r)
                table.append(
                    [
                        f"{name} linf {eps:.4f}",
                        str(len(x)),
                        f"{r['clean_acc']:.3f}",
                        f"{a.mean():.3f} / {theirs.mean():.3f}",
                        f"{r['agreement']:.3f}",
                        f"{t_ours:.1f}",
                        f"{t_theirs:.1f}",
                        f"{r['ratio']:.2f}",
                    ]
                )
                print(table[-1], flush=True)
                _write(results, load_start)  # after every case: a long run keeps what it measured
    print(
        markdown_table(
            [
                "case",
                "samples:",
                "clean:",
                "robust (ours / theirs)",
                "agreement:",
                "advonnx s:",
                "torchattacks s:",
                "ratio:",
            ],
            table,
        )
    )


def _write(results: list[dict], load_start) -> None:
    import torchattacks

    write_results(
        "autoattack",
        {
            "threads": 2,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "advonnx": advonnx.__version__,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
