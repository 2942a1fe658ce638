"""Multi-label classification end to end (independent sigmoid outputs, one per finding).

References: torch autograd and torch's BCEWithLogitsLoss on the same weights, float64 central
finite differences of the ONNX gradient graph, and a plain torch PGD with BCE.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from reference.multilabel_cnn import FINDINGS, export, make_data, train

import advonnx
from advonnx import losses
from advonnx.attacks import make_attack
from advonnx.attacks.base import multilabel_success
from advonnx.attacks.registry import ATTACKS
from advonnx.autodiff import gradient_model
from advonnx.data import InputExpectation, load_dataset
from advonnx.errors import AdvonnxError, DataError
from advonnx.results import read_results
from advonnx.target_map import multilabel_target, parse_target_map

torch = pytest.importorskip("torch")
K = len(FINDINGS)
EPS = 0.06  # linf, value units [0, 1]: breaks some samples, not all


@pytest.fixture(scope="module")
def trained():
    return train()


@pytest.fixture(scope="module")
def onnx_path(trained, tmp_path_factory):
    return export(trained, tmp_path_factory.mktemp("multilabel"))


@pytest.fixture(scope="module")
def model(onnx_path):
    return advonnx.load_model(onnx_path)


@pytest.fixture(scope="module")
def data():
    return make_data(48, seed=7)


def _cli(*args):
    from cli_inprocess import run_cli  # the CLI in this process

    return run_cli(*args, columns=160)


# -- the model and its spec -------------------------------------------------------------------
def test_inspect_recognises_the_multilabel_model(model, onnx_path, trained, data):
    s = model.spec
    assert (s.task, s.output_kind, s.num_classes, s.scores) == ("classification", "multilabel", K, "probabilities")
    assert s.attacked_output and s.attacked_op == "Sigmoid" and s.decision_threshold == 0.0
    x, y = data
    with torch.no_grad():
        z = trained(torch.from_numpy(x)).numpy()
    assert np.array_equal(model.classify(x), (z > 0).astype(np.int64))
    assert 0.2 < model.classify(x).mean() < 0.8  # non-trivial decisions: findings present and absent
    assert np.allclose(model.attack_scores(x), z, atol=1e-5)
    out = _cli("inspect", onnx_path)
    assert out.returncode == 0, out.stderr
    assert "multi-label: 4 findings" in out.stdout and "findings" in out.stdout and "exact" in out.stdout


# -- losses against torch ------------------------------------------------------------------------
def _labels(rng, n, free=True):
    y = rng.integers(0, 2, (n, K))
    if free:
        y = np.where(rng.random((n, K)) < 0.3, -1, y)
        y[:, 0] = np.where(y[:, 0] < 0, 1, y[:, 0])  # at least one labelled finding per sample
    return y.astype(np.int64)


def test_losses_and_score_gradients_match_torch():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (32, K))
    y = _labels(rng, 32)
    w = (y >= 0).astype(np.float64)
    zt = torch.tensor(z, requires_grad=True)
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        zt, torch.tensor(np.maximum(y, 0), dtype=torch.float64), reduction="none"
    )
    ref = (per * torch.tensor(w)).sum(1) / torch.tensor(w).sum(1)
    ref.sum().backward()
    value, g = losses.score_gradient("bce", z, y, probabilities=False)
    assert np.allclose(value, ref.detach().numpy(), atol=1e-12) and np.allclose(g, zt.grad.numpy(), atol=1e-12)
    assert np.allclose(losses.compute("bce", z, y, probabilities=False), value)
    # probabilities: the same BCE from p = sigmoid(z)
    p = 1 / (1 + np.exp(-z))
    pt = torch.tensor(p, requires_grad=True)
    per = torch.nn.functional.binary_cross_entropy(
        pt, torch.tensor(np.maximum(y, 0), dtype=torch.float64), reduction="none"
    )
    ((per * torch.tensor(w)).sum(1) / torch.tensor(w).sum(1)).sum().backward()
    value_p, g_p = losses.score_gradient("bce", p, y, probabilities=True)
    assert np.allclose(value_p, value, atol=1e-9) and np.allclose(g_p, pt.grad.numpy(), rtol=1e-6, atol=1e-9)
    # ml_margin: the worst labelled finding's wrong-side margin; positive iff some finding is wrong
    for thr in (0.0, 0.7):
        zt = torch.tensor(z, requires_grad=True)
        sign = torch.tensor(2.0 * (y == 1) - 1.0)
        ref = (-(sign * (zt - thr)) - torch.tensor(1 - w) * 1e30).max(1).values
        ref.sum().backward()
        value, g = losses.score_gradient("ml_margin", z, y, probabilities=False, threshold=thr)
        assert np.allclose(value, ref.detach().numpy()) and np.allclose(g, zt.grad.numpy())
        wrong = ((z > thr) != (y == 1)) & (y >= 0)
        assert np.array_equal(value > 0, wrong.any(1))


# -- gradients: the ONNX gradient graph -------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("free", [False, True])
def test_exact_gradients_match_torch_autograd(model, trained, data, loss, free):
    x, y = data
    y = _labels(np.random.default_rng(1), len(x)) if free else y
    value, grad = model.value_and_grad(x, y, loss=loss, gradient="exact")
    xt = torch.from_numpy(x).requires_grad_()
    z = trained(xt)
    t, w = torch.from_numpy((y == 1).astype(np.float32)), torch.from_numpy((y >= 0).astype(np.float32))
    if loss == "ce":
        ref = (torch.nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none") * w).sum(1) / w.sum(1)
    else:
        ref = (-(2 * t - 1) * z - (1 - w) * 1e9).max(1).values
    ref.sum().backward()
    assert np.abs(value - ref.detach().numpy()).max() <= 1e-4
    gref = xt.grad.numpy()
    assert np.abs(grad - gref).max() <= 1e-4 * max(1.0, np.abs(gref).max())
    assert np.linalg.norm(grad - gref) <= 1e-4 * np.linalg.norm(gref)


def _float64_model(probabilities: bool):
    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(0, 1, (5, 6)), rng.normal(0, 0.5, 6)
    w2, b2 = rng.normal(0, 1, (6, K)), rng.normal(0, 0.5, K)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "w2", "b2"], ["z"]),
    ]
    out = "z"
    if probabilities:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["p"]))
        out = "p"
    g = helper.make_graph(
        nodes,
        "ml64",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 5])],
        [helper.make_tensor_value_info(out, TensorProto.DOUBLE, ["N", K])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, out


@pytest.mark.parametrize(
    "loss,probabilities", [("bce", False), ("bce", True), ("ml_margin", False), ("ml_margin", True)]
)
def test_gradient_graph_matches_float64_finite_differences(loss, probabilities):
    base, out = _float64_model(probabilities)
    thr = 0.6 if probabilities else 0.3
    gm = gradient_model(base, loss=loss, input_name="x", output_name=out, probabilities=probabilities, threshold=thr)
    onnx.checker.check_model(gm)
    sess = ort.InferenceSession(gm.SerializeToString(), providers=["CPUExecutionProvider"])
    fwd = ort.InferenceSession(base.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (6, 5))
    y = _labels(rng, 6)
    value, grad = sess.run(["advonnx_loss", "advonnx_grad"], {"x": x, "advonnx_label": y})

    def f(xx):
        (s,) = fwd.run([out], {"x": xx})
        return losses.compute(loss, s, y, probabilities=probabilities, threshold=thr)

    assert np.allclose(value, f(x), atol=1e-12)
    h = 1e-6
    fd = np.zeros_like(x)
    for i in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, i] = h
        fd[:, i] = (f(x + e) - f(x - e)) / (2 * h)
    assert np.abs(grad - fd).max() <= 1e-6 * max(1.0, np.abs(fd).max())


# -- attacks -----------------------------------------------------------------------------------
MULTILABEL = {
    "fgsm": {},
    "bim": {"steps": 5},
    "pgd": {"steps": 5},
    "apgd": {"steps": 10},
    "square": {"max_queries": 100},
    "nes": {"steps": 3, "samples": 4},
    "spsa": {"steps": 3, "samples": 4},
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_works_or_refuses_in_one_line(model, data, name):
    x, y = data
    x, y = x[:8], y[:8]
    cls = ATTACKS[name]
    if name not in MULTILABEL:
        assert not cls.multilabel
        kw = {} if cls.minimal_norm else {"eps": EPS}
        kw.update({"norm": cls.norms[0]} if cls.norms and "norm" in cls.parameters() else {})
        kw.update({"surrogate": model.spec.path} if "surrogate" in cls.parameters() else {})
        with pytest.raises(AdvonnxError) as err:
            make_attack(name, **kw)(model, x, y)
        msg = str(err.value)
        why = "multi-label" if "classification" in cls.tasks else "does not attack classification"
        assert "\n" not in msg and name in msg and why in msg
        return
    res = make_attack(name, eps=0.15, **MULTILABEL[name])(model, x, y)
    adv = model.classify(res.x_adv)
    assert res.multilabel and res.adv_pred.shape == (8, K)
    assert np.array_equal(res.adv_pred, adv)
    assert np.array_equal(res.success, np.any(adv != y, axis=1))  # re-judged from x_adv
    assert np.array_equal(res.robust, np.all(adv == y, axis=1))
    assert np.abs(res.x_adv - x).max() <= 0.15 + 1e-6 and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    if name in ("pgd", "apgd", "square"):
        assert res.success.any()


def test_targeted_flips_the_named_finding(model, data):
    x, y = data
    pairs = parse_target_map("pneumothorax:absent", FINDINGS, multilabel=True)
    t = np.broadcast_to(multilabel_target(pairs, K), y.shape).copy()
    keep = y[:, 2] == 1
    res = make_attack("pgd", eps=0.15, steps=20)(model, x[keep], y[keep], target=t[keep], targeted=True)
    adv = model.classify(res.x_adv)
    assert np.array_equal(res.success, adv[:, 2] == 0)
    assert res.success.mean() > 0.3
    assert np.array_equal(multilabel_success(adv, t[keep], True), res.success)


def test_target_map_parser_takes_both_forms():
    assert parse_target_map("pneumothorax:absent, 0:present", FINDINGS, multilabel=True) == [(2, 0), (0, 1)]
    assert parse_target_map("malignant:benign", ["benign", "malignant"], multilabel=False) == [(1, 0)]
    assert multilabel_target([(2, 0)], K).tolist() == [-1, -1, 0, -1]
    for text, ml in (
        ("pneumothorax:maybe", True),
        ("lung:absent", True),
        ("benign", False),
        ("benign:benign", False),
        ("nodule:absent,nodule:present", True),
    ):
        with pytest.raises(AdvonnxError) as err:
            parse_target_map(text, FINDINGS if ml else ["benign", "malignant"], multilabel=ml)
        assert "\n" not in str(err.value) and "target map" in str(err.value)


def test_pgd_matches_a_plain_torch_pgd_with_bce(model, trained):
    """Untargeted PGD success against a plain torch PGD (BCE, sign steps, random start) on the same
    weights: advonnx's success must not fall more than 2 points below torch's."""
    x, y = make_data(160, seed=11)
    steps, step = 10, 2.5 * EPS / 10
    g = torch.Generator().manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).float()
    xa = (xt + (torch.rand(xt.shape, generator=g) * 2 - 1) * EPS).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(trained(xa), yt)
        (grad,) = torch.autograd.grad(loss, xa)
        xa = torch.min(torch.max(xa.detach() + step * grad.sign(), xt - EPS), xt + EPS).clamp(0, 1)
    with torch.no_grad():
        theirs = ((trained(xa) > 0).long().numpy() != y).any(1).mean()
    res = make_attack("pgd", eps=EPS, steps=steps)(model, x, y, rng=advonnx.xp.Random(0))
    ours = res.success.mean()
    assert res.gradient == "exact"
    assert 0.1 < theirs < 0.95  # a budget that breaks some samples, not all
    print(f"multi-label PGD success: advonnx {ours:.4f}, plain torch PGD {theirs:.4f}")
    assert ours >= theirs - 0.02, (ours, theirs)


# -- data --------------------------------------------------------------------------------------
def _expect():
    return InputExpectation("NCHW", (16, 16), 1, findings=K)


def test_npz_labels_of_shape_n_by_k(tmp_path, data):
    x, y = data
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "d.npz", _expect())
    assert ds.y.shape == (len(x), K) and np.array_equal(ds.y, y)
    np.savez(tmp_path / "bad.npz", x=x, y=y[:, :3])
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "bad.npz", _expect())
    assert "4 findings" in str(err.value) and "\n" not in str(err.value)
    np.savez(tmp_path / "two.npz", x=x, y=y * 2)
    with pytest.raises(DataError, match="other than 0 and 1"):
        load_dataset(tmp_path / "two.npz", _expect())


def test_csv_manifest_columns_and_class_folders(tmp_path, data):
    from PIL import Image

    x, y = data
    for i in range(3):
        Image.fromarray((x[i, 0] * 255).round().astype(np.uint8)).save(tmp_path / f"{i}.png")
    head = "path," + ",".join(reversed(FINDINGS))  # columns by name, in any order
    lines = [f"{i}.png," + ",".join(str(v) for v in reversed(y[i])) for i in range(3)]
    (tmp_path / "m.csv").write_text("\n".join([head, *lines]) + "\n", encoding="utf-8")
    ds = load_dataset(tmp_path / "m.csv", _expect(), class_names=list(FINDINGS))
    assert np.array_equal(ds.y, y[:3])
    assert np.abs(ds.x - x[:3]).max() <= 1 / 255
    # a group column (patient id) is not a finding: the K findings are still read, by file order
    lines = [f"p{i // 2},{i}.png," + ",".join(str(v) for v in y[i]) for i in range(3)]
    (tmp_path / "g.csv").write_text("\n".join(["group,path," + ",".join(f"f{k}" for k in range(K)), *lines]) + "\n")
    ds = load_dataset(tmp_path / "g.csv", _expect())
    assert np.array_equal(ds.y, y[:3]) and ds.groups == ["p0", "p0", "p1"]
    (tmp_path / "short.csv").write_text("path,effusion\n0.png,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="1 finding columns"):
        load_dataset(tmp_path / "short.csv", _expect())
    (tmp_path / "folders" / "effusion").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "folders" / "effusion" / "a.png")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "folders", _expect())
    assert "multi-label" in str(err.value) and "\n" not in str(err.value)


# -- the command line, rows, leaderboard and report ------------------------------------------------
def _check_rows(rows, *, labelled: bool, y=None):
    assert rows and all(r["status"] == "ok" for r in rows)
    for r in rows:
        ref, clean, adv = (np.array(r[k]) for k in ("label_vector", "clean_vector", "adv_vector"))
        assert r["label"] is None and ref.shape == (K,)
        assert r["clean_correct"] == bool((clean == ref).all()) and r["adv_correct"] == bool((adv == ref).all())
        assert r["robust"] == (r["clean_correct"] and r["adv_correct"])
        assert r["hamming_clean"] == int((clean != ref).sum()) and r["hamming_adv"] == int((adv != ref).sum())
        assert r["flipped"] == np.flatnonzero(adv != clean).tolist()
        if r["kind"] == "adversarial":
            assert r["success"] == bool((adv != ref).any())
            assert r["gradient"] == ("none" if r["attack"] == "square" else "exact")
        if not labelled:
            assert np.array_equal(ref, clean)


@pytest.mark.slow
def test_cli_runs_with_and_without_labels(tmp_path, onnx_path, data):
    from advonnx.leaderboard import summarize
    from advonnx.report import write_report

    x, y = data
    x, y = x[:24], y[:24]
    np.savez(tmp_path / "labels.npz", x=x, y=y)
    np.savez(tmp_path / "nolabels.npz", x=x)
    for name, labelled in (("labels", True), ("nolabels", False)):
        out = _cli(
            "run",
            "--model",
            onnx_path,
            "--data",
            tmp_path / f"{name}.npz",
            "--attack",
            "fgsm,pgd,square(max_queries=200)",
            "--eps",
            EPS,
            "--out",
            tmp_path / name,
            "-q",
            "--no-masking-checks",
        )
        assert out.returncode == 0, out.stderr
        table = read_results(tmp_path / name)
        rows = table.to_pylist()
        _check_rows(rows, labelled=labelled)
        if labelled:
            assert np.array_equal(np.array([r["label_vector"] for r in rows[:24]]), y)
        for s in summarize(table):
            rs = [r for r in rows if r["attack"] == s["attack"]]
            assert s["robust"] == pytest.approx(np.mean([r["robust"] for r in rs]))
            ref = np.array([r["label_vector"] for r in rs])
            good = (np.array([r["clean_vector"] for r in rs]) == ref) & (np.array([r["adv_vector"] for r in rs]) == ref)
            assert s["per_finding"] == pytest.approx(good.mean(0).tolist())
            assert s["robust"] <= min(s["per_finding"]) + 1e-12
        assert "per finding" in out.stdout
    pgd = [r for r in read_results(tmp_path / "labels").to_pylist() if r["attack"] == "pgd"]
    assert 0 < np.mean([r["success"] for r in pgd]) < 1
    info = write_report(tmp_path / "labels", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert info["finding_tables"] == 1 and "Per finding" in html


@pytest.mark.slow
def test_cli_target_map_and_refusals(tmp_path, onnx_path, data):
    x, y = data
    np.savez(tmp_path / "d.npz", x=x[:16], y=y[:16])
    out = _cli(
        "run",
        "--model",
        onnx_path,
        "--data",
        tmp_path / "d.npz",
        "--attack",
        "pgd(steps=20)",
        "--eps",
        0.15,
        "--target-map",
        "2:absent",
        "--out",
        tmp_path / "t",
        "-q",
        "--no-masking-checks",
    )
    assert out.returncode == 0, out.stderr
    rows = read_results(tmp_path / "t").to_pylist()
    for r, yi in zip(rows, y[:16], strict=True):
        assert r["targeted"] and r["target_vector"] == [-1, -1, 0, -1]
        if yi[2] == 0:  # already absent: nothing to flip, not counted
            assert r["status"] == "skipped" and r["error"].startswith("no target:")
        else:
            assert r["status"] == "ok" and r["success"] == (r["adv_vector"][2] == 0)
    assert any(r["success"] for r in rows)
    out = _cli(
        "run", "--model", onnx_path, "--data", tmp_path / "d.npz", "--attack", "deepfool", "--out", tmp_path / "d", "-q"
    )
    assert out.returncode == 2 and "deepfool" in out.stderr and "multi-label" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    bad = _cli(
        "run",
        "--model",
        onnx_path,
        "--data",
        tmp_path / "d.npz",
        "--target-map",
        "lung:absent",
        "--out",
        tmp_path / "e",
        "-q",
    )
    assert bad.returncode != 0 and "lung" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_cli_target_map_on_a_single_label_model(tmp_path):
    """The same flag on a single-label model: CLASS_A:CLASS_B pushes class-A samples toward B; samples
    of other classes have no target and are not counted."""
    from models import save, small_cnn

    path = save(small_cnn(head="softmax", classes=3, size=8), tmp_path / "soft.onnx")
    m = advonnx.load_model(path)
    x = np.random.default_rng(0).uniform(0, 1, (24, 1, 8, 8)).astype(np.float32)
    pred = m.classify(x)
    src = int(np.bincount(pred, minlength=3).argmax())
    dst = next(
        t
        for t in range(3)
        if t != src
        and make_attack("pgd", eps=1.0, steps=50)(m, x, None, target=np.full(len(x), t), targeted=True).success.any()
    )  # a class this tiny net can reach
    y = pred.copy()
    y[::2] = (src + 2) % 3  # labelled as another class: no entry in the map
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = _cli(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack",
        "pgd(steps=50)",
        "--eps",
        1,
        "--target-map",
        f"{src}:{dst}",
        "--out",
        tmp_path / "o",
        "-q",
        "--no-masking-checks",
    )
    assert out.returncode == 0, out.stderr
    rows = read_results(tmp_path / "o").to_pylist()
    assert sum(r["status"] == "skipped" for r in rows) == 12
    for r, p in zip(rows, y, strict=True):
        if p == src:
            assert r["status"] == "ok" and r["target"] == dst and r["success"] == (r["adv_pred"] == dst)
        else:
            assert r["status"] == "skipped" and r["error"].startswith("not attacked: class")  # target_map.NOT_ATTACKED
    assert any(r["success"] for r in rows)
