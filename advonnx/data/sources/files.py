"""Samples that are files (folders, manifests, one file): each read through the pipeline once at
load (what can be read, its size, spacing and label), then again per block (:class:`ItemSource`)."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from advonnx.data.dataset import Dataset, InputExpectation
from advonnx.data.intensity import IntensityRule
from advonnx.data.labels import finish_labels
from advonnx.data.pipeline import Pipeline, size_str
from advonnx.data.readers import SUPPORTED, RawImage, Unreadable, dicom_group, read_file, read_series, suffix
from advonnx.data.sources.base import LoadRequest, err
from advonnx.data.stream import SampleArray, as_array, group_order
from advonnx.errors import DataError


@dataclass
class Item:
    sample_id: str
    path: Path  # the file, or the series folder
    files: list[str] | None = None  # DICOM series file names
    label: str | int | np.ndarray | None = None  # multi-label manifests: a (K,) 0/1 vector
    mask: Path | None = None
    group: str | None = None  # manifest column 'group'


def item_group(it: Item) -> tuple[str, str]:
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


def _squeezed_shape(raw: RawImage, e: InputExpectation) -> tuple[int, ...]:
    shape = raw.array.shape[:-1]
    nd = e.spatial_ndim or len(shape)
    while len(shape) > nd and shape[0] == 1:
        shape = shape[1:]
    return tuple(shape)


def check_masks(path: Path, values: set[int], classes, desc) -> tuple[bool, list[str] | None]:
    """From the label values of all masks: whether they are binary 0/255 (read as 0/1), and the
    check that every label is a known class."""
    binary = values <= {0, 255} and 255 in values and (classes is None or len(classes) == 2)
    if binary:
        values = {int(v == 255) for v in values}
        desc["notes"] += "binary masks stored as 0/255 read as 0/1; "
    top = max(values) if values else 0
    if classes is not None and top >= len(classes):
        raise err(
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


def read_item(
    pipe: Pipeline, it: Item, expect: InputExpectation, orientation: str | None
) -> tuple[np.ndarray, tuple[float, ...] | None, np.ndarray | None]:
    """One sample through the pipeline: (image in the model's layout, spacing, mask or None)."""
    raw = read_series(it.files, orientation) if it.files is not None else read_file(it.path, orientation)
    arr, sp = pipe.image(raw, str(it.path))
    lab = None
    if it.mask is not None:
        mraw = read_file(it.mask, orientation)
        target = arr.shape[1:] if expect.channels_first else arr.shape[:-1]
        image_shape = pipe.last_shape if pipe.last_shape is not None else _squeezed_shape(raw, expect)
        lab = pipe.mask(mraw, str(it.mask), image_shape, target)
    return arr, sp, lab


class ItemSource:
    """Block reader of files, folders and manifests: the samples at given indices read again from
    their files through a fresh pipeline (channels as resolved at load); masks of the last blocks
    read are kept for the labels' reads of the same indices."""

    def __init__(
        self,
        items: list[Item],
        expect: InputExpectation,
        rule: IntensityRule,
        resize: str,
        orientation: str | None,
        voxel_spacing: tuple[float, ...] | None,
        channels: int | None,
    ):
        self.items, self.expect, self.rule, self.resize = items, expect, rule, resize
        self.orientation, self.voxel_spacing, self.channels = orientation, voxel_spacing, channels
        self.binary_255 = False
        self._masks: dict[bytes, np.ndarray] = {}
        self._lock = threading.Lock()

    def subset(self, idx) -> ItemSource:
        """A source of only the items at ``idx`` (renumbered from 0)."""
        out = copy.copy(self)
        out.items = [self.items[int(i)] for i in idx]
        out._masks, out._lock = {}, threading.Lock()
        return out

    def _read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        pipe = Pipeline(self.expect, self.rule, self.resize, self.voxel_spacing)
        pipe.channels = self.channels
        xs, ms = [], []
        for i in idx:
            it = self.items[int(i)]
            try:
                arr, _, lab = read_item(pipe, it, self.expect, self.orientation)
            except Unreadable as ex:  # it was read at load: the file changed since
                raise err(it.path, f"changed since the dataset was loaded ({ex})", "load the dataset again") from None
            xs.append(arr)
            if lab is not None:  # the item's mask
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
        if m is None:
            m = self._read(idx)[1]
        if m is None:  # only a segmentation dataset's labels are read here
            raise DataError("these samples have no masks; read their labels from the dataset's y")
        return m

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_masks={}, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


def load_items(
    req: LoadRequest, items: list[Item], classes: list[str] | None, skipped: list[tuple[str, str]], single: bool
) -> Dataset:
    """``items`` (in order) as a :class:`Dataset`: unreadable files skipped (listed in ``skipped``;
    ``single``: an error instead), samples grouped by size, read per block when streamed or of
    several sizes, else stacked."""
    path, expect, desc = req.path, req.expect, req.desc
    pipe = Pipeline(expect, req.rule, req.resize, req.voxel_spacing)
    # one pass, one sample at a time: what can be read, its size, spacing and label; then the
    # samples are read again per block (SampleArray), grouped by size
    r = _read_all(req, pipe, items, skipped, single)
    if r.ys and len(r.ys) != len(r.kept):
        raise err(path, "some samples have labels and others not", "label every sample")
    order = group_order(r.shapes)
    kept = [r.kept[i] for i in order]
    shapes = [r.shapes[i] for i in order]
    spacings = [r.spacings[i] for i in order]
    ys = [r.ys[i] for i in order] if r.ys else r.ys
    ids = [it.sample_id for it in kept]
    group_sources: dict[str, int] = {}
    groups = []
    for it in kept:
        group, origin = item_group(it)
        groups.append(group)
        group_sources[origin] = group_sources.get(origin, 0) + 1
    source = ItemSource(kept, expect, req.rule, req.resize, req.orientation, req.voxel_spacing, pipe.channels)
    x: np.ndarray | SampleArray = SampleArray(source.images, len(kept), np.asarray(shapes), expect.dtype)
    y, classes = _labels(req, source, ys, r.mask_values, shapes, classes)
    if len(set(shapes)) > 1:
        desc["sizes"] = f"{len(set(shapes))} sample sizes, batched by size: " + ", ".join(
            f"{size_str(s)} ({n})" for s, n in _counts(shapes).items()
        )
    desc["reading"] = (
        "per block, samples read again from their files" if req.stream or len(set(shapes)) > 1 else "stacked in memory"
    )
    # every sample's spacing (mm, array order; 1 mm for formats without one), streamed or stacked:
    # HD95 and spacing-aware corruptions read it per sample
    known = expect.spatial_ndim is not None and all(s is not None for s in spacings)
    spacing = [tuple(s) for s in spacings if s is not None] if known else None
    if not req.stream and len(set(shapes)) == 1:
        x = np.stack([r.held[i][0] for i in order])
        if isinstance(y, SampleArray):
            masks = np.stack([r.held[i][1] for i in order])
            y = (masks == 255).astype(np.int64) if source.binary_255 else masks
    _describe(req, pipe, len(kept), groups, group_sources, skipped)
    return Dataset(as_array(x), None if y is None else as_array(y), ids, spacing, skipped, desc, classes, groups=groups)


@dataclass
class _Read:
    """What the first pass over the items found, in item order."""

    kept: list[Item] = field(default_factory=list)
    ys: list[str | int | np.ndarray | None] = field(default_factory=list)  # None: a mask
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    spacings: list[tuple[float, ...] | None] = field(default_factory=list)
    mask_values: set[int] = field(default_factory=set)
    held: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)  # when not streamed


