"""Property tests: random shapes and attributes for the rules with the most geometry
(convolutions, pooling, resize, broadcasting, batched matmul), each checked against float64
finite differences and the float32 onnxruntime graph."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from .harness import check_vjp, ort_session, reference, tiny_model

SETTINGS = settings(
    max_examples=int(os.environ.get("ADVONNX_HYPOTHESIS_EXAMPLES", 30)),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _x(rng, shape):
    return rng.standard_normal(shape)


def assume_forward_agrees(nodes, inits, x):
    """Skip the few edge geometries (ceil_mode windows in the padding, align_corners onto one
    pixel) where onnx's reference kernels and onnxruntime disagree on the forward itself:
    finite differences there would test the reference evaluator, not the VJP."""
    ref = reference(tiny_model(nodes, inits, x.shape, np.float64)).run(None, {"x": x})[0]
    got = ort_session(tiny_model(nodes, inits, x.shape, np.float32)).run(None, {"x": x.astype(np.float32)})[0]
    assume(ref.shape == got.shape and np.allclose(ref, got, atol=1e-5))


@st.composite
def conv_cases(draw):
    nd = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, 2]))
    cin, cout = group * draw(st.integers(1, 4)), group * draw(st.integers(1, 2))  # >= 4: Conv VJP
    k = [draw(st.integers(1, 3)) for _ in range(nd)]
    s = [draw(st.integers(1, 3)) for _ in range(nd)]
    d = [draw(st.integers(1, 2)) for _ in range(nd)]
    eff = [(ki - 1) * di + 1 for ki, di in zip(k, d, strict=True)]
    size = [draw(st.integers(e, e + 4)) for e in eff]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    attrs = {"kernel_shape": k, "strides": s, "dilations": d, "group": group}
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, e - 1)) for e in eff * 2]
    else:
        attrs["auto_pad"] = auto_pad
        attrs["dilations"] = [1] * nd  # onnxruntime: no dilation with SAME padding
    transpose = draw(st.booleans())
    return nd, cin, cout, size, attrs, transpose, draw(st.integers(0, 2**16))


@SETTINGS
@given(conv_cases())
def test_conv_geometry(case):
    nd, cin, cout, size, attrs, transpose, seed = case
    rng = np.random.default_rng(seed)
    group = attrs["group"]
    if transpose:  # ConvTranspose: explicit pads, output_padding < stride
        attrs.pop("auto_pad", None)
        attrs.setdefault("pads", [0] * (2 * nd))
        attrs["output_padding"] = [
            int(rng.integers(0, max(s, di))) if s > 1 else 0
            for s, di in zip(attrs["strides"], attrs["dilations"], strict=True)
        ]
        attrs["output_padding"] = [
            min(p, s - 1) for p, s in zip(attrs["output_padding"], attrs["strides"], strict=True)
        ]
        w = rng.standard_normal((cin, cout // group, *attrs["kernel_shape"]))
        op = "ConvTranspose"
    else:
        w = rng.standard_normal((cout, cin // group, *attrs["kernel_shape"]))
        op = "Conv"
    node = helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)
    inits = {"w": w, "b": rng.standard_normal(cout)}
    shape = (2, cin, *size)
    check_vjp(lambda dt: tiny_model([node], inits, shape, dt), _x(rng, shape))


@st.composite
def pool_cases(draw):
    nd = draw(st.sampled_from([1, 2]))
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    k = [draw(st.integers(1, 3)) for _ in range(nd)]
    s = [draw(st.integers(1, 3)) for _ in range(nd)]
    d = [draw(st.integers(1, 2)) for _ in range(nd)] if op == "MaxPool" else [1] * nd
    eff = [(ki - 1) * di + 1 for ki, di in zip(k, d, strict=True)]
    size = [draw(st.integers(e, e + 4)) for e in eff]
    pads = [draw(st.integers(0, (ki - 1) // 2)) for ki in k * 2]
    attrs = {"kernel_shape": k, "strides": s, "pads": pads, "ceil_mode": draw(st.sampled_from([0, 1]))}
    if op == "MaxPool":
        attrs["dilations"] = d
    else:
        attrs["count_include_pad"] = draw(st.sampled_from([0, 1]))
    return op, size, attrs, draw(st.integers(0, 2**16))


@SETTINGS
@given(pool_cases())
def test_pool_geometry(case):
    op, size, attrs, seed = case
    rng = np.random.default_rng(seed)
    nd = len(size)
    if attrs["ceil_mode"]:  # the last window must start inside the input or the left padding
        dil = attrs.get("dilations", [1] * nd)
        for i in range(nd):
            n, k, s = size[i], attrs["kernel_shape"][i], attrs["strides"][i]
            pb, pe = attrs["pads"][i], attrs["pads"][nd + i]
            out = -(-(n + pb + pe - (k - 1) * dil[i] - 1) // s) + 1
            assume((out - 1) * s < n + pb)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    shape = (2, 2, *size)
    x = _x(rng, shape)
    assume_forward_agrees([node], {}, x)
    check_vjp(lambda dt: tiny_model([node], {}, shape, dt), x)


@st.composite
def resize_cases(draw):
    mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
    ctm = draw(st.sampled_from(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]))
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
    if mode == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    size = [draw(st.integers(2, 5)), draw(st.integers(2, 5))]
    scales = [draw(st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 3.0])) for _ in range(2)]
    return size, attrs, scales, draw(st.integers(0, 2**16))


@SETTINGS
@given(resize_cases())
def test_resize(case):
    size, attrs, scales, seed = case
    assume(all(int(n * s) >= 1 for n, s in zip(size, scales, strict=True)))
    rng = np.random.default_rng(seed)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], **attrs)
    inits = {"s": np.asarray([1, 1, *scales], np.float32)}
    shape = (1, 2, *size)
    x = _x(rng, shape)
    assume_forward_agrees([node], inits, x)
    check_vjp(lambda dt: tiny_model([node], inits, shape, dt), x)


@st.composite
def broadcast_cases(draw):
    rank = draw(st.integers(1, 4))
    full = [draw(st.integers(1, 3)) for _ in range(rank)]
    x_rank = draw(st.integers(0, rank))
    w_rank = draw(st.integers(0, rank))
    x_shape = [d if draw(st.booleans()) else 1 for d in full[rank - x_rank :]]
    w_shape = [d if draw(st.booleans()) else 1 for d in full[rank - w_rank :]]
    op = draw(st.sampled_from(["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "PRelu"]))
    return op, x_shape, w_shape, draw(st.booleans()), draw(st.integers(0, 2**16))


@SETTINGS
@given(broadcast_cases())
def test_broadcasting_binary_ops(case):
    op, x_shape, w_shape, x_first, seed = case
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, x_shape) * rng.choice([-1.0, 1.0], x_shape)
    w = rng.uniform(0.5, 1.5, w_shape) * rng.choice([-1.0, 1.0], w_shape)
    if op in ("Pow", "Div"):  # positive bases and denominators
        x, w = np.abs(x), np.abs(w)
    if op == "PRelu":
        x_first = True
        assume(
            len(w_shape) <= len(x_shape)
            and all(a in (1, b) for a, b in zip(w_shape[::-1], x_shape[::-1], strict=False))
        )
    if op == "Where":
        cond = rng.random(np.broadcast_shapes(tuple(x_shape), tuple(w_shape))) > 0.5
        nodes = [helper.make_node("Where", ["c", "x", "w"] if x_first else ["c", "w", "x"], ["y"])]
        inits = {"w": w, "c": cond}
    else:
        nodes = [helper.make_node(op, ["x", "w"] if x_first else ["w", "x"], ["y"])]
        inits = {"w": w}
    check_vjp(lambda dt: tiny_model(nodes, inits, x_shape, dt), np.asarray(x, np.float64))


@st.composite
def matmul_cases(draw):
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]
    lb = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))) :]
    rb = [d if draw(st.booleans()) else 1 for d in batch][draw(st.integers(0, len(batch))) :]
    left = [*lb, n, k] if draw(st.integers(0, 4)) else [k]
    right = [*rb, k, m] if draw(st.integers(0, 4)) else [k]
    return left, right, draw(st.booleans()), draw(st.integers(0, 2**16))


@SETTINGS
@given(matmul_cases())
def test_batched_matmul(case):
    left, right, x_left, seed = case
    assume(not (len(left) == 1 and len(right) == 1))
    rng = np.random.default_rng(seed)
    x_shape, w_shape = (left, right) if x_left else (right, left)
    node = helper.make_node("MatMul", ["x", "w"] if x_left else ["w", "x"], ["y"])
    inits = {"w": rng.standard_normal(w_shape)}
    check_vjp(lambda dt: tiny_model([node], inits, x_shape, dt), rng.standard_normal(x_shape))
