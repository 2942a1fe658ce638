"""Fixtures for the advonnx.data tests; image-writing helpers live in data_helpers.py."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
