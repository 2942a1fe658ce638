"""Data movement: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Pad,
Expand, Tile, Gather, GatherElements, DepthToSpace, SpaceToDepth, Trilu, CumSum, TopK."""

from __future__ import annotations

from typing import Literal

import numpy as np
from onnx import helper

from ..builder import all_int
from ..registry import VJPContext, vjp

INT64_MAX = np.iinfo(np.int64).max


@vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_like(ctx: VJPContext):
    x = ctx.x(0)
    return [ctx.b.reshape(ctx.g(), x, ctx.static_shape(x))]


@vjp("Transpose")
def transpose(ctx: VJPContext):
    perm = ctx.attr("perm") or list(reversed(range(ctx.rank(ctx.x(0)))))
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return [ctx.b.op("Transpose", [ctx.g()], perm=inverse)]


def _dim(ctx: VJPContext, name: str, axis: int) -> str:
    """Size of ``name`` along ``axis`` as a 1-element int64 tensor."""
    s = ctx.shape(name)
    if s is not None and isinstance(s[axis], int):
        return ctx.b.ints([s[axis]])
    return ctx.b.op("Gather", [ctx.b.shape(name), ctx.b.ints([axis])])


@vjp("Concat")
def concat(ctx: VJPContext):
    b = ctx.b
    rank = ctx.rank(ctx.y())
    axis = ctx.attr("axis") % rank
    xs = list(ctx.node.input)
    sizes = [None if s is None else s[axis] for s in (ctx.shape(x) for x in xs)]
    if all_int(sizes):
        split = b.ints(sizes)
    else:
        split = b.op("Concat", [_dim(ctx, x, axis) for x in xs], axis=0)
    parts = b.op_multi("Split", [ctx.g(), split], axis=axis, outputs=len(xs))
    return [p if ctx.need(i) else None for i, p in enumerate(parts)]


@vjp("Split")
def split(ctx: VJPContext):
    b = ctx.b
    parts = []
    for i, out in enumerate(ctx.node.output):
        g = ctx.g_opt(i)
        if g is None:
            g = b.zeros_like(out, ctx.static_shape(out), ctx.np_dtype(ctx.x(0)))
        parts.append(g)
    rank = ctx.rank(ctx.x(0))
    return [b.op("Concat", parts, axis=ctx.attr("axis", 0) % rank)]


def _slice_args(ctx: VJPContext):
    starts, ends = ctx.const_ints(ctx.x(1)), ctx.const_ints(ctx.x(2))
    if starts is None or ends is None:
        return None
    rank = ctx.rank(ctx.x(0))
    axes = ctx.const_ints(ctx.x(3)) if ctx.x_opt(3) else list(range(len(starts)))
    steps = ctx.const_ints(ctx.x(4)) if ctx.x_opt(4) else [1] * len(starts)
    if axes is None or steps is None:
        return None
    return starts, ends, [a % rank for a in axes], steps


