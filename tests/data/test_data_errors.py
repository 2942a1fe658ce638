"""Bad inputs: each raises DataError with one line naming the file and what to do."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import assert_one_line_error, write_image

from advonnx.data import InputExpectation, load_dataset
from advonnx.errors import AdvonnxError, DataError

E2 = InputExpectation("NCHW", (16, 20), 1)


def png(path, rng, shape=(16, 20)):
    return write_image(path, rng.integers(0, 256, size=shape).astype(np.uint8))


def test_missing_path(tmp_path):
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "nope", E2)
    assert_one_line_error(ei, "nope", "no such file")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "empty", E2)
    assert_one_line_error(ei, "empty", "folder is empty")


def test_class_folders_without_files(tmp_path):
    (tmp_path / "c" / "a").mkdir(parents=True)
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "c", E2)
    assert_one_line_error(ei, "holds no image files")


def test_all_files_corrupt(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    for n in ["a.png", "b.nii.gz", "c.dcm"]:
        (d / n).write_bytes(b"garbage" * 10)
    with pytest.raises(DataError) as ei:
        load_dataset(d, E2)
    assert_one_line_error(ei, "bad", "none of the 3 files", "a.png")


def test_single_corrupt_file(tmp_path):
    p = tmp_path / "x.nii.gz"
    p.write_bytes(b"garbage")
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "x.nii.gz", "cannot read")


def test_wrong_npz_shape(tmp_path):
    p = tmp_path / "w.npz"
    np.savez(p, x=np.zeros((3, 16, 20, 1), np.float32))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "w.npz", "(3, 16, 20, 1)", "(N, 1, 16, 20)", "transpose")
    np.savez(p, x=np.zeros((3, 16, 20), np.float32))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "w.npz", "channel axis")
    np.savez(p, x=np.zeros((3, 1, 8, 8), np.float32))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "w.npz", "(3, 1, 8, 8)")


def test_nan_in_npz(tmp_path):
    x = np.zeros((3, 1, 16, 20), np.float32)
    x[1, 0, 2, 2] = np.nan
    p = tmp_path / "n.npz"
    np.savez(p, x=x)
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "n.npz", "NaN", "sample 1")


def test_npz_bad_dtypes_and_keys(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, x=np.zeros((2, 1, 16, 20), np.complex64))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "c.npz", "complex")
    np.savez(p, x=np.array([["a"] * 20] * 16)[None, None].repeat(2, 0))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "c.npz", "not numbers")
    np.savez(p, images=np.zeros(3))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "c.npz", "no array named 'x'", "images")
    np.savez(p, x=np.zeros((2, 1, 16, 20)), y=np.array([0, 5]))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2, class_names=["a", "b"])
    assert_one_line_error(ei, "c.npz", "label 5")
    np.savez(p, x=np.zeros((2, 1, 16, 20)), y=np.array([0, 1, 1]))
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "c.npz", "2 samples")


def test_label_not_in_class_names(tmp_path, rng):
    png(tmp_path / "a.png", rng)
    (tmp_path / "m.csv").write_text("path,label\na.png,cyst\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "m.csv", E2, class_names=["benign", "malignant"])
    assert_one_line_error(ei, "m.csv line 2", "cyst", "benign, malignant")
    (tmp_path / "m.csv").write_text("path,label\na.png,7\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "m.csv", E2, class_names=["benign", "malignant"])
    assert_one_line_error(ei, "m.csv line 2", "label 7")


def test_missing_file_in_manifest(tmp_path, rng):
    png(tmp_path / "a.png", rng)
    (tmp_path / "m.csv").write_text("path,label\na.png,0\nmissing.png,1\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "m.csv", E2)
    assert_one_line_error(ei, "missing.png", "m.csv line 3", "fix the path")


def test_missing_mask_and_bad_header(tmp_path, rng):
    png(tmp_path / "a.png", rng)
    (tmp_path / "s.csv").write_text("image,mask\na.png,nomask.png\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "s.csv", InputExpectation("NCHW", (16, 20), 1, task="segmentation"))
    assert_one_line_error(ei, "nomask.png", "does not exist")
    (tmp_path / "h.csv").write_text("file,class\na.png,0\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "h.csv", E2)
    assert_one_line_error(ei, "h.csv", "path,label")


def test_bad_arguments():
    with pytest.raises(DataError):
        load_dataset(".", E2, resize="stretch")
    with pytest.raises(DataError):
        load_dataset(".", E2, intensity="gamma")
    with pytest.raises(AdvonnxError):
        InputExpectation("NWHC", (16, 20), 1)
    with pytest.raises(AdvonnxError):
        InputExpectation("NCHW", (16, 20, 3), 1)
    with pytest.raises(AdvonnxError):
        InputExpectation("NCHW", (16, 20), 1, value_range=(1.0, 0.0))


def test_none_rule_out_of_range_image(tmp_path, rng):
    p = png(tmp_path / "a.png", rng)
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2, intensity="none")
    assert_one_line_error(ei, "a.png", "outside the model's value range")


def test_channel_mismatch_is_skipped_in_folder(tmp_path, rng):
    png(tmp_path / "f" / "a.png", rng)
    write_image(tmp_path / "f" / "two.nrrd", rng.random((16, 20, 5)).astype(np.float32), vector=True)
    ds = load_dataset(tmp_path / "f", E2)
    assert ds.sample_ids == ["a.png"] and dict(ds.skipped)["two.nrrd"].startswith("5 channels")
