"""The per-file sample pipeline (channels -> intensity -> size -> dtype/layout) and SimpleITK resampling."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from advonnx.data.dataset import InputExpectation
from advonnx.data.intensity import IntensityRule, apply_rule
from advonnx.data.readers import NO_SPACING_FORMATS, RawImage, Unreadable
from advonnx.data.sources.base import err

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


class Pipeline:
    """Channels -> intensity -> size -> dtype/layout, one sample at a time, counting what it did."""

    def __init__(
        self, expect: InputExpectation, rule: IntensityRule, resize: str, voxel_spacing: tuple[float, ...] | None = None
    ):
        self.e = expect
        self.rule = rule
        self.resize = resize
        self.voxel_spacing = voxel_spacing  # resample to this spacing (mm, array order) first
        self.nd = expect.spatial_ndim
        self.channels = 1 if self.nd is None else expect.channels
        self.last_shape: tuple[int, ...] | None = None  # the last image's size before a fixed-size resample
        self.counts: dict[str, int] = {}
        self.rules: dict[str, int] = {}  # intensity rule 'auto' resolved to -> images
        self.formats: dict[str, int] = {}
        self.no_spacing = 0
        self.dtype = np.dtype(expect.dtype)

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _count_rule(self, rule: str) -> None:
        self.rules[rule] = self.rules.get(rule, 0) + 1

    def _squeeze(self, raw: RawImage) -> tuple[np.ndarray, tuple[float, ...]]:
        arr, spacing = raw.array, raw.spacing
        want = self.nd
        if want is None:
            return arr, spacing
        while arr.ndim - 1 > want and arr.shape[0] == 1:
            arr, spacing = arr[0], spacing[1:]
        have = arr.ndim - 1
        if have != want:
            size = "x".join(map(str, arr.shape[:-1]))
            if have == 2:
                raise Unreadable(
                    f"2-D image ({size}) but the model takes 3-D volumes ({self.e.layout})",
                    "give volumes (NIfTI, MHA, NRRD or a DICOM series folder) or use a 2-D model",
                )
            raise Unreadable(
                f"3-D volume ({size}) but the model takes 2-D images ({self.e.layout})",
                "give 2-D images (e.g. slices saved as PNG or single-slice DICOM) or use a 3-D model",
            )
        return arr, spacing

    def _adapt_channels(self, arr: np.ndarray, color: bool) -> np.ndarray:
        c = arr.shape[-1]
        if color and c in (2, 4):
            arr = arr[..., :-1]
            c -= 1
            self._count("alpha channel dropped")
        want = self.channels
        if want is None:
            want = self.channels = c
        if c == want:
            return arr
        if c == 1:
            self._count(f"grayscale repeated to {want} channels")
            return np.repeat(arr, want, axis=-1)
        if c == 3 and want == 1:
            self._count("RGB converted to luminance (0.299R+0.587G+0.114B)")
            return (arr.astype(np.float64) @ LUMA)[..., None]
        raise Unreadable(
            f"{c} channels but the model takes {want}", f"give 1-channel or RGB images, or images with {want} channels"
        )

    def _target(self, shape: tuple[int, ...], sid: str) -> tuple[int, ...]:
        """The model's fixed size per axis; a dynamic axis keeps the sample's own size."""
        fixed = self.e.spatial_shape
        return tuple(n if fixed is None or fixed[i] is None else fixed[i] for i, n in enumerate(shape))

    def image(self, raw: RawImage, sid: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
        self.formats[raw.fmt] = self.formats.get(raw.fmt, 0) + 1
        arr, spacing = self._squeeze(raw)
        arr = self._adapt_channels(arr, raw.color)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise Unreadable("holds NaN or infinite values", "replace them (e.g. with the background value) first")
        if self.rule.kind == "auto":  # record what 'auto' resolved to
            eight = raw.eight_bit if raw.eight_bit is not None else arr.dtype == np.uint8
            self._count_rule("divide:255" if eight else "percentile:0.5-99.5")
        arr = apply_rule(arr, self.rule, self.e.value_range, eight_bit=raw.eight_bit, name=sid)
        lo, hi = self.e.value_range
        if self.nd is None:  # tabular: flatten a gray image
            feats = arr.reshape(-1)
            want = self.e.spatial_shape[0] if self.e.spatial_shape else None
            if want is not None and feats.size != want:
                raise err(
                    sid,
                    f"image has {feats.size} pixels but the model takes {want} features",
                    "resize the images to match, or give an .npz of feature vectors",
                )
            return cast_to(feats, self.dtype, lo, hi), None
        if raw.fmt in NO_SPACING_FORMATS:
            self.no_spacing += 1
        if self.voxel_spacing is not None:
            arr, spacing = resample_to_spacing(arr, spacing, self.voxel_spacing, sitk.sitkLinear)
        shape = self.last_shape = arr.shape[:-1]
        target = self._target(shape, sid)
        if target != shape:
            if self.resize == "refuse":
                raise err(
                    sid,
                    f"image size {size_str(shape)} but the model takes {size_str(target)}",
                    "resize the images, or load with resize='resample'",
                )
            arr, spacing = resample(arr, spacing, target, sitk.sitkLinear)
            self._count("resampled (linear, physical extent kept)")
        out = cast_to(arr, self.dtype, lo, hi)
        if self.e.channels_first:
            out = np.moveaxis(out, -1, 0)
        return np.ascontiguousarray(out), tuple(spacing)

    def mask(self, raw: RawImage, sid: str, image_shape: tuple[int, ...], target: tuple[int, ...]) -> np.ndarray:
        arr, spacing = self._squeeze(raw)
        if arr.shape[-1] > 1:
            if raw.color and arr.shape[-1] in (2, 4):
                arr = arr[..., :-1]
            if not np.all(arr == arr[..., :1]):
                raise err(sid, "the mask has several differing channels", "save masks as one-channel label images")
        lab = arr[..., 0]
        if lab.dtype.kind == "f":
            if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                raise err(sid, "the mask holds non-integer values", "save masks as integer label images")
        if lab.size and lab.min() < 0:
            raise err(sid, f"the mask holds a negative label {int(lab.min())}", "labels must be 0..K-1")
        lab = lab.astype(np.int64)
        if self.voxel_spacing is not None:
            lab, spacing = resample_to_spacing(lab[..., None], spacing, self.voxel_spacing, sitk.sitkNearestNeighbor)
            lab = lab[..., 0]
        if lab.shape != image_shape:  # same physical extent assumed
            lab, _ = resample(lab[..., None], spacing, image_shape, sitk.sitkNearestNeighbor)
            lab = lab[..., 0]
            self._count("masks resampled to their image's size (nearest)")
        if lab.shape != target:
            lab, _ = resample(lab[..., None], spacing, target, sitk.sitkNearestNeighbor)
            lab = lab[..., 0]
        return lab.astype(np.int64)


def size_str(shape) -> str:
    return "x".join(str(s) for s in shape)


def cast_to(arr: np.ndarray, dtype: np.dtype, lo: float, hi: float) -> np.ndarray:
    arr = np.clip(arr, lo, hi)
    if dtype.kind in "iu":
        arr = np.rint(arr)
    return arr.astype(dtype)


def resample(arr: np.ndarray, spacing, target, interpolator) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample a (*spatial, C) array to ``target`` keeping its physical extent (SimpleITK)."""
    shape = arr.shape[:-1]
    c = arr.shape[-1]
    work = (
        arr
        if arr.dtype.kind == "f"
        else arr.astype(np.float64 if interpolator != sitk.sitkNearestNeighbor else np.int32)
    )
    img = sitk.GetImageFromArray(work[..., 0]) if c == 1 else sitk.GetImageFromArray(work, isVector=True)
    img.SetSpacing([float(s) for s in reversed(spacing)])
    new_spacing = [s * n / t for s, n, t in zip(spacing, shape, target, strict=True)]
    # pixel centres: keep the outer edges where they were
    origin = [(ns - s) / 2.0 for s, ns in zip(spacing, new_spacing, strict=True)]
    out = sitk.Resample(
        img,
        [int(t) for t in reversed(target)],
        sitk.Transform(),
        interpolator,
        list(reversed(origin)),
        list(reversed(new_spacing)),
        img.GetDirection(),
        0.0,
        img.GetPixelID(),
    )
    res = sitk.GetArrayFromImage(out)
    if c == 1:
        res = res[..., None]
    return res, tuple(float(s) for s in new_spacing)


