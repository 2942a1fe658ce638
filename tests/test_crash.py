"""Crash safety and determinism of real `advonnx run` processes.

SIGKILL at random moments, then `--resume`: the rows equal an uninterrupted run's (same seed),
with no duplicates and no partial chunk read. Two runs and two batch sizes give identical rows.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from advonnx.results import read_results
from models import save, small_cnn

KEY = ("model", "dataset", "sample_id", "kind", "attack", "norm", "eps")  # kind: masking checks' attacks


def _cmd(model, data, out, *extra):
    return [
        sys.executable,
        "-m",
        "advonnx.cli",
        "run",
        "--model",
        str(model),
        "--data",
        str(data),
        "--attack",
        "fgsm,pgd",
        "--eps",
        "0.02,0.05",
        "--steps",
        "4",
        "--chunk-size",
        "24",
        "--out",
        str(out),
        "--quiet",
        "--seed",
        "7",
        *extra,
    ]


def _rows(out):
    t = read_results(out).drop(["time_s", "run_id"]).to_pylist()
    keys = [tuple(r[k] for k in KEY) for r in t]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return sorted(t, key=lambda r: tuple(str(r[k]) for k in KEY))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    model = save(small_cnn(size=16, channels=1), d / "m.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (240, 1, 16, 16)).astype(np.float32)
    np.savez(d / "data.npz", x=x, y=np.arange(240) % 3)
    ref = d / "ref"
    t0 = time.perf_counter()
    subprocess.run(_cmd(model, d / "data.npz", ref), check=True, capture_output=True)
    return d, model, d / "data.npz", _rows(ref), time.perf_counter() - t0


@pytest.mark.slow  # four real 240-sample runs; the fast loop has test_results.py's in-process check
def test_same_rows_across_runs_and_batch_sizes(setup):
    d, model, data, ref, _ = setup
    for i, bs in enumerate(("1", "7", "256")):
        out = d / f"det{i}"
        subprocess.run(_cmd(model, data, out, "--batch-size", bs), check=True, capture_output=True)
        assert _rows(out) == ref, f"rows differ with --batch-size {bs}"


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(setup):
    d, model, data, ref, duration = setup
    rng = np.random.default_rng(1)
    moments = rng.uniform(0.2, max(duration, 1.0), size=10)
    for k, moment in enumerate(moments):
        out = d / f"kill{k}"
        proc = subprocess.Popen(_cmd(model, data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(moment))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        r = subprocess.run(_cmd(model, data, out, "--resume"), capture_output=True, text=True, encoding="utf-8")
        assert r.returncode == 0, r.stderr
        runs = [p for p in out.iterdir() if p.is_dir()]
        assert len(runs) == 1, f"kill at {moment:.2f}s left {len(runs)} run folders"
        assert _rows(out) == ref, f"kill at {moment:.2f}s: resumed rows differ"
        assert not list(runs[0].glob(".part-*.tmp"))
