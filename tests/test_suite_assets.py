"""The built-in suite's shipped data and ONNX models: format, metadata, and recorded metrics.

The assets are built by models/build_brain_data.py, models/train_brain_classifiers.py,
models/train_brain_segmenters.py, models/train_brain_jax.py and models/train_tabular.py;
models/metrics.json records what those scripts measured.
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
METRICS = json.loads((ROOT / "models" / "metrics.json").read_text(encoding="utf-8"))

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
    "breast-cancer": "breast_cancer_test.npz",
}
BRAIN_FILES = ("brain_patches_test.npz", "brain_slices_test.npz")
TABULAR = ("bc_mlp", "bc_lightgbm")
SHIPPED = sorted(p.stem for p in MODELS.glob("*.onnx"))


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / name, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _check_common(d: dict[str, np.ndarray], class_names: list[str], prefix: str = "mni152sym09a_z") -> None:
    x, sid = d["x"], d["sample_id"]
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() > 0.5  # not an empty or rescaled array
    assert d["y"].dtype == np.int64
    assert d["class_names"].tolist() == class_names
    assert sid.dtype.kind == "U" and sid.shape == (len(x),)
    assert len(set(sid.tolist())) == len(sid)
    assert all(s.startswith(prefix) for s in sid.tolist())


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
    for name in BRAIN_FILES:
        z = [int(s.split("_z")[1][:3]) for s in _load(name)["sample_id"].tolist()]
        assert min(z) >= 80 and max(z) < 100


def test_license_notice():
    text = (DATA / "MNI_ICBM152_LICENSE.txt").read_text(encoding="utf-8")
    assert "Louis Collins" in text and "McGill University" in text
    assert "provided that the above copyright" in text


def test_every_shipped_model_has_metrics_and_sizes_are_small():
    assert {"brain_cnn", "brain_mobilenet", "brain_cnn_jax", "brain_unet", "brain_sdnet", *TABULAR} <= set(SHIPPED)
    assert set(SHIPPED) <= set(METRICS)
    total = sum(p.stat().st_size for p in MODELS.glob("*.onnx"))
    total += sum(p.stat().st_size for p in DATA.glob("*"))
    assert total < 10_000_000
    for name in SHIPPED:  # classifiers < 1 MB; the UNet is 2 MB
        limit = 1_000_000 if METRICS[name]["task"] == "classification" else 2_500_000
        assert (MODELS / f"{name}.onnx").stat().st_size < limit


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_carry_no_build_paths(name: str):
    # the dynamo exporter's per-node stack traces hold the builder's absolute paths and made
    # rebuilds differ byte for byte; models/_common.py drops them (and torch.export's bookkeeping)
    proto = onnx.load(str(MODELS / f"{name}.onnx"))
    keys = {p.key for n in proto.graph.node for p in n.metadata_props} | {p.key for p in proto.graph.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys
    assert not any(k.startswith("pkg.torch.export.") for k in keys)
    raw = (MODELS / f"{name}.onnx").read_bytes()
    for marker in (b"site-packages", b"/home/", b"/root/", b"/work/", b"/tmp/"):
        assert marker not in raw, f"{name}.onnx contains {marker!r}"


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


@pytest.mark.parametrize("name", [n for n in SHIPPED if n not in TABULAR])
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
    assert (meta["advonnx.framework"], meta["advonnx.exporter"].split()[0]) in {
        ("pytorch", "torch.onnx"),
        ("jax", "jax2onnx"),
    }
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
        # noise-trained base classifiers (randomized smoothing) trade clean accuracy for certificates
        assert acc >= (0.70 if rec.get("noise_sigma") else 0.80)
    else:
        dice = _mean_dice(pred, y)
        assert dice == pytest.approx(rec["test_mean_dice"], abs=0.005)
        assert dice >= 0.80


def test_classifiers_have_similar_clean_accuracy():
    """The suite's point (Paschali et al.): equal clean accuracy, different robustness."""
    a, b = METRICS["brain_cnn"]["test_accuracy"], METRICS["brain_mobilenet"]["test_accuracy"]
    assert min(a, b) >= 0.85
    assert abs(a - b) <= 0.02


def test_breast_cancer_test_set():
    d = _load("breast_cancer_test.npz")
    assert set(d) == {"x", "y", "class_names", "sample_id", "feature_names"}
    _check_common(d, ["malignant", "benign"], prefix="wdbc_")
    x, y = d["x"], d["y"]
    assert x.shape == (143, 30) and y.shape == (143,)
    assert set(np.unique(y).tolist()) == {0, 1}
    assert d["feature_names"].shape == (30,) and d["feature_names"][0] == "mean radius"


