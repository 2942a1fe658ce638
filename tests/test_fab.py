"""FAB and FAB-T (Croce & Hein, ICML 2020; issue 16).

Fast: on a linear model the minimal adversarial norm is known in closed form
(``min_k |f_k| / ‖w_k‖_dual``, the box inactive), with exact and with estimated gradients; eps
mode, FAB-T's call shape and semantics, target labels refused; the loop under array-api-strict.
Slow: the batched projections against the authors' own (torchattacks 3.5.1 ships
fra31/auto-attack's ``fab_projections.py``); torchattacks' ``FAB`` on the suite's brain_cnn and brain_mobilenet
(PyTorch twins built from the ONNX initializers), untargeted and FAB-T, Linf and L2.
"""

from __future__ import annotations

import numpy as np
import pytest

import advonnx
from advonnx.attacks import make_attack
from advonnx.attacks.fab import projection_l2, projection_linf
from advonnx.oracles import EstimatorConfig
from models import save, small_cnn, softmax_regression

CLASSES = 4


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    proto, w, b = softmax_regression(d=20, classes=CLASSES)
    m = advonnx.load_model(
        save(proto, tmp_path_factory.mktemp("fab") / "r.onnx"), estimator=EstimatorConfig(samples=20)
    )
    x = np.random.default_rng(0).uniform(0.4, 0.6, (12, 20)).astype(np.float32)
    return m, w.astype(np.float64), b.astype(np.float64), x


def _analytic_min_norm(w, b, x, y, norm):
    """Distance to the complement of the class-y polytope: min over k of the distance to the
    half-space boundary f_k = z_k − z_y = 0 in the norm (dual norm of w_k in the denominator)."""
    z = x.astype(np.float64) @ w + b
    out = []
    for i in range(len(x)):
        c = y[i]
        out.append(
            min(
                abs(z[i, k] - z[i, c]) / np.linalg.norm(w[:, k] - w[:, c], 2 if norm == "l2" else 1)
                for k in range(w.shape[1])
                if k != c
            )
        )
    return np.array(out)


