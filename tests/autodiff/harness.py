"""Helpers for the autodiff tests: tiny models, finite differences, error measures."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_conv_transpose import ConvTranspose as _StockConvTranspose
from onnx.reference.ops.op_max_pool import MaxPool as _StockMaxPool

from advonnx.autodiff import GRAD_INPUT_COTANGENT, GRAD_OUTPUT_GRAD, gradient_model


class Erf(OpRun):
    """float64-exact Erf (the stock reference kernel rounds to float32)."""

    op_domain = ""

    def _run(self, x):
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


class Pad(OpRun):
    """Pad accepting negative pads (crops), which the stock reference kernel rejects."""

    op_domain = ""

    def _run(self, data, pads, constant_value=None, axes=None, mode=None):
        rank = data.ndim
        axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
        n = len(axes)
        index = [slice(None)] * rank
        width = [(0, 0)] * rank
        for i, a in enumerate(axes):
            b, e = int(pads[i]), int(pads[n + i])
            index[a] = slice(max(-b, 0), data.shape[a] - max(-e, 0))
            width[a] = (max(b, 0), max(e, 0))
        value = 0 if constant_value is None else constant_value
        return (
            np.pad(
                data[tuple(index)],
                width,
                mode=mode or "constant",
                **({"constant_values": value} if (mode or "constant") == "constant" else {}),
            ),
        )


class Gelu(OpRun):
    """float64-exact Gelu (the stock one expands to the float32 Erf)."""

    op_domain = ""

    def _run(self, x, approximate="none"):
        if approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            return (0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3))),)
        erf = np.vectorize(math.erf, otypes=[x.dtype])
        return (0.5 * x * (1 + erf(x / math.sqrt(2))),)


class ConvTranspose(_StockConvTranspose):
    """ConvTranspose with groups (the stock reference kernel handles group=1 only)."""

    op_domain = ""

    def _run(self, X, W, B=None, group=None, **kw):  # noqa: N803
        group = group or 1
        if group == 1:
            return super()._run(X, W, B, group=1, **kw)
        xs = np.split(X, group, axis=1)
        ws = np.split(W, group, axis=0)
        bs = np.split(B, group) if B is not None else [None] * group
        outs = [
            super(ConvTranspose, self)._run(x, w_, b_, group=1, **kw)[0] for x, w_, b_ in zip(xs, ws, bs, strict=True)
        ]
        return (np.concatenate(outs, axis=1),)


class MaxPool(_StockMaxPool):
    """MaxPool whose Indices always count batch and channel offsets, as the spec and
    onnxruntime do (the stock kernel's unit-stride path leaves them out)."""

    op_domain = ""

    def _run(
        self,
        x,
        auto_pad=None,
        ceil_mode=None,
        dilations=None,
        kernel_shape=None,
        pads=None,
        storage_order=None,
        strides=None,
    ):
        if len(self.output) == 1:
            return super()._run(
                x,
                auto_pad=auto_pad,
                ceil_mode=ceil_mode,
                dilations=dilations,
                kernel_shape=kernel_shape,
                pads=pads,
                storage_order=storage_order,
                strides=strides,
            )
        nd = len(kernel_shape)
        return self._max_pool(
            x,
            auto_pad=auto_pad,
            ceil_mode=ceil_mode,
            dilations=dilations or [1] * nd,
            kernel_shape=kernel_shape,
            pads=pads or [0] * (2 * nd),
            storage_order=storage_order or 0,
            strides=strides or [1] * nd,
        )


class GroupNormalization(OpRun):
    """GroupNormalization-21 computed in the input's precision (the stock kernel follows
    stash_type and rounds float64 inputs through float32)."""

    op_domain = ""

    def _run(self, x, scale, bias, epsilon=1e-5, num_groups=None, stash_type=None):
        n, c = x.shape[:2]
        xr = x.reshape(n, num_groups, -1)
        mean = xr.mean(axis=2, keepdims=True)
        var = ((xr - mean) ** 2).mean(axis=2, keepdims=True)
        y = ((xr - mean) / np.sqrt(var + epsilon)).reshape(x.shape)
        shape = (1, c) + (1,) * (x.ndim - 2)
        return (y * scale.reshape(shape) + bias.reshape(shape),)


def reference(model: onnx.ModelProto) -> ReferenceEvaluator:
    return ReferenceEvaluator(model, new_ops=[Erf, Pad, Gelu, ConvTranspose, MaxPool, GroupNormalization])


ELEM = {np.float32: onnx.TensorProto.FLOAT, np.float64: onnx.TensorProto.DOUBLE}


def rel_err(g, ref) -> float:
    g, ref = np.asarray(g, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(g - ref) / max(np.linalg.norm(ref), 1e-30))


def tiny_model(nodes, inits: dict, x_shape, dtype, opset: int = 17) -> onnx.ModelProto:
    """A graph with float input ``x`` and output ``y``; float initializers take ``dtype``."""
    elem = ELEM[dtype]
    tensors = []
    for name, value in inits.items():
        value = np.asarray(value)
        if value.dtype == np.float64:  # float32 arrays (Resize scales) stay float32
            value = value.astype(dtype)
        tensors.append(numpy_helper.from_array(value, name))
    graph = helper.make_graph(
        nodes,
        "case",
        [helper.make_tensor_value_info("x", elem, x_shape)],
        [helper.make_tensor_value_info("y", elem, None)],
        initializer=tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def check_default_domain(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    bad = [n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    assert not bad, f"nodes outside ai.onnx: {bad}"


def finite_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(x)
    flat = grad.reshape(-1)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.reshape(-1)[i] += h
        xm.reshape(-1)[i] -= h
        flat[i] = (f(xp) - f(xm)) / (2 * h)
    return grad


def vjp_reference(model64: onnx.ModelProto, x: np.ndarray, cot: np.ndarray) -> np.ndarray:
    """d<cot, f(x)>/dx by central differences through onnx's reference evaluator (float64)."""
    ref = reference(model64)
    return finite_difference(lambda v: float(np.sum(ref.run(None, {"x": v})[0] * cot)), x)


def ort_session(model: onnx.ModelProto, threads: int = 2) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def check_vjp(
    build, x: np.ndarray, *, seed: int = 0, tol64: float = 1e-6, tol32: float = 1e-4, expected_from=None
) -> tuple[float, float]:
    """Compare the VJP graph with float64 finite differences (reference evaluator) and the
    float32 VJP graph run by onnxruntime with the same reference. ``build(dtype)`` -> model;
    ``expected_from(dtype)`` -> the model whose finite differences are expected (default
    ``build``; e.g. the model with straight-through ops replaced by the identity)."""
    rng = np.random.default_rng(seed)
    m64 = build(np.float64)
    ref64 = m64 if expected_from is None else expected_from(np.float64)
    y = reference(m64).run(None, {"x": x})[0]
    cot = rng.standard_normal(y.shape)
    expected = vjp_reference(ref64, x, cot)

    g64 = gradient_model(m64, loss="cotangent")
    check_default_domain(g64)
    got64 = reference(g64).run([GRAD_OUTPUT_GRAD], {"x": x, GRAD_INPUT_COTANGENT: cot})[0]
    assert got64.shape == x.shape
    e64 = rel_err(got64, expected)

    g32 = gradient_model(build(np.float32), loss="cotangent")
    got32 = ort_session(g32).run(
        [GRAD_OUTPUT_GRAD], {"x": x.astype(np.float32), GRAD_INPUT_COTANGENT: cot.astype(np.float32)}
    )[0]
    e32 = rel_err(got32, expected)
    assert e64 <= tol64, f"float64 VJP vs finite differences: {e64:.2e}"
    assert e32 <= tol32, f"float32 onnxruntime VJP vs finite differences: {e32:.2e}"
    return e64, e32
