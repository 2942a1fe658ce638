"""The VJP rule registry and the context a rule sees.

A rule is a small function ``rule(ctx) -> list[str | None]`` returning, for every input of
``ctx.node``, the name of the cotangent tensor (``None`` for inputs that need none). Rules are
registered per op type and per opset from which their semantics hold
(``@vjp("Softmax", since=13)``), the way ``onnx.reference.ops`` versions its kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import onnx
from onnx import helper

from ..errors import GradientUnavailable
from .builder import Builder


class RuleUnavailable(GradientUnavailable):
    """A rule exists for the op but not for this node's attributes or shapes."""

    def __init__(self, message: str, op: str):
        super().__init__(message)
        self.op = op


@dataclass(frozen=True)
class Rule:
    fn: Callable[[VJPContext], Sequence[str | None]]
    since: int
    requires_opset: int | Callable[[onnx.NodeProto], int]  # opset the backward ops need

    def required_opset(self, node: onnx.NodeProto) -> int:
        """The opset the model is lifted to (at least) before this rule runs on ``node``."""
        r = self.requires_opset
        return r(node) if callable(r) else r


_RULES: dict[tuple[str, str], list[Rule]] = {}


def vjp(*op_types: str, since: int = 1, requires_opset: int | Callable = 13, domain: str = ""):
    """Register ``fn`` as the VJP rule of ``op_types`` (ai.onnx unless ``domain``)."""

    def register(fn):
        for op in op_types:
            rules = _RULES.setdefault((domain, op), [])
            rules.append(Rule(fn, since, requires_opset))
            rules.sort(key=lambda r: r.since)
        return fn

    return register


def find_rule(domain: str, op_type: str, opset: int) -> Rule | None:
    domain = "" if domain == "ai.onnx" else domain
    found = None
    for rule in _RULES.get((domain, op_type), []):
        if rule.since <= opset:
            found = rule
    return found


def supported_ops() -> list[str]:
    """Sorted op types that have a VJP rule."""
    return sorted(op if not d else f"{d}::{op}" for d, op in _RULES)


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass
class TensorInfo:
    elem_type: int
    shape: tuple | None  # dims: int, str (symbolic) or None (unknown); None if rank unknown


@dataclass
class GraphInfo:
    """Static facts about the forward graph: types, shapes and constant values."""

    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray] = field(default_factory=dict)


# execution providers a gradient graph can be built for (rules choose between exact
# constructions by the speed of their kernels)
KERNELS = ("cpu", "cuda")


