"""The README's severity table states exactly the registry's parameters."""

from __future__ import annotations

import ast
from pathlib import Path

import advonnx.corruptions
from advonnx.corruptions import CORRUPTIONS

README = Path(advonnx.corruptions.__file__).with_name("README.md")


def _table() -> dict[str, tuple]:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = tuple(ast.literal_eval(c) for c in cells[2:7])
    return rows


def test_readme_table_matches_registry():
    table = _table()
    assert list(table) == list(CORRUPTIONS)
    for name, corruption in CORRUPTIONS.items():
        assert table[name] == tuple(corruption.severity_params), name
