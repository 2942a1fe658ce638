"""Reading untrusted ONNX files: refuse what is unsafe or absurd before anything allocates.

Checks, in order: the file exists and parses as an ONNX ModelProto (without external data);
every external-data ``location`` is a relative path that stays inside the model's folder and
is not a symbolic link; the declared initializer bytes stay under ``ADVONNX_MAX_MODEL_BYTES``
(default 8 GiB); every op's domain is one onnxruntime knows. Only then are external tensors
read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from .errors import ModelError

MAX_MODEL_BYTES = int(os.environ.get("ADVONNX_MAX_MODEL_BYTES", 8 * 2**30))
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        if d < 0:
            raise ModelError(f"initializer {t.name!r} declares a negative dimension {d}")
        n *= d
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:
        itemsize = 8
    return n * itemsize


def _check_external_location(path: Path, t: onnx.TensorProto) -> None:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    base = path.parent.resolve()
    if not location:
        raise ModelError(f"{path}: tensor {t.name!r} is stored externally without a location")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
        raise ModelError(
            f"{path}: tensor {t.name!r} points to absolute external data {location!r}; "
            "refused: keep external data files beside the model with relative names"
        )
    candidate = base / location
    if any(part == ".." for part in Path(location).parts):
        raise ModelError(f"{path}: tensor {t.name!r} external data {location!r} escapes the model's folder; refused")
    if candidate.is_symlink():
        raise ModelError(
            f"{path}: external data {location!r} is a symbolic link; refused: copy the real file beside the model"
        )
    resolved = candidate.resolve()
    if base not in resolved.parents and resolved != base:
        raise ModelError(f"{path}: external data {location!r} resolves outside the model's folder; refused")
    if not resolved.is_file():
        raise ModelError(f"{path}: external data file {location!r} for tensor {t.name!r} is missing")
    offset = int(info.get("offset", 0) or 0)
    length = int(info.get("length", 0) or 0)
    size = resolved.stat().st_size
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(f"{path}: external data {location!r} is shorter ({size} bytes) than tensor {t.name!r} needs")


def _all_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_graphs(g)


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an untrusted ONNX file safely (see module docstring); raises ``ModelError``."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file; check the path")
    if not path.is_file():
        raise ModelError(f"{path}: not a file; give the path of an .onnx model")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file; re-export or re-download the model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeWarning, OSError) as err:
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(err).__name__}); the file is truncated or not ONNX"
        ) from None
    if not model.HasField("graph") or not model.graph.output:
        raise ModelError(f"{path}: parses but holds no ONNX graph with outputs; the file is not an ONNX model")
    total = 0
    external = []
    for graph in _all_graphs(model.graph):
        tensors = list(graph.initializer) + [
            attr.t
            for node in graph.node
            if node.op_type == "Constant"
            for attr in node.attribute
            if attr.type == onnx.AttributeProto.TENSOR
        ]
        for t in tensors:
            total += _tensor_bytes(t)
            if t.data_location == onnx.TensorProto.EXTERNAL:
                external.append(t)
    if total > MAX_MODEL_BYTES:
        raise ModelError(
            f"{path}: declares {total / 2**30:.1f} GiB of weights, above the limit of "
            f"{MAX_MODEL_BYTES / 2**30:.1f} GiB; raise ADVONNX_MAX_MODEL_BYTES if this is intended"
        )
    for t in external:
        _check_external_location(path, t)
    local_functions = {(f.domain, f.name) for f in model.functions}
    for graph in _all_graphs(model.graph):
        for node in graph.node:
            if node.domain not in KNOWN_DOMAINS and (node.domain, node.op_type) not in local_functions:
                raise ModelError(
                    f"{path}: op {node.op_type!r} from custom domain {node.domain!r} (node {node.name!r}) "
                    "is not supported by onnxruntime; export the model with standard ONNX ops"
                )
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: cannot read external data ({err})") from None
    return model
