"""Issue 15, no self-inflicted gradient masking: losses on logits, never probabilities, and
straight-through (BPDA) gradients for piecewise-constant ops.

References: torch autograd in float64 on twins of the tiny models' own weights, and plain NumPy.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import advonnx
from advonnx.leaderboard import masking_notes, summarize
from advonnx.oracles import EstimatorConfig
from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps
from models import save, small_cnn

torch = pytest.importorskip("torch")  # without torch the module is skipped, not a collection error

SUITES = Path(__file__).resolve().parents[1] / "advonnx" / "suites"


def with_head(model: onnx.ModelProto, temperature: float, *, op: str = "Softmax", after=()) -> onnx.ModelProto:
    """``model`` (one logits output) followed by Mul(T) and a final ``op`` along axis 1, then the
    shape-only ops ``after`` (``"unsqueeze_flatten"``: the activation acts on an (N, C, 1) tensor)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    out = g.output[0].name
    g.initializer.append(numpy_helper.from_array(np.array(temperature, np.float32), "wrap_T"))
    g.node.append(helper.make_node("Mul", [out, "wrap_T"], ["scaled"]))
    cur = "scaled"
    if "unsqueeze_flatten" in after:
        g.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "wrap_axis"))
        g.node.append(helper.make_node("Unsqueeze", [cur, "wrap_axis"], ["scaled3"]))
        cur = "scaled3"
    kw = {} if op == "Sigmoid" else {"axis": 1}
    g.node.append(helper.make_node(op, [cur], ["act"], **kw))
    final = "act"
    if "unsqueeze_flatten" in after:
        g.node.append(helper.make_node("Flatten", ["act"], ["probs"], axis=1))
        final = "probs"
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, ["N", None]))
    return m


def torch_twin(model: onnx.ModelProto):
    """small_cnn's logits z(x) in float64 torch, from the ONNX initializers."""
    w = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float64)) for t in model.graph.initializer}

    def logits(x):
        h = torch.relu(torch.nn.functional.conv2d(x, w["cw"], w["cb"], padding=1))
        return h.mean(dim=(2, 3)) @ w["fw"] + w["fb"]

    return logits


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (12, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 12)


def _grad64(fn, x):
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    fn(xt).sum().backward()
    return xt.grad.numpy()


def test_softmax_head_is_looked_through_and_gradients_are_exact(tmp_path, batch):
    x, y = batch
    base = small_cnn(seed=3)
    T = 3.0
    m = advonnx.load_model(save(with_head(base, T), tmp_path / "t.onnx"))
    s = m.spec
    assert (s.attacked_output, s.attacked_op, s.attacked_scores, s.scores) == (
        "scaled",
        "Softmax",
        "logits",
        "probabilities",
    )
    assert "attacked tensor: 'scaled' (input of the final Softmax); decisions from 'act'" in s.notes
    z = torch_twin(base)
    zt = T * z(torch.from_numpy(x.astype(np.float64))).detach().numpy()
    scores, attacked = m.predict_both(x)
    np.testing.assert_allclose(attacked, zt, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, np.exp(zt) / np.exp(zt).sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.attack_scores(x), attacked)
    yt = torch.from_numpy(y)
    for loss, fn in (
        ("ce", lambda xt: torch.nn.functional.cross_entropy(T * z(xt), yt, reduction="sum")),
        (
            "margin",
            lambda xt: (
                lambda zz: (
                    (zz - 1e9 * torch.nn.functional.one_hot(yt, 3)).max(1).values - zz.gather(1, yt[:, None])[:, 0]
                )
            )(T * z(xt)),
        ),
    ):
        value, g = m.value_and_grad(x, y, loss=loss, gradient="exact")
        np.testing.assert_allclose(g, _grad64(fn, x), rtol=1e-3, atol=1e-5)
    # the cotangent VJP is of the logits as well
    cot = np.random.default_rng(1).normal(size=(12, 3)).astype(np.float32)
    _, g = m.value_and_grad(x, cotangent=cot, gradient="exact")
    np.testing.assert_allclose(
        g, _grad64(lambda xt: T * z(xt) * torch.from_numpy(cot).double(), x), rtol=1e-3, atol=1e-5
    )


