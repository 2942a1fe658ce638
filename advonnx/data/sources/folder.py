"""A folder: one subfolder per class (classification), a flat folder or tree of images, or (3-D
models) DICOM series folders; hidden files ignored, sample ids are paths relative to the folder."""

from __future__ import annotations

import os
from pathlib import Path

from advonnx.data.dataset import Dataset, InputExpectation
from advonnx.data.readers import SUPPORTED, dicom_series, is_companion
from advonnx.data.sources.base import LoadRequest, err
from advonnx.data.sources.files import Item, load_items


def matches(path: Path) -> bool:
    return path.is_dir()


def load(req: LoadRequest) -> Dataset:
    path = req.path
    skipped: list[tuple[str, str]] = []
    if not any(not n.startswith(".") for n in os.listdir(path)):
        raise err(path, "the folder is empty", f"point advonnx at a folder of images ({SUPPORTED})")
    items, classes = _folder_items(path, req.expect, req.class_names, req.desc, skipped)
    if not items:
        raise err(path, "the folder holds no image files", f"point advonnx at a folder of images ({SUPPORTED})")
    return load_items(req, items, classes, skipped, single=False)


def _visible(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _is_series_dir(d: Path) -> bool:
    """A folder holding exactly one DICOM series and nothing else (a 3-D patient folder)."""
    entries = _visible(os.listdir(d))
    if not entries or any((d / n).is_dir() for n in entries):
        return False
    series = dicom_series(d)
    return len(series) == 1 and len(series[0][1]) == len(entries)


def _walk(root: Path, top: Path, three_d: bool, label, items: list[Item], notes: dict) -> None:
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
                items.append(Item(sid, d, files=names, label=label))
                used.update(Path(f).name for f in names)
        for f in files:
            p = d / f
            if f in used or is_companion(p):
                continue
            items.append(Item(p.relative_to(root).as_posix(), p, label=label))


def _folder_items(root: Path, e: InputExpectation, class_names, desc, skipped) -> tuple[list[Item], list[str] | None]:
    three_d = e.spatial_ndim == 3
    entries = _visible(os.listdir(root))
    subdirs = [n for n in entries if (root / n).is_dir()]
    notes: dict = {}
    items: list[Item] = []
    classes = None
    use_classes = e.task == "classification" and subdirs
    if use_classes and three_d and not (class_names and set(subdirs) <= set(class_names)):
        if all(_is_series_dir(root / s) for s in subdirs):
            use_classes = False  # a folder of patient series folders
    if use_classes and e.findings:
        raise err(
            root,
            "class subfolders cannot label a multi-label model (a sample can have several findings)",
            "use an .npz with y of shape (N, K) or a CSV manifest with a path column and one 0/1 column per finding",
        )
    if use_classes:
        if class_names is not None:
            for s in subdirs:
                if s not in class_names:
                    raise err(
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
        desc["label_source"] = "class subfolders: " + ", ".join(f"{i}={c}" for i, c in enumerate(classes))
        desc["format"] = "class folders"
    else:
        _walk(root, root, three_d, None, items, notes)
        desc["label_source"] = "none: folder without labels; clean predictions will be the reference"
        desc["format"] = "folder"
    if notes.get("hidden"):
        desc["notes"] += f"{notes['hidden']} hidden files ignored; "
    items.sort(key=lambda it: it.sample_id)
    return items, classes
