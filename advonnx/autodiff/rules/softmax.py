"""Softmax and LogSoftmax along one axis (opset >= 13 semantics)."""

from __future__ import annotations

from ..registry import VJPContext, vjp


@vjp("Softmax", since=13)
def softmax(ctx: VJPContext):
    b, y, g = ctx.b, ctx.y(), ctx.g()
    axis = ctx.attr("axis", -1)
    gy = b.op("Mul", [g, y])
    s = b.reduce("ReduceSum", gy, [axis], keepdims=True)
    return [b.op("Sub", [gy, b.op("Mul", [y, s])])]


@vjp("LogSoftmax", since=13)
def log_softmax(ctx: VJPContext):
    b, y, g = ctx.b, ctx.y(), ctx.g()
    axis = ctx.attr("axis", -1)
    s = b.reduce("ReduceSum", g, [axis], keepdims=True)
    return [b.op("Sub", [g, b.op("Mul", [b.op("Exp", [y]), s])])]
