"""``load_dataset``: a .npz, an image file, a DICOM series, a folder or a CSV manifest -> Dataset."""

from __future__ import annotations

import copy
import csv
import os
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from advonnx.data import signals
from advonnx.data.dataset import Dataset, InputExpectation
from advonnx.data.intensity import IntensityRule, apply_rule, parse_intensity_rule
from advonnx.data.readers import (
    NO_SPACING_FORMATS,
    SUPPORTED,
    RawImage,
    Unreadable,
    dicom_group,
    dicom_series,
    is_companion,
    one_line,
    parse_orientation,
    read_file,
    read_series,
    suffix,
)
from advonnx.data.stream import CHECK_BLOCK, NpzMember, SampleArray, group_order
from advonnx.errors import DataError

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


def _err(where: object, what: str, todo: str) -> DataError:
    """One line: where, what is wrong; what to do."""
    return DataError(one_line(f"{where}: {what}; {todo}", 1000))


# --------------------------------------------------------------------------- sample pipeline


@dataclass
class _Item:
    sample_id: str
    path: Path  # the file, or the series folder
    files: list[str] | None = None  # DICOM series file names
    label: str | int | np.ndarray | None = None  # multi-label manifests: a (K,) 0/1 vector
    mask: Path | None = None
    group: str | None = None  # manifest column 'group'


class _Pipeline:
    """Channels -> intensity -> size -> dtype/layout, one sample at a time, counting what it did."""

    def __init__(self, expect: InputExpectation, rule: IntensityRule, resize: str,
                 voxel_spacing: tuple[float, ...] | None = None):
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
            f"{c} channels but the model takes {want}",
            f"give 1-channel or RGB images, or images with {want} channels",
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
            raise Unreadable(
                "holds NaN or infinite values",
                "replace them (e.g. with the background value) first",
            )
        if self.rule.kind == "auto":  # record what 'auto' resolved to
            eight = raw.eight_bit if raw.eight_bit is not None else arr.dtype == np.uint8
            self._count_rule("divide:255" if eight else "percentile:0.5-99.5")
        arr = apply_rule(arr, self.rule, self.e.value_range, eight_bit=raw.eight_bit, name=sid)
        lo, hi = self.e.value_range
        if self.nd is None:  # tabular: flatten a gray image
            feats = arr.reshape(-1)
            want = self.e.spatial_shape[0] if self.e.spatial_shape else None
            if want is not None and feats.size != want:
                raise _err(
                    sid,
                    f"image has {feats.size} pixels but the model takes {want} features",
                    "resize the images to match, or give an .npz of feature vectors",
                )
            return _cast(feats, self.dtype, lo, hi), None
        if raw.fmt in NO_SPACING_FORMATS:
            self.no_spacing += 1
        if self.voxel_spacing is not None:
            arr, spacing = resample_to_spacing(arr, spacing, self.voxel_spacing, sitk.sitkLinear)
        shape = self.last_shape = arr.shape[:-1]
        target = self._target(shape, sid)
        if target != shape:
            if self.resize == "refuse":
                raise _err(
                    sid,
                    f"image size {_size(shape)} but the model takes {_size(target)}",
                    "resize the images, or load with resize='resample'",
                )
            arr, spacing = resample(arr, spacing, target, sitk.sitkLinear)
            self._count("resampled (linear, physical extent kept)")
        out = _cast(arr, self.dtype, lo, hi)
        if self.e.channels_first:
            out = np.moveaxis(out, -1, 0)
        return np.ascontiguousarray(out), tuple(spacing)

    def mask(
        self, raw: RawImage, sid: str, image_shape: tuple[int, ...], target: tuple[int, ...]
    ) -> np.ndarray:
        arr, spacing = self._squeeze(raw)
        if arr.shape[-1] > 1:
            if raw.color and arr.shape[-1] in (2, 4):
                arr = arr[..., :-1]
            if not np.all(arr == arr[..., :1]):
                raise _err(
                    sid,
                    "the mask has several differing channels",
                    "save masks as one-channel label images",
                )
        lab = arr[..., 0]
        if lab.dtype.kind == "f":
            if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                raise _err(
                    sid, "the mask holds non-integer values", "save masks as integer label images"
                )
        if lab.size and lab.min() < 0:
            raise _err(
                sid, f"the mask holds a negative label {int(lab.min())}", "labels must be 0..K-1"
            )
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


def _size(shape) -> str:
    return "x".join(str(s) for s in shape)


def _cast(arr: np.ndarray, dtype: np.dtype, lo: float, hi: float) -> np.ndarray:
    arr = np.clip(arr, lo, hi)
    if dtype.kind in "iu":
        arr = np.rint(arr)
    return arr.astype(dtype)


