"""Batch helpers shared by the attacks that keep a shrinking set of active samples or work on
one row per (sample, class) pair (DeepFool, FAB, JSMA, C&W, DAG): one-hot vectors, repeated
rows, row replacement without a scatter (array-API setitem takes no integer arrays) and the
best-scoring other classes. Array-API code: the namespace comes from the inputs.

Host-indexed helpers (``take``, ``scatter``, ``host_bool``; APGD, AutoAttack and the query-only
attacks): index bookkeeping (which samples are still attacked) stays on the host in NumPy; the
arrays themselves stay in the namespace of ``x`` and are gathered / scattered with array-API
calls only (``take`` and ``where``), so the loops run on NumPy, CuPy and array-api-strict.
"""

from __future__ import annotations

import numpy as np

from ..xp import from_numpy, namespace, to_numpy


def onehot(classes, num_classes: int, dtype):
    """``classes`` (any shape) → one-hot along a new last axis."""
    xp = namespace(classes)
    return xp.astype(classes[..., None] == xp.arange(num_classes, dtype=classes.dtype), dtype)


def repeat_rows(x, k: int):
    """Each row of ``x`` repeated ``k`` times consecutively: (N, ...) → (N·k, ...)."""
    xp = namespace(x)
    return xp.reshape(
        xp.broadcast_to(x[:, None, ...], (x.shape[0], k) + tuple(x.shape[1:])), (x.shape[0] * k,) + tuple(x.shape[1:])
    )


def put_rows(base, idx, rows):
    """``base`` with rows ``idx`` (sorted, unique) replaced by ``rows``, without a scatter
    (array-API setitem takes no integer arrays): a gather from ``rows`` and a ``where``."""
    xp = namespace(base)
    n, k = base.shape[0], idx.shape[0]
    if k == n:
        return rows
    if k == 0:
        return base
    everyone = xp.arange(n, dtype=idx.dtype)
    pos = xp.clip(xp.searchsorted(idx, everyone), 0, k - 1)
    mine = xp.take(idx, pos, axis=0) == everyone
    mask = xp.reshape(mine, (n,) + (1,) * (base.ndim - 1))
    return xp.where(mask, xp.take(rows, pos, axis=0), base)


def candidate_classes(scores, labels, k: int):
    """(N, k-1): the ``k - 1`` highest-scoring classes other than ``labels``, best first."""
    xp = namespace(scores)
    c = scores.shape[1]
    masked = xp.where(onehot(labels, c, xp.bool), -xp.inf, xp.astype(scores, xp.float64))
    order = xp.argsort(-masked, axis=1, stable=True)
    return order[:, : k - 1]


def take(x, idx: np.ndarray):
    """Rows ``idx`` (host int array) of ``x``."""
    xp = namespace(x)
    if idx.shape[0] == x.shape[0] and np.array_equal(idx, np.arange(x.shape[0])):
        return x
    return xp.take(x, from_numpy(x, idx.astype(np.int64)), axis=0)


def scatter(base, idx: np.ndarray, rows):
    """``base`` with rows ``idx`` replaced by ``rows`` (array API: a gather and a where)."""
    xp = namespace(base)
    n = base.shape[0]
    if idx.shape[0] == 0:
        return base
    pos = np.zeros(n, dtype=np.int64)
    pos[idx] = np.arange(idx.shape[0])
    hit = np.zeros(n, dtype=bool)
    hit[idx] = True
    gathered = xp.take(rows, from_numpy(base, pos), axis=0)
    mask = xp.reshape(from_numpy(base, hit), (n,) + (1,) * (base.ndim - 1))
    return xp.where(mask, gathered, base)


def host_bool(a) -> np.ndarray:
    return np.asarray(to_numpy(a), dtype=bool)
