"""Arithmetic and unary math: Add, Sub, Mul, Div, Pow, Neg, Abs, Sqrt, Exp, Log, ..."""

from __future__ import annotations

import math

from ..registry import VJPContext, vjp


@vjp("Add", "Sub")
def add_sub(ctx: VJPContext):
    g = ctx.g()
    ga = ctx.unbroadcast(g, ctx.x(0)) if ctx.need(0) else None
    gb = None
    if ctx.need(1):
        gb = g if ctx.op_type == "Add" else ctx.b.op("Neg", [g])
        gb = ctx.unbroadcast(gb, ctx.x(1))
    return [ga, gb]


@vjp("Mul")
def mul(ctx: VJPContext):
    g, a, b_ = ctx.g(), ctx.x(0), ctx.x(1)
    ga = ctx.unbroadcast(ctx.b.op("Mul", [g, b_]), a) if ctx.need(0) else None
    gb = ctx.unbroadcast(ctx.b.op("Mul", [g, a]), b_) if ctx.need(1) else None
    return [ga, gb]


@vjp("Div")
def div(ctx: VJPContext):
    g, a, b_ = ctx.g(), ctx.x(0), ctx.x(1)
    g_over_b = ctx.b.op("Div", [g, b_])
    ga = ctx.unbroadcast(g_over_b, a) if ctx.need(0) else None
    gb = None
    if ctx.need(1):  # d(a/b)/db = -y/b
        gb = ctx.unbroadcast(ctx.b.op("Neg", [ctx.b.op("Mul", [g_over_b, ctx.y()])]), b_)
    return [ga, gb]


@vjp("Pow")
def pow_(ctx: VJPContext):
    g, a, e = ctx.g(), ctx.x(0), ctx.x(1)
    b = ctx.b
    ga = gb = None
    if ctx.need(0):
        exponent = ctx.const(e)
        if exponent is not None and exponent.size == 1 and float(exponent) == 2.0:
            d = b.op("Mul", [a, ctx.scalar(2.0, a)])
        else:
            e_a = e if ctx.np_dtype(e) == ctx.np_dtype(a) else b.op("Cast", [e], to=ctx.elem(a))
            d = b.op("Mul", [e_a, b.op("Pow", [a, b.op("Sub", [e_a, ctx.scalar(1.0, a)])])])
        ga = ctx.unbroadcast(b.op("Mul", [g, d]), a)
    if ctx.need(1):
        gb = ctx.unbroadcast(b.op("Mul", [g, b.op("Mul", [ctx.y(), b.op("Log", [a])])]), e)
    return [ga, gb]


@vjp("Neg")
def neg(ctx: VJPContext):
    return [ctx.b.op("Neg", [ctx.g()])]


@vjp("Abs")
def abs_(ctx: VJPContext):
    return [ctx.b.op("Mul", [ctx.g(), ctx.b.op("Sign", [ctx.x(0)])])]


@vjp("Sqrt")
def sqrt(ctx: VJPContext):
    return [ctx.b.op("Div", [ctx.b.op("Mul", [ctx.g(), ctx.scalar(0.5)]), ctx.y()])]


@vjp("Exp")
def exp(ctx: VJPContext):
    return [ctx.b.op("Mul", [ctx.g(), ctx.y()])]


@vjp("Log")
def log(ctx: VJPContext):
    return [ctx.b.op("Div", [ctx.g(), ctx.x(0)])]


@vjp("Reciprocal")
def reciprocal(ctx: VJPContext):
    y = ctx.y()
    return [ctx.b.op("Neg", [ctx.b.op("Mul", [ctx.g(), ctx.b.op("Mul", [y, y])])])]


@vjp("Sin")
def sin(ctx: VJPContext):
    return [ctx.b.op("Mul", [ctx.g(), ctx.b.op("Cos", [ctx.x(0)])])]


@vjp("Cos")
def cos(ctx: VJPContext):
    return [ctx.b.op("Neg", [ctx.b.op("Mul", [ctx.g(), ctx.b.op("Sin", [ctx.x(0)])])])]


