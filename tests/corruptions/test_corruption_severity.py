"""Severity is monotonic: distance to the clean image grows from severity 1 to 5."""

from __future__ import annotations

import numpy as np
import pytest
from corruption_helpers import batch

from advonnx.corruptions import CORRUPTIONS, apply_corruption
from advonnx.xp import Random


@pytest.mark.parametrize("layout", ["NCHW", "NCDHW"])
@pytest.mark.parametrize("name", [n for n, c in CORRUPTIONS.items() if "image" in c.modalities])
def test_distance_grows_with_severity(name, layout):
    """RMS distance on a textured phantom batch, one fixed seed per severity (the same draws
    scaled: severities share their random numbers)."""
    x = batch(layout, n=4)
    rms = []
    for severity in range(1, 6):
        y = apply_corruption(name, x, severity, Random(0), layout=layout)
        rms.append(float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2))))
    assert all(b > a for a, b in zip(rms, rms[1:], strict=False)), (name, rms)
    assert rms[0] > 2e-5, (name, rms)
