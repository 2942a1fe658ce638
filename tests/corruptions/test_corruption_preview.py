"""The preview grid: one PNG, rows = corruptions, columns = severity 0..5."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from corruption_helpers import phantom_2d, phantom_3d

from advonnx.corruptions.preview import preview_grid
from advonnx.errors import AdvonnxError


def test_png_of_expected_size_2d(tmp_path):
    path = tmp_path / "grid.png"
    grid = preview_grid(phantom_2d(48), "ghosting,jpeg,gamma", path, value_range=(0.0, 1.0))
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == (6 * 48 + 5 * 2, 3 * 48 + 2 * 2)  # (width, height)
    assert image.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), grid)
    clean = grid[:48, :48]
    np.testing.assert_array_equal(clean, grid[50:98, :48])  # column 0 is the clean image
    assert not np.array_equal(clean, grid[:48, 5 * 50 : 5 * 50 + 48])  # severity 5 differs


def test_every_corruption_3d_central_slice(tmp_path):
    volume = phantom_3d(8, 24) * 200.0 - 100.0  # e.g. CT-like units
    path = tmp_path / "sub" / "all.png"
    grid = preview_grid(volume, "all", path, value_range=(-100.0, 100.0))
    assert grid.shape == (16 * 24 + 15 * 2, 6 * 24 + 5 * 2)
    assert sitk.ReadImage(str(path)).GetSize() == grid.shape[::-1]
    centre = np.clip(np.round((volume[4] + 100.0) * 255.0 / 200.0), 0, 255)
    np.testing.assert_array_equal(grid[:24, :24], centre.astype(np.uint8))


def test_bad_input(tmp_path):
    with pytest.raises(AdvonnxError):
        preview_grid(np.zeros((2, 2, 8, 8)), "gamma", tmp_path / "x.png")
    with pytest.raises(AdvonnxError):
        preview_grid(phantom_2d(16), "gamma", tmp_path / "x.jpg")
    with pytest.raises(AdvonnxError):
        preview_grid(phantom_2d(16), "nope", tmp_path / "x.png")
