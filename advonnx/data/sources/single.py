"""One image or volume file (any format SimpleITK reads): one sample without a label."""

from __future__ import annotations

from pathlib import Path

from advonnx.data.dataset import Dataset
from advonnx.data.sources.base import LoadRequest
from advonnx.data.sources.files import Item, load_items


def matches(path: Path) -> bool:
    return True  # the fallback: any other file is read as one image


def load(req: LoadRequest) -> Dataset:
    path = req.path
    req.desc["label_source"] = "none: a single image without a label; its prediction will be the reference"
    return load_items(req, [Item(path.name, path)], req.class_names, [], single=True)
