"""DeepFool and JSMA time per image: advonnx (onnxruntime, exact VJPs) vs foolbox 3 / ART on the
same brain_cnn weights (PyTorch twin), CPU, 2 threads each. Writes benchmarks/results/paper_attacks.json.

    python benchmarks/bench_paper_attacks.py [--n 64]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from _benchlib import brain_cnn_case, write_results


def timed(fn, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    import torch
    from reference.brain_cnn_torch import brain_cnn_from_onnx

    import advonnx

    torch.set_num_threads(2)
    path, x_all, y_all = brain_cnn_case()
    model = advonnx.load_model(path, threads=2)
    net = brain_cnn_from_onnx(path)
    ok = model.classify(x_all) == y_all
    x, y = x_all[ok][: args.n], y_all[ok][: args.n]
    target = (y + 1 + np.random.default_rng(0).integers(0, 2, y.shape)) % 3
    model.value_and_grad(x[:2], cotangent=np.zeros((2, 3), np.float32), gradient="exact")  # build graph once
    results = {"n": len(x), "host": platform.node(), "device": "cpu, 2 threads", "per_image_ms": {}}
    per = results["per_image_ms"]
    per["deepfool_l2/advonnx"] = 1e3 * timed(lambda: advonnx.attack(model, x, y, "deepfool", norm="l2")) / len(x)
    per["jsma/advonnx"] = (
        1e3
        * timed(lambda: advonnx.attack(model, x, y, "jsma", theta=1.0, gamma=0.1, targeted=True, target=target))
        / len(x)
    )
    try:
        import foolbox as fb

        fm = fb.PyTorchModel(net, bounds=(0, 1))
        crit = fb.criteria.Misclassification(torch.from_numpy(y))
        atk = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
        per["deepfool_l2/foolbox"] = 1e3 * timed(lambda: atk.run(fm, torch.from_numpy(x), crit)) / len(x)
    except ImportError:
        results["foolbox"] = "not installed"
    try:
        from art.attacks.evasion import SaliencyMapMethod
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(
            net, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 32, 32), nb_classes=3, clip_values=(0.0, 1.0)
        )
        jsma = SaliencyMapMethod(clf, theta=1.0, gamma=0.1, batch_size=128, verbose=False)
        per["jsma/art"] = 1e3 * timed(lambda: jsma.generate(x, y=np.eye(3, dtype=np.float32)[target])) / len(x)
    except ImportError:
        results["art"] = "not installed"
    write_results("paper_attacks", results)
    for k, v in per.items():
        print(f"{k:24s} {v:8.2f} ms/image")


if __name__ == "__main__":
    main()
