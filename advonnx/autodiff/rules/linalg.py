"""Gemm, MatMul (batched, broadcast, 1-D operands) and Einsum."""

from __future__ import annotations

from ..registry import VJPContext, vjp


@vjp("Gemm")
def gemm(ctx: VJPContext):
    """Y = alpha A' B' + beta C with A' = A^T if transA, B' = B^T if transB."""
    b, g, a, bm = ctx.b, ctx.g(), ctx.x(0), ctx.x(1)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    ta, tb = ctx.attr("transA", 0), ctx.attr("transB", 0)
    ga = gb = gc = None
    if ctx.need(0):  # dA' = alpha g B'^T
        if ta:
            ga = b.op("Gemm", [bm, g], alpha=alpha, transA=tb, transB=1)
        else:
            ga = b.op("Gemm", [g, bm], alpha=alpha, transB=0 if tb else 1)
    if ctx.need(1):  # dB' = alpha A'^T g
        if tb:
            gb = b.op("Gemm", [g, a], alpha=alpha, transA=1, transB=ta)
        else:
            gb = b.op("Gemm", [a, g], alpha=alpha, transA=0 if ta else 1)
    if ctx.need(2):
        gc = g if beta == 1.0 else b.op("Mul", [g, ctx.scalar(beta)])
        gc = ctx.unbroadcast(gc, ctx.x(2))
    return [ga, gb, gc]


def _swap_last(ctx: VJPContext, t: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return ctx.b.op("Transpose", [t], perm=perm)


@vjp("MatMul")
def matmul(ctx: VJPContext):
    b, g, a, bm = ctx.b, ctx.g(), ctx.x(0), ctx.x(1)
    ra, rb = ctx.rank(a), ctx.rank(bm)
    # promote 1-D operands to matrices, as numpy.matmul does
    a2 = b.op("Unsqueeze", [a, b.ints([0])]) if ra == 1 else a
    b2 = b.op("Unsqueeze", [bm, b.ints([1])]) if rb == 1 else bm
    g2 = g
    if ra == 1:
        g2 = b.op("Unsqueeze", [g2, b.ints([-2])])
    if rb == 1:
        g2 = b.op("Unsqueeze", [g2, b.ints([-1])])
    ra2, rb2 = max(ra, 2), max(rb, 2)
    out_rank = max(ra2, rb2)
    ga = gb = None
    if ctx.need(0):
        ga = b.op("MatMul", [g2, _swap_last(ctx, b2, rb2)])
        ga = _sum_to(ctx, ga, a, ra, out_rank, squeeze=-2 if ra == 1 else None)
    if ctx.need(1):
        gb = b.op("MatMul", [_swap_last(ctx, a2, ra2), g2])
        gb = _sum_to(ctx, gb, bm, rb, out_rank, squeeze=-1 if rb == 1 else None)
    return [ga, gb]


def _sum_to(ctx: VJPContext, grad: str, target: str, rank: int, out_rank: int, squeeze: int | None) -> str:
    """Reduce the batch dims of a matmul cotangent back to ``target``'s (broadcast) shape."""
    b = ctx.b
    t_shape = ctx.dims(target)
    t_rank2 = max(rank, 2)
    lead = out_rank - t_rank2
    axes = list(range(lead))
    batch_t = list(t_shape[: t_rank2 - 2]) if rank >= 2 else []
    y_shape = ctx.shape(ctx.y())
    # the forward output's batch dims (before any 1-D squeeze) are the broadcast batch dims
    y_batch = (
        list(y_shape[: out_rank - 2])
        if y_shape is not None and len(y_shape) >= out_rank - 2
        else [None] * (out_rank - 2)
    )
    for i, d in enumerate(batch_t):
        if d == 1 and y_batch[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        grad = b.reduce("ReduceSum", grad, axes, keepdims=True)
        if lead:
            grad = b.op("Squeeze", [grad, b.ints(range(lead))])
    if squeeze is not None:
        grad = b.op("Squeeze", [grad, b.ints([squeeze])])
    return grad


def _parse_einsum(eq: str, n_inputs: int):
    eq = eq.replace(" ", "")
    if "->" in eq:
        lhs, out = eq.split("->")
        terms = lhs.split(",")
    else:
        terms = eq.split(",")
        letters = [c for t in terms for c in t.replace("...", "")]
        out = ("..." if any("..." in t for t in terms) else "") + "".join(
            sorted(c for c in set(letters) if letters.count(c) == 1)
        )
    if len(terms) != n_inputs:
        raise ValueError("einsum equation does not match its inputs")
    return terms, out


def _tokens(term: str) -> list[str]:
    out, i = [], 0
    while i < len(term):
        if term.startswith("...", i):
            out.append("...")
            i += 3
        else:
            out.append(term[i])
            i += 1
    return out


@vjp("Einsum")
def einsum(ctx: VJPContext):
    """The cotangent of operand i: Einsum of g with the other operands to operand i's
    subscripts; subscripts only operand i has (summed in the forward) are broadcast back."""
    b, g = ctx.b, ctx.g()
    terms, out = _parse_einsum(ctx.attr_str("equation", ""), len(ctx.node.input))
    res: list[str | None] = []
    for i, x in enumerate(ctx.node.input):
        if not ctx.need(i):
            res.append(None)
            continue
        toks = _tokens(terms[i])
        if len(set(toks)) != len(toks):
            ctx.unsupported("repeated subscripts within one operand (diagonals)")
        elsewhere = set(_tokens(out))
        for j, t in enumerate(terms):
            if j != i:
                elsewhere |= set(_tokens(t))
        kept = [t for t in toks if t in elsewhere]
        if "..." in toks and "..." not in _tokens(out):
            ctx.unsupported("ellipsis summed away")
        others = [t for j, t in enumerate(terms) if j != i]
        eq = ",".join([out] + others) + "->" + "".join(kept)
        gi = b.op("Einsum", [g] + [x_ for j, x_ in enumerate(ctx.node.input) if j != i], equation=eq)
        if len(kept) != len(toks):
            missing = [k for k, t in enumerate(toks) if t not in elsewhere]
            gi = b.op("Unsqueeze", [gi, b.ints(missing)])
            gi = b.op("Expand", [gi, b.shape_of(x, ctx.static_shape(x))])
        if "..." in toks:
            # broadcast ellipsis dims: sum back to the operand's own shape
            gi = _sum_ellipsis(ctx, gi, x, toks)
        res.append(gi)
    return res


def _sum_ellipsis(ctx: VJPContext, gi: str, x: str, toks: list[str]) -> str:
    """``gi`` has the broadcast ellipsis dims; reduce them to ``x``'s."""
    xs = ctx.shape(x)
    ys = ctx.shape(ctx.y())
    if xs is None or ys is None:
        ctx.unsupported("einsum with ellipsis and unknown ranks")
    n_ell_x = len(xs) - (len(toks) - 1)
    out_toks = _tokens(_parse_einsum(ctx.attr_str("equation", ""), len(ctx.node.input))[1])
    pos_out = out_toks.index("...")
    n_ell_y = len(ys) - (len(out_toks) - 1)
    if n_ell_x == n_ell_y:
        ell_y = ys[pos_out : pos_out + n_ell_y]
        pos = toks.index("...")
        ell_x = xs[pos : pos + n_ell_x]
        axes = [pos + k for k in range(n_ell_x) if ell_x[k] == 1 and ell_y[k] != 1]
        return ctx.b.reduce("ReduceSum", gi, axes, keepdims=True) if axes else gi
    ctx.unsupported("einsum ellipsis broadcasting across ranks")