def resample(
    arr: np.ndarray, spacing, target, interpolator
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample a (*spatial, C) array to ``target`` keeping its physical extent (SimpleITK)."""
    shape = arr.shape[:-1]
    c = arr.shape[-1]
    work = (
        arr
        if arr.dtype.kind == "f"
        else arr.astype(np.float64 if interpolator != sitk.sitkNearestNeighbor else np.int32)
    )
    img = (
        sitk.GetImageFromArray(work[..., 0])
        if c == 1
        else sitk.GetImageFromArray(work, isVector=True)
    )
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


def resample_to_spacing(
    arr: np.ndarray, spacing, new_spacing, interpolator
) -> tuple[np.ndarray, tuple[float, ...]]:
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
    out = sitk.Resample(img, [int(t) for t in reversed(size)], sitk.Transform(), interpolator, img.GetOrigin(),
                        [float(s) for s in reversed(new_spacing)], img.GetDirection(), 0.0, img.GetPixelID())
    res = sitk.GetArrayFromImage(out)
    if c == 1:
        res = res[..., None]
    return res, tuple(float(s) for s in new_spacing)


# --------------------------------------------------------------------------- labels


def _label_index(value: str | int, where: str, class_names: list[str] | None) -> int | str:
    """An int label (checked against class_names) or a class name left for later mapping."""
    if isinstance(value, str):
        v = value.strip()
        if v == "":
            raise _err(
                where, "empty label", "give every sample a label (an integer or a class name)"
            )
        if class_names is not None and v in class_names:
            return class_names.index(v)
        if re.fullmatch(r"[-+]?\d+", v):
            value = int(v)
        else:
            if class_names is not None:
                raise _err(
                    where,
                    f"label {v!r} is not one of the known classes ({', '.join(class_names)})",
                    "fix the label or pass class_names that include it",
                )
            return v
    value = int(value)
    if value < 0 or (class_names is not None and value >= len(class_names)):
        known = (
            f"0..{len(class_names) - 1} ({', '.join(class_names)})" if class_names else "0 or more"
        )
        raise _err(
            where,
            f"label {value} is outside the known classes {known}",
            "fix the label or pass class_names",
        )
    return value


def _finish_labels(
    labels: list, where: str, class_names: list[str] | None
) -> tuple[np.ndarray, list[str] | None]:
    names = [v for v in labels if isinstance(v, str)]
    if names:
        if any(isinstance(v, int) for v in labels):
            raise _err(
                where, "labels mix integers and class names", "use one kind, or pass class_names"
            )
        class_names = sorted(set(names))
        labels = [class_names.index(v) for v in labels]
    return np.asarray(labels, dtype=np.int64), class_names


# --------------------------------------------------------------------------- npz


def _load_npz(
    path: Path, e: InputExpectation, intensity: str, rule: IntensityRule, limit, class_names, desc,
    stream: bool = False,
):
    try:
        z = np.load(path, allow_pickle=False)
        files = list(z.files)
    except Exception as ex:  # noqa: BLE001 - any reader failure is the user's file
        raise _err(
            path,
            f"cannot read as .npz ({one_line(ex, 150)})",
            "save it with numpy.savez(path, x=..., y=...)",
        ) from None
    if "x" not in files:
        raise _err(
            path,
            f"no array named 'x' (found: {', '.join(files) or 'nothing'})",
            "save samples as numpy.savez(path, x=..., y=...)",
        )

    def get(key):
        try:
            return z[key]
        except ValueError as ex:  # object arrays need pickle
            raise _err(
                path,
                f"array '{key}' is not numeric ({one_line(ex, 100)})",
                f"store '{key}' as a plain numeric array",
            ) from None

    try:
        x = NpzMember(path, "x")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as ex:
        raise _err(path, f"cannot read array 'x' ({one_line(ex, 150)})", "save it with numpy.savez(path, x=..., y=...)") from None
    if x.dtype.kind == "c":
        raise _err(path, f"x is complex ({x.dtype})", "store real intensities (e.g. the magnitude)")
    if x.dtype.kind not in "biuf":
        raise _err(path, f"x has dtype {x.dtype}, not numbers", "store x as an int or float array")
    _check_npz_shape(path, x, e)
    n_all = x.shape[0]
    n = n_all if limit is None else min(int(limit), n_all)
    # one pass block by block: finite values and the value range, never the whole x at once
    lo, hi = e.value_range
    vmin, vmax = np.inf, -np.inf
    for a in range(0, n, CHECK_BLOCK):
        blk = x.read(a, min(n, a + CHECK_BLOCK))
        if not np.all(np.isfinite(blk)):
            bad = a + int(np.flatnonzero((~np.isfinite(blk.reshape(len(blk), -1))).any(axis=1))[0])
            raise _err(
                path,
                f"x holds NaN or infinite values (first in sample {bad})",
                "replace or drop those samples",
            )
        if blk.size:
            vmin, vmax = min(vmin, float(blk.min())), max(vmax, float(blk.max()))
    if intensity == "auto":
        rule = IntensityRule("none")
        desc["intensity_rule"] = "none (npz taken as stored; 'auto' does not rescale arrays)"
    if rule.kind == "none" and n and (vmin < lo or vmax > hi):
        raise _err(
            path,
            f"x values span [{vmin:g}, {vmax:g}] but the model takes [{lo:g}, {hi:g}]",
            "rescale x, or pass an intensity rule (e.g. intensity='minmax' or 'percentile:0.5-99.5')",
        )
    xo = SampleArray(_NpzSamples(x, rule, e, str(path)), n, x.shape[1:], e.dtype)
    shim = _Shape((n, *x.shape[1:]))

    if class_names is None and "class_names" in files:
        class_names = [str(c) for c in get("class_names").tolist()]
        desc["notes"] += "class names from the npz; "
    y = None
    if "y" in files:
        ym = NpzMember(path, "y")
        if ym.ndim <= 2 or ym.dtype.kind in "US":  # class indices: small, read whole
            y = _npz_labels(path, get("y"), n_all, shim, e, class_names)[:n]
        else:  # label maps: checked block by block, read per block
            if ym.shape[:1] != (n_all,):
                _npz_labels(path, ym.read(0, 1), n_all, shim, e, class_names)  # the shape message
            for a in range(0, n, CHECK_BLOCK):
                b2 = min(n, a + CHECK_BLOCK)
                _npz_labels(path, ym.read(a, b2), b2 - a, _Shape((b2 - a, *x.shape[1:])), e, class_names)
            y = SampleArray(_NpzLabels(ym, e, class_names, str(path)), n, shim.label_shape(e), np.int64)
        desc["label_source"] = "npz array 'y'"
    else:
        desc["label_source"] = "none: no 'y' in the npz; clean predictions will be the reference"
    def per_sample_strings(name: str, todo: str) -> list[str] | None:
        """npz array ``name`` as one string per sample (the first n), None when absent."""
        if name not in files:
            return None
        arr = get(name)
        if arr.shape != (n_all,):
            raise _err(path, f"{name} has shape {arr.shape}, expected ({n_all},)", todo)
        return [str(v) for v in arr.tolist()[:n]]

    ids = per_sample_strings("sample_id", "store one id per sample") or [f"npz:{i}" for i in range(n)]
    groups = per_sample_strings("group", "store one group id (patient, subject, volume) per sample")
    if groups is not None:
        desc["groups"] = f"npz array 'group' ({len(set(groups))} groups)"
    spacing = None
    nd = e.spatial_ndim
    if nd == 1 and "sampling_rate" in files:  # a signal's sample period in seconds
        fs = float(np.asarray(get("sampling_rate")).reshape(-1)[0])
        if not fs > 0:
            raise _err(path, f"sampling_rate is {fs:g}", "store the sampling rate in hertz (a positive number)")
        spacing = [(1.0 / fs,)] * n
        desc["spacing"] = f"sample period 1/{fs:g} s from the npz 'sampling_rate'"
    elif nd == 1 and "spacing" not in files:
        desc["spacing"] = "unknown: the npz has no 'sampling_rate' (hertz-defined corruptions use the model's)"
    elif nd is not None:
        if "spacing" in files:
            sp = get("spacing").astype(np.float64)
            if sp.shape == (nd,):
                sp = np.broadcast_to(sp, (n_all, nd))
            if sp.shape != (n_all, nd) or not np.all(sp > 0):
                raise _err(
                    path,
                    f"spacing has shape {sp.shape} or non-positive values",
                    f"store ({nd},) or (N, {nd}) spacings in mm, array order",
                )
            spacing = [tuple(float(v) for v in row) for row in sp[:n]]
            desc["spacing"] = "from the npz 'spacing' array (mm, array order)"
        else:
            spacing = [(1.0,) * nd] * n
            desc["spacing"] = "unknown: the npz has no 'spacing'; 1 mm assumed"
    desc["format"] = "npz"
    desc["reading"] = ("per block (stored members by positioned reads, compressed ones by streaming "
                       "decompression), never stacked whole" if stream else "stacked in memory")
    if not stream:
        xo = np.asarray(xo)
        y = y if y is None or isinstance(y, np.ndarray) else np.asarray(y)
    return Dataset(xo, y, ids, spacing, [], desc, class_names, groups=groups)


class _Shape:
    """Shape and ndim of ``x`` for the checks that need only those."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.ndim = len(self.shape)

    def label_shape(self, e: InputExpectation) -> tuple[int, ...]:
        return self.shape[2:] if e.channels_first else self.shape[1:-1]


class _NpzSamples:
    """Block reader of an npz's ``x``: the intensity rule per sample, then the model's dtype."""

    def __init__(self, member: NpzMember, rule: IntensityRule, e: InputExpectation, name: str):
        self.member, self.rule, self.e, self.name = member, rule, e, name

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        x = self.member.rows(idx)
        lo, hi = self.e.value_range
        if self.rule.kind != "none" and len(x):
            x = np.stack([apply_rule(x[j], self.rule, (lo, hi), eight_bit=x.dtype == np.uint8,
                                     name=f"{self.name} sample {int(i)}") for j, i in enumerate(idx)])
        return _cast(x, np.dtype(self.e.dtype), lo, hi)


class _NpzLabels:
    """Block reader of an npz's label maps ``y`` (checked once at load, converted per block)."""

    def __init__(self, member: NpzMember, e: InputExpectation, class_names, name: str):
        self.member, self.e, self.class_names, self.name = member, e, class_names, name

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        y = self.member.rows(idx)
        if y.ndim == 2 + (self.e.spatial_ndim or 0):  # a channel axis of 1 (checked at load)
            y = y[:, 0] if self.e.channels_first else y[..., 0]
        return y.astype(np.int64)


def _check_npz_shape(path: Path, x: np.ndarray, e: InputExpectation) -> None:
    nd = e.spatial_ndim
    want_ndim = 2 if nd is None else nd + 2
    shape = tuple(x.shape)
    got = f"x has shape {shape} but the model takes {e.shape_str()}"
    if x.ndim != want_ndim:
        hint = "store x in the model's layout"
        if nd is not None and x.ndim == want_ndim - 1 and e.channels in (1, None):
            hint = (
                "add a channel axis (x[:, None] for channels-first, x[..., None] for channels-last)"
            )
        raise _err(path, got, hint)
    if x.shape[0] == 0:
        raise _err(path, "x holds no samples", "store at least one sample")
    if nd is None:
        f = e.spatial_shape[0] if e.spatial_shape else None
        if f is not None and shape[1] != f:
            raise _err(path, got, "store one feature vector per row")
        return
    if e.channels_first:
        c, sp = shape[1], shape[2:]
    else:
        c, sp = shape[-1], shape[1:-1]
    ok_c = e.channels is None or c == e.channels
    ok_s = e.spatial_shape is None or all(
        w is None or w == g for w, g in zip(e.spatial_shape, sp, strict=True)
    )
    if ok_c and ok_s:
        return
    hint = "store x in the model's layout and size"
    other_c = shape[-1] if e.channels_first else shape[1]
    if e.channels is not None and other_c == e.channels and c != e.channels:
        perm = (
            (0, x.ndim - 1, *range(1, x.ndim - 1))
            if e.channels_first
            else (0, *range(2, x.ndim), 1)
        )
        hint = f"x looks channels-{'last' if e.channels_first else 'first'}; transpose it with x.transpose{perm}"
    raise _err(path, got, hint)


def _multilabel_npz(path, y, n, k: int) -> np.ndarray:
    """``y`` of a multi-label model: (N, K) of 0/1 (ints, bools or integral floats)."""
    if y.dtype.kind not in "biuf" or y.shape != (n, k):
        raise _err(
            path,
            f"y has shape {y.shape} ({y.dtype}) but the multi-label model has {k} findings",
            f"store y as an ({n}, {k}) array of 0/1, one column per finding",
        )
    if y.size and not np.all((y == 0) | (y == 1)):
        raise _err(path, "y holds values other than 0 and 1", "store 1 where a finding is present, 0 where absent")
    return y.astype(np.int64)


def _npz_labels(path, y, n, x, e: InputExpectation, class_names):
    if e.findings:
        return _multilabel_npz(path, y, n, e.findings)
    if y.dtype.kind in "US":
        vals = [
            _label_index(str(v), f"{path} y[{i}]", class_names)
            for i, v in enumerate(y.reshape(-1).tolist())
        ]
        arr, _ = _finish_labels(vals, str(path), class_names)
        y = arr.reshape(y.shape)
    if y.dtype.kind not in "biuf":
        raise _err(path, f"y has dtype {y.dtype}", "store integer labels")
    if y.shape[:1] != (n,):
        raise _err(
            path,
            f"y has shape {y.shape} but x holds {n} samples",
            "store one label (or label map) per sample",
        )
    if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or not np.all(y == np.round(y))):
        raise _err(path, "y holds non-integer values", "store integer class indices")
    if e.task == "classification":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise _err(
                path,
                f"y has shape {y.shape}; classification needs one class index per sample",
                "store y as class indices, e.g. y.argmax(1) for one-hot",
            )
    else:
        sp = x.shape[2:] if e.channels_first else x.shape[1:-1]
        if y.ndim == x.ndim and y.shape[1 if e.channels_first else -1] == 1:
            y = y[:, 0] if e.channels_first else y[..., 0]
        if tuple(y.shape[1:]) != tuple(sp):
            raise _err(
                path,
                f"y has shape {y.shape} but label maps must be (N, {', '.join(map(str, sp))})",
                "store one label map per sample at the image size",
            )
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise _err(path, f"y holds a negative label {int(y.min())}", "labels must be 0..K-1")
    if class_names is not None and y.size and y.max() >= len(class_names):
        raise _err(
            path,
            f"y holds label {int(y.max())} but there are {len(class_names)} classes ({', '.join(class_names)})",
            "fix the labels or the class names",
        )
    return y