@vjp("Slice", since=13)
def slice_(ctx: VJPContext):
    """Unit steps: zero-Pad the cotangent back. Other steps: scatter it, axis by axis."""
    b, x, g = ctx.b, ctx.x(0), ctx.g()
    rank = ctx.rank(x)
    args = _slice_args(ctx)
    xs = ctx.dims(x)
    if args is not None:
        starts, ends, axes, steps = args
        if all(s == 1 for s in steps) and all(isinstance(xs[a], int) for a in axes):
            pads = [0] * (2 * rank)
            for st, en, a in zip(starts, ends, axes, strict=True):
                d = xs[a]
                st = min(max(st + d if st < 0 else st, 0), d)
                en = min(max(en + d if en < 0 else en, 0), d)
                pads[a] = st
                pads[rank + a] = d - max(en, st)
            return [b.op("Pad", [g, b.ints(pads)])]
    axes_v = list(range(rank)) if ctx.x_opt(3) is None else ctx.const_ints(ctx.x(3))
    steps_v = [1] * len(axes_v or []) if ctx.x_opt(4) is None else ctx.const_ints(ctx.x(4))
    if axes_v is None:
        ctx.unsupported("slice axes computed at run time")
    axes_v = [a % rank for a in axes_v]
    if args is None and steps_v is not None and all(s == 1 for s in steps_v):
        return [_slice_pad_runtime(ctx, axes_v)]
    # general case: for every sliced axis, scatter into zeros at the sliced positions
    for i, a in enumerate(axes_v):
        st, en, sp = (_element(ctx, ctx.x_opt(k), i) for k in (1, 2, 4))
        dim = _dim(ctx, x, a)
        positions = b.op("Range", [b.const(np.int64(0)), b.op("Squeeze", [dim]), b.const(np.int64(1))])
        idx = b.op("Slice", [positions, st, en, b.ints([0]), sp])
        shape = [1] * rank
        shape[a] = -1
        idx = b.op("Expand", [b.op("Reshape", [idx, b.ints(shape)]), b.shape(g)])
        new_shape = b.op("ScatterElements", [b.shape(g), b.ints([a]), dim], axis=0)
        zeros = b.op("ConstantOfShape", [new_shape], value=helper.make_tensor("value", ctx.elem(x), [1], [0]))
        g = b.op("ScatterElements", [zeros, idx, g], axis=a)
    return [g]


def _element(ctx: VJPContext, name: str | None, i: int) -> str:
    """Element ``i`` of a 1-D int tensor input as a 1-element int64 tensor (1 if absent)."""
    b = ctx.b
    if name is None:
        return b.ints([1])
    value = ctx.const_ints(name)
    if value is not None:
        return b.ints([value[i]])
    t = b.op("Slice", [name, b.ints([i]), b.ints([i + 1])])
    return t if ctx.np_dtype(name) == np.int64 else b.op("Cast", [t], to=7)


def _slice_pad_runtime(ctx: VJPContext, axes: list[int]) -> str:
    """Unit-step Slice with bounds known only at run time: zero-Pad by computed amounts."""
    b, x = ctx.b, ctx.x(0)
    rank = ctx.rank(x)
    ax = b.ints(axes)
    dims = b.op("Gather", [b.shape(x), ax])
    starts = ctx.x(1) if ctx.np_dtype(ctx.x(1)) == np.int64 else b.op("Cast", [ctx.x(1)], to=7)
    zero = b.const(np.int64(0))
    starts = b.op("Where", [b.op("Less", [starts, zero]), b.op("Add", [starts, dims]), starts])
    begin = b.op("Min", [b.op("Max", [starts, zero]), dims])
    out_dims = b.op("Gather", [b.shape(ctx.y()), ax])
    end = b.op("Sub", [b.op("Sub", [dims, begin]), out_dims])
    pads = b.op(
        "ScatterElements",
        [b.ints([0] * (2 * rank)), b.ints(axes + [a + rank for a in axes]), b.op("Concat", [begin, end], axis=0)],
        axis=0,
    )
    return b.op("Pad", [ctx.g(), pads])


def _pad_requires(node) -> int:
    for a in node.attribute:
        if a.name == "mode" and a.s not in (b"constant", b""):
            return 16  # ScatterElements reduction="add"
    return 13


