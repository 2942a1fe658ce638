"""Natural medical-image corruptions, measured side by side with adversarial attacks.

Each corruption is a small function of (batch, severity parameter, rng) written against the
array namespace of its input, so the same code runs on NumPy, CuPy and array-api-strict
(JPEG alone runs on the host). Severities 1..5 and their sources (ImageNet-C, MedMNIST-C,
TorchIO) are tabulated in ``advonnx/corruptions/README.md``.

    from advonnx.corruptions import CORRUPTIONS, apply_corruption, corruption_names
    x_c = apply_corruption("ghosting", x, 3, Random(0), layout="NCHW")
"""

from advonnx.corruptions.base import LAYOUTS, Corruption
from advonnx.corruptions.registry import CORRUPTIONS, apply_corruption, corruption_names

__all__ = ["CORRUPTIONS", "LAYOUTS", "Corruption", "apply_corruption", "corruption_names"]