def resample_to_spacing(arr: np.ndarray, spacing, new_spacing, interpolator) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample a (*spatial, C) array to the voxel size ``new_spacing`` (mm, array order) with SimpleITK.

    The first voxel's centre stays where it was; each axis gets ``round(n * spacing / new_spacing)``
    voxels (at least 1); ``interpolator``: ``sitk.sitkLinear`` for images, nearest for label maps.
    """
    shape = arr.shape[:-1]
    if len(new_spacing) != len(shape):
        raise Unreadable(
            f"{len(shape)}-D image but {len(new_spacing)} spacing values were given",
            f"give --spacing {len(shape)} values (mm, array order)",
        )
    size = tuple(max(1, int(round(n * s / ns))) for n, s, ns in zip(shape, spacing, new_spacing, strict=True))
    if size == tuple(shape) and all(abs(s - ns) < 1e-9 for s, ns in zip(spacing, new_spacing, strict=True)):
        return arr, tuple(float(s) for s in spacing)
    c = arr.shape[-1]
    nearest = interpolator == sitk.sitkNearestNeighbor
    work = arr if arr.dtype.kind == "f" else arr.astype(np.int32 if nearest else np.float64)
    img = sitk.GetImageFromArray(work[..., 0]) if c == 1 else sitk.GetImageFromArray(work, isVector=True)
    img.SetSpacing([float(s) for s in reversed(spacing)])
    out = sitk.Resample(
        img,
        [int(t) for t in reversed(size)],
        sitk.Transform(),
        interpolator,
        img.GetOrigin(),
        [float(s) for s in reversed(new_spacing)],
        img.GetDirection(),
        0.0,
        img.GetPixelID(),
    )
    res = sitk.GetArrayFromImage(out)
    if c == 1:
        res = res[..., None]
    return res, tuple(float(s) for s in new_spacing)