@vjp("Pad", since=13, requires_opset=_pad_requires)
def pad(ctx: VJPContext):
    """constant: Slice the cotangent (zero-Pad it back where pads were negative, i.e. crops).
    reflect/edge/wrap: scatter-add the cotangent to the source of every padded cell."""
    if ctx.need(2):
        ctx.unsupported("a pad value that depends on the input")
    mode = ctx.attr_str("mode", "constant")
    pads = ctx.const_ints(ctx.x(1))
    if pads is None:
        ctx.unsupported("pads computed at run time")
    b, x = ctx.b, ctx.x(0)
    rank = ctx.rank(x)
    axes = list(range(rank))
    if ctx.x_opt(3):
        given = ctx.const_ints(ctx.x(3))
        if given is None:
            ctx.unsupported("axes computed at run time")
        axes = [a % rank for a in given]
    n = len(axes)
    begin, end = pads[:n], pads[n:]
    if mode != "constant":
        return [_pad_scatter(ctx, mode, dict(zip(axes, zip(begin, end, strict=True), strict=True))), None, None, None]
    starts = [max(p, 0) for p in begin]
    ends = [-p if p > 0 else INT64_MAX for p in end]
    g = b.op("Slice", [ctx.g(), b.ints(starts), b.ints(ends), b.ints(axes)])
    if any(p < 0 for p in pads):  # negative pads cropped: zeros flow back there
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[rank + a] = max(-begin[i], 0), max(-end[i], 0)
        g = b.op("Pad", [g, b.ints(full)])
    return [g, None, None, None]


