"""JPEG compression, on the host: a baseline JPEG coder's lossy part in NumPy.

Baseline JPEG loses information in exactly two places: 8-bit quantization of the pixels and
quantization of each 8x8 block's DCT-II coefficients by the standard luminance table (ITU-T
T.81 Annex K, table K.1) scaled to a quality factor with the IJG rule. Entropy coding is
lossless, so it is left out; the result equals what a baseline grayscale JPEG decoder returns,
up to the rounding of the IDCT. Every channel is coded as its own grayscale image (no YCbCr,
no chroma subsampling), and 3-D volumes slice by slice in the (H, W) plane.

Why not SimpleITK's JPEG writer: it needs a file per slice and 8-bit input, and its quality
setting is not part of SimpleITK's documented API; this coder is deterministic, exact about the
quality table, and fast enough on batches.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from advonnx.xp import from_numpy, to_numpy

LUMINANCE_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)


def quantization_table(quality: int) -> np.ndarray:
    """The IJG (libjpeg) scaling of the luminance table to ``quality`` in 1..100."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((LUMINANCE_TABLE * scale + 50) / 100), 1, 255)


def _dct_matrix(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II matrix: coefficients = C @ block @ C.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.cos((2 * i + 1) * k * math.pi / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c


DCT = _dct_matrix()


def jpeg_planes(planes: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of 8-bit-valued planes (..., H, W) in [0, 255] (float64 in and out)."""
    h, w = planes.shape[-2:]
    ph, pw = -h % 8, -w % 8
    pad = [(0, 0)] * (planes.ndim - 2) + [(0, ph), (0, pw)]
    p = np.pad(planes, pad, mode="edge") - 128.0
    lead = p.shape[:-2]
    blocks = p.reshape(*lead, (h + ph) // 8, 8, (w + pw) // 8, 8)
    coef = np.einsum("ki,...aibj,lj->...akbl", DCT, blocks, DCT)
    table = quantization_table(quality)[:, None, :]  # broadcast over (k, b, l)
    coef = np.round(coef / table) * table
    blocks = np.einsum("ki,...akbl,lj->...aibj", DCT, coef, DCT)
    out = np.clip(np.round(blocks.reshape(p.shape) + 128.0), 0, 255)
    return out[..., :h, :w]


def _to_host(x) -> np.ndarray:
    """``x`` as a NumPy array. advonnx.xp.to_numpy asks for device "cpu", which
    array-api-strict refuses; other namespaces than NumPy/CuPy go through ``np.asarray``."""
    if array_api_compat.is_numpy_array(x) or array_api_compat.is_cupy_array(x):
        return to_numpy(x)
    return np.asarray(x)


def jpeg(x, quality, rng, *, spatial_axes, value_range, spacing=None):
    """JPEG at ``quality`` (ImageNet-C / MedMNIST-C qualities) of every (H, W) plane; host only."""
    lo, hi = value_range
    host = _to_host(x)
    h, w = spatial_axes[-2:]
    others = [a for a in range(host.ndim) if a not in (h, w)]
    planes = np.transpose(host, others + [h, w]).astype(np.float64)
    levels = np.clip(np.round((planes - lo) * (255.0 / (hi - lo))), 0, 255)
    coded = jpeg_planes(levels, quality) * ((hi - lo) / 255.0) + lo
    out = np.transpose(coded, np.argsort(others + [h, w])).astype(host.dtype)
    return from_numpy(x, out)
