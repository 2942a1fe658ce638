"""Conv (input VJP: a Conv with flipped weights over the zero-inserted cotangent, or a
ConvTranspose with the same weights) and ConvTranspose (VJP: Conv).

Which form the Conv VJP takes is a speed choice on onnxruntime's CPU kernels: its ConvTranspose
is a GEMM followed by col2im, slower than its Conv kernels (NCHWc blocked, depthwise above all)
even when the Conv runs over a cotangent with ``stride - 1`` zeros inserted per cell; but a Conv
whose output has 1 to 3 channels (the gradient of a first layer on grey or RGB input) pads them
to a whole channel block, so there ConvTranspose wins. Measured on the suite's gradient graphs
(32 rows, 2 threads): brain_mobilenet 5.8 -> 3.9 ms, brain_cnn 4.6 -> 3.4 ms per run. A graph
built for CUDA (``kernels="cuda"``) keeps Conv at stride 1 and ConvTranspose otherwise.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..builder import all_int
from ..registry import VJPContext, vjp


def _bias_grad(ctx: VJPContext, g: str) -> str | None:
    if not ctx.need(2):
        return None
    axes = [0] + list(range(2, ctx.rank(ctx.y())))
    return ctx.b.reduce("ReduceSum", g, axes, keepdims=False)


def _geometry(ctx: VJPContext, nd: int):
    w_shape = ctx.static_shape(ctx.x(1))
    kernel = ctx.attr("kernel_shape") or (list(w_shape[2:]) if w_shape else None)
    if kernel is None:
        ctx.unsupported("kernel shape unknown")
    strides = list(ctx.attr("strides") or [1] * nd)
    dilations = list(ctx.attr("dilations") or [1] * nd)
    return list(kernel), strides, dilations


def _same_pads(totals: list[int], auto_pad: str) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) for SAME_UPPER/SAME_LOWER total paddings.

    SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the beginning (ONNX Conv spec).
    """
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    return (small + large) if auto_pad == "SAME_UPPER" else (large + small)