@pytest.mark.parametrize("targeted", [False, True], ids=["fab", "fab-t"])
@pytest.mark.parametrize("gradient", ["exact", "estimated"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_reaches_the_analytic_minimal_norm_of_a_linear_model(linear, norm, gradient, targeted):
    m, w, b, x = linear
    y = m.classify(x)
    res = make_attack("fab", norm=norm, steps=30, targeted=targeted)(m, x, y, gradient=gradient)
    opt = _analytic_min_norm(w, b, x, y, norm)
    ratio = np.asarray(res.min_norm) / opt
    assert res.success.all()
    assert (m.classify(res.x_adv) != y).all()
    # no adversarial can be closer than the analytic bound (float32 slack); FAB ends within 1 %
    assert ratio.min() >= 1 - 1e-4, ratio.min()
    assert ratio.max() <= 1.01, ratio.max()
    # queries: one prediction, then per step (classes - 1) VJP rows (FAB-T: 1 per target) and a
    # prediction; estimated gradients cost 2q + 1 evaluations per VJP row
    per_row = 1 if gradient == "exact" else 2 * 20 + 1
    rows, runs = (1, CLASSES - 1) if targeted else (CLASSES - 1, 1)
    assert (res.queries == 1 + runs * 30 * (rows * per_row + 1)).all()


def test_fab_in_other_value_units(tmp_path):
    """The authors' projections assume the box [0, 1]; FAB works in unit coordinates of the value
    range, so in a range [-1, 2] (box still inactive) it reaches the same analytic norms."""
    proto, w, b = softmax_regression(d=20, classes=CLASSES)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"), value_range=(-1.0, 2.0))
    x = np.random.default_rng(0).uniform(0.4, 0.6, (8, 20)).astype(np.float32)
    y = m.classify(x)
    for norm in ("linf", "l2"):
        res = advonnx.attack(m, x, y, "fab", norm=norm, steps=30, gradient="exact")
        ratio = np.asarray(res.min_norm) / _analytic_min_norm(w.astype(np.float64), b.astype(np.float64), x, y, norm)
        assert res.success.all() and ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.01, (norm, ratio)


@pytest.mark.slow  # importing torchattacks takes ~15 s under load
def test_projections_match_the_authors():
    torch = pytest.importorskip("torch")
    ta = pytest.importorskip("torchattacks.attacks.fab")
    rng = np.random.default_rng(0)
    for rows, dim in ((7, 1), (9, 5), (16, 64)):
        t = rng.uniform(0, 1, (rows, dim)).astype(np.float32)
        w = rng.normal(0, 1, (rows, dim)).astype(np.float32)
        w[rng.uniform(size=w.shape) < 0.2] = 0.0  # zero weights: masked out in both
        b = (np.sum(w * t, axis=1) + rng.normal(0, 2, rows)).astype(np.float32)  # reachable or not
        for ours, theirs in ((projection_linf, ta.projection_linf), (projection_l2, ta.projection_l2)):
            ref = theirs(torch.from_numpy(t), torch.from_numpy(w), torch.from_numpy(b)).numpy()
            np.testing.assert_allclose(ours(t, w, b), ref, rtol=1e-5, atol=1e-6, err_msg=ours.__name__)


def test_fab_with_eps_judges_inside_the_ball(linear):
    m, w, b, x = linear
    y = m.classify(x)
    opt = _analytic_min_norm(w, b, x, y, "l2")
    eps = float(np.median(opt))
    res = advonnx.attack(m, x, y, "fab", norm="l2", eps=eps, steps=30, restarts=2, gradient="exact")
    d = np.linalg.norm((res.x_adv - x).reshape(len(x), -1), axis=1)
    assert d.max() <= eps * (1 + 1e-5)
    # breakable (analytic norm below eps / 1.01) samples break, unbreakable ones cannot
    assert res.success[opt * 1.01 < eps].all() and not res.success[opt > eps].any()
    # AutoAttack's perturb: the second restart runs only on samples not broken within eps
    # (1 prediction + 30 steps × (3 VJP rows + 1 prediction) per run)
    one_run = 1 + 30 * (CLASSES - 1 + 1)
    assert set(np.unique(res.queries)) <= {one_run, 2 * one_run - 1}
    assert res.success[res.queries == one_run].all() and (res.queries[opt > eps] > one_run).all()


def test_fab_t_call_shape_of_autoattack(tmp_path):
    """``fab`` with targeted=True, eps and steps=100 (AutoAttack's third stage): top-k targets
    with k = min(9, classes − 1), untargeted success, in budget."""
    m = advonnx.load_model(save(small_cnn(size=8, classes=5), tmp_path / "c.onnx"))
    x = np.random.default_rng(3).uniform(0.2, 0.8, (10, 1, 8, 8)).astype(np.float32)
    y = m.classify(x)
    eps = 0.08
    atk = make_attack("fab", targeted=True, eps=eps, steps=100)
    assert atk.params()["targeted"] and atk.norm == "linf"
    res = atk(m, x, y, gradient="exact")
    assert np.abs(res.x_adv - x).max() <= eps * (1 + 1e-6)
    assert np.array_equal(res.success, m.classify(res.x_adv) != y)
    free = make_attack("fab", targeted=True, steps=100)(m, x, y, gradient="exact")
    assert free.success.all()  # without eps every sample breaks
    # each sample's runs are independent of the others: at eps, broken = minimal norm within eps
    np.testing.assert_array_equal(res.success, np.asarray(free.min_norm) <= eps * (1 + 1e-6))
    twin = advonnx.attack(m, x, y, "fab_t", eps=eps, steps=100, gradient="exact")  # the registered name
    np.testing.assert_array_equal(twin.x_adv, res.x_adv)


def test_fab_refuses_target_labels(linear):
    m, w, b, x = linear
    y = m.classify(x)
    with pytest.raises(advonnx.AdvonnxError, match="fab_t"):
        advonnx.attack(m, x, y, "fab", steps=3, targeted=True, target=(y + 1) % CLASSES, gradient="exact")


def test_fab_settings_are_checked():
    with pytest.raises(advonnx.AdvonnxError, match="beta"):
        make_attack("fab", beta=1.5)
    with pytest.raises(advonnx.AdvonnxError, match="supports norms"):
        make_attack("fab", norm="l0")
    assert make_attack("fab").minimal_norm and make_attack("fab").steps == 100


# -- against torchattacks on the suite's classifiers (slow) --------------------------------------


def _twin(name, path):
    if name == "brain_cnn":
        from reference.brain_cnn_torch import brain_cnn_from_onnx

        return brain_cnn_from_onnx(path)
    from reference.brain_mobilenet_torch import brain_mobilenet_from_onnx

    return brain_mobilenet_from_onnx(path)


@pytest.mark.slow
@pytest.mark.parametrize("targeted", [False, True], ids=["fab", "fab-t"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["brain_cnn", "brain_mobilenet"])
def test_fab_vs_torchattacks(name, norm, targeted, brain_patches, brain_cnn_path, brain_mobilenet_path):
    """Same steps, eps, alpha_max, eta, beta; torchattacks' FAB with ``multi_targeted`` is FAB-T
    over the classes − 1 other classes. Untargeted: minimal norms (their eps far above every norm;
    ours without eps). FAB-T: at an eps that breaks part of the samples, as AutoAttack uses it."""
    torch = pytest.importorskip("torch")
    torchattacks = pytest.importorskip("torchattacks")
    torch.set_num_threads(2)
    path = brain_cnn_path if name == "brain_cnn" else brain_mobilenet_path
    model, net = advonnx.load_model(path), _twin(name, path)
    x, y = brain_patches
    n = 70 if targeted else 30  # FAB-T at eps: enough samples that one borderline sample is < 2 points
    x, y = x[:n], y[:n].astype(np.int64)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)
    ok = model.classify(x) == y
    x, y = x[ok], y[ok]
    steps = 30
    eps = ({"linf": 2 / 255, "l2": 0.3} if targeted else {"linf": 1.0, "l2": 32.0})[norm]
    torch.manual_seed(0)
    atk = torchattacks.FAB(
        net, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=steps, multi_targeted=targeted, n_classes=3
    )
    theirs = atk(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    ours = make_attack("fab", norm=norm, eps=eps if targeted else None, steps=steps, targeted=targeted)(
        model, x, y, gradient="exact"
    )

    def norm_of(a):
        d = (a - x).reshape(len(x), -1).astype(np.float64)
        return np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)

    s_t, n_t = model.classify(theirs) != y, norm_of(theirs)
    s_t &= n_t <= eps * (1 + 1e-5)
    s_o, n_o = np.asarray(ours.success), norm_of(ours.x_adv)
    assert np.array_equal(s_o, model.classify(ours.x_adv) != y)
    print(
        f"FAB{'-T' if targeted else ''} {name} {norm} eps={eps:.4g} n={len(x)}: success ours {s_o.mean():.3f} "
        f"torchattacks {s_t.mean():.3f}; median norm ours {np.median(n_o[s_o]):.5f} "
        f"torchattacks {np.median(n_t[s_t]):.5f}"
    )
    assert s_o.mean() >= s_t.mean() - 0.02
    assert np.median(n_o[s_o]) <= 1.1 * np.median(n_t[s_t])
