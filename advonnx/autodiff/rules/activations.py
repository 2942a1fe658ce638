"""Pointwise activations: Relu, LeakyRelu, PRelu, Elu, Selu, Sigmoid, Tanh, HardSigmoid,
HardSwish, Softplus, Softsign, Gelu, Clip, Mish, ThresholdedRelu."""

from __future__ import annotations

import math

from ..registry import VJPContext, vjp


def _positive(ctx: VJPContext) -> str:
    return ctx.b.op("Greater", [ctx.x(0), ctx.scalar(0.0, ctx.x(0))])


@vjp("Relu")
def relu(ctx: VJPContext):
    return [ctx.b.op("Where", [_positive(ctx), ctx.g(), ctx.scalar(0.0)])]


@vjp("LeakyRelu")
def leaky_relu(ctx: VJPContext):
    g = ctx.g()
    slope = ctx.b.op("Mul", [g, ctx.scalar(ctx.attr("alpha", 0.01))])
    return [ctx.b.op("Where", [_positive(ctx), g, slope])]


@vjp("ThresholdedRelu")
def thresholded_relu(ctx: VJPContext):
    above = ctx.b.op("Greater", [ctx.x(0), ctx.scalar(ctx.attr("alpha", 1.0))])
    return [ctx.b.op("Where", [above, ctx.g(), ctx.scalar(0.0)])]


@vjp("PRelu")
def prelu(ctx: VJPContext):
    b, g, x, s = ctx.b, ctx.g(), ctx.x(0), ctx.x(1)
    pos = _positive(ctx)
    gx = b.op("Where", [pos, g, b.op("Mul", [g, s])]) if ctx.need(0) else None
    gs = None
    if ctx.need(1):
        gs = ctx.unbroadcast(b.op("Where", [pos, ctx.scalar(0.0), b.op("Mul", [g, x])]), s)
    return [gx, gs]


@vjp("Elu")
def elu(ctx: VJPContext):
    """y' = 1 above 0, y + alpha below."""
    b, g, y = ctx.b, ctx.g(), ctx.y()
    neg = b.op("Add", [y, ctx.scalar(ctx.attr("alpha", 1.0))])
    return [b.op("Where", [_positive(ctx), g, b.op("Mul", [g, neg])])]


@vjp("Selu")
def selu(ctx: VJPContext):
    b, g, y = ctx.b, ctx.g(), ctx.y()
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    neg = b.op("Add", [y, ctx.scalar(alpha * gamma)])
    return [b.op("Mul", [g, b.op("Where", [_positive(ctx), ctx.scalar(gamma), neg])])]


@vjp("Sigmoid")
def sigmoid(ctx: VJPContext):
    b, y = ctx.b, ctx.y()
    d = b.op("Mul", [y, b.op("Sub", [ctx.scalar(1.0), y])])
    return [b.op("Mul", [ctx.g(), d])]


@vjp("Tanh")
def tanh(ctx: VJPContext):
    b, y = ctx.b, ctx.y()
    d = b.op("Sub", [ctx.scalar(1.0), b.op("Mul", [y, y])])
    return [b.op("Mul", [ctx.g(), d])]


@vjp("HardSigmoid")
def hard_sigmoid(ctx: VJPContext):
    b, x = ctx.b, ctx.x(0)
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    z = b.op("Add", [b.op("Mul", [x, ctx.scalar(alpha)]), ctx.scalar(beta)])
    inside = b.op("And", [b.op("Greater", [z, ctx.scalar(0.0)]),
                          b.op("Less", [z, ctx.scalar(1.0)])])
    return [b.op("Where", [inside, b.op("Mul", [ctx.g(), ctx.scalar(alpha)]), ctx.scalar(0.0)])]


