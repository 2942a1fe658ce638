"""Tabular clinical task: breast cancer Wisconsin (diagnostic), scikit-learn MLP vs LightGBM.

Data: scikit-learn's bundled copy (``sklearn.datasets.load_breast_cancer``; BSD-3-Clause via
scikit-learn, origin UCI Machine Learning Repository, Wolberg, Street and Mangasarian 1995):
569 tumours, 30 real-valued features, classes malignant (0) / benign (1). Split 75 / 25
stratified with ``random_state=0``; features min-max scaled to [0, 1] with the training
minimum and maximum, test values clipped to [0, 1] (so ``eps`` is a fraction of each feature's
training range). Writes ``advonnx/suites/data/breast_cancer_test.npz`` and two models:

- ``bc_mlp``: scikit-learn ``MLPClassifier`` (one hidden layer of 32 ReLU units, Adam, L2 1e-3),
  exported with skl2onnx;
- ``bc_lightgbm``: LightGBM ``LGBMClassifier`` (100 trees of 15 leaves), exported with
  onnxmltools.

Both ONNX files keep the converters' outputs (``label``, ``probabilities`` as a ZipMap) and
carry ``advonnx.*`` metadata (scores = probabilities, layout NF). Deterministic: fixed seeds,
one LightGBM thread.

    python models/train_tabular.py [--only bc_mlp]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SUITE_DATA, SUITE_MODELS, per_class_accuracy, save_model, update_metrics  # noqa: E402

DATASET = "breast-cancer"
TEST_FILE = SUITE_DATA / "breast_cancer_test.npz"
SEED = 0
CLASS_NAMES = ("malignant", "benign")


def build_data() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    raw = load_breast_cancer()
    x, y = raw.data.astype(np.float64), raw.target.astype(np.int64)
    idx = np.arange(len(y))
    itr, ite = train_test_split(idx, test_size=0.25, random_state=SEED, stratify=y)
    lo, hi = x[itr].min(0), x[itr].max(0)
    scale = lambda a: np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)  # noqa: E731
    assert list(raw.target_names) == list(CLASS_NAMES)
    return {
        "x_train": scale(x[itr]),
        "y_train": y[itr],
        "x": scale(x[ite]),
        "y": y[ite],
        "class_names": np.array(CLASS_NAMES),
        "sample_id": np.array([f"wdbc_{i:03d}" for i in ite]),
        "feature_names": np.array([str(f) for f in raw.feature_names]),
        "train_min": lo,
        "train_max": hi,
    }


def save_test(d: dict[str, np.ndarray]) -> None:
    SUITE_DATA.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        TEST_FILE,
        x=d["x"],
        y=d["y"],
        class_names=d["class_names"],
        sample_id=d["sample_id"],
        feature_names=d["feature_names"],
    )


def metadata(framework: str, exporter: str, training: str) -> dict[str, str]:
    return {
        "advonnx.task": "classification",
        "advonnx.layout": "NF",
        "advonnx.value_range": "0,1",
        "advonnx.scores": "probabilities",
        "advonnx.class_names": ",".join(CLASS_NAMES),
        "advonnx.framework": framework,
        "advonnx.exporter": exporter,
        "advonnx.dataset": DATASET,
        "advonnx.training": training,
    }


def finish(proto: onnx.ModelProto, path: Path, meta: dict[str, str]) -> None:
    proto.graph.name = path.stem  # onnxmltools names the graph with a random UUID: keep rebuilds byte-identical
    save_model(proto, path, meta)


def ort_proba(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})[1]
    if isinstance(out, list):  # ZipMap: one {class: p} dict per sample
        out = np.array([[row[k] for k in sorted(row)] for row in out], np.float32)
    return np.asarray(out)


def train_mlp(d):
    import skl2onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(32,), alpha=1e-3, learning_rate_init=1e-3, max_iter=2000, random_state=SEED
    ).fit(d["x_train"], d["y_train"])
    proto = to_onnx(clf, initial_types=[("x", FloatTensorType([None, d["x"].shape[1]]))], target_opset=17)
    exporter = f"skl2onnx {skl2onnx.__version__}"
    training = (
        f"scikit-learn MLPClassifier (32 ReLU units), Adam lr 1e-3, L2 alpha 1e-3, {clf.n_iter_} "
        f"iterations, seed {SEED}; min-max scaled features"
    )
    return (
        clf,
        proto,
        exporter,
        training,
        {
            "n_iter": int(clf.n_iter_),
            "params": int(sum(w.size for w in clf.coefs_) + sum(b.size for b in clf.intercepts_)),
        },
    )


def train_lightgbm(d):
    import lightgbm
    import onnxmltools
    from onnxmltools.convert import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    clf = lightgbm.LGBMClassifier(
        n_estimators=100,
        num_leaves=15,
        learning_rate=0.1,
        min_child_samples=10,
        random_state=SEED,
        n_jobs=1,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    ).fit(d["x_train"], d["y_train"])
    proto = convert_lightgbm(clf, initial_types=[("x", FloatTensorType([None, d["x"].shape[1]]))], target_opset=15)
    exporter = f"onnxmltools {onnxmltools.__version__} (lightgbm {lightgbm.__version__})"
    training = f"LightGBM gradient boosting, 100 trees x 15 leaves, lr 0.1, seed {SEED}; min-max scaled features"
    return clf, proto, exporter, training, {"trees": 100, "framework_version": lightgbm.__version__}


MODELS = {"bc_mlp": ("scikit-learn", train_mlp), "bc_lightgbm": ("lightgbm", train_lightgbm)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=sorted(MODELS))
    args = ap.parse_args()
    d = build_data()
    save_test(d)
    print(
        f"{TEST_FILE.relative_to(ROOT)}: x {d['x'].shape}, train {d['x_train'].shape}, "
        f"test classes {np.bincount(d['y']).tolist()}"
    )
    entries = {}
    for name in args.only or list(MODELS):
        framework, fn = MODELS[name]
        t0 = time.perf_counter()
        clf, proto, exporter, training, extra = fn(d)
        elapsed = time.perf_counter() - t0
        path = SUITE_MODELS / f"{name}.onnx"
        finish(proto, path, metadata(framework, exporter, training))
        proba = ort_proba(path, d["x"])
        diff = float(np.abs(proba - clf.predict_proba(d["x"])).max())
        pred = proba.argmax(1)
        acc = float((pred == d["y"]).mean())
        per_class = per_class_accuracy(pred, d["y"], len(CLASS_NAMES))
        entries[name] = {
            "task": "classification",
            "dataset": DATASET,
            "test_data": str(TEST_FILE.relative_to(ROOT)),
            "n_test": int(len(d["y"])),
            "test_accuracy": round(acc, 4),
            "test_accuracy_per_class": per_class,
            "onnx_bytes": path.stat().st_size,
            "train_time_s": round(elapsed, 1),
            "framework": framework,
            "exporter": exporter,
            "max_abs_diff_ort_vs_native": diff,
            **extra,
        }
        print(f"{name}: accuracy {acc:.4f} {per_class}, {path.stat().st_size} bytes, ort vs native {diff:.2e}")
    update_metrics(entries)


if __name__ == "__main__":
    main()
