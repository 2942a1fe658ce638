"""Randomized-smoothing throughput: model evaluations per second of advonnx's CERTIFY sampling
loop (noise drawn, blocks through onnxruntime, decisions counted) against raw
``InferenceSession.run`` predictions per second at the same batch size (the issue's bar: ≥ 0.8×).

    python benchmarks/bench_certify.py [--threads 2] [--block 1024]
"""

from __future__ import annotations

import argparse
import os
import time

import _benchlib
import numpy as np
import onnxruntime as ort

import advonnx
from advonnx.certify import Smoother
from advonnx.xp import Random


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--draws", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ["ADVONNX_THREADS"] = str(args.threads)
    path, x, _ = _benchlib.brain_cnn_case()
    x = x[: args.samples]
    model = advonnx.load_model(path, batch_size=args.block, threads=args.threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    raw = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    name = raw.get_inputs()[0].name
    batch = np.repeat(x[:1], args.block, axis=0) + np.random.default_rng(0).normal(
        0, 0.1, (args.block, *x.shape[1:])
    ).astype(np.float32)
    evaluations = args.samples * args.draws
    raw_rates, ours_rates = [], []
    for _ in range(args.repeats):  # alternate, so load affects both alike
        t0 = time.perf_counter()
        for _ in range(evaluations // args.block):
            raw.run(None, {name: batch})
        raw_rates.append(evaluations / (time.perf_counter() - t0))
        smoother = Smoother(model, sigma=0.25, block=args.block, rng=Random(0))
        t0 = time.perf_counter()
        smoother.counts(x, args.draws)
        ours_rates.append(evaluations / (time.perf_counter() - t0))
    raw_best, ours_best = max(raw_rates), max(ours_rates)
    print(
        _benchlib.markdown_table(
            ["model", "batch:", "raw session.run /s:", "advonnx smoothing /s:", "ratio:"],
            [["brain_cnn", str(args.block), f"{raw_best:,.0f}", f"{ours_best:,.0f}", f"{ours_best / raw_best:.2f}"]],
        )
    )
    _benchlib.write_results(
        "certify",
        {
            "model": "brain_cnn",
            "threads": args.threads,
            "batch": args.block,
            "draws_per_sample": args.draws,
            "samples": args.samples,
            "raw_predictions_per_s": raw_rates,
            "smoothing_evaluations_per_s": ours_rates,
            "ratio_of_best": ours_best / raw_best,
            "note": "best of alternating repeats; smoothing includes noise draws (float32 NumPy) and counting",
        },
    )


if __name__ == "__main__":
    main()
