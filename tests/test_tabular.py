"""Tabular models: scikit-learn and LightGBM classifiers converted to ONNX (ZipMap outputs),
attacked from queries alone on scikit-learn's bundled breast cancer data scaled to [0, 1].

Per-feature bounds: the features are min-max scaled to [0, 1], so the value range [0, 1] is each
feature's range and ``eps = 0.1`` is 10 % of every feature's range. (A model trained on raw
features is attacked in the same units by declaring per-feature ``mean = -min/range`` and
``std = 1/range``: advonnx folds ``(x - mean) / std`` in front of the graph.)
"""

import os

import numpy as np
import pytest
from cli_inprocess import run_cli

import advonnx

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    return train_test_split(x, y, test_size=120, random_state=0, stratify=y)


def _sklearn_onnx(clf, d, path):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(clf, initial_types=[("x", FloatTensorType([None, d]))], target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return path


def _lightgbm_onnx(clf, d, path):
    from onnxmltools.convert import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = convert_lightgbm(clf, initial_types=[("x", FloatTensorType([None, d]))], target_opset=15)
    path.write_bytes(onx.SerializeToString())
    return path


def _models(cancer, tmp_path):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    xtr, _, ytr, _ = cancer
    d = xtr.shape[1]
    out = {
        "logreg": _sklearn_onnx(LogisticRegression(C=10, max_iter=500).fit(xtr, ytr), d, tmp_path / "logreg.onnx"),
        "forest": _sklearn_onnx(
            RandomForestClassifier(20, max_depth=5, random_state=0).fit(xtr, ytr), d, tmp_path / "forest.onnx"
        ),
    }
    try:
        import lightgbm
    except ImportError:
        return out
    gbm = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1, random_state=0).fit(xtr, ytr)
    out["lightgbm"] = _lightgbm_onnx(gbm, d, tmp_path / "lightgbm.onnx")
    return out


@pytest.fixture(scope="module")
def models(cancer, tmp_path_factory):
    """The trained and converted models, built once for the module: {name: path}."""
    return _models(cancer, tmp_path_factory.mktemp("tabular"))


def _labels_from_original(path, x):
    """Top-1 labels from the unmodified ONNX file (its own label output), independent of advonnx."""
    import onnxruntime as ort

    # the thread count advonnx's own sessions use: attacks leave samples on the decision boundary,
    # where a float summation order of another thread count can flip the label
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("ADVONNX_THREADS") or 0)
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    label_out = sess.get_outputs()[0].name
    return np.asarray(sess.run([label_out], {sess.get_inputs()[0].name: x})[0]).astype(np.int64)


@pytest.mark.parametrize(
    "name,settings",
    [
        ("square", dict(norm="linf", max_queries=300)),
        ("hsj", dict(norm="linf", max_queries=600)),
        ("hsj", dict(norm="l2", max_queries=600)),
    ],
)
def test_tree_and_linear_models_broken_and_verified(cancer, models, name, settings):
    _, xte, _, yte = cancer
    for model_name, path in models.items():
        m = advonnx.load_model(path)
        assert m.spec.layout == "NF" and m.spec.scores == "probabilities" and m.spec.num_classes == 2
        eps = 0.1 if settings["norm"] == "linf" else 0.1 * np.sqrt(xte.shape[1])
        res = advonnx.attack(m, xte, yte, name, rng=0, eps=eps, **settings)
        assert res.queries.max() <= settings["max_queries"]
        # every adversarial example verified with the original file's own label output (ZipMap graph)
        adv_labels = _labels_from_original(path, res.x_adv)
        np.testing.assert_array_equal(res.success, adv_labels != yte)
        clean = (_labels_from_original(path, xte) == yte).mean()
        robust = (adv_labels == yte).mean()
        assert robust <= clean - 0.10, (model_name, clean, robust)
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_nes_on_probability_outputs(cancer, tmp_path):
    from sklearn.linear_model import LogisticRegression

    xtr, xte, ytr, yte = cancer
    path = _sklearn_onnx(LogisticRegression(C=10, max_iter=500).fit(xtr, ytr), xtr.shape[1], tmp_path / "lr.onnx")
    m = advonnx.load_model(path)
    res = advonnx.attack(m, xte, yte, "nes", rng=0, eps=0.1, steps=10, samples=10, max_queries=200)
    assert res.queries.max() <= 200
    assert res.success.mean() >= 0.1


def test_cli_end_to_end_on_breast_cancer(cancer, models, tmp_path):
    """`advonnx run` on a LightGBM (or forest) and a scikit-learn model; robust ≥ 10 points below clean."""
    from advonnx.results import read_results

    _, xte, _, yte = cancer
    data = tmp_path / "cancer.npz"
    np.savez(data, x=xte, y=yte)
    tree = models.get("lightgbm", models["forest"])
    r = run_cli(
        "run",
        "--model",
        models["logreg"],
        "--model",
        tree,
        "--data",
        data,
        "--attack",
        "square,hsj",
        "--norm",
        "linf",
        "--eps",
        "0.1",
        "--max-queries",
        "400",
        "--out",
        tmp_path / "out",
        "--quiet",
        "--seed",
        "1",
    )  # in this process
    assert r.returncode == 0, r.stderr[-2000:]
    table = read_results(tmp_path / "out").to_pandas()
    table = table[table.kind == "adversarial"]
    assert set(table.attack) == {"square", "hsj"}
    assert (table.max_queries == 400).all() and (table.queries <= 400).all()
    for model, rows in table.groupby("model"):
        worst = rows.groupby("sample_id").adv_correct.min()  # worst case over both attacks
        clean = rows.groupby("sample_id").clean_correct.first()
        assert worst.mean() <= clean.mean() - 0.10, (model, clean.mean(), worst.mean())
    assert "lightgbm" in r.stdout or "forest" in r.stdout
    from advonnx.masking import read_masking

    (run,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]

    # query-only attacks: nothing for the gradient-masking checks to compare
    assert read_masking(run) == {"models": []}
