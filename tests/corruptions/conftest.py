"""Fixtures for the corruption tests (helpers live in corruption_helpers.py)."""

from __future__ import annotations

import pytest
from corruption_helpers import batch


@pytest.fixture
def nchw():
    return batch("NCHW")
