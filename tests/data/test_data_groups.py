"""Sample groups (patient / subject / volume / study, issue 20): npz ``group``, a manifest's
``group`` column, DICOM PatientID (else StudyInstanceUID), the slices of one series, and the file
stem of single images."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from data_helpers import assert_one_line_error, write_dicom_series, write_image

from advonnx.data import InputExpectation, load_dataset
from advonnx.errors import DataError

E2 = InputExpectation("NCHW", (16, 20), 1)


def test_npz_group_array_and_subset(tmp_path, rng):
    x = rng.uniform(0, 1, (6, 1, 16, 20)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6) % 2, group=np.array(["p1", "p1", "p2", "p2", "p2", "p3"]))
    ds = load_dataset(tmp_path / "d.npz", E2)
    assert ds.groups == ["p1", "p1", "p2", "p2", "p2", "p3"] and "3 groups" in ds.description["groups"]
    assert ds.subset([5, 0]).groups == ["p3", "p1"]
    assert load_dataset(tmp_path / "d.npz", E2, limit=2).groups == ["p1", "p1"]
    np.savez(tmp_path / "bad.npz", x=x, group=np.array(["p1", "p2"]))
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "bad.npz", E2)
    assert_one_line_error(e, "bad.npz", "group has shape (2,)", "one group id")
    np.savez(tmp_path / "none.npz", x=x)
    assert load_dataset(tmp_path / "none.npz", E2).groups is None  # each sample its own group


def test_manifest_group_column(tmp_path, rng):
    for name in ("a", "b", "c"):
        write_image(tmp_path / f"{name}.png", rng.integers(0, 256, (16, 20)).astype(np.uint8))
    (tmp_path / "m.csv").write_text(
        "path,label,group\na.png,0,patient7\nb.png,1,patient7\nc.png,0,patient9\n", encoding="utf-8"
    )
    ds = load_dataset(tmp_path / "m.csv", E2)
    assert ds.groups == ["patient7", "patient7", "patient9"]
    assert ds.description["groups"] == "2 groups: manifest column 'group' (3)"
    (tmp_path / "e.csv").write_text("path,label,group\na.png,0,\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "e.csv", E2)
    assert_one_line_error(e, "e.csv line 2", "empty group")
    # no group column: each image file is its own group, named by its path without the extension
    (tmp_path / "n.csv").write_text("path,label\na.png,0\nc.png,0\n", encoding="utf-8")
    assert load_dataset(tmp_path / "n.csv", E2).groups == ["a", "c"]


def test_dicom_patient_id_and_series_slices(tmp_path, rng):
    img = sitk.GetImageFromArray(rng.integers(0, 500, (16, 20)).astype(np.int16))
    img.SetMetaData("0010|0020", "PAT-0042")
    img.SetMetaData("0020|000d", "1.2.3.4")
    folder = tmp_path / "flat"
    folder.mkdir()
    sitk.WriteImage(img, str(folder / "x.dcm"))
    write_image(folder / "y.png", rng.integers(0, 256, (16, 20)).astype(np.uint8))
    ds = load_dataset(folder, E2)
    assert ds.sample_ids == ["x.dcm", "y.png"] and ds.groups == ["PAT-0042", "y"]
    assert "DICOM PatientID/StudyInstanceUID (1)" in ds.description["groups"]
    assert load_dataset(folder / "x.dcm", E2).groups == ["PAT-0042"]
    # slices of one series for a 2-D model: one group, the series' study (no PatientID written)
    write_dicom_series(tmp_path / "series", rng.integers(0, 500, size=(5, 16, 20)), uid_suffix="9")
    ds = load_dataset(tmp_path / "series", E2)
    assert len(ds) == 5 and set(ds.groups) == {"1.2.826.0.1.3680043.2.1125.1.79"}
