"""Check that two run folders hold the same rows, apart from the run id and timing.

A refactor must not change a single figure: run the same suite on the commit before and on the
commit after, then compare the two folders::

    git worktree add /tmp/before <commit> && (cd /tmp/before && python -m advonnx.cli run -q --out /tmp/a)
    advonnx run -q --out /tmp/b
    python benchmarks/same_rows.py /tmp/a/<run_id> /tmp/b/<run_id>

Rows are matched on what they are about (model, dataset, attack, settings, sample, ...), so
the order in which work units finished does not matter. Floats must be equal exactly (the same
machine and the same seeds give the same bits); ``--rtol`` loosens that for runs on different
machines. Exit status 0 when the rows are the same, 1 otherwise (the first differences printed).
"""

from __future__ import annotations

import argparse
import math
import sys

IGNORED = ("run_id", "time_s")
# What a row is about; sorting on these first keeps rows aligned even when a figure changed.
IDENTITY = (
    "model",
    "dataset",
    "attack",
    "settings",
    "kind",
    "norm",
    "eps_text",
    "targeted",
    "target",
    "sample_id",
    "transfer_target",
    "uap_split",
)


def _key(value: object) -> str:
    """A sort key for any cell (None, NaN, lists) that never raises on mixed types."""
    return repr(value)


def _rows(folder: str) -> list[dict]:
    from advonnx.results import read_results

    table = read_results(folder)
    rows = [{k: v for k, v in r.items() if k not in IGNORED} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: [_key(r.get(k)) for k in IDENTITY] + [_key(r[k]) for k in sorted(r)])


def _same(a: object, b: object, rtol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, rtol) for x, y in zip(a, b))
    return a == b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance on floats (default 0: exact)")
    args = parser.parse_args(argv)
    before, after = _rows(args.before), _rows(args.after)
    if len(before) != len(after):
        print(f"row counts differ: {len(before)} before, {len(after)} after")
        return 1
    columns = sorted(set(before[0]) | set(after[0])) if before else []
    missing = [c for c in columns if c not in before[0] or c not in after[0]]
    if missing:
        print(f"columns in only one run: {missing}")
        return 1
    differences = [
        (i, c, b[c], a[c])
        for i, (b, a) in enumerate(zip(before, after))
        for c in columns
        if not _same(b[c], a[c], args.rtol)
    ]
    for i, column, b, a in differences[:20]:
        print(
            f"row {i} ({before[i]['model']}, {before[i]['attack']}, {before[i]['sample_id']}): {column} {b!r} -> {a!r}"
        )
    print(
        f"{len(before)} rows, {len(columns)} columns compared (ignoring {', '.join(IGNORED)}): "
        f"{'the same' if not differences else f'{len(differences)} cells differ'}"
    )
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
