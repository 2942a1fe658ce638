"""Units of JSMA's theta and DAG's gamma (issue 15): fractions of the value-range width, so the
same attack on a [0, 255] model (the [0, 1] model behind ``scale = 1/255``) is the [0, 1]
result scaled by 255."""

from __future__ import annotations

import numpy as np
from test_paper_attacks import tiny_segmenter

import advonnx
from models import save, small_cnn


def _pair(proto, tmp_path):
    path = save(proto, tmp_path / "m.onnx")
    unit = advonnx.load_model(path, value_range=(0, 1))
    byte = advonnx.load_model(path, value_range=(0, 255), scale=1 / 255)
    return unit, byte


def test_jsma_theta_is_a_fraction_of_the_range(tmp_path):
    unit, byte = _pair(small_cnn(size=8, classes=4), tmp_path)
    x = np.random.default_rng(1).uniform(0.2, 0.8, (8, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(byte.predict(x * 255), unit.predict(x), rtol=1e-5, atol=1e-5)
    for theta in (-1.0, 0.25):
        a = advonnx.attack(unit, x, None, "jsma", theta=theta, gamma=0.5, gradient="exact")
        b = advonnx.attack(byte, x * 255, None, "jsma", theta=theta, gamma=0.5, gradient="exact")
        assert a.success.any() or theta > 0  # this model breaks only by decreasing elements
        np.testing.assert_array_equal(b.success, a.success)
        np.testing.assert_array_equal(b.l0, a.l0)
        np.testing.assert_allclose(b.x_adv, 255 * a.x_adv, rtol=1e-5, atol=1e-3)


def test_dag_gamma_is_a_fraction_of_the_range(tmp_path):
    unit, byte = _pair(tiny_segmenter(classes=3, kernel=3, seed=1), tmp_path)
    x = np.random.default_rng(2).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    target = (unit.classify(x) + 1) % 3
    for steps in (1, 20):
        a = advonnx.attack(
            unit, x, None, "dag", gamma=0.01, steps=steps, targeted=True, target=target, gradient="exact"
        )
        b = advonnx.attack(
            byte, x * 255, None, "dag", gamma=0.01, steps=steps, targeted=True, target=target, gradient="exact"
        )
        if steps == 1:  # one step of gamma · (hi − lo) in L∞
            np.testing.assert_allclose(a.linf, 0.01, rtol=1e-5)
            np.testing.assert_allclose(b.linf, 2.55, rtol=1e-5)
        np.testing.assert_allclose(b.x_adv, 255 * a.x_adv, rtol=1e-4, atol=2e-3)
        np.testing.assert_allclose(b.linf, 255 * a.linf, rtol=1e-4)
