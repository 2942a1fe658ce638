"""--orientation: one volume stored as NIfTI in RAS index order (as converters such as dcm2niix
often write) and as a DICOM series in the scanner's order reads identically, and gets identical
predictions, once reoriented; as stored, the two arrays disagree."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from advonnx.data import load_dataset
from advonnx.data.dataset import InputExpectation
from advonnx.errors import DataError

SHAPE = (6, 10, 8)  # array order (z, y, x)


def _volume() -> sitk.Image:
    arr = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 97 * 10).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    # x → patient right (-L), y → posterior, z → inferior: not LPS, so readers can disagree
    img.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    return img


def _write_dicom_series(img: sitk.Image, folder) -> None:
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = img.GetDirection()
    series = "1.2.826.0.1.3680043.2.1125.1.42"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        position = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (
            ("0008|0060", "MR"),
            ("0020|000e", series),
            ("0020|000d", series + ".1"),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(f"{p:.6f}" for p in position)),
            (
                "0020|0037",
                "\\".join(
                    f"{d:.6f}"
                    for d in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
                ),
            ),
            ("0018|0050", f"{img.GetSpacing()[2]:.6f}"),
        ):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


@pytest.fixture()
def two_formats(tmp_path):
    img = _volume()
    sitk.WriteImage(sitk.DICOMOrient(img, "RAS"), str(tmp_path / "vol.nii.gz"))  # same physical image
    _write_dicom_series(img, tmp_path / "series")
    return tmp_path / "vol.nii.gz", tmp_path / "series"


def _expect():
    return InputExpectation(layout="NCDHW", spatial_shape=SHAPE, channels=1)


def test_nifti_and_dicom_series_agree_after_orientation(two_formats):
    nifti, series = two_formats
    a = load_dataset(nifti, _expect())
    b = load_dataset(series, _expect())
    assert not np.allclose(a.x, b.x), "as stored, the two files' arrays differ (x, y, z flipped)"
    for code in ("RAS", "LPS", "SRA"):
        a = load_dataset(nifti, _expect(), orientation=code)
        b = load_dataset(series, _expect(), orientation=code)
        np.testing.assert_allclose(a.x, b.x, atol=1e-6)
        assert a.description["orientation"].startswith(code)
    lps = load_dataset(series, _expect(), orientation="LPS").x[0, 0]
    reference = sitk.GetArrayFromImage(sitk.DICOMOrient(_volume(), "LPS")).astype(np.float64)
    assert np.corrcoef(lps.ravel(), reference.ravel())[0, 1] > 0.9999  # same voxels, windowed intensities


def test_same_clean_predictions_from_both_formats(two_formats):
    """A model sees the same input from both files, so its clean predictions agree."""
    import advonnx
    from advonnx.suite import DatasetEntry, cached_dataset

    torch = pytest.importorskip("torch")
    nifti, series = two_formats
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    net(torch.zeros(1, 1, *SHAPE))
    path = nifti.parent / "cls3d.onnx"
    torch.onnx.export(
        net.eval(),
        (torch.zeros(1, 1, *SHAPE),),
        str(path),
        input_names=["x"],
        output_names=["z"],
        dynamic_axes={"x": {0: "N"}},
        dynamo=False,
    )
    model = advonnx.load_model(path)
    preds = {}
    for fmt, src in (("nifti", nifti), ("dicom", series)):
        data = cached_dataset(DatasetEntry(name=fmt, path=str(src), orientation="RAS"), model, "m")
        preds[fmt] = model.predict(data.x[:])  # runs read datasets per block (a SampleArray)
    np.testing.assert_allclose(preds["nifti"], preds["dicom"], atol=1e-5)


def test_bad_orientation_is_one_line(two_formats):
    nifti, _ = two_formats
    with pytest.raises(DataError, match="three-letter code"):
        load_dataset(nifti, _expect(), orientation="RAR")
