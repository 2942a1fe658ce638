"""The spacing path under array-api-strict (every corruption under array-api-strict:
test_corruption_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
from corruption_helpers import batch

from advonnx.corruptions import apply_corruption
from advonnx.xp import Random

xps = pytest.importorskip("array_api_strict")


def test_strict_spacing_path():
    x = batch("NCDHW")
    kw = dict(layout="NCDHW", spacing=(2.5, 1.0, 1.0))
    for name in ("gaussian_blur", "downsample_upsample"):
        strict = apply_corruption(name, xps.asarray(x), 3, Random(0), **kw)
        np.testing.assert_allclose(np.asarray(strict), apply_corruption(name, x, 3, Random(0), **kw), atol=1e-6)
