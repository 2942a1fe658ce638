"""Every namespace corruption runs under array-api-strict (no NumPy-only call) and gives the
NumPy result for the same seed; JPEG, the one host-only corruption, still accepts strict arrays."""

from __future__ import annotations

import numpy as np
import pytest
from corruption_helpers import batch

from advonnx.corruptions import CORRUPTIONS, apply_corruption
from advonnx.xp import Random

xps = pytest.importorskip("array_api_strict")

NAMESPACE_CORRUPTIONS = [n for n, c in CORRUPTIONS.items() if not c.host_only and "image" in c.modalities]


@pytest.mark.parametrize("layout", ["NHWC", "NCDHW"])
@pytest.mark.parametrize("name", NAMESPACE_CORRUPTIONS)
def test_runs_under_array_api_strict_and_matches_numpy(name, layout):
    x = batch(layout)
    strict = apply_corruption(name, xps.asarray(x), 4, Random(9), layout=layout, spacing=None)
    assert type(strict) is type(xps.asarray(x)) and strict.dtype == xps.float32
    assert strict.shape == x.shape
    reference = apply_corruption(name, x, 4, Random(9), layout=layout)
    np.testing.assert_allclose(np.asarray(strict), reference, atol=1e-6)


def test_host_only_jpeg_returns_the_input_namespace():
    assert [n for n, c in CORRUPTIONS.items() if c.host_only] == ["jpeg"]
    x = batch("NCHW")
    y = apply_corruption("jpeg", xps.asarray(x), 3, Random(0), layout="NCHW")
    assert type(y) is type(xps.asarray(x)) and y.dtype == xps.float32
    np.testing.assert_array_equal(
        np.asarray(y), apply_corruption("jpeg", x, 3, Random(0), layout="NCHW")
    )


def test_strict_spacing_path():
    x = batch("NCDHW")
    kw = dict(layout="NCDHW", spacing=(2.5, 1.0, 1.0))
    for name in ("gaussian_blur", "downsample_upsample"):
        strict = apply_corruption(name, xps.asarray(x), 3, Random(0), **kw)
        np.testing.assert_allclose(
            np.asarray(strict), apply_corruption(name, x, 3, Random(0), **kw), atol=1e-6
        )
