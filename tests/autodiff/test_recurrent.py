"""LSTM, GRU and RNN VJP rules: float64 finite differences through a numpy reference of the
ops (itself checked against onnxruntime), the float32 gradient graph in onnxruntime, and
exported torch nn.LSTM/GRU/RNN classifiers against torch.autograd."""

from __future__ import annotations

import functools
import re

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import advonnx
from advonnx.autodiff.registry import RuleUnavailable
from advonnx.autodiff import (
    GRAD_INPUT_COTANGENT,
    GRAD_OUTPUT_GRAD,
    gradient_model,
    unsupported_ops,
)

from . import harness
from .harness import check_default_domain, finite_difference, ort_session, rel_err
from .recurrent_ref import GATES, GRU, LSTM, RNN, run_recurrent

T, N, I, H = 4, 2, 3, 3


def reference(model: onnx.ModelProto) -> ReferenceEvaluator:
    return ReferenceEvaluator(model, new_ops=[LSTM, GRU, RNN, harness.Erf])


def recurrent_model(op: str, dtype, *, direction="forward", layout=0, seq=None, init=False,
                    peep=False, clip=None, acts=None, lbr=0, outputs="all", seed=0):
    """x -> one recurrent node -> y. ``init``: initial states computed from x (so they carry
    cotangents); ``outputs``: "all" (Y, Y_h[, Y_c] flattened and concatenated) or "h" (Y_h only,
    the node lacking Y)."""
    rng = np.random.default_rng(seed)
    nd, g = (2 if direction == "bidirectional" else 1), GATES[op]
    elem = harness.ELEM[dtype]
    inits = {"W": rng.standard_normal((nd, g * H, I)) * 0.8,
             "R": rng.standard_normal((nd, g * H, H)) * 0.6,
             "B": rng.standard_normal((nd, 2 * g * H)) * 0.3}
    nodes = []
    names = ["x", "W", "R", "B", "", "", ""]
    if seq is not None:
        inits["seq"] = np.asarray(seq, np.int32)
        names[4] = "seq"
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    if init:
        for j, s in enumerate(states):
            if layout:  # (N, T, I) -> mean over T (N, 1, I) @ (I, nd*H) -> (N, nd, H)
                inits[f"M{s}"] = rng.standard_normal((I, nd * H))
                inits[f"S{s}"] = np.asarray([0, nd, H], np.int64)
                nodes += [helper.make_node("ReduceMean", ["x"], [f"m{s}"], axes=[1]),
                          helper.make_node("MatMul", [f"m{s}", f"M{s}"], [f"p{s}"]),
                          helper.make_node("Reshape", [f"p{s}", f"S{s}"], [f"t{s}"]),
                          helper.make_node("Tanh", [f"t{s}"], [s])]
            else:  # (T, N, I) -> mean over T (1, N, I) @ (nd, I, H) -> (nd, N, H)
                inits[f"M{s}"] = rng.standard_normal((nd, I, H))
                nodes += [helper.make_node("ReduceMean", ["x"], [f"m{s}"], axes=[0]),
                          helper.make_node("MatMul", [f"m{s}", f"M{s}"], [f"t{s}"]),
                          helper.make_node("Tanh", [f"t{s}"], [s])]
            names[5 + j] = s
    if peep:
        inits["P"] = rng.standard_normal((nd, 3 * H)) * 0.5
        names.append("P")
    n_in = 8 if op == "LSTM" else 6
    names = (names + [""] * 8)[:n_in]
    while names and not names[-1]:
        names.pop()
    attrs = {"hidden_size": H, "direction": direction}
    if layout:
        attrs["layout"] = 1
    if clip is not None:
        attrs["clip"] = clip
    if acts:
        attrs["activations"] = acts
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    outs = ["Y", "Yh", "Yc"] if op == "LSTM" else ["Y", "Yh"]
    if outputs == "h":
        nodes.append(helper.make_node(op, names, ["", "Yh"], **attrs))
        nodes.append(helper.make_node("Identity", ["Yh"], ["y"]))
    else:
        nodes.append(helper.make_node(op, names, outs, **attrs))
        nodes += [helper.make_node("Flatten", [o], [o + "_f"], axis=0) for o in outs]
        nodes.append(helper.make_node("Concat", [o + "_f" for o in outs], ["y"], axis=1))
    tensors = [numpy_helper.from_array(v.astype(dtype) if v.dtype == np.float64 else v, k)
               for k, v in inits.items()]
    x_shape = [N, T, I] if layout else [T, N, I]
    graph = helper.make_graph(nodes, "rec", [helper.make_tensor_value_info("x", elem, x_shape)],
                              [helper.make_tensor_value_info("y", elem, None)],
                              initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 9
    return model


def check(op, *, tol64=1e-6, tol32=2e-4, **kw):
    """float64 VJP (reference evaluator) vs central differences; float32 VJP in onnxruntime
    vs the same (onnxruntime runs layout 0 only)."""
    rng = np.random.default_rng(7)
    layout = kw.get("layout", 0)
    x = rng.standard_normal((N, T, I) if layout else (T, N, I))
    m64 = recurrent_model(op, np.float64, **kw)
    ref = reference(m64)
    cot = rng.standard_normal(ref.run(None, {"x": x})[0].shape)
    expected = finite_difference(lambda v: float(np.sum(ref.run(None, {"x": v})[0] * cot)), x)
    g64 = gradient_model(m64, loss="cotangent")
    check_default_domain(g64)
    got64 = reference(g64).run([GRAD_OUTPUT_GRAD], {"x": x, GRAD_INPUT_COTANGENT: cot})[0]
    e64 = rel_err(got64, expected)
    assert e64 <= tol64, f"float64 VJP vs finite differences: {e64:.2e}"
    if layout:
        return
    g32 = gradient_model(recurrent_model(op, np.float32, **kw), loss="cotangent")
    got32 = ort_session(g32, threads=1).run([GRAD_OUTPUT_GRAD], {
        "x": x.astype(np.float32), GRAD_INPUT_COTANGENT: cot.astype(np.float32)})[0]
    e32 = rel_err(got32, expected)
    assert e32 <= tol32, f"float32 onnxruntime VJP vs finite differences: {e32:.2e}"


DIRECTIONS = ["forward", "reverse", "bidirectional"]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_directions(op, direction):
    check(op, direction=direction)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_initial_states_and_layout1(op, direction):
    check(op, direction=direction, init=True)
    check(op, direction=direction, init=True, layout=1)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_sequence_lens(op, direction):
    check(op, direction=direction, seq=[T, 2], init=True)
    check(op, direction=direction, seq=[0, 3], init=True, outputs="h")


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_only_final_state_used(op):
    check(op, direction="bidirectional", init=True, outputs="h")


@pytest.mark.parametrize("op, acts", [
    ("LSTM", ["Relu", "Sigmoid", "Tanh", "Tanh", "Relu", "Sigmoid"]),
    ("GRU", ["Tanh", "Relu", "Sigmoid", "Sigmoid"]),
    ("RNN", ["Relu", "Sigmoid"]),
])
def test_activations(op, acts):
    check(op, direction="bidirectional", acts=acts)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_clip(op):
    check(op, direction="bidirectional", clip=0.6, init=True)


def test_lstm_peepholes():
    check("LSTM", direction="bidirectional", peep=True, init=True)
    check("LSTM", direction="reverse", peep=True, seq=[3, 1], clip=0.8)


def test_gru_linear_before_reset():
    check("GRU", direction="bidirectional", lbr=1, init=True)
    check("GRU", direction="reverse", lbr=1, seq=[3, 1], init=True, layout=1)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_reference_matches_onnxruntime(op):
    """The numpy reference the finite differences run through computes onnxruntime's outputs."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    for kw in ({"direction": "bidirectional", "init": True, "clip": 0.7},
               {"direction": "reverse", "seq": [3, 0], "peep": op == "LSTM", "lbr": 1}):
        model = recurrent_model(op, np.float32, **kw)
        got = ort_session(model, threads=1).run(None, {"x": x})[0]
        want = reference(model).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lstm_recomputed_cell_state_is_onnxruntimes():
    """The cell states the backward recomputes equal the op's own Y_c (float32, onnxruntime)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    for kw in ({"direction": "bidirectional", "init": True, "peep": True},
               {"direction": "reverse", "seq": [3, 1]}):
        model = recurrent_model("LSTM", np.float32, **kw)
        gm = gradient_model(model, loss="cotangent")
        cells = {o: re.search(r"/lstm_c(\d)_t(\d+)_", o) for n in gm.graph.node
                 for o in n.output}
        cells = {o: (int(m[1]), int(m[2])) for o, m in cells.items() if m}
        assert len(cells) == T * (2 if kw["direction"] == "bidirectional" else 1)
        probe = onnx.ModelProto()
        probe.CopyFrom(gm)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=c) for c in [*cells, "Yc"])
        y = ort_session(model, threads=1).run(None, {"x": x})[0]
        feed = {"x": x, GRAD_INPUT_COTANGENT: np.zeros_like(y)}
        *values, yc = ort_session(probe, threads=1).run(None, feed)
        state = {cells[o]: v for o, v in zip(cells, values, strict=True)}
        seq = kw.get("seq", [T] * N)
        for d in range(2 if kw["direction"] == "bidirectional" else 1):
            reverse = kw["direction"] == "reverse" or d == 1
            for n in range(N):  # Y_c is the state after the sample's last valid step
                t_last = 0 if reverse else seq[n] - 1
                np.testing.assert_allclose(state[d, t_last][0, n], yc[d, n], rtol=1e-6,
                                           atol=1e-6)
