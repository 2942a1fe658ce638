"""Resize (nearest, linear, cubic; static spatial shapes).

Resize in these modes is separable: along every resized axis it is a fixed matrix
``M`` (out x in). The VJP multiplies the cotangent by ``M`` along each axis. ``M`` is read off
the forward op itself: onnxruntime resizes an identity matrix along one axis with the node's
own attributes. Nearest upsampling by an integer factor (torch's default) is a Reshape and a
ReduceSum instead of a product.
"""

from __future__ import annotations

import functools

import numpy as np
from onnx import helper

from ..builder import all_int
from ..registry import VJPContext, vjp

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@functools.lru_cache(maxsize=256)
def _axis_matrix(attrs: bytes, opset: int, n_in: int, n_out: int, scale: float | None):
    """``M`` (n_out, n_in) of a 1-D resize with the node's attributes (serialized)."""
    import onnxruntime as ort

    node = helper.make_node("Resize", ["x", "", "scales" if scale else "", "" if scale else "sizes"], ["y"])
    proto = helper.make_node("Resize", [], [])
    proto.ParseFromString(attrs)
    node.attribute.extend(a for a in proto.attribute if a.name != "axes")
    inits = []
    if scale:
        inits.append(helper.make_tensor("scales", 1, [2], [1.0, scale]))
    else:
        inits.append(helper.make_tensor("sizes", 7, [2], [n_in, n_out]))
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", 1, [n_in, n_in])],
        [helper.make_tensor_value_info("y", 1, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(opset, 13))])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    m_t = sess.run(None, {"x": np.eye(n_in, dtype=np.float32)})[0]  # (n_in, n_out) = M^T
    if m_t.shape != (n_in, n_out):
        raise ValueError(f"resize probe gave {m_t.shape}, expected {(n_in, n_out)}")
    return m_t.T.astype(np.float64)


def _is_repeat(m: np.ndarray) -> int | None:
    """The factor k when ``m`` repeats every input k times (nearest integer upsampling)."""
    n_out, n_in = m.shape
    if n_out % n_in:
        return None
    k = n_out // n_in
    expected = np.kron(np.eye(n_in), np.ones((k, 1)))
    return k if np.array_equal(m, expected) else None


def _dynamic_repeat(key: bytes, opset: int, mode: str, scale: float | None) -> int | None:
    """k when nearest resizing by the integer ``scale`` repeats every input k times whatever
    the axis length (checked on a few lengths)."""
    if mode != "nearest" or scale is None or scale != int(scale) or scale < 2:
        return None
    k = int(scale)
    for n in (3, 4, 7):
        if _is_repeat(_axis_matrix(key, opset, n, n * k, scale)) != k:
            return None
    return k


def _sum_repeats(ctx: VJPContext, g: str, repeats: dict[int, int]) -> str:
    """Reshape every repeated axis (n*k) into (n, k) and sum the k copies."""
    b, x = ctx.b, ctx.x(0)
    xs, ys = ctx.dims(x), ctx.shape(ctx.y())
    rank = len(xs)
    first = min(repeats)
    pieces: list[int | tuple[str, int]] = []
    sum_axes: list[int] = []
    for a in range(rank):
        if a < first:
            pieces.append(0)  # Reshape copies the dim
        elif a in repeats:
            pieces += [xs[a] if isinstance(xs[a], int) else ("x", a), repeats[a]]
            sum_axes.append(len(pieces) - 1)
        else:
            d = ys[a] if ys is not None else None
            pieces.append(d if isinstance(d, int) else ("g", a))
    if all_int(pieces):
        shape = b.ints(pieces)
    else:
        parts = []
        for p in pieces:
            if isinstance(p, int):
                parts.append(b.ints([p]))
            else:
                src = x if p[0] == "x" else g
                parts.append(b.op("Gather", [b.shape(src), b.ints([p[1]])]))
        shape = b.op("Concat", parts, axis=0)
    g = b.op("Reshape", [g, shape])
    return b.reduce("ReduceSum", g, sum_axes, keepdims=False)


@vjp("Resize", since=13)
def resize(ctx: VJPContext):
    b, x, g = ctx.b, ctx.x(0), ctx.g()
    mode = ctx.attr_str("mode", "nearest")
    if ctx.attr_str("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        ctx.unsupported("tf_crop_and_resize")
    if ctx.attr_str("keep_aspect_ratio_policy", "stretch") != "stretch":
        ctx.unsupported("keep_aspect_ratio_policy")
    if mode not in ("nearest", "linear", "cubic"):
        ctx.unsupported(f"mode={mode}")
    xs, ys = ctx.dims(x), ctx.shape(ctx.y())
    rank = ctx.rank(x)
    axes = [a % rank for a in (ctx.attr("axes") or range(rank))]
    scales = ctx.const(ctx.x(2)) if ctx.x_opt(2) else None
    if scales is not None and scales.size == 0:
        scales = None
    if scales is None and (ctx.x_opt(3) is None or ctx.const(ctx.x(3)) is None) and ys is None:
        ctx.unsupported("sizes/scales computed at run time")
    attrs = helper.make_node("Resize", [], [])
    attrs.attribute.extend(ctx.node.attribute)
    key = attrs.SerializeToString()
    mats, repeats = {}, {}
    for i, a in enumerate(axes):
        n_in, n_out = xs[a], ys[a] if ys is not None else None
        scale = float(scales[i]) if scales is not None else None
        if scale == 1.0 or (scale is None and n_in == n_out and n_in is not None):
            continue
        if isinstance(n_in, int) and isinstance(n_out, int):
            m = _axis_matrix(key, ctx.opset, n_in, n_out, scale)
            k = _is_repeat(m)
            if k:
                repeats[a] = k
            else:
                mats[a] = m
            continue
        # dynamic length: only integer nearest upsampling, whose map does not depend on it
        k = _dynamic_repeat(key, ctx.opset, mode, scale)
        if k is None:
            ctx.unsupported("resized axes must have static sizes (except integer nearest upsampling)")
        repeats[a] = k
    if repeats:  # nearest integer upsampling: sum each block of k copies
        g = _sum_repeats(ctx, g, repeats)
    dt = ctx.np_dtype(x)
    for a in sorted(mats, reverse=True):
        m = mats[a]
        if a == rank - 1:
            g = b.op("MatMul", [g, b.const(m.astype(dt))])
        elif a == rank - 2:
            g = b.op("MatMul", [b.const(np.ascontiguousarray(m.T).astype(dt)), g])
        else:
            src = _LETTERS[:rank]
            dst = src.replace(src[a], "z")
            g = b.op("Einsum", [g, b.const(m.astype(dt))], equation=f"{src},{src[a]}z->{dst}")
    return [g] + [None] * (len(ctx.node.input) - 1)
