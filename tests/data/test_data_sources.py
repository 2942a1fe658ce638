"""Class folders, flat folders, CSV manifests, npz, limit, subset, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import assert_one_line_error, write_image

from advonnx.data import InputExpectation, load_dataset
from advonnx.errors import DataError

E2 = InputExpectation("NCHW", (16, 20), 1)
SEG = InputExpectation("NCHW", (16, 20), 1, task="segmentation")


def png(path, rng, shape=(16, 20)):
    return write_image(path, rng.integers(0, 256, size=shape).astype(np.uint8))


@pytest.fixture
def class_tree(tmp_path, rng):
    root = tmp_path / "cls"
    for c, n in [("benign", 2), ("malignant", 3)]:
        for i in range(n):
            png(root / c / f"img{i}.png", rng)
    return root


def test_class_folders(class_tree):
    ds = load_dataset(class_tree, E2)
    assert ds.x.shape == (5, 1, 16, 20)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [0, 0, 1, 1, 1]
    assert ds.sample_ids[0] == "benign/img0.png" and ds.sample_ids[-1] == "malignant/img2.png"
    assert ds.class_names == ["benign", "malignant"]
    assert "0=benign" in ds.description["label_source"]


def test_class_folders_matched_to_class_names(class_tree):
    ds = load_dataset(class_tree, E2, class_names=["normal", "malignant", "benign"])
    assert ds.y.tolist() == [2, 2, 1, 1, 1]
    with pytest.raises(DataError) as ei:
        load_dataset(class_tree, E2, class_names=["benign", "normal"])
    assert_one_line_error(ei, "malignant", "class_names")


def test_flat_folder_without_labels_and_mixed_sizes(tmp_path, rng):
    png(tmp_path / "f" / "b.png", rng)
    png(tmp_path / "f" / "a.png", rng, (32, 40))
    (tmp_path / "f" / ".DS_Store").write_bytes(b"junk")
    ds = load_dataset(tmp_path / "f", E2)
    assert ds.y is None and ds.sample_ids == ["a.png", "b.png"]
    assert "predictions will be the reference" in ds.description["label_source"]
    assert "1 of 2 images resampled" in ds.description["resize"]
    assert ds.spacing[0] == (2.0, 2.0) and ds.skipped == []
    assert "hidden" in ds.description["notes"]


def test_limit_and_subset_deterministic(class_tree):
    a = load_dataset(class_tree, E2, limit=3)
    b = load_dataset(class_tree, E2, limit=3)
    assert a.sample_ids == b.sample_ids == ["benign/img0.png", "benign/img1.png", "malignant/img0.png"]
    np.testing.assert_array_equal(a.x, b.x)
    s = a.subset([2, 0])
    assert s.sample_ids == ["malignant/img0.png", "benign/img0.png"] and s.y.tolist() == [1, 0]
    assert len(a.subset(a.y == 0)) == 2 and len(s.spacing) == 2


def test_corrupt_file_skipped_and_listed(class_tree):
    (class_tree / "benign" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (class_tree / "notes.txt").write_text("hello", encoding="utf-8")
    ds = load_dataset(class_tree, E2)
    assert len(ds) == 5
    ids = dict(ds.skipped)
    assert "benign/broken.png" in ids and "notes.txt" in ids
    assert all("\n" not in r for r in ids.values())
    assert "2 files skipped" in ds.description["notes"]


def test_manifest_classification_relative_paths_and_names(tmp_path, rng):
    png(tmp_path / "imgs" / "a.png", rng)
    png(tmp_path / "imgs" / "b.png", rng)
    m = tmp_path / "sub" / "manifest.csv"
    m.parent.mkdir()
    m.write_text("path,label\n../imgs/b.png,tumour\n../imgs/a.png,healthy\n", encoding="utf-8")
    ds = load_dataset(m, E2)
    assert ds.sample_ids == ["../imgs/b.png", "../imgs/a.png"]  # manifest order kept
    assert ds.y.tolist() == [1, 0] and ds.class_names == ["healthy", "tumour"]
    ds2 = load_dataset(m, E2, class_names=["tumour", "healthy"])
    assert ds2.y.tolist() == [0, 1]
    m2 = tmp_path / "sub" / "ints.csv"
    m2.write_text("path,label\n../imgs/a.png,1\n../imgs/b.png,0\n", encoding="utf-8")
    assert load_dataset(m2, E2).y.tolist() == [1, 0]


def test_manifest_segmentation_with_masks(tmp_path, rng):
    img = rng.integers(0, 256, size=(32, 40)).astype(np.uint8)
    mask = np.zeros((32, 40), np.uint8)
    mask[8:24, 10:30] = 2
    mask[0:4, 0:4] = 1
    write_image(tmp_path / "i.png", img)
    write_image(tmp_path / "m.png", mask)
    (tmp_path / "seg.csv").write_text("image,mask\ni.png,m.png\n", encoding="utf-8")
    ds = load_dataset(tmp_path / "seg.csv", SEG)
    assert ds.x.shape == (1, 1, 16, 20) and ds.y.shape == (1, 16, 20) and ds.y.dtype == np.int64
    assert set(np.unique(ds.y)) == {0, 1, 2}  # nearest: no blended labels
    np.testing.assert_array_equal(ds.y[0], mask[::2, ::2])
    assert "nearest" in ds.description["label_source"]
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "seg.csv", SEG, class_names=["bg", "fg"])
    assert_one_line_error(ei, "label 2")


def test_manifest_binary_255_masks(tmp_path, rng):
    write_image(tmp_path / "i.png", rng.integers(0, 256, size=(16, 20)).astype(np.uint8))
    write_image(tmp_path / "m.png", (np.eye(16, 20) * 255).astype(np.uint8))
    (tmp_path / "seg.csv").write_text("image,mask\ni.png,m.png\n", encoding="utf-8")
    ds = load_dataset(tmp_path / "seg.csv", SEG)
    np.testing.assert_array_equal(ds.y[0], np.eye(16, 20))


def test_npz_round_trip(tmp_path, rng):
    x = rng.random((4, 1, 16, 20)).astype(np.float64)
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=np.array([0, 1, 1, 0]), sample_id=np.array(list("abcd")))
    ds = load_dataset(p, E2)
    assert ds.x.dtype == np.float32 and ds.y.tolist() == [0, 1, 1, 0] and ds.sample_ids == list("abcd")
    np.testing.assert_allclose(ds.x, x, rtol=1e-6)
    assert ds.spacing == [(1.0, 1.0)] * 4 and "1 mm assumed" in ds.description["spacing"]
    np.savez(p, x=x * 100)
    with pytest.raises(DataError) as ei:
        load_dataset(p, E2)
    assert_one_line_error(ei, "d.npz", "intensity")
    ds2 = load_dataset(p, E2, intensity="minmax", limit=2)
    assert len(ds2) == 2 and ds2.sample_ids == ["npz:0", "npz:1"] and ds2.y is None
    assert ds2.x.min() == 0 and ds2.x.max() == 1


def test_npz_segmentation_and_spacing(tmp_path, rng):
    p = tmp_path / "s.npz"
    np.savez(
        p,
        x=rng.random((2, 16, 20, 1)),
        y=rng.integers(0, 3, (2, 16, 20)),
        spacing=np.array([3.0, 3.0]),
        class_names=np.array(["bg", "a", "b"]),
    )
    ds = load_dataset(p, InputExpectation("NHWC", (16, 20), 1, task="segmentation"))
    assert ds.y.shape == (2, 16, 20) and ds.spacing == [(3.0, 3.0)] * 2 and ds.class_names == ["bg", "a", "b"]


def test_suite_npz_loads():
    from pathlib import Path

    p = Path(__file__).resolve().parents[2] / "advonnx" / "suites" / "data" / "brain_slices_test.npz"
    if not p.exists():
        pytest.skip("suite data not built")
    ds = load_dataset(p, InputExpectation("NCHW", (64, 64), 1, task="segmentation"))
    assert ds.x.shape[1:] == (1, 64, 64) and ds.y.shape[1:] == (64, 64) and ds.spacing[0] == (3.0, 3.0)


def test_manifest_3d_segmentation_nifti(tmp_path, rng):
    vol = rng.normal(size=(12, 32, 40)).astype(np.float32)
    lab = np.zeros((12, 32, 40), np.uint8)
    lab[4:8, 8:24, 10:30] = 3
    write_image(tmp_path / "ct" / "case1.nii.gz", vol, spacing=(2.0, 0.5, 0.5))
    write_image(tmp_path / "ct" / "case1_seg.nii.gz", lab, spacing=(2.0, 0.5, 0.5))
    (tmp_path / "ct" / "m.csv").write_text("image,mask\ncase1.nii.gz,case1_seg.nii.gz\n", encoding="utf-8")
    e = InputExpectation("NDHWC", (6, 16, 20), 1, task="segmentation")
    ds = load_dataset(tmp_path / "ct" / "m.csv", e, intensity="percentile:1-99")
    assert ds.x.shape == (1, 6, 16, 20, 1) and ds.y.shape == (1, 6, 16, 20)
    np.testing.assert_array_equal(ds.y[0], lab[::2, ::2, ::2])
    np.testing.assert_allclose(ds.spacing[0], (4.0, 1.0, 1.0))
    assert ds.description["intensity_rule"] == "percentile:1-99"