def test_scale_free_ce_keeps_the_direction_where_ce_underflows(tmp_path, batch):
    x, _ = batch
    base = small_cnn(seed=3)
    T = 2000.0  # every sample saturates: softmax(T·z)_y rounds to 1 in float32 and float64
    m = advonnx.load_model(save(with_head(base, T), tmp_path / "t.onnx"))
    y = m.classify(x)
    z = torch_twin(base)
    yt = torch.from_numpy(y)

    def log_odds(xt):
        zz = T * z(xt)
        others = zz - 1e30 * torch.nn.functional.one_hot(yt, 3)
        return torch.logsumexp(others, 1) - zz.gather(1, yt[:, None])[:, 0]

    ref = _grad64(log_odds, x)
    m.estimator = EstimatorConfig(samples=64)  # q = d orthogonal directions: exact up to O(σ²)
    for mode in ("exact", "estimated"):
        value, g = m.value_and_grad(x, y, loss="ce", gradient=mode, scale_free=True)
        flat, rflat = g.reshape(12, -1).astype(np.float64), ref.reshape(12, -1)
        cos = (flat * rflat).sum(1) / np.linalg.norm(flat, axis=1) / np.linalg.norm(rflat, axis=1)
        assert cos.min() > (0.9999 if mode == "exact" else 0.99), (mode, cos)
    value, g = m.value_and_grad(x, y, scale_free=True)
    np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    np.testing.assert_allclose(value, log_odds(torch.from_numpy(x.astype(np.float64))).detach().numpy(), rtol=1e-4)
    # the plain CE gradient is the true one: ~0 here (that is why PGD asks for the scale-free one)
    _, g_ce = m.value_and_grad(x, y, loss="ce", gradient="exact")
    assert np.abs(g_ce).max() < 1e-3 * np.abs(ref).max()


def test_logits_rule_off_attacks_probabilities_and_flags_zero_gradients(tmp_path, batch):
    x, y = batch
    path = save(with_head(small_cnn(seed=3), 200.0), tmp_path / "t200.onnx")
    on = advonnx.load_model(path)
    off = advonnx.load_model(path, logits_rule=False)
    assert off.spec.attacked_output == "" and off.spec.attacked_scores == "probabilities"
    assert off.spec.sources["logits_rule"] == "override" and not off.spec.logits_rule
    assert any("logits rule off" in n for n in off.spec.notes)
    np.testing.assert_array_equal(off.predict(x), on.predict(x))
    np.testing.assert_array_equal(off.attack_scores(x), off.predict(x))
    # losses on probabilities: -log p_y in float64
    p = off.predict(x).astype(np.float64)
    np.testing.assert_allclose(off.loss(off.predict(x), y), -np.log(np.clip(p[np.arange(12), y], 1e-12, 1)))
    pred = on.classify(x)
    r_off = advonnx.attack(off, x, pred, "pgd", eps=0.1, steps=5, random_start=False)
    r_on = advonnx.attack(on, x, pred, "pgd", eps=0.1, steps=5, random_start=False)
    saturated = off.predict(x).max(1) == 1.0
    assert saturated.any()
    np.testing.assert_array_equal(r_off.zero_gradient.astype(bool)[saturated], True)
    np.testing.assert_array_equal(r_off.linf[saturated], 0.0)  # masked: PGD never moved
    assert not r_on.zero_gradient.astype(bool).any() and np.all(r_on.linf > 0.09)


@pytest.mark.parametrize("head", ["sigmoid_binary", "sigmoid_multilabel"])
def test_sigmoid_heads_attack_the_pre_sigmoid_logit(tmp_path, batch, head):
    x, _ = batch
    m = advonnx.load_model(save(small_cnn(head=head, seed=1), tmp_path / "s.onnx"))
    logits = advonnx.load_model(
        save(
            small_cnn(head="logits" if head == "sigmoid_multilabel" else "sigmoid_binary", seed=1), tmp_path / "l.onnx"
        ),
        logits_rule=False,
    )
    assert m.spec.attacked_op == "Sigmoid" and m.spec.attacked_output == "logits"
    scores, attacked = m.predict_both(x)
    if head == "sigmoid_binary":
        p = logits.predict(x)[:, 1].astype(np.float64)  # [1 - p, p]
        zref = np.log(p / (1 - p))
        np.testing.assert_allclose(attacked[:, 0], 0.0)
        np.testing.assert_allclose(attacked[:, 1], zref, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(scores[:, 1], p, rtol=1e-6)
    else:
        np.testing.assert_allclose(attacked, logits.predict(x), rtol=1e-6)
        np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits.predict(x).astype(np.float64))), rtol=1e-5)


