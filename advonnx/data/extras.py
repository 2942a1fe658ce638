"""Per-sample values of a model's other inputs (those not attacked, held fixed): a second signal,
a scalogram, clinical covariates (age, sex, site) beside an image.

They come with the samples of the attacked input (``x``), one row per sample, from:

- an ``.npz``: an array named after each input, first axis the samples (as ``x``);
- a CSV manifest: a column named after the input holding, per row, either a file (``.npy``;
  ``.npz`` with one array or one named after the input; any image SimpleITK reads, values as
  stored) or numbers separated by spaces or ``;``; or, for a vector input, one column per
  feature named ``INPUT:FIELD`` (e.g. ``covariates:age,covariates:sex,covariates:site``), in
  the input's order.

Values are taken as stored (no intensity rule); each must fit the input's shape.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from advonnx.data.dataset import Dataset
from advonnx.errors import DataError


def _err(where: object, what: str, todo: str) -> DataError:
    return DataError(f"{where}: {what}; {todo}")


def _fit(value: np.ndarray, dims: tuple, dtype: str, where: str, name: str) -> np.ndarray:
    """``value`` as one sample of an input of graph ``dims`` (batch axis first): reshaped when
    the number of values matches a fixed shape."""
    tail = tuple(dims[1:])
    value = np.asarray(value)
    if value.dtype.kind not in "biuf":
        raise _err(where, f"values for input {name!r} are not numbers ({value.dtype})", "store numeric values")
    if len(value.shape) != len(tail) or any(d is not None and d != v for d, v in zip(tail, value.shape)):
        if all(d is not None for d in tail) and value.size == int(np.prod(tail, dtype=np.int64)):
            value = value.reshape(tail)
        else:
            want = "(" + ", ".join("?" if d is None else str(d) for d in tail) + ")"
            raise _err(
                where,
                f"input {name!r} got a sample of shape {value.shape}, the model takes {want}",
                f"store one {want} array per sample",
            )
    if not np.all(np.isfinite(value.astype(np.float64))):
        raise _err(where, f"values for input {name!r} hold NaN or infinite values", "replace or drop those samples")
    return value.astype(dtype)


def _from_npz(path: Path, ds: Dataset, inputs, sources: dict) -> dict[str, np.ndarray]:
    z = np.load(path, allow_pickle=False)
    out = {}
    n = len(ds)
    for name, dims, dtype in inputs:
        if name not in z.files:
            raise _err(
                path,
                f"no array named {name!r} for the model input of that name (found: {', '.join(z.files)})",
                f"store its per-sample values as numpy.savez(path, x=..., {name}=...)",
            )
        arr = np.asarray(z[name])
        if arr.ndim < 1 or arr.shape[0] < n:
            raise _err(
                path,
                f"array {name!r} has shape {arr.shape} for {n} samples",
                f"store one row per sample of x (shape (N, {', '.join('?' if d is None else str(d) for d in dims[1:])}))",
            )
        out[name] = np.stack([_fit(arr[i], dims, dtype, f"{path} sample {i}", name) for i in range(n)])
        sources[name] = f"npz array {name!r}"
    return out


def _read_value(cell: str, manifest: Path, line: int, name: str) -> np.ndarray:
    """A manifest cell: a file beside the manifest, or numbers separated by spaces or ';'."""
    text = cell.strip()
    if not text:
        raise _err(f"{manifest} line {line}", f"empty value for input {name!r}", "give every row a value")
    try:
        return np.asarray([float(v) for v in re.split(r"[;\s]+", text) if v], dtype=np.float64)
    except ValueError:
        pass
    p = Path(text) if Path(text).is_absolute() else manifest.parent / text
    where = f"{manifest} line {line}"
    if not p.is_file():
        raise _err(
            where,
            f"{text!r} for input {name!r} is neither numbers nor an existing file "
            f"(relative paths resolve against {manifest.parent})",
            "fix the manifest",
        )
    low = p.name.lower()
    try:
        if low.endswith(".npy"):
            return np.load(p, allow_pickle=False)
        if low.endswith(".npz"):
            z = np.load(p, allow_pickle=False)
            key = name if name in z.files else (z.files[0] if len(z.files) == 1 else None)
            if key is None:
                raise _err(p, f"holds arrays {z.files}, none named {name!r}", f"store one array, or one named {name!r}")
            return z[key]
    except (OSError, ValueError) as ex:
        raise _err(
            p,
            f"cannot read values for input {name!r} ({' '.join(str(ex).split())[:150]})",
            "store them with numpy.save",
        ) from None
    from advonnx.data.readers import Unreadable, read_file

    try:
        raw = read_file(p)
    except Unreadable as ex:
        raise _err(p, f"cannot read values for input {name!r} ({ex})", "store them as .npy") from None
    arr = raw.array
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def _from_manifest(path: Path, ds: Dataset, inputs, sources: dict) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    raw_header = [h.strip() for h in rows[0]]
    header = [h.lower() for h in raw_header]
    key = header.index("path") if "path" in header else header.index("image")
    columns = {}
    for name, _, _ in inputs:
        low = name.lower()
        if low in header:
            columns[name] = [header.index(low)]
            sources[name] = f"manifest column {name!r}"
        else:
            fields = [k for k, h in enumerate(header) if h.startswith(low + ":")]
            if not fields:
                raise _err(
                    path,
                    f"no column for the model input {name!r} (header {','.join(raw_header)})",
                    f"add a column {name} (a file or numbers per row) or columns {name}:FIELD, one per value",
                )
            columns[name] = fields
            sources[name] = "manifest columns " + ",".join(raw_header[k] for k in fields)
    # manifest rows in order, matched to the samples read (rows whose image was skipped drop out)
    lines = [(i, r + [""] * (len(header) - len(r))) for i, r in enumerate(rows[1:], start=2)]
    values: dict[str, list] = {name: [] for name, _, _ in inputs}
    pos = 0
    for sid in ds.sample_ids:
        while pos < len(lines) and Path(lines[pos][1][key].strip()).as_posix() != sid:
            pos += 1
        if pos == len(lines):
            raise _err(path, f"sample {sid!r} has no row", "keep one row per sample")
        line, r = lines[pos]
        pos += 1
        for name, dims, dtype in inputs:
            cols = columns[name]
            if len(cols) == 1:
                v = _read_value(r[cols[0]], path, line, name)
            else:
                v = np.concatenate([_read_value(r[k], path, line, name) for k in cols])
            values[name].append(_fit(v, dims, dtype, f"{path} line {line}", name))
    return {name: np.stack(v) for name, v in values.items()}


def load_extra_inputs(source, ds: Dataset, inputs, attacked: str) -> Dataset:
    """``ds`` with ``extras`` (name -> (N, ...) array) for the model inputs ``inputs`` ((name,
    graph dims, dtype) each: ``ModelSpec.extra_inputs``) read from ``source``, and
    ``description["input:NAME"]`` saying where each input came from (``attacked`` too)."""
    if not inputs:
        return ds
    path = Path(source).expanduser()
    names = ", ".join(n for n, _, _ in inputs)
    sources = {
        attacked: "attacked: "
        + ("npz array 'x'" if path.name.lower().endswith(".npz") else "the manifest's image files")
    }
    if path.is_file() and path.name.lower().endswith(".npz"):
        extras = _from_npz(path, ds, inputs, sources)
    elif path.is_file() and path.name.lower().endswith(".csv"):
        extras = _from_manifest(path, ds, inputs, sources)
    else:
        raise _err(
            path,
            f"the model also takes the inputs {names}, held fixed per sample, which this data cannot give",
            f"give an .npz with arrays named {names} beside x, or a CSV manifest with columns named after them",
        )
    desc = dict(ds.description)
    desc.update({f"input:{k}": f"held fixed: {v}" if k != attacked else v for k, v in sources.items()})
    return replace(ds, extras=extras, description=desc)
