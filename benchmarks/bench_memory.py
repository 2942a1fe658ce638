"""Peak memory of a run as the dataset grows: streamed (read per block) vs stacked in memory.

Datasets of 600, 6,000 and 60,000 samples of 1x32x32 float32 (2.5, 25 and 246 MB of ``x``) in
an uncompressed ``.npz``, labels 0..2; a tiny CNN (tests/models.py ``small_cnn``: one 3x3
convolution, 6 channels, global average pool, 3 classes). Each size runs in a fresh process:
``Runner`` with FGSM L∞ 8/255 (one setting, chunks of 256, no saved examples, no masking
checks), then the process reports its peak resident set size (``resource.getrusage``,
``ru_maxrss``; and ``VmHWM`` from /proc, the same peak for this process image alone) and wall
time. The parent writes each npz block by block and stays small: on Linux a child's
``ru_maxrss`` starts from its parent's RSS at fork. ``streamed`` is how runs read data (``load_dataset(...,
stream=True)``: blocks of the npz read as needed, one block prefetched); ``stacked`` forces the
old path (the whole ``x`` in one array) for comparison. Growth = peak at the largest size / peak
at the smallest - 1. ``Runner.run`` ends by reading back the table of all rows (60,000 rows of
~70 columns at the largest size); the peak before that is reported too. Writes benchmarks/results/memory.json and prints a Markdown table.

    python benchmarks/bench_memory.py [--sizes 600,6000,60000] [--modes streamed,stacked]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from _benchlib import ROOT, markdown_table, write_results

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[5])
t0 = time.perf_counter()
from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps
if sys.argv[4] == "stacked":
    import advonnx.data
    real = advonnx.data.load_dataset
    advonnx.data.load_dataset = lambda *a, **k: real(*a, **{**k, "stream": False})
suite = Suite(name="mem", models=[ModelEntry("m", sys.argv[1])], datasets=[DatasetEntry("d", sys.argv[2])],
              attacks=[AttackEntry("fgsm", "linf", parse_eps("8/255"))], chunk_size=256, save_examples=0,
              masking_checks=False)
import advonnx.runner
before = {}
read_results = advonnx.runner.read_results
def timed_read(folder):  # the peak before the run's table of all rows is read back
    before["mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return read_results(folder)
advonnx.runner.read_results = timed_read
folder, table = Runner(suite, out=sys.argv[3], batch_size=256).run()
rows = table.num_rows
hwm = next(int(line.split()[1]) for line in open("/proc/self/status", encoding="ascii") if line.startswith("VmHWM"))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "vm_hwm_mb": hwm / 1024,
                  "peak_before_reading_rows_mb": before["mb"],
                  "seconds": time.perf_counter() - t0, "rows": rows}))
"""


def _dataset(path: Path, n: int) -> None:
    """An uncompressed npz (what ``numpy.savez`` writes) built block by block: this process stays
    small, and it must, since a child's ``ru_maxrss`` starts from its parent's RSS at fork."""
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".x.npy")
    x = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, 1, 32, 32))
    for a in range(0, n, 1000):
        x[a : a + 1000] = rng.uniform(0, 1, (min(n, a + 1000) - a, 1, 32, 32))
    x.flush()
    del x
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.write(tmp, "x.npy")
        with zf.open("y.npy", "w") as fh:
            np.lib.format.write_array(fh, np.arange(n) % 3)
    tmp.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="600,6000,60000")
    ap.add_argument("--modes", default="streamed,stacked")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    from models import save, small_cnn

    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVONNX_THREADS": os.environ.get("ADVONNX_THREADS", "1")}
    out: dict = {
        "machine": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "sample": "1x32x32 float32",
        "attack": "fgsm linf 8/255",
        "chunk_size": 256,
        "results": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = save(small_cnn(size=32, seed=0), tmp / "m.onnx")
        for n in sizes:
            data = tmp / f"d{n}.npz"
            _dataset(data, n)
            for mode in modes:
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, model, str(data), str(tmp / f"out-{mode}-{n}"), mode, str(ROOT)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                if proc.returncode != 0:
                    sys.exit(f"{mode} {n}: the run failed:\n{proc.stderr[-3000:]}")
                rec = json.loads(proc.stdout.strip().splitlines()[-1])
                rec["data_mb"] = n * 32 * 32 * 4 / 2**20
                out["results"].setdefault(mode, {})[str(n)] = rec
                print(
                    f"{mode:8s} n={n:6d}: peak {rec['peak_rss_mb']:.0f} MB, {rec['seconds']:.1f} s "
                    f"(wall {time.perf_counter() - t0:.1f} s)",
                    flush=True,
                )
            data.unlink()
    rows = []
    for mode, res in out["results"].items():
        lo, hi = res[str(sizes[0])]["peak_rss_mb"], res[str(sizes[-1])]["peak_rss_mb"]
        out.setdefault("growth", {})[mode] = hi / lo - 1
        rows.append(
            [
                mode,
                *(f"{res[str(n)]['peak_rss_mb']:.0f}" for n in sizes),
                f"{100 * (hi / lo - 1):.1f} %",
                *(f"{res[str(n)]['seconds']:.1f}" for n in sizes),
            ]
        )
    print(markdown_table(["mode", *(f"peak MB n={n}:" for n in sizes), "growth:", *(f"s n={n}:" for n in sizes)], rows))
    write_results("memory", out)


if __name__ == "__main__":
    main()
