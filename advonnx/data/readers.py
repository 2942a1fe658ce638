"""SimpleITK readers: one file or one DICOM series -> a (*spatial, C) array with spacing."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: data files of header/data pairs: never samples of their own
COMPANION_SUFFIXES = (".raw", ".zraw", ".raw.gz", ".img", ".img.gz", ".dat")
HEADER_SUFFIXES = (".mhd", ".nhdr", ".hdr")

#: file formats that carry no physical spacing (SimpleITK reports 1.0)
NO_SPACING_FORMATS = {"PNG", "JPEG", "BMP", "TIFF"}


SUPPORTED = "PNG, JPEG, BMP, TIFF, NIfTI, MHA/MHD, NRRD, DICOM (file or series folder), .npz, CSV manifests"


class Unreadable(Exception):
    """A file that cannot be used as a sample (reason in one line); folders skip it.

    ``todo`` says what to do when the file was the whole source (then it is an error).
    """

    def __init__(self, reason: str, todo: str = f"advonnx reads {SUPPORTED}"):
        super().__init__(reason)
        self.todo = todo


@dataclass
class RawImage:
    array: np.ndarray  # (*spatial, C) in array order: (rows, cols) or (z, y, x)
    spacing: tuple[float, ...]  # same order as the spatial axes
    eight_bit: bool  # read from an 8-bit file (uint8 pixels)
    color: bool  # multi-component pixels (RGB/RGBA)
    fmt: str


def one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def sitk_message(exc: BaseException) -> str:
    """The useful line of a SimpleITK exception (they span several lines with C++ paths)."""
    s = str(exc)
    m = re.search(r".*(?:sitk::ERROR|ITK ERROR):\s*(.*)", s, re.S)
    if m:
        s = m.group(1)
    s = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", s.strip())  # "PNGImageIO(0x55..): "
    return one_line(s, 200)


def suffix(path: Path) -> str:
    name = path.name.lower()
    for double in (".nii.gz", ".raw.gz", ".img.gz"):
        if name.endswith(double):
            return double
    return path.suffix.lower()


def format_name(path: Path) -> str:
    return {
        ".png": "PNG",
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".bmp": "BMP",
        ".tif": "TIFF",
        ".tiff": "TIFF",
        ".nii": "NIfTI",
        ".nii.gz": "NIfTI",
        ".mha": "MHA",
        ".mhd": "MHD",
        ".nrrd": "NRRD",
        ".nhdr": "NRRD",
        ".dcm": "DICOM",
        ".dicom": "DICOM",
        ".hdr": "Analyze",
    }.get(suffix(path), "DICOM" if suffix(path) == "" else suffix(path).lstrip(".").upper() or "file")


@contextlib.contextmanager
def quiet_itk():
    """Keep ITK/GDCM warnings off the terminal while probing files (restored afterwards)."""
    old = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(old)


def is_companion(path: Path) -> bool:
    """A .raw/.img data file whose header (.mhd/.nhdr/.hdr) sits beside it."""
    suf = suffix(path)
    if suf not in COMPANION_SUFFIXES:
        return False
    stem = path.name[: -len(suf)]
    for h in HEADER_SUFFIXES:
        if (path.parent / (stem + h)).exists() or (path.parent / (stem + h.upper())).exists():
            return True
    # an .mhd may name its data file differently
    for mhd in path.parent.glob("*.mhd"):
        try:
            head = mhd.read_text(encoding="utf-8", errors="replace")[:4000]
        except OSError:
            continue
        if re.search(rf"ElementDataFile\s*=\s*{re.escape(path.name)}\s*$", head, re.M):
            return True
    return False


def dicom_series(folder: Path) -> list[tuple[str, list[str]]]:
    """(series UID, sorted file names) for every DICOM series directly in ``folder``."""
    with quiet_itk():
        try:
            uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError:
            return []
        out = []
        for uid in sorted(uids):
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
            if files:
                out.append((uid, list(files)))
    return out


def _raw_from_image(img: sitk.Image, fmt: str) -> RawImage:
    comps = img.GetNumberOfComponentsPerPixel()
    pid = img.GetPixelID()
    if pid in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise Unreadable("complex-valued pixels; advonnx needs real intensities")
    if img.GetDimension() > 4:
        raise Unreadable(f"{img.GetDimension()}-D image; advonnx reads 2-D and 3-D images")
    arr = sitk.GetArrayFromImage(img)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    if comps == 1:
        arr = arr[..., None]
    # 4-D with a singleton leading axis (e.g. NIfTI with t=1): drop it
    while arr.ndim - 1 > 3 and arr.shape[0] == 1:
        arr, spacing = arr[0], spacing[1:]
    if arr.ndim - 1 > 3:
        raise Unreadable(f"4-D image of size {tuple(arr.shape[:-1])}; advonnx reads 2-D and 3-D images")
    eight_bit = pid in (sitk.sitkUInt8, sitk.sitkVectorUInt8)
    if arr.dtype.kind not in "biuf":
        raise Unreadable(f"pixel type {img.GetPixelIDTypeAsString()} is not a real number")
    return RawImage(arr, spacing, eight_bit, comps > 1, fmt)


ORIENTATION_LETTERS = ("LR", "PA", "SI")


def parse_orientation(code: str | None) -> str | None:
    """A three-letter orientation code (DICOM convention, the letter each axis increases toward:
    ``LPS`` is DICOM's patient system, ``RAS`` NIfTI's), or None for "as stored"."""
    if code is None or str(code).strip().lower() in ("", "none", "as-stored", "as stored"):
        return None
    c = str(code).strip().upper()
    if len(c) != 3 or sorted(next((i for i, pair in enumerate(ORIENTATION_LETTERS) if ch in pair), 9) for ch in c) != [
        0,
        1,
        2,
    ]:
        raise ValueError(
            f"orientation {code!r} is not a three-letter code with one of L/R, P/A, S/I each (e.g. RAS, LPS)"
        )
    return c


def reorient(img: sitk.Image, orientation: str | None) -> sitk.Image:
    """``img`` permuted and flipped so its axes increase toward ``orientation`` (3-D only; 2-D
    images have no patient orientation to follow and are returned as they are)."""
    if orientation is None or img.GetDimension() != 3:
        return img
    return sitk.DICOMOrient(img, orientation)


def read_file(path: Path, orientation: str | None = None) -> RawImage:
    """One image file (any SimpleITK format), reoriented if asked. Raises :class:`Unreadable`."""
    with quiet_itk():
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise Unreadable(f"cannot read as an image: {sitk_message(e)}") from None
    return _raw_from_image(reorient(img, orientation), format_name(path))


DICOM_GROUP_TAGS = (("0010|0020", "PatientID"), ("0020|000d", "StudyInstanceUID"))


def dicom_group(path: Path) -> str | None:
    """The group a DICOM file belongs to: its PatientID, else its StudyInstanceUID (header only);
    None for other formats or when neither tag is set."""
    if format_name(path) != "DICOM":
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with quiet_itk():
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
    for tag, _ in DICOM_GROUP_TAGS:
        if reader.HasMetaDataKey(tag):
            value = reader.GetMetaData(tag).strip().strip("\x00").strip()
            if value:
                return value
    return None


def read_series(files: list[str], orientation: str | None = None) -> RawImage:
    """One DICOM series (file names in GDCM's order) as a volume, reoriented if asked. Raises
    :class:`Unreadable`."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    with quiet_itk():
        try:
            img = reader.Execute()
        except RuntimeError as e:
            raise Unreadable(f"cannot read the DICOM series: {sitk_message(e)}") from None
    return _raw_from_image(reorient(img, orientation), "DICOM series")
