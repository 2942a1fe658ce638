"""BatchNormalization (inference), InstanceNormalization, LayerNormalization,
GroupNormalization (opset 21)."""

from __future__ import annotations

import numpy as np

from ..registry import VJPContext, vjp


def _no_param_grads(ctx: VJPContext, first: int = 1):
    if any(ctx.need(i) for i in range(first, len(ctx.node.input))):
        ctx.unsupported("normalization parameters that depend on the input")


def _per_channel(ctx: VJPContext, t: str, rank: int) -> str:
    """A (C,) tensor shaped to broadcast along axis 1 of a rank-``rank`` tensor."""
    return ctx.b.op("Reshape", [t, ctx.b.ints([-1] + [1] * (rank - 2))])


def _normalized_vjp(ctx: VJPContext, gs: str, xhat: str, inv: str, axes: list[int]) -> str:
    """x-cotangent of y = xhat * scale: inv * (gs - mean(gs) - xhat * mean(gs * xhat))."""
    b = ctx.b
    m1 = b.reduce("ReduceMean", gs, axes, keepdims=True)
    m2 = b.reduce("ReduceMean", b.op("Mul", [gs, xhat]), axes, keepdims=True)
    inner = b.op("Sub", [b.op("Sub", [gs, m1]), b.op("Mul", [xhat, m2])])
    return b.op("Mul", [inner, inv])


@vjp("BatchNormalization")
def batch_norm(ctx: VJPContext):
    if ctx.attr("training_mode", 0):
        ctx.unsupported("training_mode=1")
    _no_param_grads(ctx)
    b, x = ctx.b, ctx.x(0)
    scale, var = ctx.x(1), ctx.x(4)
    eps = ctx.attr("epsilon", 1e-5)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, ctx.scalar(eps, var)])])])
    factor = b.op("Mul", [scale, inv])
    if ctx.np_dtype(var) != ctx.np_dtype(x):
        factor = b.op("CastLike", [factor, x])
    return [b.op("Mul", [ctx.g(), _per_channel(ctx, factor, ctx.rank(x))])]


@vjp("InstanceNormalization")
def instance_norm(ctx: VJPContext):
    _no_param_grads(ctx)
    b, x = ctx.b, ctx.x(0)
    rank = ctx.rank(x)
    axes = list(range(2, rank))
    eps = ctx.attr("epsilon", 1e-5)
    xc = b.op("Sub", [x, b.reduce("ReduceMean", x, axes, keepdims=True)])
    var = b.reduce("ReduceMean", b.op("Mul", [xc, xc]), axes, keepdims=True)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, ctx.scalar(eps, x)])])])
    xhat = b.op("Mul", [xc, inv])
    gs = b.op("Mul", [ctx.g(), _per_channel(ctx, ctx.x(1), rank)])
    return [_normalized_vjp(ctx, gs, xhat, inv, axes)]


@vjp("LayerNormalization", since=17)
def layer_norm(ctx: VJPContext):
    _no_param_grads(ctx)
    b, x = ctx.b, ctx.x(0)
    rank = ctx.rank(x)
    axis = ctx.attr("axis", -1) % rank
    axes = list(range(axis, rank))
    # reuse the statistics the forward node computes anyway (its optional outputs)
    mean = ctx.forward_output(1, "ln_mean")
    inv = ctx.forward_output(2, "ln_invstd")
    if ctx.np_dtype(x) != np.float32:
        mean = b.op("CastLike", [mean, x])
        inv = b.op("CastLike", [inv, x])
    xhat = b.op("Mul", [b.op("Sub", [x, mean]), inv])
    gs = b.op("Mul", [ctx.g(), ctx.x(1)])
    return [_normalized_vjp(ctx, gs, xhat, inv, axes)]


@vjp("GroupNormalization", since=21)
def group_norm(ctx: VJPContext):
    """Opset 21 (scale per channel). The deprecated opset-18 form has no rule."""
    _no_param_grads(ctx)
    b, x = ctx.b, ctx.x(0)
    rank = ctx.rank(x)
    groups = ctx.attr("num_groups")
    eps = ctx.attr("epsilon", 1e-5)
    grouped = b.ints([0, groups, -1])
    xr = b.op("Reshape", [x, grouped])
    xc = b.op("Sub", [xr, b.reduce("ReduceMean", xr, [2], keepdims=True)])
    var = b.reduce("ReduceMean", b.op("Mul", [xc, xc]), [2], keepdims=True)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, ctx.scalar(eps, x)])])])
    xhat = b.op("Mul", [xc, inv])
    scale = ctx.x(1)
    if ctx.np_dtype(scale) != ctx.np_dtype(x):
        scale = b.op("CastLike", [scale, x])
    gs = b.op("Reshape", [b.op("Mul", [ctx.g(), _per_channel(ctx, scale, rank)]), grouped])
    gx = _normalized_vjp(ctx, gs, xhat, inv, [2])
    return [b.reshape(gx, x, ctx.static_shape(x))]
