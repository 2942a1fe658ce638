"""Pointwise activations: Relu, LeakyRelu, PRelu, Elu, Selu, Sigmoid, Tanh, HardSigmoid,
HardSwish, Softplus, Softsign, Gelu, Clip, Mish, ThresholdedRelu."""

from __future__ import annotations

import math

from ..registry import VJPContext, vjp


def _positive(ctx: VJPContext) -> str:
    return ctx.b.op("Greater", [ctx.x(0), ctx.scalar(0.0, ctx.x(0))])


@vjp("Relu")
def relu(ctx: VJPContext):
    return [ctx.masked(_positive(ctx), ctx.g())]


@vjp("LeakyRelu")
def leaky_relu(ctx: VJPContext):
    b, alpha = ctx.b, ctx.attr("alpha", 0.01)
    pos = b.op("Cast", [_positive(ctx)], to=ctx.elem(ctx.y()))
    factor = b.op("Add", [b.op("Mul", [pos, ctx.scalar(1.0 - alpha)]), ctx.scalar(alpha)])
    return [b.op("Mul", [ctx.g(), factor])]


@vjp("ThresholdedRelu")
def thresholded_relu(ctx: VJPContext):
    above = ctx.b.op("Greater", [ctx.x(0), ctx.scalar(ctx.attr("alpha", 1.0))])
    return [ctx.masked(above, ctx.g())]


def _positive_mask(ctx: VJPContext) -> str:
    return ctx.b.op("Cast", [_positive(ctx)], to=ctx.elem(ctx.y()))


def _blend(ctx: VJPContext, p: str, above: str, below: str) -> str:
    """``above`` where the mask ``p`` is 1, ``below`` where it is 0 (no Where: it is slow)."""
    b = ctx.b
    return b.op("Add", [below, b.op("Mul", [p, b.op("Sub", [above, below])])])


@vjp("PRelu")
def prelu(ctx: VJPContext):
    b, g, x, s = ctx.b, ctx.g(), ctx.x(0), ctx.x(1)
    p = _positive_mask(ctx)
    gx = b.op("Mul", [g, _blend(ctx, p, ctx.scalar(1.0), s)]) if ctx.need(0) else None
    gs = None
    if ctx.need(1):
        below = b.op("Sub", [ctx.scalar(1.0), p])
        gs = ctx.unbroadcast(b.op("Mul", [b.op("Mul", [g, x]), below]), s)
    return [gx, gs]


@vjp("Elu")
def elu(ctx: VJPContext):
    """y' = 1 above 0, y + alpha below."""
    b, g, y = ctx.b, ctx.g(), ctx.y()
    neg = b.op("Add", [y, ctx.scalar(ctx.attr("alpha", 1.0))])
    return [b.op("Mul", [g, _blend(ctx, _positive_mask(ctx), ctx.scalar(1.0), neg)])]


@vjp("Selu")
def selu(ctx: VJPContext):
    b, g, y = ctx.b, ctx.g(), ctx.y()
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    neg = b.op("Add", [y, ctx.scalar(alpha * gamma)])
    return [b.op("Mul", [g, _blend(ctx, _positive_mask(ctx), ctx.scalar(gamma), neg)])]


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
    inside = b.op("And", [b.op("Greater", [z, ctx.scalar(0.0)]), b.op("Less", [z, ctx.scalar(1.0)])])
    return [ctx.masked(inside, b.op("Mul", [ctx.g(), ctx.scalar(alpha)]))]


@vjp("HardSwish")
def hard_swish(ctx: VJPContext):
    """y = x * hs(x), hs = clip(x/6 + 1/2, 0, 1): y' = hs(x) + x/6 on |x| < 3."""
    b, x, g = ctx.b, ctx.x(0), ctx.g()
    inside = b.op("Less", [b.op("Abs", [x]), ctx.scalar(3.0)])
    slope = ctx.masked(inside, b.op("Mul", [x, ctx.scalar(1.0 / 6.0)]))
    d = b.op("Add", [b.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5), slope])
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
        u = b.op(
            "Mul",
            [b.op("Mul", [x, ctx.scalar(c)]), b.op("Add", [ctx.scalar(1.0), b.op("Mul", [x2, ctx.scalar(0.044715)])])],
        )
        t = b.op("Tanh", [u])
        du = b.op("Add", [ctx.scalar(c), b.op("Mul", [x2, ctx.scalar(3 * 0.044715 * c)])])
        sech2 = b.op("Sub", [ctx.scalar(1.0), b.op("Mul", [t, t])])
        d = b.op(
            "Add",
            [
                b.op("Mul", [b.op("Add", [ctx.scalar(1.0), t]), ctx.scalar(0.5)]),
                b.op("Mul", [b.op("Mul", [x, ctx.scalar(0.5)]), b.op("Mul", [sech2, du])]),
            ],
        )
    else:
        # y = x Phi(x): y' = Phi(x) + x phi(x)
        phi_cdf = b.op(
            "Mul",
            [
                b.op("Add", [ctx.scalar(1.0), b.op("Erf", [b.op("Mul", [x, ctx.scalar(1.0 / math.sqrt(2.0))])])]),
                ctx.scalar(0.5),
            ],
        )
        pdf = b.op(
            "Mul",
            [
                b.op("Exp", [b.op("Mul", [b.op("Mul", [x, x]), ctx.scalar(-0.5)])]),
                ctx.scalar(1.0 / math.sqrt(2.0 * math.pi)),
            ],
        )
        d = b.op("Add", [phi_cdf, b.op("Mul", [x, pdf])])
    return [b.op("Mul", [ctx.g(), d])]


@vjp("Clip")
def clip(ctx: VJPContext):
    """Pass-through where min <= x <= max (as torch.clamp): exactly where Clip(x) == x."""
    for i in (1, 2):
        if ctx.need(i):
            ctx.unsupported("clip bounds that depend on the input")
    if ctx.x_opt(1) is None and ctx.x_opt(2) is None:
        return [ctx.g()]
    return [ctx.masked(ctx.b.op("Equal", [ctx.y(), ctx.x(0)]), ctx.g())]
