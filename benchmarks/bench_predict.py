"""advonnx's overhead over a raw onnxruntime InferenceSession.run, for prediction.

Both run the same model file with the same session options (ORT_ENABLE_ALL, 2 intra-op
threads), measured alternately in one process; the ratio compares the fastest repeat of each
(the minimum is what the code costs; the two sessions' spinning thread pools make medians of
alternating runs noisy on 2 cores). Medians are reported beside it. Target: ratio ≤ 1.10.
Writes benchmarks/results/predict.json and prints a Markdown table.

    python benchmarks/bench_predict.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from _benchlib import markdown_table, write_results

import advonnx
from advonnx.suite import load_suite


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _scores(raw: ort.InferenceSession, output: str, input_name: str, x: np.ndarray) -> np.ndarray:
    """The scores output advonnx reads, from the raw session; ZipMap lists of dicts as arrays."""
    out = raw.run([output], {input_name: x})[0]
    if isinstance(out, list):  # skl2onnx/onnxmltools ZipMap: one {class: probability} per sample
        out = np.array([[d[k] for k in sorted(d)] for d in out], dtype=np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    suite = load_suite("quick")
    rows = []
    for entry in suite.models:
        model = advonnx.load_model(entry.path, threads=args.threads, batch_size=256)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        raw = ort.InferenceSession(entry.path, sess_options=so, providers=["CPUExecutionProvider"])
        name = raw.get_inputs()[0].name
        for batch in (1, 32, 256):
            x = np.random.default_rng(0).uniform(0, 1, (batch,) + tuple(model.spec.input_shape[1:])).astype(np.float32)
            np.testing.assert_allclose(
                model.predict(x), _scores(raw, model.spec.output_name, name, x), rtol=1e-5, atol=1e-5
            )
            reps = args.repeats if batch > 1 else args.repeats * 20
            t_raw, t_adv = [], []
            for _ in range(5):  # alternate to share drift between both
                t_raw += _time(lambda: raw.run(None, {name: x}), reps // 5)
                t_adv += _time(lambda: model.predict(x), reps // 5)
            r, a = min(t_raw), min(t_adv)
            rows.append(
                {
                    "model": entry.name,
                    "batch": batch,
                    "raw_ms": 1e3 * r,
                    "advonnx_ms": 1e3 * a,
                    "ratio": a / r,
                    "images_per_s": batch / a,
                    "raw_median_ms": 1e3 * statistics.median(t_raw),
                    "advonnx_median_ms": 1e3 * statistics.median(t_adv),
                }
            )
    print(
        markdown_table(
            ["model", "batch:", "raw ORT ms (min):", "advonnx ms (min):", "ratio:", "images/s:", "medians ms:"],
            [
                [
                    r["model"],
                    str(r["batch"]),
                    f"{r['raw_ms']:.3f}",
                    f"{r['advonnx_ms']:.3f}",
                    f"{r['ratio']:.3f}",
                    f"{r['images_per_s']:,.0f}",
                    f"{r['raw_median_ms']:.3f} / {r['advonnx_median_ms']:.3f}",
                ]
                for r in rows
            ],
        )
    )
    write_results("predict", {"threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