def test_shape_ops_after_the_softmax_are_replayed_and_wrong_axis_refused(tmp_path, batch):
    x, _ = batch
    base = small_cnn(seed=2)
    m = advonnx.load_model(save(with_head(base, 5.0, after=("unsqueeze_flatten",)), tmp_path / "a.onnx"))
    assert m.spec.attacked_output == "scaled3"
    zt = 5.0 * torch_twin(base)(torch.from_numpy(x.astype(np.float64))).detach().numpy()
    np.testing.assert_allclose(m.attack_scores(x), zt, rtol=1e-5, atol=1e-5)
    # Softmax over the singleton axis 2 is not a softmax over classes: the rule is not applied
    wrong = with_head(base, 5.0, after=("unsqueeze_flatten",))
    next(n for n in wrong.graph.node if n.op_type == "Softmax").attribute[0].i = 2
    w = advonnx.load_model(save(wrong, tmp_path / "w.onnx"))
    assert w.spec.attacked_output == ""
    assert any("does not act along the class axis" in n for n in w.spec.notes)


def test_scikit_learn_two_class_sigmoid_is_looked_through():
    """The suite's bc_mlp (skl2onnx): ZipMap(Concat([1 − σ(z), σ(z)])); attacks see [0, z]."""
    m = advonnx.load_model(str(SUITES / "models" / "bc_mlp.onnx"))
    assert m.spec.attacked_op == "Sigmoid" and m.spec.attacked_output
    x = np.load(SUITES / "data" / "breast_cancer_test.npz")["x"][:20]
    p, z = m.predict_both(x)
    np.testing.assert_array_equal(z[:, 0], 0.0)
    np.testing.assert_allclose(1 / (1 + np.exp(-z[:, 1].astype(np.float64))), p[:, 1], rtol=1e-5, atol=1e-7)


def test_zipmap_over_softmax(tmp_path):
    rng = np.random.default_rng(0)
    wt, b = rng.normal(size=(4, 3)).astype(np.float32) * 20, np.zeros(3, np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("ZipMap", ["probs"], ["zip"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]),
    ]
    zip_type = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    graph = helper.make_graph(
        nodes,
        "zip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_value_info("zip", zip_type)],
        initializer=[numpy_helper.from_array(wt, "W"), numpy_helper.from_array(b, "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    proto.ir_version = 8
    m = advonnx.load_model(save(proto, tmp_path / "z.onnx"))
    x = rng.uniform(0, 1, (6, 4)).astype(np.float32)
    assert m.spec.attacked_output == "logits"
    np.testing.assert_allclose(m.attack_scores(x), x @ wt + b, rtol=1e-5, atol=1e-4)
    _, g = m.value_and_grad(x, np.zeros(6, np.int64), loss="margin", gradient="exact")
    zz = x.astype(np.float64) @ wt
    other = np.argmax(np.where(np.arange(3) == 0, -np.inf, zz), axis=1)
    np.testing.assert_allclose(g, wt.T[other] - wt.T[0], rtol=1e-5, atol=1e-4)


def _op_model(op: str) -> tuple[onnx.ModelProto, np.ndarray]:
    """out = op(3·x) @ W on (N, 5) features."""
    w = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "three"], ["x3"]),
        helper.make_node(op, ["x3"], ["q"]),
        helper.make_node("MatMul", ["q", "W"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(3.0, np.float32), "three")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto, w


@pytest.mark.parametrize("op", ["Round", "Floor", "Ceil", "Sign"])
def test_piecewise_constant_ops_pass_the_gradient_straight_through(tmp_path, op):
    proto, w = _op_model(op)
    m = advonnx.load_model(save(proto, tmp_path / f"{op}.onnx"), layout="NF")
    assert m.straight_through_ops() == [op] and m.gradient_label("exact") == "exact+straight-through"
    x = np.random.default_rng(1).uniform(-1, 1, (4, 5)).astype(np.float32)
    cot = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    _, g = m.value_and_grad(x, cotangent=cot, gradient="exact")
    np.testing.assert_allclose(g, 3.0 * cot @ w.T, rtol=1e-5, atol=1e-5)  # d(3x)/dx = 3, op = identity
    assert advonnx.attack(m, x, None, "fgsm", eps=0.1).gradient == "exact+straight-through"


def test_inspect_names_attacked_tensor_and_straight_through_ops(tmp_path):
    base = small_cnn(seed=3)
    m = with_head(base, 50.0)
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(31.0, np.float32), "levels"))
    for node in g.node:
        node.input[:] = ["quantized" if i == "image" else i for i in node.input]
    g.node.insert(0, helper.make_node("Mul", ["image", "levels"], ["x31"]))
    g.node.insert(1, helper.make_node("Round", ["x31"], ["r31"]))
    g.node.insert(2, helper.make_node("Div", ["r31", "levels"], ["quantized"]))
    path = save(m, tmp_path / "q.onnx")
    from cli_inprocess import run_cli

    r = run_cli("inspect", path, columns=250)  # in this process
    assert r.returncode == 0, r.stderr
    assert "exact + straight-through: Round" in r.stdout
    assert "attacked tensor: 'scaled' (input of the final Softmax); decisions from 'act'" in r.stdout


