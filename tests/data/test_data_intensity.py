"""Intensity rules, checked numerically on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from advonnx.data import INTENSITY_RULES, map_intensity, parse_intensity_rule
from advonnx.errors import DataError


def test_auto_uint8_divides_by_255():
    img = np.array([[0, 51], [255, 102]], dtype=np.uint8)
    np.testing.assert_allclose(map_intensity(img, "auto"), [[0, 0.2], [1, 0.4]])
    np.testing.assert_allclose(map_intensity(img, "auto", (-1, 1)), [[-1, -0.6], [1, -0.2]])


def test_auto_non_8bit_is_percentile_window():
    img = np.arange(1001, dtype=np.int16) - 500  # -500..500, percentiles are exact-ish
    out = map_intensity(img, "auto")
    lo, hi = np.percentile(img.astype(float), [0.5, 99.5])
    np.testing.assert_allclose(out, np.clip((img - lo) / (hi - lo), 0, 1))
    assert out.min() == 0 and out.max() == 1


def test_percentile_rule_hand_computed():
    img = np.arange(101, dtype=np.float32)  # percentile p == value p
    out = map_intensity(img, "percentile:10-90")
    expect = np.clip((np.arange(101) - 10) / 80, 0, 1)
    np.testing.assert_allclose(out, expect, atol=1e-12)
    assert out[10] == 0 and out[90] == 1 and out[50] == pytest.approx(0.5)


def test_ct_window():
    hu = np.array([-2000, -1000, -300, 400, 3000], dtype=np.int16)
    out = map_intensity(hu, "window:-1000,400")
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    out2 = map_intensity(hu, "window: -1000, 400", value_range=(-1.0, 1.0))
    np.testing.assert_allclose(out2, [-1, -1, 0, 1, 1])


def test_minmax_and_constant_image():
    np.testing.assert_allclose(map_intensity(np.array([2.0, 4.0, 6.0]), "minmax"), [0, 0.5, 1])
    np.testing.assert_allclose(map_intensity(np.full(4, 7.0), "minmax", (0, 255)), 0)


def test_divide_rule_12bit():
    img = np.array([0, 4095, 2000], dtype=np.uint16)
    np.testing.assert_allclose(map_intensity(img, "divide:4095"), [0, 1, 2000 / 4095])


def test_none_checks_range():
    img = np.array([0.0, 0.5, 1.0])
    np.testing.assert_array_equal(map_intensity(img, "none"), img)
    with pytest.raises(DataError, match="outside the model's value range") as ei:
        map_intensity(np.array([0.0, 2.0]), "none")
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("bad", ["percentile:90-10", "window:400,-1000", "foo", "percentile:1-101", "divide:0", ""])
def test_bad_rules(bad):
    with pytest.raises(DataError) as ei:
        map_intensity(np.zeros(3), bad)
    assert "\n" not in str(ei.value) and "auto" in str(ei.value)


def test_non_finite_and_non_numeric_refused():
    with pytest.raises(DataError, match="NaN"):
        map_intensity(np.array([0.0, np.nan]), "minmax")
    with pytest.raises(DataError, match="not a real number"):
        map_intensity(np.array(["a"]), "minmax")


def test_rules_documented_and_parsed():
    assert {"auto", "none", "minmax", "percentile:LO-HI", "window:LO,HI"} <= set(INTENSITY_RULES)
    assert str(parse_intensity_rule("percentile:1-99")) == "percentile:1-99"
    assert str(parse_intensity_rule("window:-1000,400")) == "window:-1000,400"


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e4, 1e4)),
    st.sampled_from(["auto", "minmax", "percentile:1-99", "window:-100,100", "divide:7"]),
    st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]),
)
def test_output_always_inside_range(img, rule, vr):
    out = map_intensity(img, rule, vr)
    assert out.shape == img.shape
    assert np.all(out >= vr[0]) and np.all(out <= vr[1])