_NUMPY_PAD_MODES: dict[str, Literal["reflect", "edge", "wrap"]] = {"reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad_scatter(ctx: VJPContext, mode: str, pads: dict[int, tuple[int, int]]) -> str:
    b, x, g = ctx.b, ctx.x(0), ctx.g()
    xs = ctx.dims(x)
    rank = len(xs)
    numpy_mode = _NUMPY_PAD_MODES.get(mode)
    if numpy_mode is None:
        ctx.unsupported(f"mode={mode}")
    for a, (pb, pe) in sorted(pads.items(), reverse=True):
        if (pb, pe) == (0, 0):
            continue
        d = xs[a]
        if not isinstance(d, int) or pb < 0 or pe < 0:
            ctx.unsupported(f"{mode} padding of a dynamic axis or with negative pads")
        source = np.pad(np.arange(d, dtype=np.int64), (pb, pe), mode=numpy_mode)
        shape = [1] * rank
        shape[a] = -1
        idx = b.op("Expand", [b.const(source.reshape(shape)), b.shape(g)])
        target = b.op("ScatterElements", [b.shape(g), b.ints([a]), b.ints([d])], axis=0)
        zeros = b.op("ConstantOfShape", [target], value=helper.make_tensor("value", ctx.elem(x), [1], [0]))
        g = b.op("ScatterElements", [zeros, idx, g], axis=a, reduction="add")
    return g


@vjp("Expand")
def expand(ctx: VJPContext):
    return [ctx.unbroadcast(ctx.g(), ctx.x(0)), None]


@vjp("Tile")
def tile(ctx: VJPContext):
    reps = ctx.const_ints(ctx.x(1))
    if reps is None:
        ctx.unsupported("repeats computed at run time")
    x = ctx.x(0)
    xs = ctx.dims(x)
    dims = [d if isinstance(d, int) else -1 for d in xs]
    if dims.count(-1) > 1:
        ctx.unsupported("more than one dynamic dim")
    b = ctx.b
    inter = [v for r, d in zip(reps, dims, strict=True) for v in (r, d)]
    g = b.op("Reshape", [ctx.g(), b.ints(inter)])
    g = b.reduce("ReduceSum", g, list(range(0, 2 * len(reps), 2)), keepdims=False)
    return [g, None]


def _normalized_indices(ctx: VJPContext, idx: str, dim: str) -> str:
    value = ctx.const(idx)
    if value is not None and np.all(np.asarray(value) >= 0):
        return idx
    b = ctx.b
    return b.op(
        "Where",
        [b.op("Less", [idx, b.const(np.int64(0))]), b.op("Add", [idx, b.op("Cast", [dim], to=ctx.elem(idx))]), idx],
    )


@vjp("Gather", requires_opset=16)
def gather(ctx: VJPContext):
    """Scatter-add the cotangent back to the gathered rows (ScatterND, reduction="add")."""
    b, x, idx, g = ctx.b, ctx.x(0), ctx.x(1), ctx.g()
    rank = ctx.rank(x)
    a = ctx.attr("axis", 0) % rank
    q = ctx.rank(idx)
    idx = _normalized_indices(ctx, idx, b.op("Squeeze", [_dim(ctx, x, a)]))
    if ctx.np_dtype(idx) != np.int64:
        idx = b.op("Cast", [idx], to=7)
    perm_x = [a] + [i for i in range(rank) if i != a]
    perm_g = list(range(a, a + q)) + list(range(a)) + list(range(a + q, rank - 1 + q))
    xt = b.op("Transpose", [x], perm=perm_x) if a else x
    gt = b.op("Transpose", [g], perm=perm_g) if a and q else g
    zeros = b.zeros_like(xt, None, ctx.np_dtype(x))
    out = b.op("ScatterND", [zeros, b.op("Unsqueeze", [idx, b.ints([-1])]), gt], reduction="add")
    if a:
        inverse = [0] * rank
        for i, p in enumerate(perm_x):
            inverse[p] = i
        out = b.op("Transpose", [out], perm=inverse)
    return [out, None]


@vjp("GatherElements", requires_opset=16)
def gather_elements(ctx: VJPContext):
    b, x, idx = ctx.b, ctx.x(0), ctx.x(1)
    rank = ctx.rank(x)
    a = ctx.attr("axis", 0) % rank
    idx = _normalized_indices(ctx, idx, b.op("Squeeze", [_dim(ctx, x, a)]))
    zeros = b.zeros_like(x, ctx.static_shape(x), ctx.np_dtype(x))
    return [b.op("ScatterElements", [zeros, idx, ctx.g()], axis=a, reduction="add"), None]


@vjp("DepthToSpace", "SpaceToDepth")
def depth_space(ctx: VJPContext):
    """Both are permutations: the inverse of DCR DepthToSpace is SpaceToDepth; CRD goes
    through Reshape/Transpose."""
    b, g = ctx.b, ctx.g()
    bs = ctx.attr("blocksize")
    if ctx.op_type == "SpaceToDepth":
        return [b.op("DepthToSpace", [g], blocksize=bs, mode="DCR")]
    if ctx.attr_str("mode", "DCR") == "DCR":
        return [b.op("SpaceToDepth", [g], blocksize=bs)]
    xs = ctx.static_shape(ctx.x(0))
    if xs is None:
        ctx.unsupported("CRD mode with dynamic shapes")
    n, c, h, w = xs
    c_out = c // (bs * bs)
    t = b.op("Reshape", [g, b.ints([n, c_out, h, bs, w, bs])])
    t = b.op("Transpose", [t], perm=[0, 1, 3, 5, 2, 4])
    return [b.op("Reshape", [t, b.ints([n, c, h, w])])]


@vjp("Trilu")
def trilu(ctx: VJPContext):
    """Trilu keeps a triangle: the cotangent is kept on the same triangle."""
    inputs = [ctx.g()] + ([ctx.x(1)] if ctx.x_opt(1) else [])
    return [ctx.b.op("Trilu", inputs, upper=ctx.attr("upper", 1)), None]


@vjp("CumSum")
def cumsum(ctx: VJPContext):
    """The adjoint of a cumulative sum is the cumulative sum the other way."""
    return [
        ctx.b.op("CumSum", [ctx.g(), ctx.x(1)], exclusive=ctx.attr("exclusive", 0), reverse=1 - ctx.attr("reverse", 0)),
        None,
    ]


@vjp("TopK", requires_opset=16)
def top_k(ctx: VJPContext):
    """Scatter-add the values' cotangent to the positions TopK reports in ``Indices``."""
    b, x = ctx.b, ctx.x(0)
    rank = ctx.rank(x)
    zeros = b.zeros_like(x, ctx.static_shape(x), ctx.np_dtype(x))
    return [
        b.op("ScatterElements", [zeros, ctx.y(1), ctx.g()], axis=ctx.attr("axis", -1) % rank, reduction="add"),
        None,
    ]