@vjp("Erf")
def erf(ctx: VJPContext):
    x = ctx.x(0)
    b = ctx.b
    d = b.op("Exp", [b.op("Neg", [b.op("Mul", [x, x])])])
    return [b.op("Mul", [ctx.g(), b.op("Mul", [d, ctx.scalar(2.0 / math.sqrt(math.pi))])])]


@vjp("Sum")
def sum_(ctx: VJPContext):
    return [ctx.unbroadcast(ctx.g(), x) if ctx.need(i) else None for i, x in enumerate(ctx.node.input)]


@vjp("Mean")
def mean(ctx: VJPContext):
    g = ctx.b.op("Mul", [ctx.g(), ctx.scalar(1.0 / len(ctx.node.input))])
    return [ctx.unbroadcast(g, x) if ctx.need(i) else None for i, x in enumerate(ctx.node.input)]


@vjp("Max", "Min")
def max_min(ctx: VJPContext):
    """The cotangent goes to the first input equal to the result (a subgradient at ties)."""
    b, y, g = ctx.b, ctx.y(), ctx.g()
    out, taken = [], None
    for i, x in enumerate(ctx.node.input):
        hit = b.op("Equal", [x, y])
        first = hit if taken is None else b.op("And", [hit, b.op("Not", [taken])])
        if i < len(ctx.node.input) - 1:
            taken = hit if taken is None else b.op("Or", [taken, hit])
        out.append(ctx.unbroadcast(ctx.masked(first, g), x) if ctx.need(i) else None)
    return out


@vjp("Where")
def where(ctx: VJPContext):
    b, c, g = ctx.b, ctx.x(0), ctx.g()
    gx = ctx.unbroadcast(ctx.masked(c, g), ctx.x(1)) if ctx.need(1) else None
    gy = ctx.unbroadcast(ctx.masked(b.op("Not", [c]), g), ctx.x(2)) if ctx.need(2) else None
    return [None, gx, gy]


@vjp("Identity", "Dropout")
def identity(ctx: VJPContext):
    if ctx.op_type == "Dropout" and ctx.x_opt(2) is not None:
        mode = ctx.const(ctx.x_opt(2))
        if mode is None:
            ctx.unsupported("training_mode must be a constant")
        if bool(mode):
            # y = x · mask / (1 − ratio) for the mask this evaluation drew: the gradient of that
            # draw (the forward node's mask output, added when the node lacks it)
            ratio = 0.5 if ctx.x_opt(1) is None else ctx.const(ctx.x(1))
            if ratio is None:
                ctx.unsupported("ratio must be a constant in training mode")
            mask = ctx.forward_output(1, "dropout_mask")
            scaled = ctx.b.op("Mul", [ctx.g(), ctx.scalar(1.0 / (1.0 - float(ratio)), ctx.y(0))])
            return [ctx.masked(mask, scaled)]
    return [ctx.g()]


@vjp("Round", "Floor", "Ceil", "Sign")
def straight_through(ctx: VJPContext):
    """Straight-through estimator (BPDA, Athalye, Carlini, Wagner 2018): these ops have a zero
    derivative almost everywhere, which would mask the gradient; the backward pass treats them
    as the identity. For Sign the identity is the usual BPDA surrogate too (the derivative of
    the smooth ``x`` that Sign quantizes), not the derivative of a ±1 approximation."""
    return [ctx.g()]


@vjp("QuantizeLinear", "DequantizeLinear", since=13)
def quantize_straight_through(ctx: VJPContext):
    """QuantizeLinear → DequantizeLinear (QDQ fake quantization of activations): the pair is
    ``x`` rounded to the quantization grid, so each op passes the cotangent unchanged and the
    pair is the identity (straight-through; scales and zero points get none). The transform
    lets QuantizeLinear's integer output carry a cotangent for this."""
    return [ctx.g()]


@vjp("Cast", "CastLike")
def cast(ctx: VJPContext):
    elem = ctx.elem(ctx.x(0))
    return [ctx.b.op("Cast", [ctx.g()], to=elem)]
