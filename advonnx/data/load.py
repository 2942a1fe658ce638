"""``load_dataset``: a path -> :class:`Dataset`, read by the first data source that matches it.

A data source is a module under :mod:`advonnx.data.sources` with ``matches(path)`` and
``load(request)``; ``SOURCES`` lists them in the order they are tried (the last, one image file,
takes any path). A new source is a new module and one line in ``SOURCES``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from advonnx.data.dataset import Dataset, InputExpectation
from advonnx.data.intensity import parse_intensity_rule
from advonnx.data.pipeline import resample, resample_to_spacing, size_str
from advonnx.data.readers import parse_orientation
from advonnx.data.sources import folder, manifest, npz, recording, single
from advonnx.data.sources.base import LoadRequest, Source, err
from advonnx.errors import DataError

__all__ = ["SOURCES", "LoadRequest", "Source", "load_dataset", "parse_spacing", "resample", "resample_to_spacing"]

#: the data sources in the order they are tried; the first whose ``matches(path)`` is true loads
SOURCES: list[Source] = [
    Source("npz", npz.matches, npz.load),
    Source("recording", recording.matches, recording.load),
    Source("folder", folder.matches, folder.load),
    Source("manifest", manifest.matches, manifest.load),
    Source("single file", single.matches, single.load),  # any other file: keep last
]


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
    req = _request(
        source,
        expect,
        intensity=intensity,
        resize=resize,
        limit=limit,
        class_names=class_names,
        orientation=orientation,
        spacing=spacing,
        stream=stream,
    )
    chosen = next(s for s in SOURCES if s.matches(req.path))
    return _finish_desc(chosen.load(req))


def _request(
    source: str | os.PathLike,
    expect: InputExpectation,
    *,
    intensity: str,
    resize: str,
    limit: int | None,
    class_names: list[str] | None,
    orientation: str | None,
    spacing: str | tuple[float, ...] | None,
    stream: bool,
) -> LoadRequest:
    """The arguments of :func:`load_dataset` checked, and the description every source starts from."""
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
        raise err(path, "no such file or folder", "check the path")
    desc = {
        "source": str(path),
        "format": "",
        "intensity_rule": str(rule),
        "resize": resize,
        "label_source": "",
        "notes": "",
        "layout": expect.layout,
        "orientation": f"{orientation} (3-D images reoriented with SimpleITK DICOMOrient)"
        if orientation
        else "as stored in each file",
        "voxel_spacing": f"{size_str(voxel_spacing).replace('x', ' x ')} mm (resampled with SimpleITK: linear, masks nearest)"
        if voxel_spacing
        else "as stored in each file",
    }
    return LoadRequest(
        path, expect, intensity, rule, resize, limit, class_names, orientation, voxel_spacing, stream, desc
    )


def parse_spacing(value, expect: InputExpectation) -> tuple[float, ...] | None:
    """``"1.0,1.0,1.0"`` (or a sequence) -> positive voxel sizes in mm, one per spatial axis; None stays None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "as-stored", "none")):
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        sp = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise DataError(
            f"--spacing {value!r} is not a list of numbers; write e.g. --spacing 1.0,1.0,1.0 (mm)"
        ) from None
    nd = expect.spatial_ndim
    if nd in (None, 1):
        raise DataError(f"--spacing applies to images and volumes, not {expect.layout} inputs; leave it out")
    if len(sp) != nd or not all(np.isfinite(v) and v > 0 for v in sp):
        raise DataError(
            f"--spacing {value!r}: give {nd} positive voxel sizes in mm (array order), e.g. "
            f"--spacing {','.join(['1.0'] * nd)}"
        )
    return sp


def _finish_desc(ds: Dataset) -> Dataset:
    d = ds.description
    d["samples"] = str(len(ds))
    if ds.class_names:
        d["classes"] = ", ".join(f"{i}={c}" for i, c in enumerate(ds.class_names))
    d["notes"] = d["notes"].strip().rstrip(";")
    return ds