@pytest.mark.parametrize("name", TABULAR)
def test_tabular_model(name: str):
    path = MODELS / f"{name}.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    for key in REQUIRED_META:
        assert meta.get(key), key
    assert meta["advonnx.layout"] == "NF" and meta["advonnx.scores"] == "probabilities"
    assert meta["advonnx.dataset"] == "breast-cancer"
    framework, exporter = {"bc_mlp": ("scikit-learn", "skl2onnx"), "bc_lightgbm": ("lightgbm", "onnxmltools")}[name]
    assert meta["advonnx.framework"] == framework and meta["advonnx.exporter"].startswith(exporter + " ")
    d = _load("breast_cancer_test.npz")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label = sess.run(None, {sess.get_inputs()[0].name: d["x"]})[0]
    acc = float((np.asarray(label) == d["y"]).mean())
    assert acc == pytest.approx(METRICS[name]["test_accuracy"], abs=0.005)
    assert acc >= 0.90


def _suite_frameworks(name: str) -> set[str]:
    from advonnx.suite import load_suite

    suite = load_suite(name)
    out = set()
    for m in suite.models:
        meta = {p.key: p.value for p in onnx.load(m.path).metadata_props}
        out.add(meta["advonnx.framework"])
    return out


@pytest.mark.parametrize("suite", ["quick", "full"])
def test_builtin_suites(suite: str):
    """Both suites load, use every shipped model, cover >= 4 frameworks, and run their headline
    setting on every dataset."""
    from advonnx.leaderboard import headline_for
    from advonnx.spec import _fraction
    from advonnx.suite import load_suite

    s = load_suite(suite)
    # quick leaves out the noise-trained model (its certificates are the full suite's)
    expected = set(SHIPPED) - ({"brain_cnn_noise"} if suite == "quick" else set())
    assert {Path(m.path).stem for m in s.models} == expected
    assert len(_suite_frameworks(suite)) >= 4
    for d in s.datasets:
        h = headline_for(s.headline, d.name)
        eps = float(_fraction(h["eps"]))
        assert any(
            a.name == h["attack"]
            and a.norm == h["norm"]
            and (not a.datasets or d.name in a.datasets)
            and any(abs(e - eps) < 1e-12 for e, _ in a.eps)
            for a in s.attacks
        ), (suite, d.name)


def test_quick_and_full_share_the_headline():
    from advonnx.suite import load_suite

    assert load_suite("quick").headline == load_suite("full").headline


def test_quick_suite_routes_attacks_and_corruptions_per_dataset():
    """``datasets = [...]`` on an attack and ``corruptions`` on a dataset: image attacks and
    corruptions never reach the tabular set, the Square attack never reaches the images."""
    from collections import defaultdict

    from advonnx.suite import Runner, cached_model, load_suite

    s = load_suite("quick")
    models = {m.name: cached_model(m, "cpu", 64) for m in s.models}
    units, _ = Runner(s).plan("test", models)
    seen, checks = defaultdict(set), defaultdict(set)
    for u in units:
        (checks if u.check else seen)[u.dataset.name].add(u.corruption or u.attack.name)
    # the gradient-masking checks' attacks: on the gradient-attacked classifiers only
    assert dict(checks) == {"brain-tissue-patch": {"square", "pgd"}}
    assert seen["breast-cancer"] == {"square"}
    assert seen["brain-tissue-seg"] == {"pgd", "gaussian_noise", "bias_field"}
    assert {"fgsm", "pgd", "gaussian_blur"} <= seen["brain-tissue-patch"] and "square" not in seen["brain-tissue-patch"]


def test_headline_per_dataset():
    from advonnx.leaderboard import headline_for, headline_key

    h = {"attack": "pgd", "norm": "linf", "eps": "2/255", "datasets": {"tab": {"attack": "square", "eps": "0.05"}}}
    assert headline_for(h, "img") == {"attack": "pgd", "norm": "linf", "eps": "2/255"}
    assert headline_for(h, "tab") == {"attack": "square", "norm": "linf", "eps": "0.05"}
    rows = [
        {
            "model": "a",
            "dataset": "img",
            "attack": "pgd",
            "norm": "linf",
            "eps": 2 / 255,
            "eps_text": "2/255",
            "robust": 0.5,
        },
        {
            "model": "b",
            "dataset": "tab",
            "attack": "pgd",
            "norm": "linf",
            "eps": 2 / 255,
            "eps_text": "2/255",
            "robust": 0.1,
        },
        {
            "model": "b",
            "dataset": "tab",
            "attack": "square",
            "norm": "linf",
            "eps": 0.05,
            "eps_text": "0.05",
            "robust": 0.7,
        },
    ]
    assert headline_key(rows, h) == {"a": 0.5, "b": 0.7}
