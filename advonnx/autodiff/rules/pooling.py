"""MaxPool (scatter to its Indices), AveragePool (a depthwise ConvTranspose), global pools."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..registry import VJPContext, vjp


def transpose_geometry(in_sp, out_sp, eff, strides, pads):
    """Pads and output_padding making ConvTranspose return exactly ``in_sp`` from ``out_sp``
    (windows that run past the input, as with ceil_mode, are cropped through the end pads)."""
    nd = len(in_sp)
    pads = list(pads)
    out_pad = []
    for i in range(nd):
        d = in_sp[i] - ((out_sp[i] - 1) * strides[i] + eff[i] - pads[i] - pads[nd + i])
        if d < 0:
            pads[nd + i] -= d
            d = 0
        out_pad.append(d)
    return pads, out_pad


def _tiles_the_input(ctx: VJPContext, x: str) -> bool:
    """Whether MaxPool's windows never overlap and end exactly at the input's end on every
    spatial axis (no pads, dilation 1, kernel <= stride, (o - 1) * s + k == i; static spatial
    dims): then every input cell is the argmax of at most one window, and MaxUnpool (whose
    output size inferred from its attributes is then the input's) scatters without collisions."""
    xs, ys = ctx.shape(x), ctx.shape(ctx.y())
    if xs is None or ys is None or ctx.elem(x) != onnx.TensorProto.FLOAT:  # onnxruntime's kernel: float
        return False
    nd = len(xs) - 2
    in_sp, out_sp = list(xs[2:]), list(ys[2:])
    kernel = list(ctx.attr("kernel_shape"))
    strides = list(ctx.attr("strides") or [1] * nd)
    if not (all(isinstance(d, int) for d in in_sp + out_sp)) or ctx.attr_str("auto_pad", "NOTSET") != "NOTSET":
        return False
    if any(ctx.attr("pads") or [0]) or any(d != 1 for d in (ctx.attr("dilations") or [1])):
        return False
    return all(k <= s and (o - 1) * s + k == i for k, s, o, i in zip(kernel, strides, out_sp, in_sp, strict=True))


@vjp("MaxPool", requires_opset=16)
def max_pool(ctx: VJPContext):
    """Scatter the cotangent to the argmax positions MaxPool reports in ``Indices`` (flat
    indices into the whole input tensor, batch and channel included): MaxUnpool where the
    windows tile the input (onnxruntime's kernel is a plain scatter, several times faster than
    ScatterElements), else ScatterElements with ``add`` (overlapping windows can share an
    argmax)."""
    if ctx.attr("storage_order", 0) != 0:
        ctx.unsupported("storage_order=1")
    b, x, g = ctx.b, ctx.x(0), ctx.g()
    indices = ctx.forward_output(1, "maxpool_indices")
    # built for CUDA: ScatterElements (onnxruntime's CUDA EP has scatter-add kernels, the
    # MaxUnpool kernel is the CPU's)
    if ctx.kernels == "cpu" and _tiles_the_input(ctx, x):
        nd = ctx.rank(x) - 2
        return [
            b.op(
                "MaxUnpool",
                [g, indices, b.shape_of(x, ctx.static_shape(x))],
                kernel_shape=list(ctx.attr("kernel_shape")),
                strides=list(ctx.attr("strides") or [1] * nd),
            )
        ]
    flat = b.ints([-1])
    numel = b.op("Reshape", [b.op("Size", [x]), b.ints([1])])
    zeros = b.op("ConstantOfShape", [numel], value=helper.make_tensor("value", ctx.elem(x), [1], [0]))
    s = b.op(
        "ScatterElements",
        [zeros, b.op("Reshape", [indices, flat]), b.op("Reshape", [g, flat])],
        axis=0,
        reduction="add",
    )
    return [b.reshape(s, x, ctx.static_shape(x))]


def _pool_pads(ctx: VJPContext, in_sp, eff, strides, out_sp) -> list[int]:
    nd = len(in_sp)
    auto_pad = ctx.attr_str("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            total = max(0, (out_sp[i] - 1) * strides[i] + eff[i] - in_sp[i])
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return begin + end
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    return list(ctx.attr("pads") or [0] * (2 * nd))


def _average_divisor(ctx: VJPContext, in_sp, out_sp, kernel, strides, dilations, pads):
    """The divisor of every output window, as the forward AveragePool (run by onnxruntime on
    ones) uses it: windows count only input cells, or also padding (count_include_pad)."""
    import onnxruntime as ort

    nd = len(in_sp)
    node = helper.make_node("AveragePool", ["x"], ["y"])
    node.attribute.extend(ctx.node.attribute)
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", 1, [1, 1, *in_sp])],
        [helper.make_tensor_value_info("y", 1, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)])
    mean_of_ones = (
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        .run(None, {"x": np.ones((1, 1, *in_sp), np.float32)})[0][0, 0]
        .astype(np.float64)
    )
    # number of input cells in every window
    valid = np.ones((), np.float64)
    for i in range(nd):
        starts = np.arange(out_sp[i]) * strides[i] - pads[i]
        pos = starts[:, None] + np.arange(kernel[i])[None, :] * dilations[i]
        count = ((pos >= 0) & (pos < in_sp[i])).sum(axis=1).astype(np.float64)
        valid = np.multiply.outer(valid, count)
    with np.errstate(divide="ignore", invalid="ignore"):
        divisor = np.where(mean_of_ones > 0, np.round(valid / mean_of_ones), 1.0)
    return divisor


@vjp("AveragePool")
def average_pool(ctx: VJPContext):
    b, x, g = ctx.b, ctx.x(0), ctx.g()
    xs, ys = ctx.shape(x), ctx.shape(ctx.y())
    if xs is None or ys is None or not all(isinstance(d, int) for d in list(xs[1:]) + list(ys[2:])):
        ctx.unsupported("channels and spatial dims must be static")
    nd = len(xs) - 2
    in_sp, out_sp, channels = list(xs[2:]), list(ys[2:]), xs[1]
    kernel = list(ctx.attr("kernel_shape"))
    strides = list(ctx.attr("strides") or [1] * nd)
    dilations = list(ctx.attr("dilations") or [1] * nd)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    pads = _pool_pads(ctx, in_sp, eff, strides, out_sp)
    divisor = _average_divisor(ctx, in_sp, out_sp, kernel, strides, dilations, pads)
    dt = ctx.np_dtype(x)
    weight = np.ones((channels, 1, *kernel), dt)
    if np.all(divisor == divisor.flat[0]):
        weight /= divisor.flat[0]
    else:
        g = b.op("Mul", [g, b.const((1.0 / divisor)[None, None].astype(dt))])
    tpads, out_pad = transpose_geometry(in_sp, out_sp, eff, strides, pads)
    gx = b.op(
        "ConvTranspose",
        [g, b.const(weight)],
        strides=strides,
        dilations=dilations,
        pads=tpads,
        group=channels,
        kernel_shape=kernel,
        output_padding=out_pad if any(out_pad) else None,
    )
    return [gx]


def _spatial_count(ctx: VJPContext, x: str) -> str:
    xs = ctx.shape(x)
    if xs is not None and all(isinstance(d, int) for d in xs[2:]):
        return ctx.scalar(1.0 / float(np.prod(xs[2:])))
    b = ctx.b
    n = b.op("ReduceProd", [b.shape(x, start=2)], keepdims=0)
    return b.op("Reciprocal", [b.op("Cast", [n], to=ctx.elem(x))])


@vjp("GlobalAveragePool")
def global_average_pool(ctx: VJPContext):
    b, x = ctx.b, ctx.x(0)
    g = b.op("Mul", [ctx.g(), _spatial_count(ctx, x)])
    return [b.op("Expand", [g, b.shape_of(x, ctx.static_shape(x))])]


@vjp("GlobalMaxPool")
def global_max_pool(ctx: VJPContext):
    """The cotangent is shared by the cells equal to the maximum (exact away from ties)."""
    b, x = ctx.b, ctx.x(0)
    mask = b.op("Cast", [b.op("Equal", [x, ctx.y()])], to=ctx.elem(x))
    axes = list(range(2, ctx.rank(x)))
    count = b.reduce("ReduceSum", mask, axes, keepdims=True)
    return [b.op("Mul", [mask, b.op("Div", [ctx.g(), count])])]