@dataclass
class VJPContext:
    node: onnx.NodeProto
    b: Builder
    info: GraphInfo
    grads: list[str | None]  # cotangent of every output (None: none flows back)
    needs: list[bool]  # whether every input needs a cotangent
    opset: int
    kernels: str = "cpu"  # the execution provider the graph is for: "cpu" or "cuda"

    # -- node ------------------------------------------------------------------------------
    @property
    def op_type(self) -> str:
        return self.node.op_type

    def x(self, i: int) -> str:
        """Input ``i`` of the node, which must be present (:meth:`x_opt` for optional ones)."""
        name = self.x_opt(i)
        if name is None:
            self.unsupported(f"input {i} is missing")
        return name

    def x_opt(self, i: int) -> str | None:
        """Input ``i`` of the node, ``None`` when absent (an optional input left out)."""
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def y(self, i: int = 0) -> str:
        return self.node.output[i]

    def g(self, i: int = 0) -> str:
        """Cotangent of output ``i``, which must flow (:meth:`g_opt` where it may not)."""
        name = self.g_opt(i)
        if name is None:
            self.unsupported(f"output {i} carries no cotangent")
        return name

    def g_opt(self, i: int = 0) -> str | None:
        """Cotangent of output ``i``, ``None`` when none flows back."""
        return self.grads[i] if i < len(self.grads) else None

    def need(self, i: int) -> bool:
        return i < len(self.needs) and self.needs[i]

    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def attr_str(self, name: str, default: str) -> str:
        v = self.attr(name, default)
        return v.decode() if isinstance(v, bytes) else v

    def forward_output(self, i: int, hint: str) -> str:
        """Name of optional output ``i`` of the forward node, adding it if the node lacks it."""
        while len(self.node.output) <= i:
            self.node.output.append("")
        if not self.node.output[i]:
            self.node.output[i] = self.b.fresh(hint)
        return self.node.output[i]

    # -- static facts ----------------------------------------------------------------------
    def shape(self, name: str) -> tuple | None:
        t = self.info.tensors.get(name)
        return None if t is None else t.shape

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        s = self.shape(name)
        if s is None or not all(isinstance(d, int) for d in s):
            return None
        return tuple(s)

    def dims(self, name: str) -> tuple:
        """The shape of ``name`` (dims: int, str or None), which must have a known rank."""
        s = self.shape(name)
        if s is None:
            self.unsupported(f"rank of {name!r} unknown after shape inference")
        return s

    def rank(self, name: str) -> int:
        return len(self.dims(name))

    def elem(self, name: str | None = None) -> int:
        """ONNX element type of ``name`` (default: the first output); when shape inference
        did not reach it, that of the node's first output or input, else float."""
        for n in (name, self.y(0), self.x(0)):
            t = self.info.tensors.get(n) if n else None
            if t is not None:
                return t.elem_type
        return onnx.TensorProto.FLOAT

    def np_dtype(self, name: str | None = None):
        return helper.tensor_dtype_to_np_dtype(self.elem(name))

    def const(self, name: str | None) -> np.ndarray | None:
        """The value of ``name`` when it is an initializer or a Constant node's output."""
        return None if not name else self.info.constants.get(name)

    def const_ints(self, name: str | None) -> list[int] | None:
        v = self.const(name)
        return None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]

    def unsupported(self, why: str) -> NoReturn:
        op = self.op_type if self.node.domain in ("", "ai.onnx") else f"{self.node.domain}::{self.op_type}"
        raise RuleUnavailable(f"no exact gradient through {self.op_type} node {self.node.name!r}: {why}", op)

    # -- common backward pieces ------------------------------------------------------------
    def scalar(self, value: float, like: str | None = None) -> str:
        return self.b.scalar(value, self.np_dtype(like))

    def masked(self, cond: str, g: str, like: str | None = None) -> str:
        """``g`` where ``cond`` holds, else 0: a Mul by the cast mask (onnxruntime's Where is
        several times slower than Cast + Mul)."""
        elem = self.elem(like or self.y(0))
        return self.b.op("Mul", [g, self.b.op("Cast", [cond], to=elem)])

    def unbroadcast(self, g: str, target: str, out: str | None = None) -> str:
        """Sum ``g`` (shaped like ``out``) back to the shape of ``target`` (broadcasting)."""
        out = out or self.y(0)
        ts, os_ = self.shape(target), self.shape(out)
        if ts is None or os_ is None:
            self.unsupported(f"rank of {target!r} or {out!r} unknown")
        lead = len(os_) - len(ts)
        if any(not isinstance(d, int) and d != os_[lead + i] for i, d in enumerate(ts)):
            return self._unbroadcast_runtime(g, target, lead)
        axes = list(range(lead))
        for i, d in enumerate(ts):
            if d == 1 and os_[lead + i] != 1:
                axes.append(lead + i)
        if not axes:
            return g
        if len(axes) == len(os_) and not ts:
            return self.b.reduce("ReduceSum", g, axes, keepdims=False)
        s = self.b.reduce("ReduceSum", g, axes, keepdims=True)
        if lead:
            s = self.b.op("Squeeze", [s, self.b.ints(range(lead))])
        return s

    def _unbroadcast_runtime(self, g: str, target: str, lead: int) -> str:
        """As :meth:`unbroadcast`, with the broadcast axes found at run time (dims unknown
        when the graph was built)."""
        b = self.b
        ts = b.shape(target)
        gs = b.shape(g, start=lead) if lead else b.shape(g)
        one = b.const(np.int64(1))
        cond = b.op("And", [b.op("Equal", [ts, one]), b.op("Not", [b.op("Equal", [gs, one])])])
        axes = b.op("Reshape", [b.op("NonZero", [cond]), b.ints([-1])])
        if lead:
            axes = b.op("Concat", [b.ints(range(lead)), b.op("Add", [axes, b.const(np.int64(lead))])], axis=0)
        s = b.op("ReduceSum", [g, axes], keepdims=1, noop_with_empty_axes=1)
        return b.op("Reshape", [s, ts])
