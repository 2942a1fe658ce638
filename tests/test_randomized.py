"""Randomized models (issue 15): Dropout in training mode and Random*/Bernoulli/Multinomial ops
are detected at load; decisions are majorities over ``votes`` evaluations, gradients averages
over ``eot`` draws (Athalye et al. 2018), every evaluation counted; a Dropout CNN trained and
exported from torch in training mode is broken more by PGD with EOT than without."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import advonnx
from advonnx.attacks.base import AttackContext
from advonnx.model import OnnxModel, infer_spec
from advonnx.xp import Random
from models import _model, save, small_cnn


def _load(proto, **overrides):
    return OnnxModel(proto, infer_spec(proto, "m.onnx", {"value_range": (0, 1), **overrides}))


def _dropout_linear(d=64, classes=3, ratio=0.5, training=True, seed=0):
    """z = Dropout(x; ratio, training) W + b: the gradient of one draw is mask/(1 − ratio) · W."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (d, classes)).astype(np.float32)
    b = rng.normal(0, 0.1, classes).astype(np.float32)
    proto = _model(
        [helper.make_node("Dropout", ["x", "ratio", "mode"], ["h"]), helper.make_node("Gemm", ["h", "W", "b"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", classes])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array(ratio, np.float32), "ratio"),
            numpy_helper.from_array(np.array(training), "mode"),
        ],
    )
    return proto, w, b


def _with_noise(op: str) -> onnx.ModelProto:
    """small_cnn whose logits get a random term from ``op``."""
    m = small_cnn(size=8)
    g = m.graph
    out = g.output[0].name
    if op in ("RandomNormalLike", "RandomUniformLike", "Bernoulli"):
        src = out
        if op == "Bernoulli":
            g.node.append(helper.make_node("Sigmoid", [out], ["pb"]))
            src = "pb"
        g.node.append(helper.make_node(op, [src], ["noise"]))
    elif op == "Multinomial":
        g.node.append(helper.make_node("Multinomial", [out], ["draw"], sample_size=1))
        g.node.append(helper.make_node("Cast", ["draw"], ["noise"], to=TensorProto.FLOAT))
    else:
        g.node.append(helper.make_node(op, [], ["noise"], shape=[1, 3]))
    g.node.append(helper.make_node("Add", [out, "noise"], ["noisy"]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("noisy", TensorProto.FLOAT, ["N", 3]))
    return m


@pytest.mark.parametrize(
    "op", ["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"]
)
def test_random_ops_are_detected(op):
    m = _load(_with_noise(op))
    assert m.spec.randomized == (op,)
    assert (m.votes, m.eot) == (11, 20)
    assert _load(small_cnn(size=8)).spec.randomized == ()
    assert (_load(small_cnn(size=8)).votes, _load(small_cnn(size=8)).eot) == (1, 1)


def test_dropout_counts_only_in_training_mode(tmp_path):
    train, _, _ = _dropout_linear(training=True)
    infer, _, _ = _dropout_linear(training=False)
    assert _load(train).spec.randomized == ("Dropout",)
    assert _load(infer).spec.randomized == ()
    assert _load(train, votes=3, eot=5).votes == 3 and _load(train, votes=3, eot=5).eot == 5
    from cli_inprocess import run_cli

    r = run_cli("inspect", save(train, tmp_path / "t.onnx"), columns=200)  # in this process
    assert r.returncode == 0, r.stderr
    assert "randomized" in r.stdout and "yes: Dropout" in r.stdout


def test_training_dropout_gradient_is_the_draws():
    # exact gradient of one draw: mask/(1 − ratio) · W[:, c]; the value <e_c, z> must be what that
    # same mask gives, recomputed in float64
    proto, w, b = _dropout_linear(d=64, ratio=0.25)
    m = _load(proto)
    assert m.gradient_mode("exact") == "exact"
    x = np.random.default_rng(1).uniform(0.5, 1, (16, 64)).astype(np.float32)
    c = np.arange(16) % 3
    cot = np.eye(3, dtype=np.float32)[c]
    value, grad = m.value_and_grad(x, cotangent=cot, gradient="exact")
    kept = grad / (w[:, c].T / 0.75)
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-5)  # each element kept (1) or dropped (0)
    mask = np.round(kept).astype(bool)
    assert 0.6 < mask.mean() < 0.9  # about 1 − ratio kept
    ref = (x.astype(np.float64) * mask / 0.75 * w[:, c].T.astype(np.float64)).sum(1) + b[c]
    # float32 sum of 64 terms of size ~1: its rounding error is absolute (~1e-6), so a value near 0
    # needs an atol besides the rtol
    np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-5)


def test_eot_averages_draws_and_counts_them():
    proto, w, _ = _dropout_linear(d=64, ratio=0.5)
    m = _load(proto)
    x = np.random.default_rng(2).uniform(0, 1, (6, 64)).astype(np.float32)
    c = np.arange(6) % 3
    cot = np.eye(3, dtype=np.float32)[c]
    for eot in (1, 400):
        ctx = AttackContext(
            m, n=6, rng=Random(0), gradient="exact", targeted=False, value_range=(0, 1), max_queries=None, eot=eot
        )
        _, g = ctx.vjp(x, cot, np.arange(6))
        assert (ctx.queries == eot).all()
        err = np.abs(g - w[:, c].T)  # E[mask / (1 − ratio)] = 1; one draw's s.d. is |W|
        if eot == 1:
            assert err.max() > 0.5 * np.abs(w).max()
        else:  # the mean of 400 draws: s.d. |W| / 20
            assert (err <= 5 * np.abs(w[:, c].T) / 20 + 1e-6).all()
    # decisions: one evaluation per vote, all counted
    ctx = AttackContext(m, n=6, rng=Random(0), gradient="exact", targeted=False, value_range=(0, 1), max_queries=None)
    ctx.classify(x, np.arange(6))
    assert (ctx.queries == 11).all() and ctx.eot == 20


# -- a Dropout CNN from torch ---------------------------------------------------------------------


def _bars(n, seed):
    """8×8 images, three classes: a horizontal bar, a vertical bar, a diagonal, in noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.4, (n, 1, 8, 8)).astype(np.float32)
    pos = rng.integers(1, 7, n)
    for i in range(n):
        if y[i] == 0:
            x[i, 0, pos[i], :] += 0.5
        elif y[i] == 1:
            x[i, 0, :, pos[i]] += 0.5
        else:
            x[i, 0, np.arange(8), np.arange(8)] += 0.5
    return np.clip(x, 0, 1), y


@pytest.fixture(scope="module")
def dropout_cnn(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(8 * 64, 3),
    )
    x, y = _bars(1200, 0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i : i + 64]), yt[i : i + 64]).backward()
            opt.step()
    path = tmp_path_factory.mktemp("dropout") / "dropout_cnn.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.train(),
            (xt[:2],),
            str(path),
            dynamo=False,
            training=torch.onnx.TrainingMode.TRAINING,
            do_constant_folding=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    return str(path)


@pytest.mark.slow
def test_majority_votes_are_stable(dropout_cnn):
    m = advonnx.load_model(dropout_cnn, value_range=(0, 1))
    assert m.spec.randomized == ("Dropout",) and m.gradient_mode("auto", loss="ce") == "exact"
    assert m.votes == 11
    x, y = _bars(200, 1)
    assert not np.array_equal(m.predict(x), m.predict(x))  # the Dropout is live (onnxruntime keeps it)
    before = m.queries
    voted = [m.classify(x) for _ in range(5)]
    assert m.queries - before == 5 * 11 * 200  # every evaluation counted
    unstable = sum((v != voted[0]).any() for v in voted)
    single = np.stack([m.classify(x, votes=1) for _ in range(5)])
    print(
        f"dropout CNN, 200 samples, 5 classify calls: samples whose label changed: "
        f"{int((single != single[0]).any(0).sum())} with one evaluation, {unstable} with 11 votes; "
        f"accuracy {(voted[0] == y).mean():.3f}"
    )
    assert unstable == 0
    assert (voted[0] == y).mean() > 0.9


@pytest.mark.slow
def test_pgd_with_eot_breaks_more_than_without(dropout_cnn):
    # exact gradients of one draw each (the training-mode Dropout rule); decisions by 11 votes
    from scipy.stats import binomtest

    m = advonnx.load_model(dropout_cnn, value_range=(0, 1))
    x, y = _bars(200, 2)
    runs = {eot: advonnx.attack(m, x, y, "pgd", norm="linf", eps=0.1, steps=10, rng=0, eot=eot) for eot in (1, 20)}
    kept = {eot: (r.clean_pred == y) & (r.adv_pred == y) for eot, r in runs.items()}
    robust = {eot: float(np.mean(k)) for eot, k in kept.items()}
    only_eot, only_plain = int((kept[1] & ~kept[20]).sum()), int((~kept[1] & kept[20]).sum())
    print(
        f"dropout CNN, 200 samples, PGD Linf eps=0.1 steps=10: clean {np.mean(runs[1].clean_pred == y):.3f}, "
        f"robust without EOT {robust[1]:.3f}, with EOT-20 {robust[20]:.3f}; broken only with EOT {only_eot}, "
        f"only without {only_plain}"
    )
    assert robust[20] < robust[1]
    # paired (McNemar's exact test on the discordant samples): EOT breaks more
    assert binomtest(only_eot, only_eot + only_plain, 0.5, alternative="greater").pvalue < 0.05
    # queries: 10 gradients × eot draws + 11 votes per decision, per sample
    assert (runs[20].queries >= 10 * 20).all() and (runs[20].queries > runs[1].queries).all()


def test_suite_rows_record_votes_and_eot(tmp_path):
    import json

    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps

    proto, _, _ = _dropout_linear(d=16, ratio=0.2)
    path = save(proto, tmp_path / "r.onnx")
    x = np.random.default_rng(3).uniform(0, 1, (12, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    suite = Suite(
        name="r",
        models=[ModelEntry("r", path, overrides={"value_range": [0, 1], "eot": 4})],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[AttackEntry("pgd", "linf", parse_eps("0.2"), {"steps": 3})],
        seed=1,
        masking_checks=False,
    )
    _, table = Runner(suite, out=tmp_path / "o", batch_size=64).run()
    rows = table.to_pylist()
    assert all(json.loads(r["settings"])["votes"] == 11 and json.loads(r["settings"])["eot"] == 4 for r in rows)
    # decisions are the voted ones: success agrees with the stored predictions
    assert all(r["success"] == (r["adv_pred"] != r["label"]) for r in rows)
    assert all(r["queries"] >= 3 * 4 for r in rows)  # 3 gradients of 4 draws each
