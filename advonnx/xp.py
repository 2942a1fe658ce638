"""Array-namespace helpers: the same numeric code runs on NumPy, CuPy and array-api-strict.

Numeric code takes its namespace from its inputs (``namespace(x)``) and never imports numpy
or cupy directly. Randomness goes through :class:`Random`, one seeded generator adapter that
draws on the host or on the device of the arrays it is asked to match.
"""

from __future__ import annotations

import hashlib
from typing import Any

import array_api_compat
import numpy as np

_NUMPY_NAMESPACE = array_api_compat.array_namespace(np.empty(0))


def namespace(*arrays: Any):
    """The array-API namespace shared by ``arrays`` (NumPy, CuPy, array-api-strict...)."""
    if arrays and all(type(a) is np.ndarray for a in arrays):  # the common case, without a lookup
        return _NUMPY_NAMESPACE
    return array_api_compat.array_namespace(*arrays)


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of ``x`` (no copy when it already is NumPy)."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def from_numpy(like: Any, host: np.ndarray):
    """``host`` moved into the namespace (and device) of ``like``."""
    xp = namespace(like)
    if array_api_compat.is_numpy_namespace(xp):
        return host
    return xp.asarray(host, device=array_api_compat.device(like))


def flat(x):
    """``x`` reshaped to (N, -1)."""
    xp = namespace(x)
    return xp.reshape(x, (x.shape[0], -1))


def batch_view(v, ndim: int):
    """Per-sample vector ``v`` (N,) reshaped to broadcast against an ``ndim``-D batch."""
    xp = namespace(v)
    return xp.reshape(v, (v.shape[0],) + (1,) * (ndim - 1))


def norms(delta, norm: str):
    """Per-sample norm of a perturbation batch: ``linf``, ``l2`` or ``l0`` (changed elements)."""
    xp = namespace(delta)
    d = flat(delta)
    if norm == "linf":
        return xp.max(xp.abs(d), axis=1)
    if norm == "l2":
        return xp.sqrt(xp.sum(d * d, axis=1))
    if norm == "l0":
        return xp.sum(xp.astype(d != 0, d.dtype), axis=1)
    raise ValueError(f"unknown norm {norm!r}; use linf, l2 or l0")


class Random:
    """One seeded generator for a whole run, handing out arrays in the caller's namespace.

    Draws are made with NumPy's PCG64 on the host and moved to the namespace of ``like``;
    on CuPy the CuPy generator is used instead so that nothing crosses the bus. Child
    generators (``spawn``) give independent, reproducible streams per model × attack × chunk.
    """

    def __init__(self, seed: int | np.random.SeedSequence = 0):
        self.seed_sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._np = np.random.Generator(np.random.PCG64(self.seed_sequence))
        self._cupy = None

    def spawn(self, key: str | int) -> Random:
        """A child stream determined by this generator's seed and ``key`` alone."""
        if isinstance(key, str):
            key = int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)
        entropy = self.seed_sequence.entropy
        return Random(np.random.SeedSequence(entropy, spawn_key=(*self.seed_sequence.spawn_key, key)))

    def _device_gen(self, xp):
        if self._cupy is None:
            self._cupy = xp.random.default_rng(int(self._np.integers(0, 2**63 - 1)))
        return self._cupy

    def _place(self, host: np.ndarray, like, dtype):
        if like is None:
            return host.astype(dtype or host.dtype, copy=False)
        xp = namespace(like)
        dt = dtype if dtype is not None else like.dtype
        if array_api_compat.is_numpy_namespace(xp):
            return host.astype(dt, copy=False)
        return xp.asarray(host, dtype=dt, device=array_api_compat.device(like))

    def _is_cupy(self, like) -> bool:
        return like is not None and array_api_compat.is_cupy_array(like)

    def normal(self, shape, *, like=None, dtype=None):
        if self._is_cupy(like):
            return self._device_gen(namespace(like)).standard_normal(shape, dtype=like.dtype)
        return self._place(self._np.standard_normal(shape, dtype=np.float64), like, dtype)

    def normal_native(self, shape, *, like):
        """Standard normals of ``shape`` in the dtype and namespace of ``like``, drawn directly in
        that dtype (float32 draws on NumPy: about twice as fast as :meth:`normal`; a different
        stream from it)."""
        if array_api_compat.is_numpy_array(like) and like.dtype in (np.float32, np.float64):
            return self._np.standard_normal(shape, dtype=like.dtype)
        return self.normal(shape, like=like)

    def uniform(self, shape, low=0.0, high=1.0, *, like=None, dtype=None):
        if self._is_cupy(like):
            g = self._device_gen(namespace(like))
            return g.random(shape, dtype=like.dtype) * (high - low) + low
        return self._place(self._np.uniform(low, high, size=shape), like, dtype)

    def rademacher(self, shape, *, like=None, dtype=None):
        if self._is_cupy(like):
            g = self._device_gen(namespace(like))
            return (g.integers(0, 2, size=shape) * 2 - 1).astype(like.dtype)
        return self._place(self._np.integers(0, 2, size=shape).astype(np.float64) * 2 - 1, like, dtype)

    def integers(self, low, high, shape, *, like=None):
        if self._is_cupy(like):
            return self._device_gen(namespace(like)).integers(low, high, size=shape)
        host = self._np.integers(low, high, size=shape)
        return host if like is None else self._place(host, like, None if like is None else namespace(like).int64)

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of ``range(n)`` (indices are small; they stay on the host)."""
        return self._np.permutation(n)
