"""Samples read per block from references, never stacked whole.

A :class:`SampleArray` stands where a stacked ``(N, ...)`` array stood: ``len``, ``dtype``,
``shape`` and indexing by an int, a slice or a list of ints, each read through a *block source*
(a callable that reads the samples at given indices and stacks them). After a slice is read the
next slice of the same length is read in a background thread (a one-block prefetch), so reading
block after block overlaps the next read with the caller's work; at most two blocks are held.

Samples may differ in shape (a dynamic-size model gets each at its own size); a read must then
ask for samples of one shape: :meth:`SampleArray.blocks` gives the contiguous runs of one shape
cut into blocks of at most ``size`` samples (the loaders order samples grouped by shape).

:class:`NpzMember` reads one array of an ``.npz`` per block of samples: a stored (uncompressed)
member by positioned reads of its bytes in the zip file, a compressed one by streaming
decompression through one open member (forward seeks only when blocks come in order).
"""

from __future__ import annotations

import io
import struct
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import cast

import numpy as np

from advonnx.errors import DataError

#: samples per block when a loader checks a whole dataset block by block
CHECK_BLOCK = 256


class SampleArray:
    """``N`` samples of per-sample shape ``shapes[i]`` and one dtype, read per block.

    ``read(indices)`` returns the samples at ``indices`` (a 1-D int64 array; all of one shape)
    stacked on a new first axis. ``shapes``: one shape for all samples, or an ``(N, ndim)`` int
    array. ``prefetch``: read the next slice in a background thread after each slice read.
    """

    def __init__(
        self,
        read: Callable[[np.ndarray], np.ndarray],
        n: int,
        shapes,
        dtype,
        *,
        prefetch: bool = True,
        index: np.ndarray | None = None,
    ):
        self._read = read
        self._index = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, np.int64)
        sh = np.asarray(shapes, dtype=np.int64)
        self._shapes = np.broadcast_to(sh, (len(self._index), sh.shape[-1])) if sh.ndim == 1 else sh
        self.dtype = np.dtype(dtype)
        self.prefetch = prefetch
        self._lock = threading.Lock()
        self._ahead: tuple[tuple[int, int], Future] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.reads = 0  # calls of the block source (tests check reads are per block)

    # -- shape ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    @property
    def sample_shapes(self) -> np.ndarray:
        """``(N, ndim)`` per-sample shapes (without the sample axis)."""
        return self._shapes

    @property
    def uniform(self) -> bool:
        return len(self) == 0 or bool(np.all(self._shapes == self._shapes[0]))

    @property
    def shape(self) -> tuple:
        """``(N, *sample_shape)``; an axis whose size differs between samples is ``None``."""
        if len(self) == 0:
            return (0,)
        first = self._shapes[0]
        same = np.all(self._shapes == first, axis=0)
        return (len(self), *(int(s) if ok else None for s, ok in zip(first, same, strict=True)))

    @property
    def ndim(self) -> int:
        return 1 + self._shapes.shape[-1]

    def blocks(self, size: int, stop: int | None = None) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` ranges of at most ``size`` samples of one shape, covering ``[0, stop)``."""
        stop = len(self) if stop is None else min(int(stop), len(self))
        yield from shape_blocks(self._shapes[:stop], size)

    # -- reading -------------------------------------------------------------------------------
    def _load(self, idx: np.ndarray) -> np.ndarray:
        shapes = self._shapes[idx]
        if len(idx) and not np.all(shapes == shapes[0]):
            raise DataError(
                "samples of different sizes asked for in one block; read blocks of one size "
                "(SampleArray.blocks / Dataset.blocks)"
            )
        self.reads += 1
        if len(idx) == 0:
            return np.zeros((0, *self._shapes[0]) if len(self) else (0,), self.dtype)
        return self._read(self._index[idx])

    def _slice(self, a: int, b: int) -> np.ndarray:
        with self._lock:
            ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == (a, b):
            out = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].cancel()
            out = self._load(np.arange(a, b))
        n = b - a
        nxt = (b, min(len(self), b + n))
        if (
            self.prefetch
            and n > 0
            and nxt[0] < nxt[1]
            and np.all(self._shapes[nxt[0] : nxt[1]] == self._shapes[nxt[0]])
        ):
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="advonnx-prefetch")
            with self._lock:
                self._ahead = (nxt, self._pool.submit(self._load, np.arange(*nxt)))
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"sample {key} out of range for {len(self)} samples")
            return self._load(np.array([i]))[0]
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            if step == 1:
                return self._slice(a, max(a, b))
            return self._load(np.arange(a, b, step))
        if isinstance(key, tuple):  # the samples first, then the rest of the index
            first = self[key[0]]
            return first[key[1:]] if isinstance(key[0], (int, np.integer)) else first[(slice(None), *key[1:])]
        idx = np.arange(len(self))[np.asarray(key)]
        return self._load(np.atleast_1d(idx).astype(np.int64))

    def take(self, indices) -> SampleArray:
        """A view of the samples at ``indices`` (nothing is read)."""
        idx = np.atleast_1d(np.arange(len(self))[indices]).astype(np.int64)
        return SampleArray(
            self._read, len(idx), self._shapes[idx], self.dtype, prefetch=self.prefetch, index=self._index[idx]
        )

    def detach(self) -> SampleArray:
        """The same samples with a block source that holds only their references (when the source
        can be cut down, as a folder's can): what is shipped to a Dask worker for one block."""
        owner = getattr(self._read, "__self__", None)
        if owner is None or not hasattr(owner, "subset"):
            return self
        read = getattr(owner.subset(self._index), self._read.__name__)
        return SampleArray(read, len(self), self._shapes, self.dtype, prefetch=False)

    def __array__(self, dtype=None, copy=None):
        if not self.uniform:
            raise DataError("samples of different sizes cannot be stacked into one array; read them by Dataset.blocks")
        out = self._load(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self):  # shipped to Dask workers: the references, not the thread pool
        state = dict(self.__dict__)
        state.update(_lock=None, _ahead=None, _pool=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        shape = "x".join("?" if s is None else str(s) for s in self.shape)
        return f"SampleArray({shape} {self.dtype}, read per block)"


def as_array(a: np.ndarray | SampleArray) -> np.ndarray:
    """``a`` typed as what it stands for: a :class:`SampleArray` is used where a stacked array is
    (``len``, ``shape``, ``dtype``, indexing, ``take``, ``np.asarray``); nothing is read."""
    return cast(np.ndarray, a)


def shape_blocks(shapes: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """Contiguous runs of equal rows of ``shapes`` cut into ranges of at most ``size``."""
    n = len(shapes)
    size = max(1, int(size))
    start = 0
    while start < n:
        end = start + 1
        while end < n and end - start < size and np.array_equal(shapes[end], shapes[start]):
            end += 1
        yield start, end
        start = end


def group_order(shapes: list[tuple[int, ...]]) -> np.ndarray:
    """A stable order that puts samples of one shape together (groups in order of first appearance)."""
    first: dict[tuple[int, ...], int] = {}
    for s in shapes:
        first.setdefault(tuple(s), len(first))
    keys = np.array([first[tuple(s)] for s in shapes], dtype=np.int64)
    return np.argsort(keys, kind="stable")


# ------------------------------------------------------------------------------------ npz


class NpzMember:
    """Array ``key`` of the ``.npz`` at ``path``, read per block along axis 0."""

    def __init__(self, path: Path, key: str):
        self.path = Path(path)
        self.key = key
        with zipfile.ZipFile(self.path) as zf:
            info = zf.getinfo(key + ".npy")
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                header = fh.tell()
            self.stored = info.compress_type == zipfile.ZIP_STORED
            self._member = info.filename
            if self.stored:
                with open(self.path, "rb") as raw:
                    raw.seek(info.header_offset)
                    local = struct.unpack("<4s5H3L2H", raw.read(30))
                self._offset = info.header_offset + 30 + local[9] + local[10] + header
            else:
                self._offset = header
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.fortran = bool(fortran) and len(self.shape) > 1
        self._per = int(np.prod(self.shape[1:], dtype=np.int64)) if self.shape else 1
        self._zip: zipfile.ZipFile | None = None
        self._fh: io.BufferedIOBase | None = None  # a ZipExtFile
        self._pos = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The samples at ``idx`` (in that order), one read per contiguous run."""
        idx = np.asarray(idx, np.int64)
        if len(idx) and np.all(np.diff(idx) == 1):
            return self.read(int(idx[0]), int(idx[-1]) + 1)
        cuts = np.flatnonzero(np.diff(idx) != 1) + 1
        parts = [self.read(int(r[0]), int(r[-1]) + 1) for r in np.split(idx, cuts) if len(r)]
        return np.concatenate(parts) if parts else np.zeros((0, *self.shape[1:]), self.dtype)

    def read(self, a: int, b: int) -> np.ndarray:
        """Samples ``a:b`` as a fresh array."""
        if self.dtype.hasobject:
            raise DataError(f"{self.path}: array '{self.key}' is not numeric; store it as a plain numeric array")
        if self.fortran or not self.shape:  # rare: the whole array, then the rows
            with np.load(self.path, allow_pickle=False) as z:
                return np.array(z[self.key][a:b])
        b = max(a, min(b, len(self)))
        count = (b - a) * self._per
        nbytes = count * self.dtype.itemsize
        start = self._offset + a * self._per * self.dtype.itemsize
        with self._lock:
            buf = bytearray(nbytes)
            if self.stored:
                with open(self.path, "rb") as fh:
                    fh.seek(start)
                    got = fh.readinto(buf)
            else:
                if self._fh is None or start < self._pos:
                    self._close()
                    self._zip = zipfile.ZipFile(self.path)
                    self._fh = cast(io.BufferedIOBase, self._zip.open(self._member))  # typeshed: IO[bytes]
                    self._pos = 0
                self._fh.seek(start - self._pos, 1)
                got = self._fh.readinto(buf)
                self._pos = start + got
        if got != nbytes:
            raise DataError(f"{self.path}: array '{self.key}' is truncated; save the .npz again")
        return np.frombuffer(buf, self.dtype, count).reshape(b - a, *self.shape[1:])

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._zip is not None:
            self._zip.close()
        self._fh = self._zip = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_zip=None, _fh=None, _pos=0, _lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
