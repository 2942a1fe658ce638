"""Pixelate's severities nest at every size (monotonicity of every corruption:
test_corruption_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advonnx.corruptions import apply_corruption
from advonnx.corruptions.resolution import PIXELATE_SCALES, pixelate_edges
from advonnx.xp import Random


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), depth=st.sampled_from([0, 3]), seed=st.integers(0, 2**16))
def test_pixelate_distance_never_shrinks_at_any_size(h, w, depth, seed):
    """Any image size, 8 x 8 included: each severity's cells are unions of the previous one's,
    so the L2 distance to the clean image never shrinks, and it grows whenever the cell count
    changes (random images are not constant on the finer cells)."""
    rng = np.random.default_rng(seed)
    shape = (2, 1, depth, h, w) if depth else (2, 1, h, w)
    x = rng.uniform(0, 1, shape)
    layout = "NCDHW" if depth else "NCHW"
    dist, cells = [], []
    for severity in range(1, 6):
        y = apply_corruption("pixelate", x, severity, Random(0), layout=layout)
        dist.append(float(np.sqrt(np.sum((y - x) ** 2))))
        cells.append(tuple(len(pixelate_edges(n, PIXELATE_SCALES[severity - 1])) - 1 for n in (h, w)))
    for k in range(4):
        assert dist[k + 1] >= dist[k] - 1e-9 * max(1.0, dist[k]), (h, w, dist)
        if cells[k + 1] != cells[k] and min(cells[k]) > 0:
            assert dist[k + 1] > dist[k], (h, w, cells, dist)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13, 32, 64, 97])
def test_pixelate_cells_nest_and_hold_block_means(n):
    """Edges of severity k+1 are edges of severity k; the output is each cell's plain mean
    (a loop over cells, independent of the cumulative-sum implementation)."""
    edges = [pixelate_edges(n, s) for s in PIXELATE_SCALES]
    for fine, coarse in zip(edges, edges[1:]):
        assert set(coarse) <= set(fine) and fine[0] == 0 and fine[-1] == n
    for s, e in zip(PIXELATE_SCALES, edges):
        assert len(e) - 1 == max(1, min(n, round(n * s)))
    x = np.random.default_rng(n).uniform(0, 1, (1, 1, n, 7))
    y = apply_corruption("pixelate", x, 3, Random(0), layout="NCHW")[0, 0]
    eh, ew = edges[2], pixelate_edges(7, PIXELATE_SCALES[2])
    for a, b in zip(eh[:-1], eh[1:]):
        for c, d in zip(ew[:-1], ew[1:]):
            np.testing.assert_allclose(y[a:b, c:d], x[0, 0, a:b, c:d].mean(), rtol=1e-12, atol=1e-12)
