import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
# built gradient sessions are cached on disk (advonnx/gradcache.py): the tests and the CLI
# processes they start share a fresh cache of their own, never the user's
os.environ.setdefault("ADVONNX_CACHE_DIR", tempfile.mkdtemp(prefix="advonnx-test-cache-"))

SUITES = Path(__file__).resolve().parents[1] / "advonnx" / "suites"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def brain_patches():
    d = np.load(SUITES / "data" / "brain_patches_test.npz")
    return d["x"], d["y"]


@pytest.fixture(scope="session")
def brain_cnn_path():
    return str(SUITES / "models" / "brain_cnn.onnx")


@pytest.fixture(scope="session")
def brain_mobilenet_path():
    return str(SUITES / "models" / "brain_mobilenet.onnx")
