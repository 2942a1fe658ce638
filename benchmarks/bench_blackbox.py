"""Black-box attacks against the established libraries on the suite's trained brain_cnn.

- Square Linf, 1000 queries, eps 8/255, p_init 0.8, margin loss, vs torchattacks' Square on the
  PyTorch twin with the same weights (and ART's SquareAttack for reference): success rate over
  correctly classified samples and wall time, 3 seeds.
- HopSkipJump L2 vs ART's HopSkipJump: ART's queries are counted by wrapping its predict (its
  float64 inputs cast to float32); advonnx gets ART's mean per-sample spend as ``max_queries``;
  median L2 over the samples both broke, and wall time, 3 seeds.

Writes benchmarks/results/blackbox.json. ``python benchmarks/bench_blackbox.py [--quick]``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from _benchlib import brain_cnn_case, write_results

import advonnx

MODEL = Path(brain_cnn_case()[0])


def correct_samples(model, n: int):
    _, x, y = brain_cnn_case()
    ok = np.nonzero(model.classify(x) == y)[0][:n]
    return x[ok], y[ok]


def square_vs_torchattacks(model, path, x, y, *, seeds=(0, 1, 2), queries=1000, eps=8 / 255, art=True):
    import torch
    import torchattacks as ta
    from reference.brain_cnn_torch import brain_cnn_from_onnx

    net = brain_cnn_from_onnx(str(path)).eval()
    out = {
        "n": int(len(x)),
        "queries": queries,
        "eps": eps,
        "ours": [],
        "torchattacks": [],
        "art": [],
        "ours_time": 0.0,
        "torchattacks_time": 0.0,
        "art_time": 0.0,
        "ours_median_queries": [],
    }
    for seed in seeds:
        t0 = time.perf_counter()
        r = advonnx.attack(model, x, y, "square", rng=seed, norm="linf", eps=eps, max_queries=queries, p_init=0.8)
        out["ours_time"] += time.perf_counter() - t0
        out["ours"].append(float(r.success.mean()))
        out["ours_median_queries"].append(float(np.median(r.queries[r.success])) if r.success.any() else None)
        torch.manual_seed(seed)
        atk = ta.Square(net, norm="Linf", eps=eps, n_queries=queries, p_init=0.8, loss="margin", seed=seed)
        t0 = time.perf_counter()
        xa = atk(torch.from_numpy(x), torch.from_numpy(y).long()).detach().numpy()
        out["torchattacks_time"] += time.perf_counter() - t0
        out["torchattacks"].append(float((model.classify(xa.astype(np.float32)) != y).mean()))
        if art:
            from art.attacks.evasion import SquareAttack
            from art.estimators.classification import BlackBoxClassifierNeuralNetwork

            np.random.seed(seed)
            clf = BlackBoxClassifierNeuralNetwork(
                lambda b: model.predict(b.astype(np.float32)), x.shape[1:], 3, clip_values=(0.0, 1.0)
            )
            sq = SquareAttack(
                clf, norm=np.inf, eps=eps, max_iter=queries, p_init=0.8, nb_restarts=1, batch_size=128, verbose=False
            )
            t0 = time.perf_counter()
            xa = sq.generate(x.astype(np.float32), y=np.eye(3)[y])
            out["art_time"] += time.perf_counter() - t0
            out["art"].append(float((model.classify(xa.astype(np.float32)) != y).mean()))
    p = np.mean(out["torchattacks"])
    out["torchattacks_se"] = float(np.sqrt(p * (1 - p) / len(x)))
    return out


def hsj_vs_art(model, path, x, y, *, seeds=(0, 1, 2), max_iter=10):
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    ours_l2, art_l2, ours_ok, art_ok = [], [], [], []
    t_ours = t_art = 0.0
    spent = []
    for seed in seeds:
        calls = {"rows": 0}

        def predict(b):
            calls["rows"] += len(b)
            return model.predict(np.asarray(b, dtype=np.float32))

        np.random.seed(seed)
        clf = BlackBoxClassifier(predict, x.shape[1:], 3, clip_values=(0.0, 1.0))
        hsj = HopSkipJump(
            clf,
            targeted=False,
            norm=2,
            max_iter=max_iter,
            max_eval=10000,
            init_eval=100,
            init_size=100,
            batch_size=64,
            verbose=False,
        )
        t0 = time.perf_counter()
        xa = hsj.generate(x.astype(np.float32))
        t_art += time.perf_counter() - t0
        xa = np.clip(xa.astype(np.float32), 0, 1)
        per_sample = int(calls["rows"] / len(x))
        spent.append(per_sample)
        art_ok.append(model.classify(xa) != y)
        art_l2.append(np.linalg.norm((xa - x).reshape(len(x), -1), axis=1))
        t0 = time.perf_counter()
        r = advonnx.attack(model, x, y, "hsj", rng=seed, norm="l2", steps=1000, max_queries=per_sample)
        t_ours += time.perf_counter() - t0
        ours_ok.append(r.success)
        ours_l2.append(r.l2)
    joint = [a & b for a, b in zip(ours_ok, art_ok)]
    med_ours = [float(np.median(o[j])) for o, j in zip(ours_l2, joint)]
    med_art = [float(np.median(a[j])) for a, j in zip(art_l2, joint)]
    art_all = [float(np.median(a[ok])) for a, ok in zip(art_l2, art_ok)]
    return {
        "n": int(len(x)),
        "max_iter": max_iter,
        "queries_per_sample": spent,
        "ours_median_l2": med_ours,
        "art_median_l2": med_art,
        "ratio": float(np.mean(med_ours) / np.mean(med_art)),
        "art_spread": float((max(art_all) - min(art_all)) / np.mean(art_all)),
        "ours_success": [float(o.mean()) for o in ours_ok],
        "art_success": [float(a.mean()) for a in art_ok],
        "ours_time": t_ours,
        "art_time": t_art,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    model = advonnx.load_model(MODEL)
    x, y = correct_samples(model, 100)
    import os

    results = {
        "device": "cpu",
        "model": MODEL.name,
        "quick": quick,
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg(),
    }
    results["square_linf"] = square_vs_torchattacks(model, MODEL, x, y, seeds=(0,) if quick else (0, 1, 2))
    print(json.dumps(results["square_linf"], indent=1))
    results["hsj_l2"] = hsj_vs_art(
        model, MODEL, x[:50], y[:50], seeds=(0,) if quick else (0, 1, 2), max_iter=4 if quick else 10
    )
    print(json.dumps(results["hsj_l2"], indent=1))
    sq, hsj = results["square_linf"], results["hsj_l2"]
    results["summary"] = {
        "square_success_ours": float(np.mean(sq["ours"])),
        "square_success_torchattacks": float(np.mean(sq["torchattacks"])),
        "square_success_art": float(np.mean(sq["art"])) if sq["art"] else None,
        "square_time_ratio_vs_torchattacks": sq["ours_time"] / sq["torchattacks_time"],
        "hsj_l2_ratio_vs_art": hsj["ratio"],
        "hsj_time_ratio_vs_art": hsj["ours_time"] / hsj["art_time"],
    }
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results["summary"], indent=1))
    write_results("blackbox", results, indent=1)


if __name__ == "__main__":
    main()
