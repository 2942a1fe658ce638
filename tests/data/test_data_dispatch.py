"""The data-source registry: which source claims which path, and a new source as one module plus
one line in ``SOURCES`` (here a toy ``.lst`` list of ``path label`` lines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import assert_one_line_error, write_image

import advonnx.data.load as load_mod
from advonnx.data import Dataset, InputExpectation, load_dataset
from advonnx.data.sources.base import LoadRequest, Source, err
from advonnx.data.sources.files import Item, load_items
from advonnx.errors import DataError

E2 = InputExpectation("NCHW", (16, 20), 1)


def _first(path: Path) -> str:
    return next(s.name for s in load_mod.SOURCES if s.matches(path))


def test_each_kind_of_path_goes_to_its_source(tmp_path, rng):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 1, 16, 20), np.float32))
    (tmp_path / "rec.edf").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label\n", encoding="utf-8")
    img = write_image(tmp_path / "f" / "a.png", rng.integers(0, 256, (16, 20)).astype(np.uint8))
    got = {
        p.name: _first(p) for p in (tmp_path / "d.npz", tmp_path / "rec.edf", tmp_path / "f", tmp_path / "m.csv", img)
    }
    assert got == {"d.npz": "npz", "rec.edf": "recording", "f": "folder", "m.csv": "manifest", "a.png": "single file"}
    assert load_mod.SOURCES[-1].matches(tmp_path / "anything.else")  # the fallback is last


def _lst_matches(path: Path) -> bool:
    return path.is_file() and path.suffix == ".lst"


def _lst_load(req: LoadRequest) -> Dataset:
    items = []
    for i, line in enumerate(req.path.read_text(encoding="utf-8").splitlines(), start=1):
        rel, label = line.split()
        if not (req.path.parent / rel).exists():
            raise err(f"{req.path} line {i}", f"{rel} does not exist", "fix the list")
        items.append(Item(rel, req.path.parent / rel, label=int(label)))
    req.desc["format"] = "toy list"
    req.desc["label_source"] = "second field of each line"
    return load_items(req, items, req.class_names, [], single=False)


def test_a_new_source_is_one_module_and_one_line(tmp_path, rng, monkeypatch):
    """A source registered before the fallback reads its files through the shared pipeline: the
    same arrays and labels as a CSV manifest of the same images, its own description."""
    for i in range(3):
        write_image(tmp_path / f"im{i}.png", rng.integers(0, 256, (16, 20)).astype(np.uint8))
    (tmp_path / "d.lst").write_text("".join(f"im{i}.png {i % 2}\n" for i in range(3)), encoding="utf-8")
    (tmp_path / "d.csv").write_text(
        "path,label\n" + "".join(f"im{i}.png,{i % 2}\n" for i in range(3)), encoding="utf-8"
    )
    monkeypatch.setattr(load_mod, "SOURCES", [Source("list", _lst_matches, _lst_load), *load_mod.SOURCES])
    toy = load_dataset(tmp_path / "d.lst", E2)
    ref = load_dataset(tmp_path / "d.csv", E2)
    np.testing.assert_array_equal(toy.x, ref.x)
    assert toy.x.dtype == np.float32 and toy.y.tolist() == [0, 1, 0] == ref.y.tolist()
    assert toy.sample_ids == ref.sample_ids == ["im0.png", "im1.png", "im2.png"]
    assert toy.description["format"] == "toy list: PNG (3)" and toy.description["samples"] == "3"
    (tmp_path / "bad.lst").write_text("im9.png 0\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        load_dataset(tmp_path / "bad.lst", E2)
    assert_one_line_error(ei, "bad.lst line 1", "im9.png does not exist")
