"""onnxruntime session settings shared by models, probes and the gradient cache."""

from __future__ import annotations

import os

import onnxruntime as ort


def first_line(err: BaseException) -> str:
    """The first line of an onnxruntime error (its messages run to many lines), or its type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def session_options(threads: int | None) -> ort.SessionOptions:
    """All graph optimizations, errors only in the log, ``threads`` intra-op threads (None:
    ``$ADVONNX_THREADS``, else onnxruntime's choice), one inter-op thread."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    env_threads = os.environ.get("ADVONNX_THREADS")
    n = threads if threads is not None else (int(env_threads) if env_threads else 0)
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    return so