# --------------------------------------------------------------------------- folders


def _visible(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _is_series_dir(d: Path) -> bool:
    """A folder holding exactly one DICOM series and nothing else (a 3-D patient folder)."""
    entries = _visible(os.listdir(d))
    if not entries or any((d / n).is_dir() for n in entries):
        return False
    series = dicom_series(d)
    return len(series) == 1 and len(series[0][1]) == len(entries)


def _walk(root: Path, top: Path, three_d: bool, label, items: list[_Item], notes: dict) -> None:
    """Every sample under ``top`` (recursively), ids relative to ``root``."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = _visible(dirnames)
        hidden = [f for f in filenames if f.startswith(".")]
        notes["hidden"] = notes.get("hidden", 0) + len(hidden)
        d = Path(dirpath)
        files = _visible(filenames)
        used: set[str] = set()
        if three_d and files:
            series = [(u, f) for u, f in dicom_series(d) if len(f) > 1]
            for uid, names in series:
                rel = d.relative_to(root).as_posix()
                sid = root.name if rel == "." else rel
                if len(series) > 1:
                    sid += f"#{uid}"
                items.append(_Item(sid, d, files=names, label=label))
                used.update(Path(f).name for f in names)
        for f in files:
            p = d / f
            if f in used or is_companion(p):
                continue
            items.append(_Item(p.relative_to(root).as_posix(), p, label=label))


def _folder_items(
    root: Path, e: InputExpectation, class_names, desc, skipped
) -> tuple[list[_Item], list[str] | None]:
    three_d = e.spatial_ndim == 3
    entries = _visible(os.listdir(root))
    subdirs = [n for n in entries if (root / n).is_dir()]
    notes: dict = {}
    items: list[_Item] = []
    classes = None
    use_classes = e.task == "classification" and subdirs
    if use_classes and three_d and not (class_names and set(subdirs) <= set(class_names)):
        if all(_is_series_dir(root / s) for s in subdirs):
            use_classes = False  # a folder of patient series folders
    if use_classes and e.findings:
        raise _err(
            root,
            "class subfolders cannot label a multi-label model (a sample can have several findings)",
            "use an .npz with y of shape (N, K) or a CSV manifest with a path column and one 0/1 column per finding",
        )
    if use_classes:
        if class_names is not None:
            for s in subdirs:
                if s not in class_names:
                    raise _err(
                        root / s,
                        f"class folder {s!r} is not one of the known classes ({', '.join(class_names)})",
                        "rename or move the folder, or pass class_names that include it",
                    )
            classes = list(class_names)
        else:
            classes = subdirs
        for n in entries:
            if not (root / n).is_dir():
                skipped.append((n, "file outside the class subfolders"))
        for s in subdirs:
            _walk(root, root / s, three_d, classes.index(s), items, notes)
        desc["label_source"] = "class subfolders: " + ", ".join(
            f"{i}={c}" for i, c in enumerate(classes)
        )
        desc["format"] = "class folders"
    else:
        _walk(root, root, three_d, None, items, notes)
        desc["label_source"] = (
            "none: folder without labels; clean predictions will be the reference"
        )
        desc["format"] = "folder"
    if notes.get("hidden"):
        desc["notes"] += f"{notes['hidden']} hidden files ignored; "
    items.sort(key=lambda it: it.sample_id)
    return items, classes


# --------------------------------------------------------------------------- manifests


def _listed_path(rel: str, manifest: Path, line: int, what: str) -> Path:
    """A path written in a CSV manifest, relative to the manifest's folder; it must exist."""
    p = Path(rel) if Path(rel).is_absolute() else manifest.parent / rel
    if not p.exists():
        raise _err(
            p,
            f"{what}listed in {manifest.name} line {line} but does not exist "
            f"(relative paths resolve against {manifest.parent})",
            "fix the path in the manifest",
        )
    return p


def _manifest_items(path: Path, e: InputExpectation, class_names, desc) -> list[_Item]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as ex:
        raise _err(
            path,
            f"cannot read the manifest ({one_line(ex, 150)})",
            "save it as UTF-8 CSV with a header path,label or image,mask",
        ) from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise _err(
            path,
            "the manifest is empty",
            "write a header path,label (or image,mask) and one row per sample",
        )
    header = [h.strip().lower() for h in rows[0]]
    if e.findings and "path" in header:
        return _multilabel_manifest(path, rows, e.findings, class_names, desc)
    if "path" in header:
        ic, lc, kind = (
            header.index("path"),
            header.index("label") if "label" in header else None,
            "label",
        )
    elif "image" in header:
        ic, lc, kind = (
            header.index("image"),
            header.index("mask") if "mask" in header else None,
            "mask",
        )
    else:
        raise _err(
            path,
            f"header {','.join(rows[0])} has no 'path' or 'image' column",
            "use the header path,label (classification) or image,mask (segmentation)",
        )
    if lc is not None and kind == "label" and e.task == "segmentation":
        raise _err(
            path,
            "a path,label manifest for a segmentation model",
            "use the header image,mask with one label image per sample",
        )
    if lc is not None and kind == "mask" and e.task == "classification":
        raise _err(
            path, "an image,mask manifest for a classification model", "use the header path,label"
        )
    gc = header.index("group") if "group" in header else None
    items = []
    for i, r in enumerate(rows[1:], start=2):
        it, r, where = _manifest_item(path, r, i, len(header), ic, gc)
        if lc is not None:
            v = r[lc].strip()
            if kind == "label":
                it.label = _label_index(v, where, class_names)
            else:
                if not v:
                    raise _err(where, "empty mask path", "give every row a mask")
                it.mask = _listed_path(v, path, i, "mask ")
        items.append(it)
    if not items:
        raise _err(path, "the manifest lists no samples", "add one row per sample under the header")
    desc["format"] = "CSV manifest"
    if lc is None:
        desc["label_source"] = (
            "none: manifest without labels; clean predictions will be the reference"
        )
    elif kind == "label":
        desc["label_source"] = f"manifest column '{header[lc]}'"
    else:
        desc["label_source"] = (
            f"manifest column '{header[lc]}' (label images, nearest-neighbour resampling)"
        )
    desc["notes"] += "manifest order kept; "
    return items


def _manifest_item(path: Path, r: list[str], i: int, width: int, ic: int, gc: int | None
                   ) -> tuple[_Item, list[str], str]:
    """Row ``i`` of a manifest (``r``, padded to ``width`` columns) as an item: its image path
    (column ``ic``; a folder must hold one DICOM series) and its group (column ``gc``, if any).
    Returns the item, the padded row and where it is, for messages."""
    where = f"{path} line {i}"
    r = r + [""] * (width - len(r))
    rel = r[ic].strip()
    if not rel:
        raise _err(where, "empty image path", "give every row an image path")
    p = _listed_path(rel, path, i, "")
    it = _Item(Path(rel).as_posix(), p)
    if gc is not None:
        it.group = r[gc].strip() or None
        if it.group is None:
            raise _err(where, "empty group", "give every row a group id (patient, subject or volume), or drop the column")
    if p.is_dir():
        series = dicom_series(p)
        if len(series) != 1:
            raise _err(
                p,
                f"folder listed in {path.name} line {i} holds {len(series)} DICOM series",
                "list one image file or one single-series DICOM folder per row",
            )
        it.files = series[0][1]
    return it, r, where


_PRESENT = {"1": 1, "0": 0, "true": 1, "false": 0, "present": 1, "absent": 0, "yes": 1, "no": 0}


def _multilabel_manifest(path: Path, rows: list[list[str]], k: int, class_names, desc) -> list[_Item]:
    """A multi-label manifest: a ``path`` column and one column per finding (0/1, true/false,
    present/absent). Columns named after the model's class names are read in that order;
    otherwise the K finding columns are taken in file order."""
    raw = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in raw]
    ic = lower.index("path")
    gc = lower.index("group") if "group" in lower else None  # a patient id, not a finding
    cols = [i for i in range(len(raw)) if i not in (ic, gc)]
    names = [raw[i] for i in cols]
    if cols and "label" in [n.lower() for n in names] and k > 1:
        raise _err(path, "one 'label' column for a multi-label model",
                   f"write one 0/1 column per finding ({k}), e.g. path,{','.join(class_names or ['finding1', '...'])}")
    if class_names and set(names) == set(class_names):
        cols = [cols[names.index(c)] for c in class_names]
        names = list(class_names)
    elif cols and len(cols) != k:
        raise _err(path, f"{len(cols)} finding columns ({', '.join(names)}) but the model has {k} findings",
                   "write a path column and one 0/1 column per finding, in the model's output order")
    items = []
    for i, r in enumerate(rows[1:], start=2):
        it, r, where = _manifest_item(path, r, i, len(raw), ic, gc)
        if cols:
            vals = [r[c].strip().lower() for c in cols]
            bad = [v for v in vals if v not in _PRESENT]
            if bad:
                raise _err(where, f"finding value {bad[0]!r} is not 0/1", "write 1 (present) or 0 (absent) per finding")
            it.label = np.asarray([_PRESENT[v] for v in vals], dtype=np.int64)
        items.append(it)
    if not items:
        raise _err(path, "the manifest lists no samples", "add one row per sample under the header")
    desc["format"] = "CSV manifest (multi-label)"
    desc["label_source"] = (f"manifest finding columns: {', '.join(names)}" if cols else
                            "none: manifest without finding columns; clean predictions will be the reference")
    desc["notes"] += "manifest order kept; "
    return items


