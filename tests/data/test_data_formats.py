"""Every supported format round-trips through load_dataset; layout, channels, resizing."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import assert_one_line_error, write_dicom_series, write_image

from advonnx.data import Dataset, InputExpectation, load_dataset
from advonnx.errors import DataError

E2 = InputExpectation("NCHW", (16, 20), 1)
E3 = InputExpectation("NCDHW", (6, 16, 20), 1)


def gray(rng, shape=(16, 20), dtype=np.uint8, hi=256):
    return rng.integers(0, hi, size=shape).astype(dtype)


def test_png_8bit_round_trip(tmp_path, rng):
    a = gray(rng)
    p = write_image(tmp_path / "a.png", a)
    ds = load_dataset(p, E2)
    assert isinstance(ds, Dataset) and len(ds) == 1
    assert ds.x.shape == (1, 1, 16, 20) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[0, 0], a / 255.0, atol=1e-7)
    assert ds.y is None and ds.sample_ids == ["a.png"] and ds.spacing == [(1.0, 1.0)]
    assert ds.description["intensity_rule"] == "auto"
    assert ds.description["intensity_resolved"] == "auto: divide:255 (1 images)"  # what 'auto' did
    assert "PNG" in ds.description["format"] and "1 mm assumed" in ds.description["spacing"]


def test_png_16bit_uses_percentile_window(tmp_path, rng):
    a = gray(rng, dtype=np.uint16, hi=4096)
    p = write_image(tmp_path / "a16.png", a)
    ds = load_dataset(p, E2)
    lo, hi = np.percentile(a.astype(float), [0.5, 99.5])
    np.testing.assert_allclose(ds.x[0, 0], np.clip((a - lo) / (hi - lo), 0, 1), atol=1e-6)
    # an explicit rule wins
    ds2 = load_dataset(p, E2, intensity="divide:4095")
    np.testing.assert_allclose(ds2.x[0, 0], a / 4095.0, atol=1e-6)
    assert ds2.description["intensity_rule"] == "divide:4095"


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mha", ".nrrd", ".mhd"])
def test_volume_formats_anisotropic_spacing(tmp_path, rng, ext):
    vol = rng.normal(40, 300, size=(6, 16, 20)).astype(np.float32)  # HU-like
    p = write_image(tmp_path / f"vol{ext}", vol, spacing=(3.0, 0.8, 0.6))
    ds = load_dataset(p, E3, intensity="window:-1000,400")
    assert ds.x.shape == (1, 1, 6, 16, 20)
    np.testing.assert_allclose(ds.x[0, 0], np.clip((vol + 1000) / 1400, 0, 1), atol=1e-6)
    np.testing.assert_allclose(ds.spacing[0], (3.0, 0.8, 0.6), rtol=1e-6)  # (z, y, x)
    assert "mm" in ds.description["spacing"]


def test_mhd_folder_ignores_raw_companion(tmp_path, rng):
    write_image(tmp_path / "d" / "v.mhd", rng.normal(size=(6, 16, 20)).astype(np.float32))
    assert (tmp_path / "d" / "v.raw").exists()
    ds = load_dataset(tmp_path / "d", E3)
    assert ds.sample_ids == ["v.mhd"] and ds.skipped == []


def test_dicom_single_file_2d(tmp_path, rng):
    a = rng.integers(-1000, 1000, size=(16, 20)).astype(np.int16)
    p = write_image(tmp_path / "x.dcm", a, spacing=(0.5, 0.4))
    ds = load_dataset(p, E2, intensity="window:-1000,1000")
    assert ds.x.shape == (1, 1, 16, 20)
    np.testing.assert_allclose(ds.x[0, 0], (a + 1000) / 2000, atol=1e-6)
    np.testing.assert_allclose(ds.spacing[0], (0.5, 0.4), rtol=1e-5)


def test_dicom_series_folder_is_one_volume(tmp_path, rng):
    vol = rng.integers(-1000, 1000, size=(6, 16, 20)).astype(np.int16)
    d = write_dicom_series(tmp_path / "ct", vol, spacing=(2.5, 0.7, 0.7))
    ds = load_dataset(d, E3, intensity="window:-1000,1000")
    assert len(ds) == 1 and ds.sample_ids == ["ct"]
    np.testing.assert_allclose(ds.x[0, 0], (vol + 1000) / 2000, atol=1e-6)  # slice order by position
    np.testing.assert_allclose(ds.spacing[0], (2.5, 0.7, 0.7), rtol=1e-4)
    assert "DICOM series" in ds.description["format"]


def test_folder_of_dicom_series_for_3d_model(tmp_path, rng):
    for i, name in enumerate(["p1", "p2"]):
        write_dicom_series(tmp_path / "study" / name, rng.integers(0, 500, size=(6, 16, 20)), uid_suffix=str(i))
    ds = load_dataset(tmp_path / "study", E3)
    assert ds.sample_ids == ["p1", "p2"] and ds.y is None


def test_nchw_vs_nhwc_placement(tmp_path, rng):
    rgb = gray(rng, (16, 20, 3))
    p = write_image(tmp_path / "c.png", rgb, vector=True)
    a = load_dataset(p, InputExpectation("NCHW", (16, 20), 3)).x
    b = load_dataset(p, InputExpectation("NHWC", (16, 20), 3)).x
    assert a.shape == (1, 3, 16, 20) and b.shape == (1, 16, 20, 3)
    np.testing.assert_array_equal(a[0].transpose(1, 2, 0), b[0])
    np.testing.assert_allclose(b[0], rgb / 255.0, atol=1e-7)
    vol = rng.normal(size=(6, 16, 20)).astype(np.float32)
    pv = write_image(tmp_path / "v.nii.gz", vol)
    c = load_dataset(pv, InputExpectation("NDHWC", (6, 16, 20), 1)).x
    d = load_dataset(pv, E3).x
    assert c.shape == (1, 6, 16, 20, 1) and d.shape == (1, 1, 6, 16, 20)
    np.testing.assert_array_equal(c[..., 0], d[:, 0])


def test_rgb_to_gray_and_gray_to_rgb(tmp_path, rng):
    rgb = gray(rng, (16, 20, 3))
    p = write_image(tmp_path / "c.png", rgb, vector=True)
    ds = load_dataset(p, E2)
    lum = (rgb.astype(float) @ [0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(ds.x[0, 0], lum, atol=1e-6)
    assert "luminance" in ds.description["channels"]
    g = gray(rng)
    pg = write_image(tmp_path / "g.png", g)
    ds3 = load_dataset(pg, InputExpectation("NHWC", (16, 20), 3))
    assert ds3.x.shape == (1, 16, 20, 3)
    for c in range(3):
        np.testing.assert_allclose(ds3.x[0, ..., c], g / 255, atol=1e-7)
    assert "repeated" in ds3.description["channels"]


def test_rgba_drops_alpha(tmp_path, rng):
    rgba = gray(rng, (16, 20, 4))
    p = write_image(tmp_path / "c.png", rgba, vector=True)
    ds = load_dataset(p, InputExpectation("NCHW", (16, 20), 3))
    np.testing.assert_allclose(ds.x[0].transpose(1, 2, 0), rgba[..., :3] / 255, atol=1e-7)
    assert "alpha" in ds.description["channels"]


def test_resample_keeps_extent_and_updates_spacing(tmp_path, rng):
    vol = np.tile(np.linspace(0, 1, 40, dtype=np.float32), (12, 32, 1))  # ramp along x
    p = write_image(tmp_path / "v.nii.gz", vol, spacing=(2.0, 1.0, 0.5))
    ds = load_dataset(p, E3, intensity="none")
    assert ds.x.shape == (1, 1, 6, 16, 20)
    np.testing.assert_allclose(ds.spacing[0], (4.0, 2.0, 1.0))
    row = ds.x[0, 0, 3, 8]
    assert np.all(np.diff(row) > 0) and 0 < row[0] < 0.05 and 0.95 < row[-1] < 1
    assert "1 of 1 images resampled" in ds.description["resize"]


def test_refuse_names_file_and_size(tmp_path, rng):
    p = write_image(tmp_path / "big.png", gray(rng, (32, 40)))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2, resize="refuse")
    assert_one_line_error(ei, "big.png", "32x40", "16x20", "resample")


def test_dynamic_shape_keeps_each_size(tmp_path, rng):
    a, b, c = gray(rng, (16, 20)), gray(rng, (16, 20)), gray(rng, (18, 20))
    write_image(tmp_path / "f" / "a.png", a)
    write_image(tmp_path / "f" / "b.png", b)
    dyn = InputExpectation("NCHW", None, None)
    ds = load_dataset(tmp_path / "f", dyn)
    assert ds.x.shape == (2, 1, 16, 20)
    write_image(tmp_path / "f" / "c.png", c)
    ds = load_dataset(tmp_path / "f", dyn, intensity="divide:255")
    assert ds.x.shape == (3, 1, None, 20) and list(ds.blocks(8)) == [(0, 2), (2, 3)]
    np.testing.assert_allclose(ds.x[2][0], c / 255.0, atol=1e-7)  # own size, not resampled
    np.testing.assert_allclose(ds.x[0:2][:, 0], np.stack([a, b]) / 255.0, atol=1e-7)
    assert "2 sample sizes" in ds.description["sizes"]
    with pytest.raises(DataError, match="different sizes"):
        ds.x[1:3]  # a block never mixes sizes
    part = InputExpectation("NCHW", (16, None), 1)  # fixed H, dynamic W
    assert load_dataset(tmp_path / "f", part).x.shape == (3, 1, 16, 20)


def test_dimension_mismatch(tmp_path, rng):
    p = write_image(tmp_path / "a.png", gray(rng))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E3)
    assert_one_line_error(ei, "a.png", "2-D")
    v = write_image(tmp_path / "v.nii.gz", rng.normal(size=(6, 16, 20)).astype(np.float32))
    with pytest.raises(DataError) as ei:
        load_dataset(v, E2)
    assert_one_line_error(ei, "v.nii.gz", "3-D")


def test_nhwc_uint8_model_dtype(tmp_path, rng):
    a = gray(rng)
    p = write_image(tmp_path / "a.png", a)
    ds = load_dataset(p, InputExpectation("NHWC", (16, 20), 1, value_range=(0, 255), dtype="uint8"))
    assert ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.x[0, ..., 0], a)


def test_tabular_nf_flattens_gray_images(tmp_path, rng):
    a = gray(rng, (8, 8))
    p = write_image(tmp_path / "d.png", a)
    ds = load_dataset(p, InputExpectation("NF", (64,), None))
    assert ds.x.shape == (1, 64) and ds.spacing is None
    np.testing.assert_allclose(ds.x[0], a.reshape(-1) / 255, atol=1e-7)


@pytest.mark.parametrize("ext,tol", [(".jpg", 0.08), (".bmp", 1e-7), (".tif", 1e-7)])
def test_other_2d_formats(tmp_path, rng, ext, tol):
    a = np.tile(np.linspace(0, 255, 20), (16, 1)).astype(np.uint8)  # smooth: JPEG keeps it close
    p = write_image(tmp_path / f"a{ext}", a)
    ds = load_dataset(p, E2)
    assert ds.x.shape == (1, 1, 16, 20)
    np.testing.assert_allclose(ds.x[0, 0], a / 255.0, atol=tol)


def test_class_folders_of_dicom_series_3d(tmp_path, rng):
    for k, (c, pid) in enumerate([("healthy", "p1"), ("tumour", "p2"), ("tumour", "p3")]):
        write_dicom_series(tmp_path / "cls" / c / pid, rng.integers(0, 500, size=(6, 16, 20)), uid_suffix=str(k))
    write_image(tmp_path / "cls" / "healthy" / "extra.nii.gz", rng.normal(size=(6, 16, 20)).astype(np.float32))
    ds = load_dataset(tmp_path / "cls", E3)
    assert ds.sample_ids == ["healthy/extra.nii.gz", "healthy/p1", "tumour/p2", "tumour/p3"]
    assert ds.y.tolist() == [0, 0, 1, 1] and ds.class_names == ["healthy", "tumour"]
    # a series folder for a 2-D model: every slice file is a sample
    ds2 = load_dataset(tmp_path / "cls" / "tumour" / "p2", E2)
    assert len(ds2) == 6 and ds2.sample_ids[0] == "slice000.dcm"