@vjp("HardSwish")
def hard_swish(ctx: VJPContext):
    """y = x * clip(x/6 + 1/2, 0, 1): y' = 0 below -3, 1 above 3, (2x + 3)/6 between."""
    b, x, g = ctx.b, ctx.x(0), ctx.g()
    mid = b.op("Add", [b.op("Mul", [x, ctx.scalar(1.0 / 3.0)]), ctx.scalar(0.5)])
    d = b.op("Where", [b.op("Greater", [x, ctx.scalar(3.0)]), ctx.scalar(1.0), mid])
    d = b.op("Where", [b.op("Less", [x, ctx.scalar(-3.0)]), ctx.scalar(0.0), d])
    return [b.op("Mul", [g, d])]


@vjp("Softplus")
def softplus(ctx: VJPContext):
    return [ctx.b.op("Mul", [ctx.g(), ctx.b.op("Sigmoid", [ctx.x(0)])])]


@vjp("Softsign")
def softsign(ctx: VJPContext):
    b, x = ctx.b, ctx.x(0)
    den = b.op("Add", [ctx.scalar(1.0), b.op("Abs", [x])])
    return [b.op("Div", [ctx.g(), b.op("Mul", [den, den])])]


@vjp("Mish")
def mish(ctx: VJPContext):
    """y = x tanh(sp(x)): y' = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)."""
    b, x = ctx.b, ctx.x(0)
    t = b.op("Tanh", [b.op("Softplus", [x])])
    one_minus = b.op("Sub", [ctx.scalar(1.0), b.op("Mul", [t, t])])
    d = b.op("Add", [t, b.op("Mul", [b.op("Mul", [x, b.op("Sigmoid", [x])]), one_minus])])
    return [b.op("Mul", [ctx.g(), d])]


@vjp("Gelu", since=20)
def gelu(ctx: VJPContext):
    b, x = ctx.b, ctx.x(0)
    if ctx.attr_str("approximate", "none") == "tanh":
        # y = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3)
        c = math.sqrt(2.0 / math.pi)
        x2 = b.op("Mul", [x, x])
        u = b.op("Mul", [b.op("Mul", [x, ctx.scalar(c)]),
                         b.op("Add", [ctx.scalar(1.0), b.op("Mul", [x2, ctx.scalar(0.044715)])])])
        t = b.op("Tanh", [u])
        du = b.op("Add", [ctx.scalar(c), b.op("Mul", [x2, ctx.scalar(3 * 0.044715 * c)])])
        sech2 = b.op("Sub", [ctx.scalar(1.0), b.op("Mul", [t, t])])
        d = b.op("Add", [b.op("Mul", [b.op("Add", [ctx.scalar(1.0), t]), ctx.scalar(0.5)]),
                         b.op("Mul", [b.op("Mul", [x, ctx.scalar(0.5)]),
                                      b.op("Mul", [sech2, du])])])
    else:
        # y = x Phi(x): y' = Phi(x) + x phi(x)
        phi_cdf = b.op("Mul", [b.op("Add", [ctx.scalar(1.0), b.op(
            "Erf", [b.op("Mul", [x, ctx.scalar(1.0 / math.sqrt(2.0))])])]), ctx.scalar(0.5)])
        pdf = b.op("Mul", [b.op("Exp", [b.op("Mul", [b.op("Mul", [x, x]), ctx.scalar(-0.5)])]),
                           ctx.scalar(1.0 / math.sqrt(2.0 * math.pi))])
        d = b.op("Add", [phi_cdf, b.op("Mul", [x, pdf])])
    return [b.op("Mul", [ctx.g(), d])]


@vjp("Clip")
def clip(ctx: VJPContext):
    """Pass-through where min <= x <= max (as torch.clamp)."""
    b, x = ctx.b, ctx.x(0)
    inside = None
    for i, cmp in ((1, "GreaterOrEqual"), (2, "LessOrEqual")):
        bound = ctx.x(i)
        if bound is None:
            continue
        if ctx.need(i):
            ctx.unsupported("clip bounds that depend on the input")
        m = b.op(cmp, [x, bound])
        inside = m if inside is None else b.op("And", [inside, m])
    if inside is None:
        return [ctx.g()]
    return [b.op("Where", [inside, ctx.g(), ctx.scalar(0.0)])]