# --------------------------------------------------------------------------- entry point


def load_dataset(
    source: str | os.PathLike,
    expect: InputExpectation,
    *,
    intensity: str = "auto",
    resize: str = "resample",
    limit: int | None = None,
    class_names: list[str] | None = None,
    orientation: str | None = None,
    spacing: str | tuple[float, ...] | None = None,
    stream: bool = False,
) -> Dataset:
    """Read ``source`` into a :class:`Dataset` in the model's layout, dtype and value range.

    ``source``: an ``.npz`` (``x`` in the model's layout; optional ``y``, ``sample_id``,
    ``spacing``, ``class_names``), one image file, a folder (one subfolder per class, a flat
    folder, or DICOM series folders for 3-D models) or a CSV manifest (``path,label`` or
    ``image,mask``). Multi-label models (``expect.findings`` = K): ``y`` is (N, K) of 0/1, a
    manifest has a ``path`` column and one 0/1 column per finding; class folders are refused. Files that cannot be read inside a folder are skipped and listed in
    ``Dataset.skipped``; everything else wrong raises :class:`DataError` (one line).
    ``orientation`` (e.g. ``"RAS"``, ``"LPS"``: the direction each axis increases toward)
    reorients every 3-D image and mask with SimpleITK's DICOMOrient before use, so a volume reads
    the same from NIfTI and from a DICOM series; None keeps each file's stored order.
    ``spacing`` (mm per voxel, array order, e.g. ``"1.0,1.0,1.0"``) resamples every image file
    (linear) and mask (nearest) to that voxel size with SimpleITK after reorientation; None keeps
    the stored spacing. A dynamic axis of the model keeps each sample's own size: samples are
    then ordered grouped by size (``Dataset.blocks`` gives batches of one size).
    ``stream``: ``x`` (and label maps ``y``) stay a :class:`~advonnx.data.stream.SampleArray`
    read per block from the files (an ``.npz`` block by block), never stacked whole; otherwise
    they are stacked arrays, unless the samples differ in size.
    """
    try:
        orientation = parse_orientation(orientation)
    except ValueError as ex:
        raise DataError(f"{ex}; pass e.g. --orientation RAS") from None
    voxel_spacing = parse_spacing(spacing, expect)
    rule = parse_intensity_rule(intensity)
    if resize not in ("resample", "refuse"):
        raise DataError(f"resize={resize!r} is not understood; use 'resample' or 'refuse'")
    if limit is not None and int(limit) < 1:
        raise DataError(f"limit={limit!r} keeps no samples; pass a positive number or None")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(set(class_names)) != len(class_names):
            raise DataError(f"class_names {class_names} repeat a name; give each class once")
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        raise _err(path, "no such file or folder", "check the path")
    desc = {
        "source": str(path),
        "format": "",
        "intensity_rule": str(rule),
        "resize": resize,
        "label_source": "",
        "notes": "",
        "layout": expect.layout,
        "orientation": f"{orientation} (3-D images reoriented with SimpleITK DICOMOrient)" if orientation
        else "as stored in each file",
        "voxel_spacing": f"{_size(voxel_spacing).replace('x', ' x ')} mm (resampled with SimpleITK: linear, masks nearest)"
        if voxel_spacing else "as stored in each file",
    }
    if path.is_file() and path.name.lower().endswith(".npz"):
        if voxel_spacing is not None:
            raise _err(path, "--spacing resamples image files, not .npz arrays",
                       "resample the arrays before saving them, or leave --spacing out")
        ds = _load_npz(path, expect, intensity, rule, limit, class_names, desc, stream)
        return _finish_desc(ds)
    if signals.is_recording(path):
        if expect.spatial_ndim != 1:
            raise _err(path, f"a signal recording, but the model takes {expect.layout} inputs",
                       "give a signal model (layout NCW or NWC) or image data")
        return _finish_desc(signals.load_recording(path, expect, rule, limit, desc, DataError))

    skipped: list[tuple[str, str]] = []
    single = False
    if path.is_dir():
        if not any(not n.startswith(".") for n in os.listdir(path)):
            raise _err(
                path, "the folder is empty", f"point advonnx at a folder of images ({SUPPORTED})"
            )
        items, classes = _folder_items(path, expect, class_names, desc, skipped)
        if not items:
            raise _err(
                path,
                "the folder holds no image files",
                f"point advonnx at a folder of images ({SUPPORTED})",
            )
    elif path.name.lower().endswith(".csv"):
        items = _manifest_items(path, expect, class_names, desc)
        classes = class_names
    else:
        single = True
        items = [_Item(path.name, path)]
        classes = class_names
        desc["label_source"] = (
            "none: a single image without a label; its prediction will be the reference"
        )

    pipe = _Pipeline(expect, rule, resize, voxel_spacing)
    # one pass, one sample at a time: what can be read, its size, spacing and label; then the
    # samples are read again per block (SampleArray), grouped by size
    kept: list[_Item] = []
    ys, shapes, spacings = [], [], []
    mask_values: set[int] = set()
    held: list = []
    first_todo = f"check the files; advonnx reads {SUPPORTED}"
    for it in items:
        if limit is not None and len(kept) >= int(limit):
            break
        try:
            arr, sp, lab = _read_item(pipe, it, expect, orientation)
        except Unreadable as ex:
            if single:
                raise _err(it.path, str(ex), ex.todo) from None
            if not skipped:
                first_todo = ex.todo
            skipped.append((it.sample_id, str(ex)))
            continue
        if it.mask is not None:
            mask_values.update(np.unique(lab).tolist())
            ys.append(None)
        elif it.label is not None:
            ys.append(it.label)
        kept.append(it)
        shapes.append(arr.shape)
        spacings.append(sp)
        if not stream:  # stacked below when all have one size: no second read
            held.append((arr, lab if it.mask is not None else None))
        del arr, lab
    if not kept:
        first = skipped[0] if skipped else ("?", "?")
        raise _err(
            path,
            f"none of the {len(skipped)} files could be used (first: {first[0]}: {first[1]})",
            first_todo,
        )

    if ys and len(ys) != len(kept):
        raise _err(path, "some samples have labels and others not", "label every sample")
    order = group_order(shapes)
    kept = [kept[i] for i in order]
    shapes = [shapes[i] for i in order]
    spacings = [spacings[i] for i in order]
    ys = [ys[i] for i in order] if ys else ys
    ids = [it.sample_id for it in kept]
    group_sources: dict[str, int] = {}
    groups = []
    for it in kept:
        group, origin = _item_group(it)
        groups.append(group)
        group_sources[origin] = group_sources.get(origin, 0) + 1
    source = _ItemSource(kept, expect, rule, resize, orientation, voxel_spacing, pipe.channels)
    x = SampleArray(source.images, len(kept), np.asarray(shapes), expect.dtype)
    y = None
    if ys:
        if expect.task == "segmentation":
            source.binary_255, classes = _check_masks(path, mask_values, classes, desc)
            lab_shapes = np.asarray(shapes)[:, 1:] if expect.channels_first else np.asarray(shapes)[:, :-1]
            y = SampleArray(source.masks, len(kept), lab_shapes, np.int64, prefetch=False)
        elif expect.findings:  # (N, K) 0/1 label vectors
            y = np.stack(ys).astype(np.int64)
        else:
            y, classes = _finish_labels(ys, str(path), classes)
    if len(set(shapes)) > 1:
        desc["sizes"] = f"{len(set(shapes))} sample sizes, batched by size: " + ", ".join(
            f"{_size(s)} ({n})" for s, n in _counts(shapes).items())
    desc["reading"] = "per block, samples read again from their files" if stream or len(set(shapes)) > 1 \
        else "stacked in memory"
    if not stream and len(set(shapes)) == 1:
        x = np.stack([held[i][0] for i in order])
        if isinstance(y, SampleArray):
            masks = np.stack([held[i][1] for i in order])
            y = (masks == 255).astype(np.int64) if source.binary_255 else masks
        spacing = None if expect.spatial_ndim is None else [tuple(s) for s in spacings]
    desc["format"] = desc["format"] or ""
    fmts = ", ".join(f"{k} ({v})" for k, v in sorted(pipe.formats.items()))
    desc["format"] = f"{desc['format']}: {fmts}" if desc["format"] else fmts
    if pipe.rules:
        desc["intensity_resolved"] = "auto: " + ", ".join(f"{k} ({v} images)" for k, v in sorted(pipe.rules.items()))
    if expect.spatial_ndim is not None:
        desc["spacing"] = (
            f"{pipe.no_spacing} images from formats without spacing (PNG/JPEG/BMP/TIFF): 1 mm assumed"
            if pipe.no_spacing
            else "from the image headers (mm, array order)"
        )
    desc["channels"] = f"model takes {pipe.channels}" + "".join(
        f"; {v}x {k}" for k, v in pipe.counts.items() if "mask" not in k and "resampled" not in k
    )
    n_res = sum(v for k, v in pipe.counts.items() if k.startswith("resampled"))
    desc["resize"] = (
        f"{resize}: {n_res} of {len(kept)} images resampled (linear; masks nearest; physical extent kept)"
        if resize == "resample"
        else "refuse"
    )
    desc["groups"] = f"{len(set(groups))} groups: " + ", ".join(f"{k} ({v})" for k, v in sorted(group_sources.items()))
    if skipped:
        desc["notes"] += f"{len(skipped)} files skipped (see Dataset.skipped); "
    if limit is not None:
        desc["notes"] += f"limit={int(limit)}: first samples in sorted order; "
    return _finish_desc(Dataset(x, y, ids, spacing, skipped, desc, classes, groups=groups))


def _item_group(it: _Item) -> tuple[str, str]:
    """(group id, where it came from) of one file sample: the manifest's ``group`` column, else
    the DICOM PatientID / StudyInstanceUID (a series: of its first file), else the file's path
    without its extension (a single image is its own group)."""
    if it.group is not None:
        return it.group, "manifest column 'group'"
    dicom = dicom_group(Path(it.files[0]) if it.files else it.path)
    if dicom is not None:
        return dicom, "DICOM PatientID/StudyInstanceUID"
    sid = it.sample_id
    suf = suffix(Path(sid))
    return (sid[: -len(suf)] if suf and sid.lower().endswith(suf) else sid), "file stem"


def parse_spacing(value, expect: InputExpectation) -> tuple[float, ...] | None:
    """``"1.0,1.0,1.0"`` (or a sequence) -> positive voxel sizes in mm, one per spatial axis; None stays None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "as-stored", "none")):
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        sp = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise DataError(f"--spacing {value!r} is not a list of numbers; write e.g. --spacing 1.0,1.0,1.0 (mm)") from None
    nd = expect.spatial_ndim
    if nd in (None, 1):
        raise DataError(f"--spacing applies to images and volumes, not {expect.layout} inputs; leave it out")
    if len(sp) != nd or not all(np.isfinite(v) and v > 0 for v in sp):
        raise DataError(f"--spacing {value!r}: give {nd} positive voxel sizes in mm (array order), e.g. "
                        f"--spacing {','.join(['1.0'] * nd)}")
    return sp


def _squeezed_shape(raw: RawImage, e: InputExpectation) -> tuple[int, ...]:
    shape = raw.array.shape[:-1]
    nd = e.spatial_ndim or len(shape)
    while len(shape) > nd and shape[0] == 1:
        shape = shape[1:]
    return tuple(shape)


def _check_masks(path: Path, values: set[int], classes, desc) -> tuple[bool, list[str] | None]:
    """From the label values of all masks: whether they are binary 0/255 (read as 0/1), and the
    check that every label is a known class."""
    binary = values <= {0, 255} and 255 in values and (classes is None or len(classes) == 2)
    if binary:
        values = {int(v == 255) for v in values}
        desc["notes"] += "binary masks stored as 0/255 read as 0/1; "
    top = max(values) if values else 0
    if classes is not None and top >= len(classes):
        raise _err(
            path,
            f"a mask holds label {int(top)} but there are {len(classes)} classes ({', '.join(classes)})",
            "fix the masks or the class names",
        )
    return binary, classes


def _counts(shapes) -> dict:
    out: dict = {}
    for s in shapes:
        out[s] = out.get(s, 0) + 1
    return out


def _read_item(pipe: _Pipeline, it: _Item, expect: InputExpectation, orientation):
    """One sample through the pipeline: (image in the model's layout, spacing, mask or label)."""
    raw = read_series(it.files, orientation) if it.files is not None else read_file(it.path, orientation)
    arr, sp = pipe.image(raw, str(it.path))
    lab = it.label
    if it.mask is not None:
        mraw = read_file(it.mask, orientation)
        target = arr.shape[1:] if expect.channels_first else arr.shape[:-1]
        image_shape = pipe.last_shape if pipe.last_shape is not None else _squeezed_shape(raw, expect)
        lab = pipe.mask(mraw, str(it.mask), image_shape, target)
    return arr, sp, lab


class _ItemSource:
    """Block reader of files, folders and manifests: the samples at given indices read again from
    their files through a fresh pipeline (channels as resolved at load); masks of the last blocks
    read are kept for the labels' reads of the same indices."""

    def __init__(self, items, expect, rule, resize, orientation, voxel_spacing, channels):
        self.items, self.expect, self.rule, self.resize = items, expect, rule, resize
        self.orientation, self.voxel_spacing, self.channels = orientation, voxel_spacing, channels
        self.binary_255 = False
        self._masks: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()

    def subset(self, idx) -> _ItemSource:
        """A source of only the items at ``idx`` (renumbered from 0)."""
        out = copy.copy(self)
        out.items = [self.items[int(i)] for i in idx]
        out._masks, out._lock = {}, threading.Lock()
        return out

    def _read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        pipe = _Pipeline(self.expect, self.rule, self.resize, self.voxel_spacing)
        pipe.channels = self.channels
        xs, ms = [], []
        for i in idx:
            it = self.items[int(i)]
            try:
                arr, _, lab = _read_item(pipe, it, self.expect, self.orientation)
            except Unreadable as ex:  # it was read at load: the file changed since
                raise _err(it.path, f"changed since the dataset was loaded ({ex})", "load the dataset again") from None
            xs.append(arr)
            if it.mask is not None:
                ms.append((lab == 255).astype(np.int64) if self.binary_255 else lab)
        return np.stack(xs), (np.stack(ms) if ms else None)

    def images(self, idx: np.ndarray) -> np.ndarray:
        x, m = self._read(idx)
        if m is not None:
            with self._lock:
                while len(self._masks) >= 4:
                    self._masks.pop(next(iter(self._masks)))
                self._masks[np.asarray(idx, np.int64).tobytes()] = m
        return x

    def masks(self, idx: np.ndarray) -> np.ndarray:
        with self._lock:
            m = self._masks.pop(np.asarray(idx, np.int64).tobytes(), None)
        return m if m is not None else self._read(idx)[1]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_masks={}, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _finish_desc(ds: Dataset) -> Dataset:
    d = ds.description
    d["samples"] = str(len(ds))
    if ds.class_names:
        d["classes"] = ", ".join(f"{i}={c}" for i, c in enumerate(ds.class_names))
    d["notes"] = d["notes"].strip().rstrip(";")
    return ds