def test_rows_and_leaderboard_record_masking_facts(tmp_path):
    """A probability-only model (a softmax written out as Exp/ReduceSum/Div: no Softmax node to
    look through) with confident weights: saturated rows, float64 losses; a Sign in front gives
    straight-through rows."""
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(5, 3)) * 400).astype(np.float32)
    nodes = [
        helper.make_node("Sign", ["x"], ["s"]),
        helper.make_node("Add", ["s", "x"], ["sx"]),
        helper.make_node("MatMul", ["sx", "W"], ["z0"]),
        helper.make_node("ReduceMax", ["z0"], ["zmax"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["z0", "zmax"], ["z"]),
        helper.make_node("Exp", ["z"], ["e"]),
        helper.make_node("ReduceSum", ["e", "one"], ["tot"], keepdims=1),
        helper.make_node("Div", ["e", "tot"], ["p"]),
    ]
    graph = helper.make_graph(
        nodes,
        "p",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1], np.int64), "one")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = save(proto, tmp_path / "p.onnx")
    m = advonnx.load_model(path)
    assert m.spec.scores == "probabilities" and m.spec.attacked_scores == "probabilities" and not m.spec.attacked_output
    x = rng.uniform(0, 0.3, (10, 5)).astype(np.float32)
    p = m.predict(x)
    sat_ref = p.max(1) == 1.0
    assert sat_ref.any()
    y = p.argmax(1)
    assert m.loss(p, y).dtype == np.float64
    np.savez(tmp_path / "d.npz", x=x, y=y)
    suite = Suite(
        name="t",
        models=[ModelEntry("m", path, overrides={"value_range": (0, 1)})],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"), corruptions=[])],
        attacks=[AttackEntry("fgsm", "linf", parse_eps("0.01"))],
        save_examples=0,
    )
    _, table = Runner(suite, out=tmp_path / "out").run()
    ordered = [r for r in table.to_pylist() if r["kind"] == "adversarial"]
    assert len(ordered) == 10
    assert {r["gradient"] for r in ordered} == {"exact+straight-through"}
    assert {r["straight_through"] for r in ordered} == {"Sign"}
    assert sum(r["saturated"] for r in ordered) == int(sat_ref.sum())
    zero = [r["zero_gradient"] for r in ordered]
    assert all(z is not None for z in zero) and sum(zero) >= 1
    notes = " ".join(masking_notes(summarize(table)))
    assert "exact + straight-through: Sign" in notes
    assert f"{int(sat_ref.sum())} samples score p = 1" in notes and "zero gradient" in notes


