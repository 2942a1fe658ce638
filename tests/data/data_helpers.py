"""Helpers that write test images with SimpleITK into tmp_path (nothing is stored in the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from advonnx.errors import DataError


def write_image(path: Path, arr: np.ndarray, spacing=None, vector: bool = False) -> Path:
    """Write ``arr`` (array order, (z,)y,x[,c]) with ``spacing`` in array order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr, isVector=vector)
    if spacing is not None:
        img.SetSpacing([float(s) for s in reversed(spacing)])
    sitk.WriteImage(img, str(path))
    return path


def write_dicom_series(folder: Path, vol: np.ndarray, spacing=(2.5, 0.7, 0.7), uid_suffix="1") -> Path:
    """A CT-like DICOM series, one file per slice, written with sitk.ImageFileWriter + series tags.

    File names are written in reverse slice order so that the reader must sort by position.
    """
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(vol.astype(np.int16))
    img.SetSpacing([float(s) for s in reversed(spacing)])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    tags = [
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.7" + uid_suffix),
        ("0020|000e", "1.2.826.0.1.3680043.2.1125.2.7" + uid_suffix),
        ("0020|0037", "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))),
        ("0008|103e", "advonnx test series"),
        ("0008|0060", "CT"),
        ("0018|0050", str(spacing[0])),
    ]
    n = img.GetDepth()
    for i in range(n):
        sl = img[:, :, i]
        for k, v in tags:
            sl.SetMetaData(k, v)
        sl.SetMetaData("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, i)))))
        sl.SetMetaData("0020|0013", str(i + 1))
        writer.SetFileName(str(folder / f"slice{n - 1 - i:03d}.dcm"))
        writer.Execute(sl)
    return folder


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    """The DataError's message is one line and names what it should."""
    assert isinstance(excinfo.value, DataError)
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.strip() == msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg
