"""An ``.npz``: ``x`` in the model's layout; optional ``y``, ``sample_id``, ``group``, ``spacing``
(or ``sampling_rate`` for signals) and ``class_names``. Checked block by block, read per block."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from advonnx.data.dataset import Dataset, InputExpectation
from advonnx.data.intensity import IntensityRule, apply_rule
from advonnx.data.labels import finish_labels, label_index
from advonnx.data.pipeline import cast_to
from advonnx.data.readers import one_line
from advonnx.data.sources.base import LoadRequest, err
from advonnx.data.stream import CHECK_BLOCK, NpzMember, SampleArray, as_array


def matches(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(".npz")


def load(req: LoadRequest) -> Dataset:
    if req.voxel_spacing is not None:
        raise err(
            req.path,
            "--spacing resamples image files, not .npz arrays",
            "resample the arrays before saving them, or leave --spacing out",
        )
    return _load_npz(req.path, req.expect, req.intensity, req.rule, req.limit, req.class_names, req.desc, req.stream)


def _load_npz(
    path: Path,
    e: InputExpectation,
    intensity: str,
    rule: IntensityRule,
    limit: int | None,
    class_names: list[str] | None,
    desc: dict[str, str],
    stream: bool = False,
) -> Dataset:
    npz = _NpzFile(path)
    x = _open_x(path, e)
    n_all = x.shape[0]
    n = n_all if limit is None else min(int(limit), n_all)
    # one pass block by block: finite values and the value range, never the whole x at once
    lo, hi = e.value_range
    vmin, vmax = _value_span(path, x, n)
    if intensity == "auto":
        rule = IntensityRule("none")
        desc["intensity_rule"] = "none (npz taken as stored; 'auto' does not rescale arrays)"
    if rule.kind == "none" and n and (vmin < lo or vmax > hi):
        raise err(
            path,
            f"x values span [{vmin:g}, {vmax:g}] but the model takes [{lo:g}, {hi:g}]",
            "rescale x, or pass an intensity rule (e.g. intensity='minmax' or 'percentile:0.5-99.5')",
        )
    xo: np.ndarray | SampleArray = SampleArray(_NpzSamples(x, rule, e, str(path)), n, x.shape[1:], e.dtype)

    if class_names is None and "class_names" in npz.files:
        class_names = [str(c) for c in npz.get("class_names").tolist()]
        desc["notes"] += "class names from the npz; "
    y = _labels(npz, x, n, e, class_names, desc)
    ids = npz.per_sample_strings("sample_id", n_all, n, "store one id per sample") or [f"npz:{i}" for i in range(n)]
    groups = npz.per_sample_strings("group", n_all, n, "store one group id (patient, subject, volume) per sample")
    if groups is not None:
        desc["groups"] = f"npz array 'group' ({len(set(groups))} groups)"
    spacing = _spacing(npz, e, n_all, n, desc)
    desc["format"] = "npz"
    desc["reading"] = (
        "per block (stored members by positioned reads, compressed ones by streaming "
        "decompression), never stacked whole"
        if stream
        else "stacked in memory"
    )
    if not stream:
        xo = np.asarray(xo)
        y = y if y is None or isinstance(y, np.ndarray) else np.asarray(y)
    return Dataset(as_array(xo), None if y is None else as_array(y), ids, spacing, [], desc, class_names, groups=groups)


class _NpzFile:
    """The members of an ``.npz`` that holds ``x``, read whole by name (errors name the file)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.z = np.load(path, allow_pickle=False)
            self.files = list(self.z.files)
        except Exception as ex:  # noqa: BLE001 - any reader failure is the user's file
            raise err(
                path, f"cannot read as .npz ({one_line(ex, 150)})", "save it with numpy.savez(path, x=..., y=...)"
            ) from None
        if "x" not in self.files:
            raise err(
                path,
                f"no array named 'x' (found: {', '.join(self.files) or 'nothing'})",
                "save samples as numpy.savez(path, x=..., y=...)",
            )

    def get(self, key: str) -> np.ndarray:
        try:
            return self.z[key]
        except ValueError as ex:  # object arrays need pickle
            raise err(
                self.path,
                f"array '{key}' is not numeric ({one_line(ex, 100)})",
                f"store '{key}' as a plain numeric array",
            ) from None

    def per_sample_strings(self, name: str, n_all: int, n: int, todo: str) -> list[str] | None:
        """npz array ``name`` as one string per sample (the first n), None when absent."""
        if name not in self.files:
            return None
        arr = self.get(name)
        if arr.shape != (n_all,):
            raise err(self.path, f"{name} has shape {arr.shape}, expected ({n_all},)", todo)
        return [str(v) for v in arr.tolist()[:n]]


def _open_x(path: Path, e: InputExpectation) -> NpzMember:
    """``x`` as a block-readable member, its dtype and shape checked."""
    try:
        x = NpzMember(path, "x")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as ex:
        raise err(
            path, f"cannot read array 'x' ({one_line(ex, 150)})", "save it with numpy.savez(path, x=..., y=...)"
        ) from None
    if x.dtype.kind == "c":
        raise err(path, f"x is complex ({x.dtype})", "store real intensities (e.g. the magnitude)")
    if x.dtype.kind not in "biuf":
        raise err(path, f"x has dtype {x.dtype}, not numbers", "store x as an int or float array")
    _check_npz_shape(path, x, e)
    return x


def _value_span(path: Path, x: NpzMember, n: int) -> tuple[float, float]:
    """The smallest and largest value of the first ``n`` samples (refusing NaN and infinities)."""
    vmin, vmax = np.inf, -np.inf
    for a in range(0, n, CHECK_BLOCK):
        blk = x.read(a, min(n, a + CHECK_BLOCK))
        if not np.all(np.isfinite(blk)):
            bad = a + int(np.flatnonzero((~np.isfinite(blk.reshape(len(blk), -1))).any(axis=1))[0])
            raise err(path, f"x holds NaN or infinite values (first in sample {bad})", "replace or drop those samples")
        if blk.size:
            vmin, vmax = min(vmin, float(blk.min())), max(vmax, float(blk.max()))
    return vmin, vmax


def _labels(
    npz: _NpzFile, x: NpzMember, n: int, e: InputExpectation, class_names: list[str] | None, desc: dict[str, str]
) -> np.ndarray | SampleArray | None:
    """``y`` checked (the first ``n``): class indices read whole, label maps read per block."""
    path, n_all = npz.path, x.shape[0]
    shim = _Shape((n, *x.shape[1:]))
    y: np.ndarray | SampleArray | None = None
    if "y" in npz.files:
        ym = NpzMember(path, "y")
        if ym.ndim <= 2 or ym.dtype.kind in "US":  # class indices: small, read whole
            y = _npz_labels(path, npz.get("y"), n_all, shim, e, class_names)[:n]
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
    return y


def _spacing(
    npz: _NpzFile, e: InputExpectation, n_all: int, n: int, desc: dict[str, str]
) -> list[tuple[float, ...]] | None:
    """Per-sample spacing: a signal's sample period (s) from ``sampling_rate``, an image's voxel
    size (mm) from ``spacing``; None for tabular data and signals without a rate."""
    path, files = npz.path, npz.files
    spacing: list[tuple[float, ...]] | None = None
    nd = e.spatial_ndim
    if nd == 1 and "sampling_rate" in files:  # a signal's sample period in seconds
        fs = float(np.asarray(npz.get("sampling_rate")).reshape(-1)[0])
        if not fs > 0:
            raise err(path, f"sampling_rate is {fs:g}", "store the sampling rate in hertz (a positive number)")
        spacing = [(1.0 / fs,)] * n
        desc["spacing"] = f"sample period 1/{fs:g} s from the npz 'sampling_rate'"
    elif nd == 1 and "spacing" not in files:
        desc["spacing"] = "unknown: the npz has no 'sampling_rate' (hertz-defined corruptions use the model's)"
    elif nd is not None:
        if "spacing" in files:
            sp = npz.get("spacing").astype(np.float64)
            if sp.shape == (nd,):
                sp = np.broadcast_to(sp, (n_all, nd))
            if sp.shape != (n_all, nd) or not np.all(sp > 0):
                raise err(
                    path,
                    f"spacing has shape {sp.shape} or non-positive values",
                    f"store ({nd},) or (N, {nd}) spacings in mm, array order",
                )
            spacing = [tuple(float(v) for v in row) for row in sp[:n]]
            desc["spacing"] = "from the npz 'spacing' array (mm, array order)"
        else:
            spacing = [(1.0,) * nd] * n
            desc["spacing"] = "unknown: the npz has no 'spacing'; 1 mm assumed"
    return spacing


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
            x = np.stack(
                [
                    apply_rule(
                        x[j], self.rule, (lo, hi), eight_bit=x.dtype == np.uint8, name=f"{self.name} sample {int(i)}"
                    )
                    for j, i in enumerate(idx)
                ]
            )
        return cast_to(x, np.dtype(self.e.dtype), lo, hi)


class _NpzLabels:
    """Block reader of an npz's label maps ``y`` (checked once at load, converted per block)."""

    def __init__(self, member: NpzMember, e: InputExpectation, class_names, name: str):
        self.member, self.e, self.class_names, self.name = member, e, class_names, name

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        y = self.member.rows(idx)
        if y.ndim == 2 + (self.e.spatial_ndim or 0):  # a channel axis of 1 (checked at load)
            y = y[:, 0] if self.e.channels_first else y[..., 0]
        return y.astype(np.int64)


def _check_npz_shape(path: Path, x: NpzMember, e: InputExpectation) -> None:
    nd = e.spatial_ndim
    want_ndim = 2 if nd is None else nd + 2
    shape = tuple(x.shape)
    got = f"x has shape {shape} but the model takes {e.shape_str()}"
    if x.ndim != want_ndim:
        hint = "store x in the model's layout"
        if nd is not None and x.ndim == want_ndim - 1 and e.channels in (1, None):
            hint = "add a channel axis (x[:, None] for channels-first, x[..., None] for channels-last)"
        raise err(path, got, hint)
    if x.shape[0] == 0:
        raise err(path, "x holds no samples", "store at least one sample")
    if nd is None:
        f = e.spatial_shape[0] if e.spatial_shape else None
        if f is not None and shape[1] != f:
            raise err(path, got, "store one feature vector per row")
        return
    if e.channels_first:
        c, sp = shape[1], shape[2:]
    else:
        c, sp = shape[-1], shape[1:-1]
    ok_c = e.channels is None or c == e.channels
    ok_s = e.spatial_shape is None or all(w is None or w == g for w, g in zip(e.spatial_shape, sp, strict=True))
    if ok_c and ok_s:
        return
    hint = "store x in the model's layout and size"
    other_c = shape[-1] if e.channels_first else shape[1]
    if e.channels is not None and other_c == e.channels and c != e.channels:
        perm = (0, x.ndim - 1, *range(1, x.ndim - 1)) if e.channels_first else (0, *range(2, x.ndim), 1)
        hint = f"x looks channels-{'last' if e.channels_first else 'first'}; transpose it with x.transpose{perm}"
    raise err(path, got, hint)


def _multilabel_npz(path, y, n, k: int) -> np.ndarray:
    """``y`` of a multi-label model: (N, K) of 0/1 (ints, bools or integral floats)."""
    if y.dtype.kind not in "biuf" or y.shape != (n, k):
        raise err(
            path,
            f"y has shape {y.shape} ({y.dtype}) but the multi-label model has {k} findings",
            f"store y as an ({n}, {k}) array of 0/1, one column per finding",
        )
    if y.size and not np.all((y == 0) | (y == 1)):
        raise err(path, "y holds values other than 0 and 1", "store 1 where a finding is present, 0 where absent")
    return y.astype(np.int64)


def _npz_labels(path, y, n, x, e: InputExpectation, class_names):
    if e.findings:
        return _multilabel_npz(path, y, n, e.findings)
    if y.dtype.kind in "US":
        vals = [label_index(str(v), f"{path} y[{i}]", class_names) for i, v in enumerate(y.reshape(-1).tolist())]
        arr, _ = finish_labels(vals, str(path), class_names)
        y = arr.reshape(y.shape)
    if y.dtype.kind not in "biuf":
        raise err(path, f"y has dtype {y.dtype}", "store integer labels")
    if y.shape[:1] != (n,):
        raise err(path, f"y has shape {y.shape} but x holds {n} samples", "store one label (or label map) per sample")
    if y.dtype.kind == "f" and (not np.all(np.isfinite(y)) or not np.all(y == np.round(y))):
        raise err(path, "y holds non-integer values", "store integer class indices")
    if e.task == "classification":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise err(
                path,
                f"y has shape {y.shape}; classification needs one class index per sample",
                "store y as class indices, e.g. y.argmax(1) for one-hot",
            )
    else:
        sp = x.shape[2:] if e.channels_first else x.shape[1:-1]
        if y.ndim == x.ndim and y.shape[1 if e.channels_first else -1] == 1:
            y = y[:, 0] if e.channels_first else y[..., 0]
        if tuple(y.shape[1:]) != tuple(sp):
            raise err(
                path,
                f"y has shape {y.shape} but label maps must be (N, {', '.join(map(str, sp))})",
                "store one label map per sample at the image size",
            )
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise err(path, f"y holds a negative label {int(y.min())}", "labels must be 0..K-1")
    if class_names is not None and y.size and y.max() >= len(class_names):
        raise err(
            path,
            f"y holds label {int(y.max())} but there are {len(class_names)} classes ({', '.join(class_names)})",
            "fix the labels or the class names",
        )
    return y
