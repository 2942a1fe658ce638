"""Segmentation metrics against hand-computed values on crafted masks (issue 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advonnx.metrics import confusion_overlap, pixel_accuracy
from advonnx.seg_metrics import hd95, hd95_class, hd95_undefined, mean_hd95


def square(r0, c0, size=3, shape=(10, 10)):
    m = np.zeros(shape, bool)
    m[r0 : r0 + size, c0 : c0 + size] = True
    return m


def test_hd95_of_shifted_squares_by_hand():
    # 3x3 squares 4 columns apart; surfaces are the 8 border pixels. From A's surface to B's:
    # column 4 → 2 (3 pixels), column 3 → 3 (2), column 2 → 4 (3): P95 of [2,2,2,3,3,4,4,4] = 4.
    a, b = square(2, 2), square(2, 6)
    assert hd95_class(a, b) == pytest.approx(4.0)
    assert hd95_class(a, a) == 0.0


def test_hd95_uses_anisotropic_spacing_in_numpy_axis_order():
    a, b = square(2, 2), square(2, 6)  # displaced along columns (axis 1)
    assert hd95_class(a, b, (1.0, 2.0)) == pytest.approx(8.0)
    assert hd95_class(a, b, (2.0, 1.0)) == pytest.approx(4.0)
    p, q = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    p[3, 3], q[6, 7] = True, True  # one pixel each: Euclidean distance in mm
    assert hd95_class(p, q, (0.5, 2.0)) == pytest.approx(math.hypot(3 * 0.5, 4 * 2.0))


def test_hd95_is_the_larger_directed_percentile():
    a = square(2, 2, size=2, shape=(12, 12))
    b = a.copy()
    b[11, 11] = True  # one far outlier pixel in B only
    # A→B: 0 everywhere; B→A: 4 surface pixels at 0 and one at hypot(8, 8) from (3, 3):
    # P95 of 5 values interpolates at index 3.8 → 0.8 · hypot(8, 8)
    assert hd95_class(a, b) == pytest.approx(0.8 * math.hypot(8, 8))
    assert hd95_class(b, a) == pytest.approx(hd95_class(a, b))


def test_hd95_in_3d():
    a = np.zeros((6, 6, 6), bool)
    b = a.copy()
    a[1, 1, 1], b[4, 1, 1] = True, True
    assert hd95_class(a, b, (2.5, 1.0, 1.0)) == pytest.approx(7.5)


def test_empty_masks_dice_and_hd95():
    ref = np.zeros((3, 10, 10), np.int64)
    pred = np.zeros((3, 10, 10), np.int64)
    ref[0][square(2, 2)] = 1  # sample 0: class 1 in ref only
    ref[1][square(2, 2)] = 1
    pred[1][square(2, 2)] = 1  # sample 1: identical
    # sample 2: class 1 absent from both
    dice, iou = confusion_overlap(pred, ref, 2)
    np.testing.assert_allclose(dice[:, 1], [0.0, 1.0, 1.0])
    np.testing.assert_allclose(iou[:, 1], [0.0, 1.0, 1.0])
    h = hd95(pred, ref, 2)
    assert math.isnan(h[0, 1]) and h[1, 1] == 0.0 and math.isnan(h[2, 1])
    assert np.isnan(h[:, 0]).all()  # background column not measured
    assert hd95_undefined(h) == 2
    m = mean_hd95(h)
    assert math.isnan(m[0]) and m[1] == 0.0


def test_dice_iou_pixel_accuracy_by_hand():
    ref = np.zeros((1, 4, 4), np.int64)
    pred = np.zeros((1, 4, 4), np.int64)
    ref[0, :2, :2] = 1  # 4 pixels
    pred[0, :2, :3] = 1  # 6 pixels, 4 shared
    dice, iou = confusion_overlap(pred, ref, 2)
    assert dice[0, 1] == pytest.approx(2 * 4 / 10)
    assert iou[0, 1] == pytest.approx(4 / 6)
    assert dice[0, 0] == pytest.approx(2 * 10 / 22)  # background: 12 vs 10 pixels, 10 shared
    assert pixel_accuracy(pred, ref)[0] == pytest.approx(14 / 16)


def test_per_sample_spacing():
    ref = np.zeros((2, 10, 10), np.int64)
    pred = np.zeros((2, 10, 10), np.int64)
    for i in range(2):
        ref[i][square(2, 2)] = 1
        pred[i][square(2, 6)] = 1
    h = hd95(pred, ref, 2, [(1.0, 1.0), (1.0, 0.5)])
    np.testing.assert_allclose(h[:, 1], [4.0, 2.0])


def test_hd95_of_signal_masks_and_masks_filling_the_image():
    """1-D per-timestep masks (signals) are measured as one-row images; a mask that fills the
    whole image is bounded by the image border instead of having no surface."""
    a = np.zeros(40, bool)
    a[5:15] = True
    b = np.zeros(40, bool)
    b[8:20] = True
    # surfaces {5, 14} and {8, 19}: directed distances {3, 5} both ways, 95th percentile 4.9
    assert hd95_class(a, b) == pytest.approx(4.9, abs=1e-5)
    assert hd95_class(a, b, (0.5,)) == pytest.approx(2.45, abs=1e-5)
    full = np.ones((6, 6), bool)
    assert hd95_class(full, full) == 0.0
    part = np.zeros((6, 6), bool)
    part[:, :3] = True
    assert np.isfinite(hd95_class(full, part))
