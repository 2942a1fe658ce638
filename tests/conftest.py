import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
