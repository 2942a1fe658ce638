"""What the benchmark scripts share: paths, the suite's brain_cnn case, result files, tables.

Scripts run as ``python benchmarks/bench_X.py``, so this folder is on ``sys.path`` and
``import _benchlib`` works; importing it also puts ``tests/`` there for the PyTorch twins in
``tests/reference``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITE_MODELS = ROOT / "advonnx" / "suites" / "models"
SUITE_DATA = ROOT / "advonnx" / "suites" / "data"
sys.path.insert(0, str(ROOT / "tests"))


def brain_cnn_case() -> tuple[str, np.ndarray, np.ndarray]:
    """The quick suite's brain_cnn: ONNX path, its 300 test patches (N, 1, 32, 32) and labels."""
    with np.load(SUITE_DATA / "brain_patches_test.npz", allow_pickle=False) as d:
        x, y = d["x"], d["y"]
    return str(SUITE_MODELS / "brain_cnn.onnx"), x, y


def write_results(name: str, payload: dict, indent: int = 2) -> Path:
    """Write ``benchmarks/results/<name>.json`` and say where."""
    out = RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=indent), encoding="utf-8")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return out


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a column title ending in ``:`` is right-aligned (the ``:`` is dropped)."""
    titles = [c.rstrip(":") for c in columns]
    rules = ["---:" if c.endswith(":") else "---" for c in columns]
    lines = ["| " + " | ".join(titles) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
