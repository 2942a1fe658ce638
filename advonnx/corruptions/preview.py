"""A picture of what each corruption does: rows = corruptions, columns = severity 0 (clean)..5.

Runs on the host (it is a report helper) and writes an 8-bit grayscale PNG with SimpleITK.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from advonnx.corruptions.registry import apply_corruption, corruption_names
from advonnx.errors import AdvonnxError
from advonnx.xp import Random

GAP = 2  # pixels of white between tiles


def preview_grid(
    image: np.ndarray, names="all", path=None, *, value_range=(0.0, 1.0), seed: int = 0, gap: int = GAP
) -> np.ndarray:
    """Corrupt one image at every severity and tile the results into a PNG.

    ``image`` is one 2-D (H, W) image or one 3-D (D, H, W) volume (no batch, no channel), in
    ``value_range``. 3-D corruptions act on the whole volume; the grid shows its central axial
    slice (index D // 2). ``names`` is a list of corruption names or a spec for
    :func:`corruption_names` (``"all"``, ``"a,b"``). The grid has ``len(names)`` rows and six
    columns (clean, then severities 1..5) separated by ``gap`` white pixels: its size is
    (rows * H + (rows - 1) * gap) x (6 * W + 5 * gap). Returns the uint8 grid; writes it to
    ``path`` (a ``.png``) when given.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise AdvonnxError(f"preview needs one 2-D (H, W) image or 3-D (D, H, W) volume, not shape {image.shape}")
    if isinstance(names, str):
        names = corruption_names(names)
    else:
        names = [n for spec in names for n in corruption_names(spec)]
    lo, hi = float(value_range[0]), float(value_range[1])
    layout = "NCHW" if image.ndim == 2 else "NCDHW"
    batch = image.astype(np.float32)[None, None]

    def shown(x: np.ndarray) -> np.ndarray:
        plane = x[0, 0] if image.ndim == 2 else x[0, 0, image.shape[0] // 2]
        return np.clip(np.round((plane - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)

    h, w = batch.shape[-2:]
    rows, cols = len(names), 6
    grid = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), 255, np.uint8)
    for r, name in enumerate(names):
        tiles = [shown(batch)]
        for severity in range(1, 6):
            rng = Random(seed).spawn(name)
            out = apply_corruption(name, batch, severity, rng, layout=layout, value_range=(lo, hi))
            tiles.append(shown(out))
        for c, tile in enumerate(tiles):
            y0, x0 = r * (h + gap), c * (w + gap)
            grid[y0 : y0 + h, x0 : x0 + w] = tile
    if path is not None:
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise AdvonnxError(f"preview grid is written as PNG; name it *.png, not {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(grid), str(path))
    return grid