def _flipped_weight(ctx: VJPContext, w: str, w_shape, group: int) -> str:
    """Conv weights (M, C/g, *k) as the weights of the adjoint conv: (C, M/g, *k), every
    kernel rotated by 180 degrees. Built from the initializer by ops onnxruntime folds once."""
    b = ctx.b
    m, cg, *k = w_shape
    nd = len(k)
    big = -(2**62)
    w = b.op("Slice", [w, b.ints([-1] * nd), b.ints([big] * nd), b.ints(range(2, 2 + nd)), b.ints([-1] * nd)])
    if cg == 1 and m == group:  # depthwise: already (C, 1, *k)
        return w
    w = b.op("Reshape", [w, b.ints([group, m // group, cg, *k])])
    w = b.op("Transpose", [w], perm=[0, 2, 1, *range(3, 3 + nd)])
    return b.op("Reshape", [w, b.ints([cg * group, m // group, *k])])


def _zero_inserted(ctx: VJPContext, g: str, out_sp: list[int], strides: list[int]) -> str:
    """``g`` (N, C, *out_sp) with ``stride - 1`` zeros after every cell along each spatial axis:
    (N, C, *(o * s)): a nearest-neighbour Resize by the strides, times a 0/1 mask that keeps the
    first cell of every block (onnxruntime runs both far faster than a Pad over interleaved
    unit axes)."""
    b = ctx.b
    nd = len(out_sp)
    scales = b.const(np.asarray([1.0, 1.0, *strides], np.float32))
    up = b.op(
        "Resize", [g, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"
    )
    mask = np.ones((1, 1), ctx.np_dtype(ctx.x(0)))
    for i in range(nd):
        keep = (np.arange(out_sp[i] * strides[i]) % strides[i] == 0).astype(mask.dtype)
        mask = mask[..., None] * keep
    return b.op("Mul", [up, b.const(mask)])


def _strided_flip_pads(in_sp, out_sp, strides, eff, begin) -> list[int] | None:
    """Pads of the stride-1 Conv that takes the zero-inserted cotangent (length o * s per axis)
    back to the input's size: begin ``eff - 1 - pad_begin``, end whatever makes the length the
    input's; None when one would be negative (then ConvTranspose crops instead)."""
    nd = len(in_sp)
    lo = [eff[i] - 1 - begin[i] for i in range(nd)]
    hi = [in_sp[i] + eff[i] - 1 - lo[i] - out_sp[i] * strides[i] for i in range(nd)]
    return None if min(lo + hi) < 0 else lo + hi


@vjp("Conv")
def conv(ctx: VJPContext):
    if ctx.need(1):
        ctx.unsupported("weights that depend on the input")
    b, x, w, g = ctx.b, ctx.x(0), ctx.x(1), ctx.g()
    nd = ctx.rank(x) - 2
    kernel, strides, dilations = _geometry(ctx, nd)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    xs, ys = ctx.shape(x), ctx.shape(ctx.y())
    in_sp = list(xs[2:]) if xs else [None] * nd
    out_sp = list(ys[2:]) if ys else [None] * nd
    auto_pad = ctx.attr_str("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if not all_int(in_sp):
            ctx.unsupported("auto_pad SAME with dynamic spatial dims")
        pads = _same_pads(
            [max(0, (-(-in_sp[i] // strides[i]) - 1) * strides[i] + eff[i] - in_sp[i]) for i in range(nd)], auto_pad
        )
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(ctx.attr("pads") or [0] * (2 * nd))
    out_pad: list[int] | None = None
    if all_int(in_sp) and all_int(out_sp):  # static
        out_pad = [in_sp[i] - ((out_sp[i] - 1) * strides[i] + eff[i] - pads[i] - pads[nd + i]) for i in range(nd)]
        for i in range(nd):  # rows the forward window never reached: crop instead
            if out_pad[i] < 0:
                pads[nd + i] -= out_pad[i]
                out_pad[i] = 0
    gx = None
    group = ctx.attr("group", 1)
    w_shape = ctx.static_shape(w)
    cpu = ctx.kernels == "cpu"  # the choices below are measured on onnxruntime's CPU kernels
    few_in = cpu and w_shape is not None and w_shape[1] * group < 4  # the gradient has 1-3 channels
    flip_pads = [e - 1 - p for e, p in zip(eff * 2, pads, strict=True)]
    zi_pads = None
    static_out = list(out_sp) if all_int(out_sp) else None
    float32 = ctx.elem(x) == onnx.TensorProto.FLOAT  # the types onnxruntime's Resize and Conv share
    if cpu and float32 and out_pad is not None and static_out is not None and any(s > 1 for s in strides):
        zi_pads = _strided_flip_pads(in_sp, static_out, strides, eff, pads[:nd])
    if ctx.need(0) and not few_in and w_shape and static_out is not None and zi_pads is not None:
        # strided, static: a stride-1 Conv with flipped weights over the zero-inserted cotangent
        gx = b.op(
            "Conv",
            [_zero_inserted(ctx, g, static_out, strides), _flipped_weight(ctx, w, w_shape, group)],
            dilations=dilations,
            pads=zi_pads,
            group=group,
            kernel_shape=kernel,
        )
    elif ctx.need(0) and not few_in and all(s == 1 for s in strides) and w_shape and min(flip_pads) >= 0:
        # stride 1: a plain Conv with the kernel flipped and its channels transposed per group
        gx = b.op(
            "Conv",
            [g, _flipped_weight(ctx, w, w_shape, group)],
            dilations=dilations,
            pads=flip_pads,
            group=group,
            kernel_shape=kernel,
        )
    elif ctx.need(0) and out_pad is not None:  # static
        gx = b.op(
            "ConvTranspose",
            [g, w],
            strides=strides,
            dilations=dilations,
            pads=pads,
            group=group,
            kernel_shape=kernel,
            output_padding=out_pad if any(out_pad) else None,
        )
    elif ctx.need(0):
        # dynamic sizes: crop nothing at the end, then cut (or zero-pad) to the input's size
        gx = b.op(
            "ConvTranspose",
            [g, w],
            strides=strides,
            dilations=dilations,
            pads=pads[:nd] + [0] * nd,
            group=group,
            kernel_shape=kernel,
        )
        in_size = b.shape(x, start=2)
        gx = b.op("Slice", [gx, b.ints([0] * nd), in_size, b.ints(range(2, 2 + nd))])
        diff = b.op("Sub", [in_size, b.shape(gx, start=2)])
        gx = b.op("Pad", [gx, b.op("Concat", [b.ints([0] * (nd + 4)), diff], axis=0)])
    return [gx, None, _bias_grad(ctx, g)]


@vjp("ConvTranspose")
def conv_transpose(ctx: VJPContext):
    if ctx.need(1):
        ctx.unsupported("weights that depend on the input")
    b, x, w, g = ctx.b, ctx.x(0), ctx.x(1), ctx.g()
    nd = ctx.rank(x) - 2
    kernel, strides, dilations = _geometry(ctx, nd)
    out_shape = ctx.attr("output_shape")
    auto_pad = ctx.attr_str("auto_pad", "NOTSET")
    if out_shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        xs = ctx.static_shape(x)
        ys = ctx.static_shape(ctx.y())
        if xs is None or ys is None:
            ctx.unsupported("output_shape/auto_pad with dynamic shapes")
        out_pad = list(ctx.attr("output_padding") or [0] * nd)
        pads = _same_pads(
            [
                strides[i] * (xs[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - ys[2 + i]
                for i in range(nd)
            ],
            auto_pad,
        )
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = list(ctx.attr("pads") or [0] * (2 * nd))
    gx = None
    if ctx.need(0):
        gx = b.op(
            "Conv",
            [g, w],
            strides=strides,
            dilations=dilations,
            pads=pads,
            group=ctx.attr("group", 1),
            kernel_shape=kernel,
        )
    return [gx, None, _bias_grad(ctx, g)]
