"""Row helpers for a model's batches, host (NumPy) or device (CuPy): tiling, taking rows of the
held-fixed inputs, and results in the caller's namespace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .xp import namespace, to_numpy


def tile(a, k: int):
    """``k`` copies of the rows of ``a`` stacked (as ``concat([a] * k)``), host or device."""
    xp = namespace(a)
    return xp.concat([a] * k)


def take_rows(a, idx):
    """Rows ``idx`` of ``a`` (host or device; ``idx`` host or device)."""
    if isinstance(a, np.ndarray):
        return a[to_numpy(idx)]
    xp = namespace(a)
    return xp.take(a, xp.asarray(idx), axis=0)


def take_extras(extras: Mapping[str, Any] | None, idx) -> dict[str, Any] | None:
    """The rows ``idx`` of every array of ``extras`` (None stays None)."""
    return None if not extras else {k: take_rows(v, idx) for k, v in extras.items()}


def like(x, host: np.ndarray):
    """``host`` in the namespace of ``x`` (itself for a NumPy ``x``)."""
    if isinstance(x, np.ndarray):
        return host
    xp = namespace(x)
    return xp.asarray(host)
