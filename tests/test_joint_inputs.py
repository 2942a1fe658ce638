"""Joint attacks on several inputs (``--attack-inputs``, advonnx.joint): a signal + covariates
model made here in torch; the packed gradient against torch autograd w.r.t. both inputs, each
input's budget and value range, rows from the CLI, and joint vs single-input strength."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_multi_input import F, SignalWithFeatures, _run_cli, data, export

import advonnx
from advonnx.errors import AdvonnxError
from advonnx.factory import with_spec
from advonnx.joint import JOINT_ATTACKS, JointInputModel, parse_attack_inputs

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def two_input(tmp_path_factory):
    torch.manual_seed(0)
    net = SignalWithFeatures()
    return net, export(net, tmp_path_factory.mktemp("joint") / "sig_feat.onnx")


def joint_model(path, weights=(1.0, 1.0), ranges=None):
    models = [advonnx.load_model(path, input_name="signal"), advonnx.load_model(path, input_name="features")]
    if ranges:
        models = [with_spec(m, value_range=r) for m, r in zip(models, ranges)]
    return JointInputModel(models, weights)


def unpacked(j, u):
    return {k: np.asarray(v, np.float64) for k, v in j.unpack(u).items()}


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_joint_gradient_matches_torch_autograd(two_input, loss):
    """d(loss.sum())/du == [w_s ∂L/∂signal, w_f ∂L/∂features] from torch autograd (float32 model)."""
    net, path = two_input
    w = (1.0, 4.0)
    j = joint_model(path, w)
    x, f, y = data(n=10)
    u = j.pack({"signal": x, "features": f})
    assert u.shape == (10, T_SIZE + F) and np.array_equal(u[:, T_SIZE:], f / np.float32(4.0))
    value, grad = j.value_and_grad(u, y, loss=loss)
    xs, fs = torch.tensor(x, requires_grad=True), torch.tensor(f, requires_grad=True)
    z = net(xs, fs)
    if loss == "ce":
        per = torch.nn.functional.cross_entropy(z, torch.tensor(y), reduction="none")
    else:  # advonnx's margin: best other logit minus the label's
        zy = z.gather(1, torch.tensor(y)[:, None])[:, 0]
        other = z.masked_fill(torch.nn.functional.one_hot(torch.tensor(y), 3).bool(), -1e9).max(1).values
        per = other - zy
    per.sum().backward()
    ref = np.concatenate([w[0] * xs.grad.numpy().reshape(10, -1), w[1] * fs.grad.numpy()], axis=1)
    np.testing.assert_allclose(value, per.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(grad, ref, atol=1e-4)
    for part in (slice(0, T_SIZE), slice(T_SIZE, None)):  # each input's block, relative to its size
        scale = np.abs(ref[:, part]).max()
        assert scale > 1e-5 and np.abs(grad[:, part] - ref[:, part]).max() <= 1e-4 * scale


T_SIZE = 64  # signal samples per packed vector (1 channel x T)


@pytest.mark.parametrize("name", JOINT_ATTACKS)
def test_joint_linf_respects_each_budget_and_range(two_input, name):
    """Per-input eps (signal 0.15, features 0.2) and per-input value ranges (signal [0.1, 0.9],
    features [0, 1]) hold on what the model is fed, and both bind somewhere."""
    _, path = two_input
    eps_s, eps_f = 0.15, 0.2
    j = joint_model(path, (1.0, eps_f / eps_s), ranges=[(0.1, 0.9), (0.0, 1.0)])
    x, f, y = data(n=12)
    u = j.pack({"signal": x, "features": f})
    settings = {"max_queries": 300} if name == "square" else {}
    res = advonnx.attack(j, u, y, name, norm="linf", eps=eps_s, rng=1, **settings)
    a, b = unpacked(j, u), unpacked(j, res.x_adv)
    ds, df = b["signal"] - a["signal"], b["features"] - a["features"]
    assert np.abs(ds).max() <= eps_s * (1 + 1e-6) and np.abs(df).max() <= eps_f * (1 + 1e-6)
    assert b["signal"].min() >= np.float32(0.1) and b["signal"].max() <= np.float32(0.9)
    assert b["features"].min() >= 0.0 and b["features"].max() <= 1.0
    # both budgets and both ranges bind: the attack used each input's own limits
    assert np.isclose(np.abs(ds).max(), eps_s, rtol=1e-5) and np.isclose(np.abs(df).max(), eps_f, rtol=1e-5)
    assert np.isclose(b["signal"].max(), 0.9, atol=1e-6) or np.isclose(b["signal"].min(), 0.1, atol=1e-6)
    assert np.isclose(b["features"].max(), 1.0) or np.isclose(b["features"].min(), 0.0)
    # rows' per-input norms say the same
    norms = j.input_norms(u, res.x_adv)
    assert max(n["features"]["linf"] for n in norms) == pytest.approx(np.abs(df).max())
    # success is what the model says on the unpacked inputs
    pred = net_pred(path, b)
    np.testing.assert_array_equal(np.asarray(res.success), pred != y)


def net_pred(path, inputs):
    m = advonnx.load_model(path, input_name="signal")
    return np.asarray(
        m.classify(inputs["signal"].astype(np.float32), extras={"features": inputs["features"].astype(np.float32)})
    )


def test_joint_l2_is_one_ball_on_the_scaled_vector(two_input):
    """l2: sum_i ‖δ_i‖² / w_i² <= eps² (a joint ball), reached by PGD."""
    _, path = two_input
    j = joint_model(path, (1.0, 3.0))
    x, f, y = data(n=8)
    u = j.pack({"signal": x, "features": f})
    res = advonnx.attack(j, u, y, "pgd", norm="l2", eps=0.3, steps=20, rng=2)
    a, b = unpacked(j, u), unpacked(j, res.x_adv)
    joint = np.sqrt(
        ((b["signal"] - a["signal"]) ** 2).reshape(8, -1).sum(1) + ((b["features"] - a["features"]) ** 2).sum(1) / 9.0
    )
    assert joint.max() <= 0.3 * (1 + 1e-5)
    np.testing.assert_allclose(np.asarray(res.l2), joint, rtol=1e-4)


@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_joint_at_least_as_strong_as_each_input_alone(two_input, name):
    """On the same samples and budgets, the joint attack breaks at least as many samples as the
    same attack on the signal alone or on the covariates alone (tolerance: one sample); success
    against the clean predictions (this untrained net's labels would be mostly wrong already)."""
    _, path = two_input
    x, f, y = data(n=40, seed=3)
    eps = 0.2
    ms = advonnx.load_model(path, input_name="signal")
    mf = advonnx.load_model(path, input_name="features")
    settings = dict(norm="linf", eps=eps, steps=20, rng=0)
    alone_s = np.asarray(advonnx.attack(ms, x, None, name, extras={"features": f}, **settings).success)
    alone_f = np.asarray(advonnx.attack(mf, f, None, name, extras={"signal": x}, **settings).success)
    j = JointInputModel([ms, mf])
    both = np.asarray(advonnx.attack(j, j.pack({"signal": x, "features": f}), None, name, **settings).success)
    n = len(y)
    assert both.mean() >= max(alone_s.mean(), alone_f.mean()) - 1.0 / n
    assert both.mean() > min(alone_s.mean(), alone_f.mean())  # the budgets add up: strictly more than the weaker


@pytest.mark.parametrize("name", ["cw", "deepfool", "jsma", "hsj"])
def test_unsupported_attacks_refuse_in_one_line(two_input, name):
    _, path = two_input
    j = joint_model(path)
    x, f, y = data(n=2)
    u = j.pack({"signal": x, "features": f})
    norm = "l0" if name == "jsma" else "l2"
    with pytest.raises(AdvonnxError, match=rf"^{name} does not attack several inputs jointly") as err:
        advonnx.attack(j, u, y, name, norm=norm, eps=0.1)
    assert "\n" not in str(err.value)


def test_parse_attack_inputs():
    assert parse_attack_inputs("a,b") == [("a", None), ("b", None)]
    assert parse_attack_inputs("a=0.01, b=2/255") == [("a", 0.01), ("b", pytest.approx(2 / 255))]
    for bad in ("a=0.01,b", "a,a", "a=-1,b=2", "a=x,b=1", ","):
        with pytest.raises(AdvonnxError, match="--attack-inputs"):
            parse_attack_inputs(bad)


def _rows(out):
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return pd.read_parquet(folder)


def test_cli_joint_rows_list_both_inputs(tmp_path, two_input):
    net, path = two_input
    x, f, y = data(n=8)
    np.savez(tmp_path / "d.npz", x=x, features=f, y=y)
    code = _run_cli(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack-inputs",
        "signal=0.02,features=0.1",
        "--attack",
        "pgd,fgsm",
        "--out",
        tmp_path / "o",
        "-q",
        "--no-masking-checks",
    )
    assert code == 0
    t = _rows(tmp_path / "o")
    assert len(t) == 16 and set(t["attacked_inputs"]) == {"signal,features"}
    assert set(t["eps"]) == {0.02}
    for _, row in t.iterrows():
        n = json.loads(row["input_norms"])
        assert n["signal"]["linf"] <= 0.02 * (1 + 1e-6) and n["features"]["linf"] <= 0.1 * (1 + 1e-6)
        assert (n["signal"]["eps"], n["features"]["eps"]) == pytest.approx((0.02, 0.1))
    # the recorded clean prediction is torch's on both inputs
    with torch.no_grad():
        ref = net(torch.tensor(x), torch.tensor(f)).argmax(1).numpy()
    first = t[t["attack"] == "pgd"].sort_values("sample_id")
    assert sorted(first["clean_pred"].tolist()) == sorted(ref.tolist())


def test_cli_joint_refusals_are_one_line(tmp_path, two_input, capsys):
    _, path = two_input
    x, f, y = data(n=4)
    np.savez(tmp_path / "d.npz", x=x, features=f, y=y)
    for args, needle in (
        (("--attack-inputs", "signal,features", "--attack", "cw"), "cw does not attack several inputs jointly"),
        (("--attack-inputs", "signal,features", "--attack", "pgd", "--corruptions", "all"), "corruptions"),
        (("--attack-inputs", "signal=0.01,features=0.1", "--attack", "pgd", "--eps", "0.1"), "drop --eps"),
        (
            ("--attack-inputs", "signal,features", "--input", "signal", "--attack", "pgd"),
            "name the attacked inputs once",
        ),
        (("--attack-inputs", "signal,nope", "--attack", "pgd"), "nope"),
    ):
        code = _run_cli("run", "--model", path, "--data", tmp_path / "d.npz", *args, "--out", tmp_path / "o", "-q")
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_suite_packs_the_dataset_per_joint_model(tmp_path, two_input):
    """Two joint models on one dataset with different budgets each get their own packing (and
    the shapes), from one load of the data."""
    from advonnx.suite import DatasetEntry, cached_dataset

    _, path = two_input
    x, f, y = data(n=5)
    np.savez(tmp_path / "d.npz", x=x, features=f, y=y)
    d = DatasetEntry(name="d", path=str(tmp_path / "d.npz"))
    a = advonnx.load_model(path, attack_inputs="signal,features")
    b = advonnx.load_model(path, attack_inputs="signal=0.1,features=0.4")
    pa, pb = cached_dataset(d, a), cached_dataset(d, b)
    np.testing.assert_array_equal(pa.x, np.concatenate([x.reshape(5, -1), f], axis=1))
    np.testing.assert_allclose(pb.x, np.concatenate([x.reshape(5, -1), f / 4], axis=1), rtol=1e-6)
    assert pa.extras == {} and pb.extras == {} and a.shapes == b.shapes == [(1, 64), (F,)]
    np.testing.assert_array_equal(b.bounds[1][-F:], np.float32(0.25))


def test_cli_joint_worst_case_keeps_one_setting_per_attack(tmp_path, two_input):
    """Worst-case runs skip broken samples: their rows and the attacked ones share one setting
    (per-input budgets live in input_norms, not in settings), and list both inputs."""
    _, path = two_input
    x, f, y = data(n=8)
    np.savez(tmp_path / "d.npz", x=x, features=f, y=y)
    code = _run_cli(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack-inputs",
        "signal,features",
        "--attack",
        "fgsm,pgd",
        "--eps",
        "0.1",
        "--worst-case",
        "--out",
        tmp_path / "o",
        "-q",
    )
    assert code == 0
    t = _rows(tmp_path / "o")
    assert set(t["attacked_inputs"]) == {"signal,features"} and (t["status"] == "skipped").any()
    assert t.groupby("attack")["settings"].nunique().max() == 1
    ok = t[t["status"] == "ok"]
    assert ok["input_norms"].notna().all() and ok["psnr"].isna().all()


def test_joint_estimated_gradient_follows_the_exact_one(two_input):
    """--gradient estimated: each input's NES estimate (its own value range), packed like the
    exact gradient; agrees with it in direction."""
    _, path = two_input
    j = advonnx.load_model(path, attack_inputs="signal=0.1,features=0.3")
    x, f, y = data(n=4)
    u = j.pack({"signal": x, "features": f})
    exact = j.value_and_grad(u, y)[1]
    est = j.value_and_grad(u, y, gradient="estimated")[1]
    for a, b in zip(exact, est):
        assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.95
