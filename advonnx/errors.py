"""User-facing errors: one line saying what is wrong and what to do (exit code 2)."""

from __future__ import annotations


class AdvonnxError(Exception):
    """Bad input or usage. The CLI prints ``str(err)`` on one line and exits with code 2."""

    exit_code = 2


class ModelError(AdvonnxError):
    """The ONNX file cannot be loaded, checked or run as asked."""


class DataError(AdvonnxError):
    """Images, arrays or labels that cannot be read or do not fit the model."""


class GradientUnavailable(AdvonnxError):
    """Exact gradients were asked for but the graph has ops without a VJP rule."""
