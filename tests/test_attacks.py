"""FGSM/BIM/PGD on every tiny-model fixture: budget, range, success recomputed, queries."""

import numpy as np
import pytest

import advonnx
from advonnx.attacks import make_attack
from advonnx.errors import AdvonnxError
from advonnx.oracles import EstimatorConfig
from advonnx.xp import Random
from models import save, small_cnn, softmax_regression

FIXTURES = {
    "cnn_nchw": dict(),
    "cnn_nhwc": dict(nhwc=True),
    "cnn_softmax": dict(head="softmax"),
    "cnn_binary": dict(head="sigmoid_binary"),
    "cnn_fixed_batch": dict(batch=1),
}
SETTINGS = [
    ("fgsm", dict(norm="linf", eps=0.05)),
    ("fgsm", dict(norm="l2", eps=0.5)),
    ("bim", dict(norm="linf", eps=0.05, steps=3)),
    ("pgd", dict(norm="linf", eps=0.05, steps=3)),
    ("pgd", dict(norm="l2", eps=0.5, steps=3, restarts=2)),
]


@pytest.fixture(params=list(FIXTURES))
def tiny(request, tmp_path):
    m = advonnx.load_model(save(small_cnn(**FIXTURES[request.param]), tmp_path / "m.onnx"),
                           estimator=EstimatorConfig(samples=20))
    shape = (6,) + tuple(d for d in m.spec.input_shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    return m, x


@pytest.mark.parametrize("gradient", ["estimated", "auto"])
@pytest.mark.parametrize("name,settings", SETTINGS, ids=[f"{n}-{s['norm']}" for n, s in SETTINGS])
def test_budget_range_and_success(tiny, name, settings, gradient):
    model, x = tiny
    res = advonnx.attack(model, x, None, name, rng=1, gradient=gradient, **settings)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    lo, hi = model.spec.value_range
    assert res.x_adv.min() >= lo and res.x_adv.max() <= hi
    delta = (res.x_adv - x).reshape(len(x), -1).astype(np.float64)
    eps = settings["eps"]
    if settings["norm"] == "linf":
        assert np.abs(delta).max() <= eps * (1 + 1e-6)
    else:
        assert np.linalg.norm(delta, axis=1).max() <= eps * (1 + 1e-5)
    # success is recomputed from x_adv by advonnx, not taken from the attack
    assert np.array_equal(res.success, model.classify(res.x_adv) != res.labels)
    assert np.all(res.queries > 0)


def test_fgsm_queries_exact_vs_estimated(tmp_path):
    m = advonnx.load_model(save(small_cnn(), tmp_path / "m.onnx"), estimator=EstimatorConfig(samples=10))
    x = np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    est = advonnx.attack(m, x, None, "pgd", gradient="estimated", eps=0.1, steps=3)
    assert np.all(est.queries == 3 * 21)


def test_targeted_pgd_reaches_target(tmp_path):
    proto, w, b = softmax_regression(d=20, classes=4)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"), estimator=EstimatorConfig(samples=20))
    x = np.random.default_rng(0).uniform(0.3, 0.7, (32, 20)).astype(np.float32)
    y = m.classify(x)
    target = (y + 1) % 4
    res = advonnx.attack(m, x, y, "pgd", targeted=True, target=target, eps=0.3, steps=20, gradient="estimated")
    assert np.array_equal(res.success, m.classify(res.x_adv) == target)
    assert res.success.mean() >= 0.9


def test_pgd_lowers_trained_model_accuracy_by_20_points(brain_mobilenet_path, brain_patches):
    """A trained brain-patch classifier: PGD linf eps=4/255, 10 steps, 200 test samples."""
    x, y = brain_patches
    x, y = x[:200], y[:200]
    m = advonnx.load_model(brain_mobilenet_path)
    clean = (m.classify(x) == y).mean()
    res = advonnx.attack(m, x, y, "pgd", norm="linf", eps=4 / 255, steps=10, rng=0)
    robust = (m.classify(res.x_adv) == y).mean()
    assert clean - robust >= 0.20, (clean, robust)


def test_restarts_never_hurt(tmp_path):
    proto, *_ = softmax_regression(d=30, classes=5)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"), estimator=EstimatorConfig(samples=30))
    x = np.random.default_rng(0).uniform(0, 1, (40, 30)).astype(np.float32)
    one = advonnx.attack(m, x, None, "pgd", eps=0.05, steps=5, restarts=1, rng=Random(3), gradient="estimated")
    three = advonnx.attack(m, x, None, "pgd", eps=0.05, steps=5, restarts=3, rng=Random(3), gradient="estimated")
    assert three.success.sum() >= one.success.sum()


def test_unknown_settings_are_refused():
    with pytest.raises(AdvonnxError, match="no setting"):
        make_attack("pgd", eps=0.1, stepz=3)
    with pytest.raises(AdvonnxError, match="unknown attack"):
        make_attack("nope", eps=0.1)
    with pytest.raises(AdvonnxError, match="norms"):
        make_attack("pgd", norm="l7", eps=0.1)
    with pytest.raises(AdvonnxError, match="eps"):
        make_attack("fgsm", eps=0)


def test_repr_lists_parameters():
    r = repr(make_attack("pgd", norm="l2", eps=0.5, steps=7))
    assert r.startswith("PGD(") and "steps=7" in r and "norm='l2'" in r


def test_array_api_strict_loop(tmp_path):
    """The attack loop and estimator run on array-api-strict arrays (no NumPy-only calls)."""
    xps = pytest.importorskip("array_api_strict")
    from advonnx.xp import to_numpy

    proto, *_ = softmax_regression(d=12, classes=3)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"), estimator=EstimatorConfig(samples=6))
    xh = np.random.default_rng(0).uniform(0, 1, (5, 12)).astype(np.float32)
    x = xps.asarray(xh)
    res = advonnx.attack(m, x, None, "pgd", eps=0.1, steps=2, gradient="estimated", rng=1)
    ref = advonnx.attack(m, xh, None, "pgd", eps=0.1, steps=2, gradient="estimated", rng=1)
    np.testing.assert_allclose(to_numpy(res.x_adv), ref.x_adv, rtol=1e-5, atol=1e-6)
