"""APGD, APGD-T and the AutoAttack cascade (issue 16): losses and their score gradients vs torch
autograd and the authors' formulas, budgets on every tiny fixture, array-api-strict, the
cascade's per-sample record, rows and leaderboard."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest

import advonnx
from advonnx import losses
from advonnx.attacks import make_attack
from advonnx.errors import AdvonnxError
from models import save, small_cnn, softmax_regression

torch = pytest.importorskip("torch")  # without torch the module is skipped, not a collection error


def _authors_dlr(z, y):  # autoattack/autopgd_base.py, APGDAttack.dlr_loss
    z_sorted, ind_sorted = z.sort(dim=1)
    ind = (ind_sorted[:, -1] == y).float()
    u = torch.arange(z.shape[0])
    return -(z[u, y] - z_sorted[:, -2] * ind - z_sorted[:, -1] * (1.0 - ind)) / (
        z_sorted[:, -1] - z_sorted[:, -3] + 1e-12
    )


def _authors_dlr_targeted(z, y, t):  # APGDAttack_targeted.dlr_loss_targeted
    z_sorted, _ = z.sort(dim=1)
    u = torch.arange(z.shape[0])
    return -(z[u, y] - z[u, t]) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


@pytest.mark.parametrize("classes", [3, 4, 7])
def test_dlr_and_its_score_gradient_match_the_authors_formula(classes):
    rng = np.random.default_rng(classes)
    z = rng.normal(0, 3, (64, classes))
    y = rng.integers(0, classes, 64)
    zt = torch.tensor(z, requires_grad=True)
    ref = _authors_dlr(zt, torch.tensor(y))
    (g_ref,) = torch.autograd.grad(ref.sum(), zt)
    value, g = losses.score_gradient("dlr", z, y, probabilities=False)
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(losses.dlr(z, y), value, rtol=1e-12)
    np.testing.assert_allclose(g, g_ref.numpy(), rtol=1e-9, atol=1e-12)
    # shift and scale invariance, the point of DLR
    np.testing.assert_allclose(losses.dlr(3.0 * z + 5.0, y), value, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("classes", [4, 6])
def test_targeted_dlr_matches_the_authors_formula(classes):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (40, classes))
    y = rng.integers(0, classes, 40)
    t = (y + 1 + rng.integers(0, classes - 1, 40)) % classes
    zt = torch.tensor(z, requires_grad=True)
    ref = _authors_dlr_targeted(zt, torch.tensor(y), torch.tensor(t))
    (g_ref,) = torch.autograd.grad(ref.sum(), zt)
    value, g = losses.score_gradient("dlr", z, y, target=t, probabilities=False)
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g, g_ref.numpy(), rtol=1e-9, atol=1e-12)


def test_dlr_for_two_and_three_classes():
    rng = np.random.default_rng(2)
    z3 = rng.normal(0, 2, (30, 3))
    y = rng.integers(0, 3, 30)
    t = (y + 1) % 3
    # 3 classes, targeted: z_π3 stands in for the missing z_π4, denominator z_π1 − z_π3
    zs = np.sort(z3, axis=1)
    expect = -(z3[np.arange(30), y] - z3[np.arange(30), t]) / (zs[:, -1] - zs[:, 0] + 1e-12)
    np.testing.assert_allclose(losses.dlr(z3, y, target=t), expect, rtol=1e-12)
    # 2 classes: the margin −(z_y − z_other), untargeted and targeted alike
    z2 = rng.normal(0, 2, (30, 2))
    y2 = rng.integers(0, 2, 30)
    other = z2[np.arange(30), 1 - y2]
    np.testing.assert_allclose(losses.dlr(z2, y2), -(z2[np.arange(30), y2] - other), rtol=1e-12)
    np.testing.assert_allclose(losses.dlr(z2, y2, target=1 - y2), losses.dlr(z2, y2), rtol=1e-12)
    _, g = losses.score_gradient("dlr", z2, y2, probabilities=False)
    np.testing.assert_allclose(np.abs(g).sum(axis=1), 2.0)


@pytest.mark.parametrize("probabilities", [False, True])
def test_ce_score_gradient_vs_autograd(probabilities):
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, (20, 5))
    if probabilities:
        z = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 5, 20)
    zt = torch.tensor(z, requires_grad=True)
    ref = -(torch.log(zt.clamp(1e-12, 1)) if probabilities else torch.log_softmax(zt, 1))[
        torch.arange(20), torch.tensor(y)
    ]
    (g_ref,) = torch.autograd.grad(ref.sum(), zt)
    value, g = losses.score_gradient("ce", z, y, probabilities=probabilities)
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(g, g_ref.numpy(), rtol=1e-9, atol=1e-12)


def test_seg_ce_score_gradient_vs_autograd():
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, (3, 4, 5, 6))
    y = rng.integers(0, 4, (3, 5, 6))
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(y), reduction="none").mean(dim=(1, 2))
    (g_ref,) = torch.autograd.grad(ref.sum(), zt)
    value, g = losses.score_gradient("seg_ce", z, y, probabilities=False)
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(g, g_ref.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "name,settings",
    [
        ("apgd", dict(norm="l2", eps=0.5, steps=6, loss="dlr", restarts=2)),
        (
            "autoattack",
            dict(norm="l2", eps=0.5, stages=[{"name": "apgd-ce", "steps": 4}, {"name": "square", "max_queries": 30}]),
        ),
    ],
    ids=["apgd", "autoattack"],
)
def test_misclassified_samples_are_not_attacked(tmp_path, name, settings):
    """As AutoAttack: a sample misclassified unattacked comes back as it is, uncounted by the
    attack; a cascade marks it ``clean``. (Range, budget, success: tests/test_attack_contract.py.)"""
    model = advonnx.load_model(save(small_cnn(), tmp_path / "m.onnx"))
    x = np.random.default_rng(0).uniform(0, 1, (6,) + tuple(model.spec.input_shape[1:])).astype(np.float32)
    y = ((model.classify(x) + np.arange(6) % 2) % model.spec.num_classes).astype(np.int64)  # every other wrong
    res = advonnx.attack(model, x, y, name, rng=1, gradient="auto", **settings)
    size = np.abs(res.x_adv - x).reshape(len(x), -1).max(axis=1)
    assert np.array_equal(res.success, model.classify(res.x_adv) != y)
    wrong = model.classify(x) != y
    assert wrong.any() and not wrong.all()
    assert np.all(size[wrong] == 0) and np.all(res.queries[~wrong] > 0)
    if name == "autoattack":
        assert set(res.broken_by[wrong]) == {"clean"}
        assert np.array_equal(res.broken_by != "", res.success)


@pytest.mark.slow
def test_apgd_breaks_more_than_pgd_on_a_trained_model(brain_mobilenet_path, brain_patches):
    x, y = brain_patches
    x, y = x[:60], y[:60]
    m = advonnx.load_model(brain_mobilenet_path)
    apgd = advonnx.attack(m, x, y, "apgd", eps=2 / 255, steps=20, rng=0, gradient="exact")
    pgd = advonnx.attack(m, x, y, "pgd", eps=2 / 255, steps=20, rng=0, gradient="exact")
    robust = lambda r: ((r.clean_pred == y) & (r.adv_pred == y)).mean()  # noqa: E731
    assert robust(apgd) <= robust(pgd)
    assert robust(apgd) < (m.classify(x) == y).mean() - 0.3


def test_apgd_t_runs_each_top_class_and_counts_queries(tmp_path):
    proto, *_ = softmax_regression(d=12, classes=5, seed=3)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"))
    x = np.random.default_rng(0).uniform(0, 1, (8, 12)).astype(np.float32)
    y = m.classify(x)
    steps = 3
    res = advonnx.attack(m, x, y, "apgdt", eps=1e-4, steps=steps, n_target_classes=9, rng=0, gradient="exact")
    assert not res.success.any()  # a tiny budget: every sample stays robust through all 4 targets
    # one clean query, then per target: start + steps, each a predict and a vjp
    assert np.all(res.queries == 1 + 4 * (steps + 1) * 2)
    res2 = advonnx.attack(m, x, y, "apgdt", eps=1e-4, steps=steps, n_target_classes=2, rng=0, gradient="exact")
    assert np.all(res2.queries == 1 + 2 * (steps + 1) * 2)


def test_settings_are_checked():
    with pytest.raises(AdvonnxError, match="loss must be 'ce' or 'dlr'"):
        make_attack("apgd", loss="margin")
    with pytest.raises(AdvonnxError, match="version"):
        make_attack("autoattack", version="plus")
    with pytest.raises(AdvonnxError, match="has no setting"):
        make_attack("autoattack", stages=[{"name": "apgd-ce", "stepz": 3}])
    with pytest.raises(AdvonnxError, match="cascade's eps"):
        make_attack("autoattack", stages=[{"name": "apgd-ce", "eps": 3}])
    with pytest.raises(AdvonnxError, match="repeat"):
        make_attack("autoattack", stages=["apgd-ce", "apgd-ce"])
    r = repr(make_attack("apgd", eps=0.1, loss="dlr", steps=7))
    assert r.startswith("APGD(") and "loss='dlr'" in r and "steps=7" in r


def test_missing_stage_attack_is_named_when_the_cascade_runs(tmp_path):
    from advonnx.attacks.registry import ATTACKS

    proto, *_ = softmax_regression(d=6, classes=3)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"))
    x = np.random.default_rng(0).uniform(0, 1, (3, 6)).astype(np.float32)
    atk = make_attack("autoattack", eps=0.1, stages=["apgd-ce", {"name": "nosuch", "k": 1}])
    with pytest.raises(AdvonnxError, match="needs attack 'nosuch'"):
        atk(m, x)
    if "fab" not in ATTACKS:  # the standard version names FAB-T, which another branch adds
        with pytest.raises(AdvonnxError, match="'fab'"):
            make_attack("autoattack", eps=0.1)(m, x)


def test_rand_version_averages_eot_gradients(tmp_path):
    proto, *_ = softmax_regression(d=6, classes=3)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"))
    x = np.random.default_rng(0).uniform(0, 1, (4, 6)).astype(np.float32)
    y = m.classify(x)
    rand = make_attack("autoattack", eps=1e-5, version="rand")
    assert rand.stages == [{"name": "apgd-ce", "eot_iter": 20}, {"name": "apgd-dlr", "eot_iter": 20}]
    steps = 3
    atk = make_attack("autoattack", eps=1e-5, stages=[{**s, "steps": steps} for s in rand.stages])
    res = atk(m, x, y, gradient="exact")
    # a budget too small to break anything: the cascade's clean query, then per stage a clean
    # query and (steps + 1) points × 20 EOT evaluations, each one run of the loss's gradient graph
    # (decisions, loss and gradient), for APGD-CE and APGD-DLR alike
    ce, dlr = 1 + (steps + 1) * 20, 1 + (steps + 1) * 20
    assert not res.success.any() and np.all(res.queries == 1 + ce + dlr)


def test_suite_rows_and_leaderboard_show_stages(tmp_path):
    from rich.console import Console

    from advonnx.leaderboard import cascade_stages, render

    proto, *_ = softmax_regression(d=10, classes=3, seed=5)
    save(proto, tmp_path / "r.onnx")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 10)).astype(np.float32)
    m = advonnx.load_model(str(tmp_path / "r.onnx"))
    y = m.classify(x)
    y[:4] = (y[:4] + 1) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "s.toml").write_text(
        'name = "t"\nseed = 0\n[headline]\nattack = "autoattack"\nnorm = "linf"\neps = "0.05"\n'
        '[[datasets]]\nname = "d"\npath = "d.npz"\n[[models]]\nname = "r"\npath = "r.onnx"\n'
        '[[attacks]]\nname = "autoattack"\nnorm = "linf"\neps = ["0.05"]\n'
        'stages = [{ name = "apgd-ce", steps = 5 }, { name = "apgd-t", steps = 5 }]\n'
    )
    table = advonnx.run_suite(str(tmp_path / "s.toml"), out=str(tmp_path / "out"))
    rows = [r for r in table.to_pylist() if r["attack"] == "autoattack"]
    assert len(rows) == 40
    for r in rows:
        assert r["broken_by"] in ("clean", "apgd-ce", "apgd-t", "")
        assert (r["broken_by"] == "clean") == (not r["clean_correct"])
        assert (r["broken_by"] != "") == r["success"]
    (c,) = cascade_stages(table)
    after = [robust for _, robust, _ in c["stages"]]
    robust = np.mean([r["clean_correct"] and not r["success"] for r in rows])
    assert [s for s, _, _ in c["stages"]] == ["apgd-ce", "apgd-t"] and after[-1] == pytest.approx(robust)
    assert c["clean"] - sum(d for _, _, d in c["stages"]) / 100 == pytest.approx(robust)
    out = io.StringIO()
    render(table, Console(file=out, width=200), headline={"attack": "autoattack", "norm": "linf", "eps": "0.05"})
    text = out.getvalue()
    assert "Cascade stages" in text and f"≤ {100 * robust:.1f}" in text and "upper bound" in text


def test_cotangent_gradients_equal_the_loss_graphs(tmp_path):
    """APGD's two gradient routes equal the gradient graph of the same loss: the cotangent route
    (scores, then a VJP with the loss's score gradient) and the one-pass route, for ce, seg_ce and
    untargeted DLR with 2, 3 and 7 classes (the graph's DLR against the host formula's one-hot
    gradient); CE's one pass is scale-free (value d with CE = softplus(d), gradient ∇d with
    ∇CE = σ(d)·∇d)."""
    from test_paper_attacks import tiny_segmenter

    from advonnx.attacks.base import AttackContext
    from advonnx.xp import Random

    rng = np.random.default_rng(0)
    cases = [
        (small_cnn(classes=4), "ce", (5, 1, 8, 8)),
        (tiny_segmenter(kernel=3), "seg_ce", (3, 1, 8, 8)),
        (small_cnn(classes=2, seed=2), "dlr", (5, 1, 8, 8)),
        (small_cnn(classes=3, seed=3), "dlr", (5, 1, 8, 8)),
        (small_cnn(classes=7, seed=7), "dlr", (5, 1, 8, 8)),
    ]
    for i, (proto, loss, shape) in enumerate(cases):
        m = advonnx.load_model(save(proto, tmp_path / f"m{i}.onnx"))
        x = rng.uniform(0, 1, shape).astype(np.float32)
        y = m.classify(x)
        y = (y + (rng.uniform(size=y.shape) < 0.3)) % m.spec.num_classes
        ctx = AttackContext(
            m, n=len(x), rng=Random(0), gradient="exact", targeted=False, value_range=(0, 1), max_queries=None
        )
        idx = np.arange(len(x))
        ref_value, ref_grad = m.value_and_grad(x, y, loss=loss, gradient="exact")
        _, attacked = ctx.scores(x, idx)
        value, cot = losses.score_gradient(loss, attacked, y, axis=1, probabilities=False)
        _, grad = ctx.vjp(x, cot, idx)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
        value, grad, decisions = make_attack("apgd", eps=0.1)._loss_grad(ctx, x, y, idx, None, loss)
        np.testing.assert_array_equal(decisions, m.predict(x))
        if loss == "ce":
            sig = 1 / (1 + np.exp(-value.astype(np.float64)))
            np.testing.assert_allclose(np.logaddexp(0, value.astype(np.float64)), ref_value, rtol=1e-5)
            grad = grad * sig.reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(value if loss != "ce" else ref_value, ref_value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_apgd_on_a_segmenter(tmp_path):
    from test_paper_attacks import tiny_segmenter

    m = advonnx.load_model(save(tiny_segmenter(kernel=3), tmp_path / "s.onnx"))
    x = np.random.default_rng(1).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    y = m.classify(x)
    res = advonnx.attack(m, x, y, "apgd", eps=0.1, steps=10, rng=0, gradient="exact")
    pgd = advonnx.attack(m, x, y, "pgd", eps=0.1, steps=10, rng=0, gradient="exact")
    assert np.abs(res.x_adv - x).max() <= 0.1 * (1 + 1e-6)
    seg_ce = lambda r: m.loss(m.predict(r.x_adv), y, "seg_ce").mean()  # noqa: E731
    assert seg_ce(res) >= seg_ce(pgd) > m.loss(m.predict(x), y, "seg_ce").mean()
    assert (res.adv_pred == y).mean() < 0.9
    with pytest.raises(AdvonnxError, match="per-pixel"):
        advonnx.attack(m, x, y, "apgd", eps=0.1, steps=2, loss="dlr")


@pytest.mark.parametrize("probabilities", [False, True])
def test_one_pass_gives_the_decisions_loss_and_gradient_of_separate_runs(tmp_path, probabilities):
    """APGD-CE's one run of the gradient graph (decisions beside loss and gradient) returns what
    predict and value_and_grad return separately, also behind a final Softmax (the logits rule)."""
    proto, *_ = softmax_regression(d=12, classes=4, probabilities=probabilities)
    m = advonnx.load_model(save(proto, tmp_path / "m.onnx"))
    assert bool(m.spec.attacked_output) == probabilities and m.one_pass
    x = np.random.default_rng(3).uniform(0, 1, (5, 12)).astype(np.float32)
    y = np.arange(5) % 4
    value, grad, decisions = m.value_and_grad(x, y, loss="ce", gradient="exact", with_decisions=True)
    ref_value, ref_grad = m.value_and_grad(x, y, loss="ce", gradient="exact")
    np.testing.assert_array_equal(decisions, m.predict(x))
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6)
    with pytest.raises(AdvonnxError, match="exact gradients"):
        m.value_and_grad(x, y, loss="ce", gradient="estimated", with_decisions=True)
    # gradient="auto" probes the graph variant it then runs: no second CE graph is built
    fresh = advonnx.load_model(save(proto, tmp_path / "fresh.onnx"))
    fresh.value_and_grad(x, y, loss="ce", gradient="auto", scale_free=True, with_decisions=True)
    assert set(fresh._grad_sessions) == {("ce", True, probabilities)}  # scale-free CE on logits


def test_apgd_ce_is_not_masked_by_large_logits(tmp_path):
    """Logits ×1e4 (same decisions): CE's float32 gradient is exactly 0 for every confident sample
    (1 − p_y rounds to 0), so plain APGD-CE would stall; the scale-free CE keeps its direction
    and the loss order, so the attack on the scaled model breaks what it breaks on the plain one."""
    proto, w, b = softmax_regression(d=20, classes=4, seed=1)
    big, *_ = softmax_regression(d=20, classes=4, seed=1)
    for t in big.graph.initializer:
        t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t) * np.float32(1e4), t.name))
    plain = advonnx.load_model(save(proto, tmp_path / "plain.onnx"))
    scaled = advonnx.load_model(save(big, tmp_path / "scaled.onnx"))
    x = np.random.default_rng(4).uniform(0, 1, (64, 20)).astype(np.float32)
    y = plain.classify(x)
    np.testing.assert_array_equal(scaled.classify(x), y)
    _, g = scaled.value_and_grad(x, y, loss="ce", gradient="exact")
    assert (np.abs(g).reshape(len(x), -1).max(1) == 0).mean() > 0.5  # CE's own gradient vanishes
    kw = dict(eps=0.1, steps=20, loss="ce", gradient="exact", rng=0)
    a = advonnx.attack(plain, x, y, "apgd", **kw)
    s = advonnx.attack(scaled, x, y, "apgd", **kw)
    assert 0.2 < a.success.mean() < 1.0
    assert (a.success == s.success).mean() >= 0.95, (a.success.mean(), s.success.mean())


def _iterate_to_the_end():
    """APGD's row bookkeeping with the authors' loop: a broken row is recorded at its first
    adversarial iterate but keeps iterating (nothing leaves the batch)."""
    from advonnx.attacks import apgd
    from advonnx.attacks._batch import scatter, take

    class KeepAll(apgd._Rows):
        def retire(self, live, history, fooled, x_adv):
            fresh = np.nonzero(fooled & self.robust)[0]
            self.robust[fresh] = False
            self.x_best_adv = scatter(self.x_best_adv, fresh, take(x_adv, fresh))
            return live, history

    return KeepAll


@pytest.mark.parametrize(("norm", "eps", "loss"), [("linf", 0.02, "ce"), ("linf", 0.01, "dlr"), ("l2", 0.2, "ce")])
def test_broken_samples_leave_the_loop_without_changing_the_others(tmp_path, monkeypatch, norm, eps, loss):
    """A sample leaves APGD's loop at its first adversarial iterate: the robust flags, the
    robust samples' results and the broken samples' adversarial iterates are exactly those of
    the authors' loop (every row iterated to the end), for fewer model runs."""
    from advonnx.attacks import apgd

    model = advonnx.load_model(save(small_cnn(seed=4), tmp_path / "m.onnx"))  # predicts 2 classes here
    x = np.random.default_rng(3).uniform(0, 1, (24,) + tuple(model.spec.input_shape[1:])).astype(np.float32)
    y = model.classify(x).astype(np.int64)
    settings = dict(norm=norm, eps=eps, loss=loss, steps=30, rng=0, gradient="exact")
    early = advonnx.attack(model, x, y, "apgd", **settings)
    monkeypatch.setattr(apgd, "_Rows", _iterate_to_the_end())
    full = advonnx.attack(model, x, y, "apgd", **settings)
    assert early.success.any() and not early.success.all()
    assert np.array_equal(early.success, full.success)
    np.testing.assert_array_equal(early.x_adv, full.x_adv)
    assert early.queries.sum() < full.queries.sum()
    assert np.all(early.queries[~early.success] == full.queries[~early.success])


def test_linf_step_bounds_equal_projection_then_clip():
    """The per-run linf bounds (eps-ball ∩ value range) give the numbers of projecting onto the
    ball and then clipping, also for points outside the range."""

    class Ctx:
        @staticmethod
        def clip(a):
            return np.clip(a, 0.0, 1.0)

    attack = make_attack("apgd", norm="linf", eps=0.1)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.3, 1.3, (50, 3, 4)).astype(np.float32)  # some rows outside [0, 1]
    z = x + rng.uniform(-0.4, 0.4, x.shape).astype(np.float32)
    want = Ctx.clip(attack._project(x, z))
    got = attack._step_into(Ctx, x, attack._feasible(Ctx, x), z)
    np.testing.assert_array_equal(got, want)
