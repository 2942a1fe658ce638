"""ReduceSum, ReduceMean, ReduceMax/ReduceMin, ReduceSumSquare, ReduceL2, ReduceLogSumExp."""

from __future__ import annotations

from ..builder import all_int
from ..registry import VJPContext, vjp


def _axes(ctx: VJPContext) -> list[int] | None:
    """Reduced axes (normalized); ``None`` when the node is a no-op (empty axes, noop flag)."""
    rank = ctx.rank(ctx.x(0))
    if ctx.op_type == "ReduceSum" or ctx.opset >= 18:
        axes = ctx.const_ints(ctx.x(1)) if ctx.x_opt(1) else []
        if ctx.x_opt(1) and axes is None:
            ctx.unsupported("axes computed at run time")
    else:
        axes = list(ctx.attr("axes") or [])
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return sorted(a % rank for a in axes)


def _expand_back(ctx: VJPContext, g: str, axes: list[int]) -> str:
    """``g`` (the reduced shape) broadcast back to the input's shape."""
    b = ctx.b
    if not ctx.attr("keepdims", 1):
        g = b.op("Unsqueeze", [g, b.ints(axes)])
    x = ctx.x(0)
    return b.op("Expand", [g, b.shape_of(x, ctx.static_shape(x))])


def _count(ctx: VJPContext, axes: list[int]) -> str:
    x = ctx.x(0)
    xs = ctx.shape(x)
    dims = [xs[a] for a in axes] if xs is not None else [None]
    if all_int(dims):
        n = 1
        for d in dims:
            n *= d
        return ctx.scalar(1.0 / n, x)
    b = ctx.b
    size = b.op("Div", [b.op("Size", [x]), b.op("Size", [ctx.y()])])
    return b.op("Reciprocal", [b.op("Cast", [size], to=ctx.elem(x))])


@vjp("ReduceSum", "ReduceMean", since=13)
def reduce_sum_mean(ctx: VJPContext):
    axes = _axes(ctx)
    if axes is None:
        return [ctx.g()]
    g = ctx.g()
    if ctx.op_type == "ReduceMean":
        g = ctx.b.op("Mul", [g, _count(ctx, axes)])
    return [_expand_back(ctx, g, axes)]


@vjp("ReduceSumSquare", since=13)
def reduce_sum_square(ctx: VJPContext):
    axes = _axes(ctx)
    x = ctx.x(0)
    if axes is None:
        return [ctx.b.op("Mul", [ctx.g(), ctx.b.op("Mul", [x, ctx.scalar(2.0, x)])])]
    g = _expand_back(ctx, ctx.g(), axes)
    return [ctx.b.op("Mul", [g, ctx.b.op("Mul", [x, ctx.scalar(2.0, x)])])]


def _y_keep(ctx: VJPContext, axes: list[int]) -> str:
    y = ctx.y()
    if ctx.attr("keepdims", 1):
        return y
    return ctx.b.op("Unsqueeze", [y, ctx.b.ints(axes)])


@vjp("ReduceL2", since=13)
def reduce_l2(ctx: VJPContext):
    axes = _axes(ctx)
    b, x = ctx.b, ctx.x(0)
    if axes is None:
        return [b.op("Mul", [ctx.g(), b.op("Sign", [x])])]
    g = _expand_back(ctx, ctx.g(), axes)
    return [b.op("Mul", [g, b.op("Div", [x, _y_keep(ctx, axes)])])]


@vjp("ReduceLogSumExp", since=13)
def reduce_log_sum_exp(ctx: VJPContext):
    axes = _axes(ctx)
    b, x = ctx.b, ctx.x(0)
    if axes is None:
        return [ctx.g()]
    g = _expand_back(ctx, ctx.g(), axes)
    return [b.op("Mul", [g, b.op("Exp", [b.op("Sub", [x, _y_keep(ctx, axes)])])])]


@vjp("ReduceMax", "ReduceMin", since=13)
def reduce_max_min(ctx: VJPContext):
    """The cotangent is shared by the entries equal to the extremum (exact away from ties)."""
    axes = _axes(ctx)
    if axes is None:
        return [ctx.g()]
    b, x = ctx.b, ctx.x(0)
    mask = b.op("Cast", [b.op("Equal", [x, _y_keep(ctx, axes)])], to=ctx.elem(x))
    count = b.reduce("ReduceSum", mask, axes, keepdims=True)
    g = ctx.g()
    if not ctx.attr("keepdims", 1):
        g = b.op("Unsqueeze", [g, b.ints(axes)])
    return [b.op("Mul", [mask, b.op("Div", [g, count])])]
