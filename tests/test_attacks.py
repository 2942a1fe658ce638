"""FGSM/BIM/PGD: query counts, targeted success, restarts, settings. Budget, range, re-judged
success and array-api-strict for every attack: tests/test_attack_contract.py."""

import numpy as np
import pytest

import advonnx
from advonnx.attacks import make_attack
from advonnx.errors import AdvonnxError
from advonnx.oracles import EstimatorConfig
from advonnx.xp import Random
from models import save, small_cnn, softmax_regression


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
