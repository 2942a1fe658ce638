"""Inputs for the corruption tests: phantoms (smooth ellipses with texture, like a body
cross-section) and ECG-like signals."""

from __future__ import annotations

import numpy as np


def _blob(yy, xx, cy, cx, ry, rx, sharpness):
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) * min(ry, rx) * sharpness))


def phantom_2d(n: int = 64, scale: float = 1.0) -> np.ndarray:
    """(n, n) float32 image in [0, 1]: a textured ellipse with a bright and a dark insert,
    edges about one pixel wide."""
    yy, xx = np.mgrid[0:n, 0:n] / n
    body = _blob(yy, xx, 0.5, 0.5, 0.3, 0.38, n)
    texture = 0.55 + 0.12 * np.sin(2 * np.pi * 4 * xx) * np.cos(2 * np.pi * 3 * yy)
    img = 0.05 + body * (texture - 0.05)
    img = img + 0.3 * _blob(yy, xx, 0.45, 0.38, 0.12, 0.08, n)
    img = img - 0.3 * _blob(yy, xx, 0.58, 0.62, 0.06, 0.1, n)
    return (scale * img).astype(np.float32)


def phantom_3d(d: int = 12, n: int = 32) -> np.ndarray:
    """(d, n, n) volume: the 2-D phantom fading out towards the first and last slices."""
    z = np.linspace(-1.0, 1.0, d)[:, None, None]
    return (phantom_2d(n)[None] * (1.0 - 0.5 * z**2)).astype(np.float32)


def batch(layout: str, n: int = 2) -> np.ndarray:
    """A float32 batch of ``n`` phantoms (sample i scaled by 1 - 0.1 i) in ``layout``."""
    if "D" in layout:
        vol = np.stack([phantom_3d() * (1 - 0.1 * i) for i in range(n)])[:, None]  # NCDHW
        return np.ascontiguousarray(vol if layout == "NCDHW" else np.moveaxis(vol, 1, -1))
    img = np.stack([phantom_2d() * (1 - 0.1 * i) for i in range(n)])[:, None]  # NCHW
    return np.ascontiguousarray(img if layout == "NCHW" else np.moveaxis(img, 1, -1))


FS = 500.0  # Hz
DT = (1.0 / FS,)  # a signal's sample period, the spacing of its one axis


def ecg_like(n=3, channels=4, seconds=4.0):
    """(N, C, T) in [0, 1]: a 1.2 Hz train of narrow peaks on a 0.5 baseline, per channel gains."""
    t = np.arange(int(seconds * FS)) / FS
    beat = np.exp(-(((t * 1.2) % 1.0 - 0.3) ** 2) / (2 * 0.01**2))
    gains = np.linspace(0.15, 0.35, channels)
    x = 0.45 + gains[None, :, None] * beat[None, None, :] * (1 - 0.1 * np.arange(n))[:, None, None]
    return x.astype(np.float32)
