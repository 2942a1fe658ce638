"""A physiological recording (EDF/BDF, WFDB) cut into windows of the model's length
(:mod:`advonnx.data.signals`)."""

from __future__ import annotations

from advonnx.data import signals
from advonnx.data.dataset import Dataset
from advonnx.data.sources.base import LoadRequest, err
from advonnx.errors import DataError

matches = signals.is_recording


def load(req: LoadRequest) -> Dataset:
    path, expect = req.path, req.expect
    if expect.spatial_ndim != 1:
        raise err(
            path,
            f"a signal recording, but the model takes {expect.layout} inputs",
            "give a signal model (layout NCW or NWC) or image data",
        )
    return signals.load_recording(path, expect, req.rule, req.limit, req.desc, DataError)