# -- acceptance on the suite's brain models (slow) ---------------------------------------------
def _robust(res, y) -> float:
    """AutoAttack counting: clean correct and still correct after the attack."""
    return float(np.mean((np.asarray(res.clean_pred) == y) & (np.asarray(res.adv_pred) == y)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["brain_mobilenet", "brain_cnn"])
def test_softmax_temperature_does_not_change_robust_accuracy(tmp_path, brain_patches, name):
    """Softmax(T·z) wrappers, T ∈ {1, 50, 200}, 300 patches: PGD-10 and Square see the same
    robust accuracy (the logits rule); with the rule off, saturated probabilities inflate it."""
    x, y = brain_patches
    base = onnx.load(str(SUITES / "models" / f"{name}.onnx"))
    pgd, square, off = {}, {}, {}
    for T in (1.0, 50.0, 200.0):
        path = save(with_head(base, T), tmp_path / f"{name}_T{T:g}.onnx")
        m = advonnx.load_model(path, value_range=(0, 1))
        assert m.spec.attacked_output == "scaled"
        pgd[T] = _robust(advonnx.attack(m, x, y, "pgd", norm="linf", eps=2 / 255, steps=10, rng=0), y)
        square[T] = _robust(advonnx.attack(m, x, y, "square", norm="linf", eps=4 / 255, max_queries=300, rng=0), y)
        m_off = advonnx.load_model(path, value_range=(0, 1), logits_rule=False)
        off[T] = _robust(advonnx.attack(m_off, x, y, "pgd", norm="linf", eps=2 / 255, steps=10, rng=0), y)
    print(f"\n{name}: PGD-10 robust {pgd}; Square-300 robust {square}; PGD-10 with the rule off {off}")
    assert max(pgd.values()) - min(pgd.values()) <= 0.01, pgd
    assert max(square.values()) - min(square.values()) <= 0.01, square
    assert abs(off[1.0] - pgd[1.0]) <= 0.01  # T = 1 does not saturate: the rule changes nothing
    # rule off: masked, robust accuracy inflated (brain_mobilenet: the 36 % → 88 %; the
    # robust brain_cnn has fewer samples to lose)
    assert off[200.0] >= pgd[200.0] + (0.2 if name == "brain_mobilenet" else 0.01), (off, pgd)


@pytest.mark.slow
def test_quantizer_pgd100_matches_a_straight_through_torch_twin(tmp_path, brain_cnn_path, brain_patches):
    """Round(31·x)/31 in front of brain_cnn, in the graph: our PGD-100 (exact gradients with the
    Round passed straight through) vs the same PGD on a PyTorch twin of the weights using
    ``x + (round(31x)/31 − x).detach()``, on 150 patches."""
    from reference.brain_cnn_torch import brain_cnn_from_onnx

    x, y = brain_patches[0][:150], brain_patches[1][:150]
    m = onnx.load(brain_cnn_path)
    g = m.graph
    image = g.input[0].name
    for node in g.node:
        node.input[:] = ["quantized" if i == image else i for i in node.input]
    g.initializer.append(numpy_helper.from_array(np.array(31.0, np.float32), "levels"))
    g.node.insert(0, helper.make_node("Mul", [image, "levels"], ["x31"]))
    g.node.insert(1, helper.make_node("Round", ["x31"], ["r31"]))
    g.node.insert(2, helper.make_node("Div", ["r31", "levels"], ["quantized"]))
    model = advonnx.load_model(save(m, tmp_path / "quantized_cnn.onnx"), value_range=(0, 1))
    assert model.straight_through_ops() == ["Round"]
    net = brain_cnn_from_onnx(brain_cnn_path)
    torch.set_num_threads(1)

    def twin(xt):
        return net(xt + (torch.round(31 * xt) / 31 - xt).detach())

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), twin(xt).numpy(), rtol=1e-4, atol=1e-4)
    eps, alpha, steps = 4 / 255, 1 / 255, 100
    ours = advonnx.attack(model, x, y, "pgd", norm="linf", eps=eps, step_size=alpha, steps=steps, random_start=False)
    assert ours.gradient == "exact+straight-through"
    adv = xt.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(twin(adv), yt, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.clamp(xt + torch.clamp(adv.detach() + alpha * grad.sign() - xt, -eps, eps), 0, 1)
    with torch.no_grad():
        theirs_pred = twin(adv).argmax(1).numpy()
    clean = model.classify(x) == y
    ours_robust = _robust(ours, y)
    theirs_robust = float(np.mean(clean & (theirs_pred == y)))
    print(
        f"\nquantized brain_cnn: clean {clean.mean():.3f}, PGD-100 robust ours {ours_robust:.3f}, "
        f"torch straight-through twin {theirs_robust:.3f}"
    )
    assert abs(ours_robust - theirs_robust) <= 0.03
    assert ours_robust <= clean.mean() - 0.05  # the gradient is not masked: the attack breaks samples


def test_quantize_dequantize_pair_is_straight_through(tmp_path):
    """QDQ fake quantization on the input path: without a rule the integer tensor cut the path
    (a silent zero gradient); the pair now passes the cotangent as the identity."""
    w = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"]),
        helper.make_node("MatMul", ["dq", "W"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(np.array(1 / 31, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.uint8), "zp"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    m = advonnx.load_model(save(proto, tmp_path / "qdq.onnx"), layout="NF")
    assert m.straight_through_ops() == ["DequantizeLinear", "QuantizeLinear"]
    x = np.random.default_rng(1).uniform(0, 1, (4, 5)).astype(np.float32)
    np.testing.assert_allclose(m.predict(x), (np.round(x * 31) / 31) @ w, rtol=1e-5, atol=1e-5)
    cot = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    _, g = m.value_and_grad(x, cotangent=cot, gradient="exact")
    np.testing.assert_allclose(g, cot @ w.T, rtol=1e-5, atol=1e-5)
