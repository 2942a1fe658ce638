"""The built-in suite's shipped data and ONNX models: format, metadata, and recorded metrics.

The assets are built by models/build_brain_data.py, models/train_brain_classifiers.py and
models/train_brain_segmenters.py; models/metrics.json records what those scripts measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "advonnx" / "suites"
DATA = SUITES / "data"
MODELS = SUITES / "models"
METRICS = json.loads((ROOT / "models" / "metrics.json").read_text())

PATCH_CLASSES = ["csf_other", "gray_matter", "white_matter"]
SEG_CLASSES = ["background", "csf_other", "gray_matter", "white_matter"]
REQUIRED_META = [
    "advonnx.task",
    "advonnx.layout",
    "advonnx.value_range",
    "advonnx.scores",
    "advonnx.class_names",
    "advonnx.framework",
    "advonnx.exporter",
    "advonnx.dataset",
    "advonnx.training",
]
DATASET_FILES = {
    "brain-tissue-patch": "brain_patches_test.npz",
    "brain-tissue-seg": "brain_slices_test.npz",
}
SHIPPED = sorted(p.stem for p in MODELS.glob("*.onnx"))


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / name, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _check_common(d: dict[str, np.ndarray], class_names: list[str]) -> None:
    x, sid = d["x"], d["sample_id"]
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() > 0.5  # not an empty or rescaled array
    assert d["y"].dtype == np.int64
    assert d["class_names"].tolist() == class_names
    assert sid.dtype.kind == "U" and sid.shape == (len(x),)
    assert len(set(sid.tolist())) == len(sid)
    assert all(s.startswith("mni152sym09a_z") for s in sid.tolist())


def test_patch_test_set():
    d = _load("brain_patches_test.npz")
    assert set(d) == {"x", "y", "class_names", "sample_id"}
    _check_common(d, PATCH_CLASSES)
    x, y = d["x"], d["y"]
    assert x.ndim == 4 and x.shape[1:] == (1, 32, 32)
    assert 200 <= len(x) <= 400
    assert y.shape == (len(x),)
    counts = np.bincount(y, minlength=3)
    assert len(counts) == 3 and counts.min() == counts.max()  # balanced
    assert (DATA / "brain_patches_test.npz").stat().st_size < 2_000_000


def test_slice_test_set():
    d = _load("brain_slices_test.npz")
    assert set(d) == {"x", "y", "class_names", "sample_id", "spacing"}
    _check_common(d, SEG_CLASSES)
    x, y = d["x"], d["y"]
    assert x.ndim == 4 and x.shape[1:] == (1, 64, 64)
    assert y.shape == (len(x), 64, 64)
    assert y.min() >= 0 and y.max() <= 3
    assert set(np.unique(y).tolist()) == {0, 1, 2, 3}
    assert (x[:, 0][y == 0] <= 0.5).mean() > 0.9  # background is dark (skull-stripped template)
    assert d["spacing"].tolist() == [3.0, 3.0]
    assert (DATA / "brain_slices_test.npz").stat().st_size < 2_000_000


def test_test_bands_do_not_touch_training_slices():
    """Test samples come from the documented axial band z in [80, 100)."""
    for name in DATASET_FILES.values():
        z = [int(s.split("_z")[1][:3]) for s in _load(name)["sample_id"].tolist()]
        assert min(z) >= 80 and max(z) < 100


def test_license_notice():
    text = (DATA / "MNI_ICBM152_LICENSE.txt").read_text()
    assert "Louis Collins" in text and "McGill University" in text
    assert "provided that the above copyright" in text


def test_every_shipped_model_has_metrics_and_sizes_are_small():
    assert {"brain_cnn", "brain_mobilenet"} <= set(SHIPPED)
    assert set(SHIPPED) <= set(METRICS)
    total = sum(p.stat().st_size for p in MODELS.glob("*.onnx"))
    total += sum(p.stat().st_size for p in DATA.glob("*"))
    assert total < 10_000_000
    for name in SHIPPED:  # classifiers < 1 MB; the UNet is 2 MB
        limit = 1_000_000 if METRICS[name]["task"] == "classification" else 2_500_000
        assert (MODELS / f"{name}.onnx").stat().st_size < limit


def _mean_dice(pred: np.ndarray, y: np.ndarray) -> float:
    out = []
    for p, t in zip(pred, y, strict=True):
        d = []
        for c in (1, 2, 3):
            a, b = p == c, t == c
            den = a.sum() + b.sum()
            if den:
                d.append(2 * (a & b).sum() / den)
        out.append(np.mean(d))
    return float(np.mean(out))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model(name: str):
    path = MODELS / f"{name}.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    for key in REQUIRED_META:
        assert meta.get(key), key
    assert meta["advonnx.layout"] == "NCHW"
    assert meta["advonnx.value_range"] == "0,1"
    assert meta["advonnx.scores"] == "logits"
    assert meta["advonnx.framework"] == "pytorch"
    assert meta["advonnx.exporter"].startswith("torch.onnx ")
    rec = METRICS[name]
    assert meta["advonnx.task"] == rec["task"]
    assert meta["advonnx.dataset"] == rec["dataset"]

    d = _load(DATASET_FILES[meta["advonnx.dataset"]])
    assert meta["advonnx.class_names"].split(",") == d["class_names"].tolist()
    x, y = d["x"], d["y"]

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # dynamic batch
    one = sess.run(["logits"], {"image": x[:1]})[0]
    three = sess.run(["logits"], {"image": x[:3]})[0]
    np.testing.assert_allclose(three[:1], one, rtol=1e-4, atol=1e-4)
    logits = sess.run(["logits"], {"image": x})[0]
    n_classes = len(d["class_names"])
    assert logits.shape == (len(x), n_classes, *y.shape[1:])
    # raw logits, not probabilities
    assert not np.allclose(logits.sum(axis=1), 1.0, atol=1e-3)
    pred = logits.argmax(axis=1)

    if rec["task"] == "classification":
        acc = float((pred == y).mean())
        assert acc == pytest.approx(rec["test_accuracy"], abs=0.005)
        assert acc >= 0.80
    else:
        dice = _mean_dice(pred, y)
        assert dice == pytest.approx(rec["test_mean_dice"], abs=0.005)
        assert dice >= 0.80


def test_classifiers_have_similar_clean_accuracy():
    """The suite's point (Paschali et al.): equal clean accuracy, different robustness."""
    a, b = METRICS["brain_cnn"]["test_accuracy"], METRICS["brain_mobilenet"]["test_accuracy"]
    assert min(a, b) >= 0.85
    assert abs(a - b) <= 0.02