def _read_all(
    req: LoadRequest, pipe: Pipeline, items: list[Item], skipped: list[tuple[str, str]], single: bool
) -> _Read:
    """Every item (up to ``req.limit`` usable ones) through the pipeline once."""
    limit = req.limit
    r = _Read()
    first_todo = f"check the files; advonnx reads {SUPPORTED}"
    for it in items:
        if limit is not None and len(r.kept) >= int(limit):
            break
        try:
            arr, sp, lab = read_item(pipe, it, req.expect, req.orientation)
        except Unreadable as ex:
            if single:
                raise err(it.path, str(ex), ex.todo) from None
            if not skipped:
                first_todo = ex.todo
            skipped.append((it.sample_id, str(ex)))
            continue
        if lab is not None:  # the item's mask
            r.mask_values.update(np.unique(lab).tolist())
            r.ys.append(None)
        elif it.label is not None:
            r.ys.append(it.label)
        r.kept.append(it)
        r.shapes.append(arr.shape)
        r.spacings.append(sp)
        if not req.stream:  # stacked below when all have one size: no second read
            r.held.append((arr, lab))
        del arr, lab
    if not r.kept:
        first = skipped[0] if skipped else ("?", "?")
        raise err(
            req.path, f"none of the {len(skipped)} files could be used (first: {first[0]}: {first[1]})", first_todo
        )
    return r


def _labels(
    req: LoadRequest,
    source: ItemSource,
    ys: list,
    mask_values: set[int],
    shapes: list[tuple[int, ...]],
    classes: list[str] | None,
) -> tuple[np.ndarray | SampleArray | None, list[str] | None]:
    """Labels in sample order: label maps read per block, (N, K) finding vectors, or class indices."""
    expect = req.expect
    y: np.ndarray | SampleArray | None = None
    if ys:
        if expect.task == "segmentation":
            source.binary_255, classes = check_masks(req.path, mask_values, classes, req.desc)
            lab_shapes = np.asarray(shapes)[:, 1:] if expect.channels_first else np.asarray(shapes)[:, :-1]
            y = SampleArray(source.masks, len(shapes), lab_shapes, np.int64, prefetch=False)
        elif expect.findings:  # (N, K) 0/1 label vectors
            y = np.stack(ys).astype(np.int64)
        else:
            y, classes = finish_labels(ys, str(req.path), classes)
    return y, classes


def _describe(
    req: LoadRequest,
    pipe: Pipeline,
    n: int,
    groups: list[str],
    group_sources: dict[str, int],
    skipped: list[tuple[str, str]],
) -> None:
    """What the pipeline did, into ``req.desc``."""
    desc, expect, resize, limit = req.desc, req.expect, req.resize, req.limit
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
        f"{resize}: {n_res} of {n} images resampled (linear; masks nearest; physical extent kept)"
        if resize == "resample"
        else "refuse"
    )
    desc["groups"] = f"{len(set(groups))} groups: " + ", ".join(f"{k} ({v})" for k, v in sorted(group_sources.items()))
    if skipped:
        desc["notes"] += f"{len(skipped)} files skipped (see Dataset.skipped); "
    if limit is not None:
        desc["notes"] += f"limit={int(limit)}: first samples in sorted order; "
