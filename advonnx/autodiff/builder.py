"""A small tape that emits ONNX nodes and constants with fresh, unique names.

Rules never build NodeProtos by hand: they call :meth:`Builder.op` (one node, its output's
name returned; :meth:`Builder.op_multi` for several outputs, their names returned) and the
helpers below, which also hide the opset differences of the few ops whose signature changed
after opset 13 (``ReduceMean``/``ReduceMax`` take ``axes`` as an input from opset 18 on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

import numpy as np
import onnx
from onnx import helper, numpy_helper

Dim = int | None


def all_int(values: Sequence[object]) -> TypeGuard[Sequence[int]]:
    """Whether every value is an int (a static dim), narrowing ``values`` for the checker."""
    return all(isinstance(v, int) for v in values)


class Builder:
    """Collects the nodes and initializers of the backward graph."""

    def __init__(self, taken: set[str], opset: int, prefix: str = "advonnx_vjp"):
        self._taken = set(taken)
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}

    # -- names ---------------------------------------------------------------------------
    def fresh(self, hint: str = "t") -> str:
        while True:
            self._count += 1
            name = f"{self.prefix}/{hint}_{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    # -- nodes ---------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], *, output: str | None = None, **attrs: Any) -> str:
        """Emit one ai.onnx node with one output; return its name (a fresh one, or
        ``output``)."""
        return self._emit(op_type, inputs, 1 if output is None else [output], attrs)[0]

    def op_multi(self, op_type: str, inputs: Sequence[str], *, outputs: int | Sequence[str], **attrs: Any) -> list[str]:
        """Emit one ai.onnx node with ``outputs`` outputs (a count: fresh names, or the
        names); return their names."""
        return self._emit(op_type, inputs, outputs, attrs)

    def _emit(
        self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str], attrs: dict[str, Any]
    ) -> list[str]:
        if isinstance(outputs, int):
            names = [self.fresh(op_type) for _ in range(outputs)]
        else:
            names = list(outputs)
            self._taken.update(names)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type + "_node"), **attrs))
        return names

    def const(self, value, dtype=None) -> str:
        """An initializer holding ``value`` (deduplicated by content)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            name = self.fresh("c")
            self.initializers.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64))

    # -- helpers -------------------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool) -> str:
        """``ReduceSum``/``ReduceMean``/``ReduceMax`` over static ``axes`` (any opset >= 13)."""
        axes = [int(a) for a in axes]
        k = int(bool(keepdims))
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=k)
        return self.op(op_type, [x], axes=axes, keepdims=k)

    def shape(self, x: str, start: int | None = None, end: int | None = None) -> str:
        """``Shape(x)[start:end]`` (Shape takes start/end from opset 15 on)."""
        if start is None and end is None:
            return self.op("Shape", [x])
        if self.opset >= 15:
            return self.op("Shape", [x], start=start, end=end)
        stop = end if end is not None else np.iinfo(np.int64).max
        return self.op("Slice", [self.op("Shape", [x]), self.ints([start or 0]), self.ints([stop])])

    def shape_of(self, x: str, static: Sequence[Dim] | None) -> str:
        """The shape of ``x`` as an int64 tensor: a constant when fully static."""
        if static is not None and all_int(static):
            return self.ints(static)
        return self.shape(x)

    def reshape(self, x: str, like: str, static: Sequence[Dim] | None) -> str:
        return self.op("Reshape", [x, self.shape_of(like, static)])

    def zeros_like(self, x: str, static: Sequence[Dim] | None, np_dtype) -> str:
        value = numpy_helper.from_array(np.zeros((1,), dtype=np_dtype), "value")
        return self.op("ConstantOfShape", [self.shape_of(x, static)], value=value)

    def scalar(self, value: float, np_dtype) -> str:
        return self.const(np.asarray(value, dtype=np_dtype))
