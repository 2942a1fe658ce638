"""LSTM, GRU and RNN VJP rules: float64 finite differences through a numpy reference of the
ops (itself checked against onnxruntime), the float32 gradient graph in onnxruntime, and
exported torch nn.LSTM/GRU/RNN classifiers against torch.autograd."""

from __future__ import annotations

import functools
import re

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import advonnx
from advonnx import losses
from advonnx.autodiff import GRAD_INPUT_COTANGENT, GRAD_OUTPUT_GRAD, gradient_model, unsupported_ops
from advonnx.autodiff.registry import RuleUnavailable

from . import harness
from .harness import check_default_domain, finite_difference, ort_session, rel_err
from .recurrent_ref import GATES, GRU, LSTM, RNN

torch = pytest.importorskip("torch")  # without torch the module is skipped, not a collection error

T, N, F, H = 4, 2, 3, 3


def reference(model: onnx.ModelProto) -> ReferenceEvaluator:
    return ReferenceEvaluator(model, new_ops=[LSTM, GRU, RNN, harness.Erf])


def recurrent_model(
    op: str,
    dtype,
    *,
    direction="forward",
    layout=0,
    seq=None,
    init=False,
    peep=False,
    clip=None,
    acts=None,
    lbr=0,
    outputs="all",
    seed=0,
):
    """x -> one recurrent node -> y. ``init``: initial states computed from x (so they carry
    cotangents); ``outputs``: "all" (Y, Y_h[, Y_c] flattened and concatenated) or "h" (Y_h only,
    the node lacking Y)."""
    rng = np.random.default_rng(seed)
    nd, g = (2 if direction == "bidirectional" else 1), GATES[op]
    elem = harness.ELEM[dtype]
    inits = {
        "W": rng.standard_normal((nd, g * H, F)) * 0.8,
        "R": rng.standard_normal((nd, g * H, H)) * 0.6,
        "B": rng.standard_normal((nd, 2 * g * H)) * 0.3,
    }
    nodes = []
    names = ["x", "W", "R", "B", "", "", ""]
    if seq is not None:
        inits["seq"] = np.asarray(seq, np.int32)
        names[4] = "seq"
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    if init:
        for j, s in enumerate(states):
            if layout:  # (N, T, F) -> mean over T (N, 1, F) @ (F, nd*H) -> (N, nd, H)
                inits[f"M{s}"] = rng.standard_normal((F, nd * H))
                inits[f"S{s}"] = np.asarray([0, nd, H], np.int64)
                nodes += [
                    helper.make_node("ReduceMean", ["x"], [f"m{s}"], axes=[1]),
                    helper.make_node("MatMul", [f"m{s}", f"M{s}"], [f"p{s}"]),
                    helper.make_node("Reshape", [f"p{s}", f"S{s}"], [f"t{s}"]),
                    helper.make_node("Tanh", [f"t{s}"], [s]),
                ]
            else:  # (T, N, F) -> mean over T (1, N, F) @ (nd, F, H) -> (nd, N, H)
                inits[f"M{s}"] = rng.standard_normal((nd, F, H))
                nodes += [
                    helper.make_node("ReduceMean", ["x"], [f"m{s}"], axes=[0]),
                    helper.make_node("MatMul", [f"m{s}", f"M{s}"], [f"t{s}"]),
                    helper.make_node("Tanh", [f"t{s}"], [s]),
                ]
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
    tensors = [numpy_helper.from_array(v.astype(dtype) if v.dtype == np.float64 else v, k) for k, v in inits.items()]
    x_shape = [N, T, F] if layout else [T, N, F]
    graph = helper.make_graph(
        nodes,
        "rec",
        [helper.make_tensor_value_info("x", elem, x_shape)],
        [helper.make_tensor_value_info("y", elem, None)],
        initializer=tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 9
    return model


def check(op, *, tol64=1e-6, tol32=2e-4, **kw):
    """float64 VJP (reference evaluator) vs central differences; float32 VJP in onnxruntime
    vs the same (onnxruntime runs layout 0 only)."""
    rng = np.random.default_rng(7)
    layout = kw.get("layout", 0)
    x = rng.standard_normal((N, T, F) if layout else (T, N, F))
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
    got32 = ort_session(g32, threads=1).run(
        [GRAD_OUTPUT_GRAD], {"x": x.astype(np.float32), GRAD_INPUT_COTANGENT: cot.astype(np.float32)}
    )[0]
    e32 = rel_err(got32, expected)
    assert e32 <= tol32, f"float32 onnxruntime VJP vs finite differences: {e32:.2e}"


DIRECTIONS = ["forward", "reverse", "bidirectional"]
# bidirectional runs both sweeps; the one-direction variants of the longer checks are slow
MOSTLY_SLOW = [pytest.param(d, marks=pytest.mark.slow) for d in DIRECTIONS[:2]] + DIRECTIONS[2:]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_directions(op, direction):
    check(op, direction=direction)


@pytest.mark.parametrize("direction", MOSTLY_SLOW)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_initial_states_and_layout1(op, direction):
    check(op, direction=direction, init=True)
    check(op, direction=direction, init=True, layout=1)


@pytest.mark.parametrize("direction", MOSTLY_SLOW)
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_sequence_lens(op, direction):
    check(op, direction=direction, seq=[T, 2], init=True)
    check(op, direction=direction, seq=[0, 3], init=True, outputs="h")


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_only_final_state_used(op):
    check(op, direction="bidirectional", init=True, outputs="h")


@pytest.mark.parametrize(
    "op, acts",
    [
        ("LSTM", ["Relu", "Sigmoid", "Tanh", "Tanh", "Relu", "Sigmoid"]),
        ("GRU", ["Tanh", "Relu", "Sigmoid", "Sigmoid"]),
        ("RNN", ["Relu", "Sigmoid"]),
    ],
)
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
    x = rng.standard_normal((T, N, F)).astype(np.float32)
    for kw in (
        {"direction": "bidirectional", "init": True, "clip": 0.7},
        {"direction": "reverse", "seq": [3, 0], "peep": op == "LSTM", "lbr": 1},
    ):
        model = recurrent_model(op, np.float32, **kw)
        got = ort_session(model, threads=1).run(None, {"x": x})[0]
        want = reference(model).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lstm_recomputed_cell_state_is_onnxruntimes():
    """The cell states the backward recomputes equal the op's own Y_c (float32, onnxruntime)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, N, F)).astype(np.float32)
    for kw in ({"direction": "bidirectional", "init": True, "peep": True}, {"direction": "reverse", "seq": [3, 1]}):
        model = recurrent_model("LSTM", np.float32, **kw)
        gm = gradient_model(model, loss="cotangent")
        cells = {o: re.search(r"/lstm_c(\d)_t(\d+)_", o) for n in gm.graph.node for o in n.output}
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
                np.testing.assert_allclose(state[d, t_last][0, n], yc[d, n], rtol=1e-6, atol=1e-6)


# -- exported torch models --------------------------------------------------------------------
class RecurrentNet(torch.nn.Module):
    """Two-layer bidirectional nn.LSTM/GRU/RNN with a Linear head on the mean output plus the
    last layer's final states (so Y, Y_h and, for the LSTM, Y_c all carry cotangents).

    ``view``: the input layout, all read as (N, T, F): "ntf" (N, T, F), "nct" (N, C=F, T),
    "nchw" (N, 1, T, F) (rows of an image as time steps) or "nf" (N, T*F). advonnx's model
    spec takes images and feature vectors, so only the last two load with ``load_model``."""

    def __init__(self, kind: str, view: str, steps: int = 6, features: int = 4, hidden: int = 5, classes: int = 3):
        super().__init__()
        self.view, self.steps, self.features = view, steps, features
        self.rnn = getattr(torch.nn, kind)(features, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(2 * hidden, classes)
        self.input_shape = {
            "ntf": (steps, features),
            "nct": (features, steps),
            "nchw": (1, steps, features),
            "nf": (steps * features,),
        }[view]

    def to_ntf(self, x):
        if self.view == "nct":
            return x.transpose(1, 2)
        if self.view == "nchw":
            return x[:, 0]
        if self.view == "nf":
            return x.reshape(-1, self.steps, self.features)
        return x

    def forward(self, x):
        x = self.to_ntf(x)
        y, state = self.rnn(x)
        states = state if isinstance(state, tuple) else (state,)
        feat = y.mean(1)
        for s in states:
            feat = feat + s[-2:].transpose(0, 1).reshape(x.shape[0], -1)
        return self.head(torch.tanh(feat))


KINDS = [("LSTM", "nct"), ("LSTM", "nchw"), ("GRU", "ntf"), ("GRU", "nf"), ("RNN", "nchw")]
EXPORTERS = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo")]


@functools.cache
def exported(kind: str, view: str, dynamo: bool):
    from .nets import export

    torch.manual_seed(0)
    net = RecurrentNet(kind, view)
    # a few Adam steps on a toy task (the class is which third of the sequence has the
    # largest mean), so that predictions depend on the input and PGD has decisions to flip
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    x = torch.rand(64, *net.input_shape)
    seq = net.to_ntf(x)
    y = torch.stack([c.mean((1, 2)) for c in seq.chunk(3, dim=1)], 1).argmax(1)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    return net, export(net, dynamo=dynamo)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("kind, view", KINDS)
def test_torch_recurrent_gradient_matches_autograd(kind, view, dynamo, tmp_path):
    from .test_models import assert_per_sample, run_grad, sample, torch_value_and_grad

    net, model = exported(kind, view, dynamo)
    ops = {n.op_type for n in model.graph.node}
    if not (kind == "RNN" and dynamo):  # the dynamo exporter unrolls nn.RNN into MatMul/Tanh
        assert kind in ops
    assert unsupported_ops(model) == []
    x, y = sample(net, n=3)
    gm, (scores, _, g) = run_grad(model, "ce", x, y)
    check_default_domain(gm)
    ts, _, tg = torch_value_and_grad(net, x, y, "ce")
    np.testing.assert_allclose(scores, ts, rtol=1e-4, atol=1e-5)
    assert_per_sample(g, tg, tol=1e-4)

    if view not in ("nchw", "nf"):
        return
    path = tmp_path / "rnn.onnx"
    onnx.save(model, path)
    m = advonnx.load_model(path)
    assert m.gradient_mode("auto", loss="ce") == "exact"
    xa = np.random.default_rng(1).uniform(0, 1, (8, *net.input_shape)).astype(np.float32)
    eps = 0.1
    res = advonnx.attack(m, xa, None, "pgd", norm="linf", eps=eps, steps=10, gradient="auto")
    assert res.gradient == "exact"
    assert np.abs(res.x_adv - xa).max() <= eps * (1 + 1e-6)
    clean_loss = losses.compute("ce", m.predict(xa), res.labels, probabilities=False)
    adv_loss = losses.compute("ce", m.predict(res.x_adv), res.labels, probabilities=False)
    assert np.all(adv_loss > clean_loss) and res.success.mean() >= 0.25


def test_sequence_length_shape_inference_misses():
    """T hidden from onnx shape inference (a Reshape whose shape went through Mod) is found
    by two onnxruntime runs, and the graph built for it checks it at run time."""
    model = recurrent_model("LSTM", np.float32, direction="bidirectional")
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.full(3, 1000, np.int64), "big"))
    g.node.insert(0, helper.make_node("Shape", ["x"], ["xs"]))
    g.node.insert(1, helper.make_node("Mod", ["xs", "big"], ["xs2"]))
    g.node.insert(2, helper.make_node("Reshape", ["x", "xs2"], ["xr"]))
    for n in g.node[3:]:
        n.input[:] = ["xr" if i == "x" else i for i in n.input]
    g.input[0].type.tensor_type.shape.dim[1].dim_param = "N"
    assert unsupported_ops(model) == []
    gm = gradient_model(model, loss="cotangent")
    plain = recurrent_model("LSTM", np.float32, direction="bidirectional")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, N, F)).astype(np.float32)
    y = ort_session(plain, threads=1).run(None, {"x": x})[0]
    cot = rng.standard_normal(y.shape).astype(np.float32)
    want = ort_session(gradient_model(plain, loss="cotangent"), threads=1).run(
        [GRAD_OUTPUT_GRAD], {"x": x, GRAD_INPUT_COTANGENT: cot}
    )[0]
    got = ort_session(gm, threads=1).run([GRAD_OUTPUT_GRAD], {"x": x, GRAD_INPUT_COTANGENT: cot})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # fed a longer sequence anyway (input declared dynamic), the gradient graph refuses
    for m in (model, gm):
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    x_long = rng.standard_normal((T + 1, N, F)).astype(np.float32)
    y_long = ort_session(model, threads=1).run(None, {"x": x_long})[0]
    with pytest.raises(Exception, match="[Ss]plit"):
        ort_session(gm, threads=1).run([GRAD_OUTPUT_GRAD], {"x": x_long, GRAD_INPUT_COTANGENT: np.zeros_like(y_long)})


def test_refusals():
    model = recurrent_model("LSTM", np.float32, acts=["HardSigmoid", "Tanh", "Tanh"])
    with pytest.raises(RuleUnavailable, match="LSTM.*HardSigmoid"):
        gradient_model(model, loss="cotangent")
    assert unsupported_ops(model) == ["LSTM"]
    forget = recurrent_model("LSTM", np.float32)
    next(n for n in forget.graph.node if n.op_type == "LSTM").attribute.append(helper.make_attribute("input_forget", 1))
    with pytest.raises(RuleUnavailable, match="LSTM.*input_forget"):
        gradient_model(forget, loss="cotangent")
    tied = recurrent_model("RNN", np.float32)  # W shifted by the mean of x
    tied.graph.node.insert(0, helper.make_node("ReduceMean", ["x"], ["xm"], keepdims=0))
    tied.graph.node.insert(1, helper.make_node("Add", ["W", "xm"], ["Wx"]))
    next(n for n in tied.graph.node if n.op_type == "RNN").input[1] = "Wx"
    with pytest.raises(RuleUnavailable, match="RNN.*weights depend on the input"):
        gradient_model(tied, loss="cotangent")
    dyn = recurrent_model("GRU", np.float32)
    dyn.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    with pytest.raises(RuleUnavailable, match="GRU.*sequence length is dynamic"):
        gradient_model(dyn, loss="cotangent")
