"""A CSV manifest: ``path,label`` (classification), ``image,mask`` (segmentation), or ``path`` and
one 0/1 column per finding (multi-label); an optional ``group`` column (patient, subject). Paths
are relative to the manifest's folder; a listed folder must hold one DICOM series."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from advonnx.data.dataset import Dataset, InputExpectation
from advonnx.data.labels import label_index
from advonnx.data.readers import dicom_series, one_line
from advonnx.data.sources.base import LoadRequest, err
from advonnx.data.sources.files import Item, load_items


def matches(path: Path) -> bool:
    return path.name.lower().endswith(".csv")


def load(req: LoadRequest) -> Dataset:
    items = _manifest_items(req.path, req.expect, req.class_names, req.desc)
    return load_items(req, items, req.class_names, [], single=False)


def _listed_path(rel: str, manifest: Path, line: int, what: str) -> Path:
    """A path written in a CSV manifest, relative to the manifest's folder; it must exist."""
    p = Path(rel) if Path(rel).is_absolute() else manifest.parent / rel
    if not p.exists():
        raise err(
            p,
            f"{what}listed in {manifest.name} line {line} but does not exist "
            f"(relative paths resolve against {manifest.parent})",
            "fix the path in the manifest",
        )
    return p


def _manifest_items(path: Path, e: InputExpectation, class_names, desc) -> list[Item]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as ex:
        raise err(
            path,
            f"cannot read the manifest ({one_line(ex, 150)})",
            "save it as UTF-8 CSV with a header path,label or image,mask",
        ) from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise err(path, "the manifest is empty", "write a header path,label (or image,mask) and one row per sample")
    header = [h.strip().lower() for h in rows[0]]
    if e.findings and "path" in header:
        return _multilabel_manifest(path, rows, e.findings, class_names, desc)
    if "path" in header:
        ic, lc, kind = (header.index("path"), header.index("label") if "label" in header else None, "label")
    elif "image" in header:
        ic, lc, kind = (header.index("image"), header.index("mask") if "mask" in header else None, "mask")
    else:
        raise err(
            path,
            f"header {','.join(rows[0])} has no 'path' or 'image' column",
            "use the header path,label (classification) or image,mask (segmentation)",
        )
    if lc is not None and kind == "label" and e.task == "segmentation":
        raise err(
            path,
            "a path,label manifest for a segmentation model",
            "use the header image,mask with one label image per sample",
        )
    if lc is not None and kind == "mask" and e.task == "classification":
        raise err(path, "an image,mask manifest for a classification model", "use the header path,label")
    gc = header.index("group") if "group" in header else None
    items = []
    for i, r in enumerate(rows[1:], start=2):
        it, r, where = _manifest_item(path, r, i, len(header), ic, gc)
        if lc is not None:
            v = r[lc].strip()
            if kind == "label":
                it.label = label_index(v, where, class_names)
            else:
                if not v:
                    raise err(where, "empty mask path", "give every row a mask")
                it.mask = _listed_path(v, path, i, "mask ")
        items.append(it)
    if not items:
        raise err(path, "the manifest lists no samples", "add one row per sample under the header")
    desc["format"] = "CSV manifest"
    if lc is None:
        desc["label_source"] = "none: manifest without labels; clean predictions will be the reference"
    elif kind == "label":
        desc["label_source"] = f"manifest column '{header[lc]}'"
    else:
        desc["label_source"] = f"manifest column '{header[lc]}' (label images, nearest-neighbour resampling)"
    desc["notes"] += "manifest order kept; "
    return items


def _manifest_item(
    path: Path, r: list[str], i: int, width: int, ic: int, gc: int | None
) -> tuple[Item, list[str], str]:
    """Row ``i`` of a manifest (``r``, padded to ``width`` columns) as an item: its image path
    (column ``ic``; a folder must hold one DICOM series) and its group (column ``gc``, if any).
    Returns the item, the padded row and where it is, for messages."""
    where = f"{path} line {i}"
    r = r + [""] * (width - len(r))
    rel = r[ic].strip()
    if not rel:
        raise err(where, "empty image path", "give every row an image path")
    p = _listed_path(rel, path, i, "")
    it = Item(Path(rel).as_posix(), p)
    if gc is not None:
        it.group = r[gc].strip() or None
        if it.group is None:
            raise err(
                where, "empty group", "give every row a group id (patient, subject or volume), or drop the column"
            )
    if p.is_dir():
        series = dicom_series(p)
        if len(series) != 1:
            raise err(
                p,
                f"folder listed in {path.name} line {i} holds {len(series)} DICOM series",
                "list one image file or one single-series DICOM folder per row",
            )
        it.files = series[0][1]
    return it, r, where


_PRESENT = {"1": 1, "0": 0, "true": 1, "false": 0, "present": 1, "absent": 0, "yes": 1, "no": 0}


def _multilabel_manifest(path: Path, rows: list[list[str]], k: int, class_names, desc) -> list[Item]:
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
        raise err(
            path,
            "one 'label' column for a multi-label model",
            f"write one 0/1 column per finding ({k}), e.g. path,{','.join(class_names or ['finding1', '...'])}",
        )
    if class_names and set(names) == set(class_names):
        cols = [cols[names.index(c)] for c in class_names]
        names = list(class_names)
    elif cols and len(cols) != k:
        raise err(
            path,
            f"{len(cols)} finding columns ({', '.join(names)}) but the model has {k} findings",
            "write a path column and one 0/1 column per finding, in the model's output order",
        )
    items = []
    for i, r in enumerate(rows[1:], start=2):
        it, r, where = _manifest_item(path, r, i, len(raw), ic, gc)
        if cols:
            vals = [r[c].strip().lower() for c in cols]
            bad = [v for v in vals if v not in _PRESENT]
            if bad:
                raise err(where, f"finding value {bad[0]!r} is not 0/1", "write 1 (present) or 0 (absent) per finding")
            it.label = np.asarray([_PRESENT[v] for v in vals], dtype=np.int64)
        items.append(it)
    if not items:
        raise err(path, "the manifest lists no samples", "add one row per sample under the header")
    desc["format"] = "CSV manifest (multi-label)"
    desc["label_source"] = (
        f"manifest finding columns: {', '.join(names)}"
        if cols
        else "none: manifest without finding columns; clean predictions will be the reference"
    )
    desc["notes"] += "manifest order kept; "
    return items
