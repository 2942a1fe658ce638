"""Randomized-smoothing certificates: statistics against a transcription of Cohen et al.'s
``core.py`` (SciPy/statsmodels), the exact smoothed radius of a linear model, and an empirical
attack on the smoothed classifier that must not flip a certified sample inside its radius."""

from __future__ import annotations

import numpy as np
import pytest

import advonnx
from advonnx.binomial import binom_sf, binom_test_two_sided, clopper_pearson_lower, clopper_pearson_upper
from advonnx.certify import ABSTAIN, Smoother, certify_counts, predict_counts
from advonnx.errors import AdvonnxError
from advonnx.xp import Random
from models import save, small_cnn, softmax_regression

scipy_stats = pytest.importorskip("scipy.stats")
proportion = pytest.importorskip("statsmodels.stats.proportion")


# -- transcription of core.py (Cohen, Rosenfeld & Kolter 2019), given the counts ---------------


def core_certify(n_a, n, sigma, alpha):
    p_bar = proportion.proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]
    if p_bar < 0.5:
        return ABSTAIN, 0.0
    return 0, sigma * scipy_stats.norm.ppf(p_bar)


def core_predict(counts, alpha):
    top2 = counts.argsort()[::-1][:2]
    count1, count2 = counts[top2[0]], counts[top2[1]]
    if scipy_stats.binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
        return ABSTAIN
    return top2[0]


@pytest.mark.parametrize("n", [100, 1000, 10_000, 100_000])
def test_certify_statistics_equal_core_py(n):
    for n_a in sorted({0, 1, n // 2, n // 2 + 1, int(0.6 * n), int(0.9 * n), int(0.999 * n), n - 1, n}):
        for alpha in (0.001, 0.01):
            p_lower, radius = certify_counts(n_a, n, sigma=0.25, alpha=alpha)
            label, ref = core_certify(n_a, n, 0.25, alpha)
            assert abs(radius - ref) < 1e-9, (n_a, n, alpha, radius, ref)
            assert (radius == 0.0) == (label == ABSTAIN)


def test_predict_statistics_equal_core_py():
    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = rng.multinomial(rng.integers(10, 400), rng.dirichlet(np.ones(4) * 0.7))
        assert predict_counts(counts, alpha=0.01) == core_predict(counts, 0.01)


def test_binomial_quantities_equal_scipy():
    for n in (1, 7, 50, 1000, 100_000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for alpha in (0.001, 0.05):
                lo, hi = proportion.proportion_confint(k, n, alpha=2 * alpha, method="beta")
                assert abs(clopper_pearson_lower(k, n, alpha) - (0.0 if np.isnan(lo) else lo)) < 1e-9
                assert abs(clopper_pearson_upper(k, n, alpha) - (1.0 if np.isnan(hi) else hi)) < 1e-9
            assert abs(binom_test_two_sided(k, n) - scipy_stats.binomtest(k, n, 0.5).pvalue) < 1e-9
            assert abs(binom_sf(k, n, 0.3) - scipy_stats.binom.sf(k - 1, n, 0.3)) < 1e-9


def test_linear_model_radius_is_below_the_exact_one(tmp_path):
    """For a two-class linear model, P(f(x + ε) = c) = Φ(|w·x + b| / (σ‖w‖)): the smoothed
    classifier's exact radius is the distance to the hyperplane. Certificates never exceed it and
    come close with n = 20,000 draws."""
    proto, w, b = softmax_regression(d=16, classes=2, seed=3)
    model = advonnx.load_model(save(proto, tmp_path / "lin.onnx"), value_range="-4,4")
    x = np.random.default_rng(1).uniform(-1, 1, (40, 16)).astype(np.float32)
    cert = Smoother(model, sigma=0.5, rng=Random(0)).certify(x, n0=100, n=20_000, alpha=0.001)
    dw = w[:, 1] - w[:, 0]
    margin = x @ dw + (b[1] - b[0])
    exact = np.abs(margin) / np.linalg.norm(dw)
    sure = cert.prediction != ABSTAIN
    assert sure.sum() >= 20
    assert np.all(cert.prediction[sure] == (margin[sure] > 0))
    assert np.all(cert.radius <= exact + 1e-6)
    assert np.median(cert.radius[sure] / exact[sure]) > 0.75
    assert np.all(cert.queries == 20_100)


@pytest.mark.slow
def test_attack_on_the_smoothed_classifier_never_flips_a_certified_sample(tmp_path):
    """PGD-L2 on the smoothed classifier (cross-entropy of the noise-averaged softmax, gradients
    averaged over the same σ: EOT, Salman et al. 2019), inside 0.99 × each certified radius, over
    ≥ 100 certified samples: PREDICT at the adversarial input answers the certified class or
    abstains, never another class."""
    model = advonnx.load_model(save(small_cnn(size=8, classes=3, seed=4), tmp_path / "cnn.onnx"))
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (240, 1, 8, 8)).astype(np.float32)
    smoother = Smoother(model, sigma=0.25, rng=Random(1))
    cert = smoother.certify(x, n0=64, n=4000, alpha=0.001)
    keep = np.flatnonzero(cert.prediction != ABSTAIN)[:120]
    assert len(keep) >= 100
    xs, cls, radius = x[keep], cert.prediction[keep], cert.radius[keep]
    noise_rng = np.random.default_rng(6)

    def smoothed_pgd(budget):
        delta = np.zeros_like(xs)
        for _ in range(20):
            grads = np.zeros_like(xs)
            for _ in range(16):
                noisy = xs + delta + noise_rng.normal(0, 0.25, xs.shape).astype(np.float32)
                _, g = model.value_and_grad(noisy, cls, loss="ce", gradient="exact")
                grads += g
            step = grads / np.maximum(np.linalg.norm(grads.reshape(len(xs), -1), axis=1), 1e-12)[:, None, None, None]
            delta = delta + (0.25 * budget)[:, None, None, None] * step
            norm = np.linalg.norm(delta.reshape(len(xs), -1), axis=1)
            delta *= np.minimum(1.0, budget / np.maximum(norm, 1e-12))[:, None, None, None]
        return smoother.predict(xs + delta, n=4000, alpha=0.001)

    inside = smoothed_pgd(0.99 * radius)
    assert np.all((inside == cls) | (inside == ABSTAIN)), np.flatnonzero((inside != cls) & (inside != ABSTAIN))
    # the attack has teeth: with four times the radius it flips a fair share of the same samples
    outside = smoothed_pgd(4.0 * radius)
    assert np.mean((outside != cls) & (outside != ABSTAIN)) > 0.1


def test_arguments_are_checked(tmp_path):
    model = advonnx.load_model(save(small_cnn(size=8, classes=3), tmp_path / "cnn.onnx"))
    with pytest.raises(AdvonnxError, match="exactly one"):
        Smoother(model)
    with pytest.raises(AdvonnxError, match="n0"):
        Smoother(model, sigma=0.1).certify(np.zeros((1, 1, 8, 8), np.float32), n0=0)
    frac = Smoother(
        advonnx.load_model(save(small_cnn(size=8, classes=3), tmp_path / "c2.onnx"), value_range="0,255"),
        sigma_fraction=0.1,
    )
    assert frac.sigma == pytest.approx(25.5)


# -- segmentation (Fischer, Baader & Vechev 2021) ---------------------------------------------


@pytest.fixture
def multitest(monkeypatch):
    """statsmodels.stats.multitest; its multipletests calls gc.collect() on every call (seconds each
    in a test session's large heap): no collection during the test, same results."""
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    import gc

    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)
    return multitest


def test_holm_bonferroni_equals_statsmodels(multitest):
    from advonnx.certify import holm_bonferroni

    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.02, 40) ** rng.uniform(0.5, 3)
        ref = multitest.multipletests(p, alpha=0.01, method="holm")[0]
        np.testing.assert_array_equal(holm_bonferroni(p, 0.01), ref)


def test_segcertify_statistics_equal_a_transcription(multitest):
    """SEGCERTIFY's decisions from given counts equal a transcription with SciPy's one-sided
    binomial test and statsmodels' Holm correction."""
    from advonnx.certify import certify_dense_counts

    rng = np.random.default_rng(1)
    n, tau, alpha = 300, 0.75, 0.001
    p_top = rng.uniform(0.5, 1.0, (6, 7))
    estimation = np.zeros((3, 6, 7), np.int64)
    estimation[0] = rng.binomial(n, p_top)
    estimation[1] = n - estimation[0]
    selection = np.stack([np.full((6, 7), 8), np.full((6, 7), 2), np.zeros((6, 7), int)])
    ours, radius = certify_dense_counts(selection, estimation, n=n, sigma=0.25, tau=tau, alpha=alpha)
    pv = np.array([scipy_stats.binomtest(int(k), n, tau, alternative="greater").pvalue for k in estimation[0].ravel()])
    reject = multitest.multipletests(pv, alpha=alpha, method="holm")[0].reshape(6, 7)
    np.testing.assert_array_equal(ours, np.where(reject, 0, ABSTAIN))
    assert radius == pytest.approx(0.25 * scipy_stats.norm.ppf(tau), abs=1e-12)


@pytest.mark.slow
def test_segcertify_on_the_suite_unet():
    from pathlib import Path

    root = Path(advonnx.__file__).parent / "suites"
    model = advonnx.load_model(root / "models" / "brain_unet.onnx")
    with np.load(root / "data" / "brain_slices_test.npz") as d:
        x, y = d["x"][:3], d["y"][:3]
    cert = Smoother(model, sigma=0.05, rng=Random(0)).certify_dense(x, n0=5, n=60, alpha=0.001, tau=0.75)
    clean = (np.asarray(model.classify(x)) == y).reshape(3, -1).mean(axis=1)
    acc = cert.pixel_accuracy(y)
    assert cert.prediction.shape == y.shape and np.all(cert.queries == 65)
    assert np.all(acc <= clean + 0.02) and np.all(acc > 0.3)
    assert np.all((cert.abstain_rate() > 0) & (cert.abstain_rate() < 0.7))


def test_suite_rows_and_leaderboard_lines(tmp_path):
    """A ``certify`` setting in a suite: one row per sample of kind ``certificate`` with the
    smoothed prediction, the certified radius (0 unless certified correct) and the queries; the
    leaderboard marks it as a lower bound and prints the certified curve."""
    import io

    from rich.console import Console

    from advonnx.leaderboard import certified_curves, render
    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps

    path = save(small_cnn(size=8, classes=3, seed=4), tmp_path / "m.onnx")
    x = np.random.default_rng(5).uniform(0, 1, (10, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    suite = Suite(
        name="c",
        models=[ModelEntry("m", path)],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[
            AttackEntry("certify", "l2", parse_eps("0.25"), {"n0": 20, "n": 200}),
            AttackEntry("pgd", "l2", parse_eps("0.25"), {"steps": 3}),
        ],
        seed=0,
        masking_checks=False,
    )
    _, table = Runner(suite, out=tmp_path / "o").run()
    rows = [r for r in table.to_pylist() if r["attack"] == "certify"]
    assert len(rows) == 10 and {r["kind"] for r in rows} == {"certificate"} and {r["queries"] for r in rows} == {220}
    for r in rows:
        assert (r["certified_radius"] > 0) == bool(r["robust"])
        assert r["certified_radius"] <= 0.25 * 2.9  # sigma * Φ⁻¹ of the largest bound at n = 200
    # the same certificates from the API with the unit's stream
    curve = certified_curves(table)[0]
    assert curve["sigma"] == 0.25 and curve["n"] == 10 and curve["sandwich"][0][0] == 0.25
    out = io.StringIO()
    render(table, Console(file=out, width=200))
    text = out.getvalue()
    assert "≥" in text and "certified (randomized smoothing, σ=0.25" in text
    with pytest.raises(AdvonnxError, match="certificates, not adversarial examples"):
        advonnx.attack(advonnx.load_model(path), x[:2], None, "certify", norm="l2", eps=0.25)


def test_suite_certifies_a_segmenter_pixel_by_pixel(tmp_path):
    """``certify`` on a segmentation model runs SEGCERTIFY: rows carry the certified pixel accuracy
    and Dice of the smoothed map (abstained pixels wrong), equal to a direct certify_dense with the
    unit's random stream, and the radius σ·Φ⁻¹(τ); the leaderboard prints the certified curve."""
    import io

    from rich.console import Console
    from test_paper_attacks import tiny_segmenter

    from advonnx.leaderboard import certified_curves, render
    from advonnx.metrics import confusion_overlap
    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps

    path = save(tiny_segmenter(kernel=3), tmp_path / "s.onnx")
    x = np.random.default_rng(6).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    model = advonnx.load_model(path)
    y = np.asarray(model.classify(x))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    suite = Suite(
        name="c",
        models=[ModelEntry("s", path)],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[AttackEntry("certify", "l2", parse_eps("0.1"), {"n0": 5, "n": 60, "tau": 0.75})],
        seed=0,
        masking_checks=False,
    )
    _, table = Runner(suite, out=tmp_path / "o").run()
    rows = [r for r in table.to_pylist() if r["attack"] == "certify"]
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"certificate"} and {r["queries"] for r in rows} == {65}
    radius = 0.1 * scipy_stats.norm.ppf(0.75)
    assert all(r["certified_radius"] == pytest.approx(radius, abs=1e-12) for r in rows)
    ours = np.array([r["pixel_acc_adv"] for r in rows])
    # the abstain-as-wrong accounting by hand, from certify_dense on the same random stream
    from types import SimpleNamespace

    from advonnx.attacks import make_attack
    from advonnx.suite import _dense_certificate_rows

    attack = make_attack("certify", norm="l2", eps=0.1, n0=5, n=60, tau=0.75)
    unit = SimpleNamespace(start=0, stop=4, base={}, eps=0.1, eps_text="0.1")
    data = SimpleNamespace(y=y)
    direct = _dense_certificate_rows(unit, model, data, attack, x, list("abcd"), "1x8x8", Random(3), 0.0)
    cert = Smoother(model, sigma=0.1, rng=Random(3)).certify_dense(x, n0=5, n=60, alpha=0.001, tau=0.75)
    assert (cert.prediction == ABSTAIN).any() or (cert.prediction == y).all()
    acc = (cert.prediction == y).reshape(4, -1).mean(1)  # ABSTAIN (-1) is never the reference class
    dice, _ = confusion_overlap(cert.prediction, y, model.spec.num_classes)
    np.testing.assert_allclose([r["pixel_acc_adv"] for r in direct], acc, rtol=0, atol=1e-12)
    np.testing.assert_allclose([r["dice_adv"] for r in direct], dice.mean(1), rtol=0, atol=1e-12)
    curve = certified_curves(table)[0]
    assert curve["task"] == "segmentation" and curve["curve"][0][1] == pytest.approx(ours.mean())
    assert curve["curve"][-1][1] == 0.0  # every certified pixel holds within σ·Φ⁻¹(τ) < 1
    out = io.StringIO()
    render(table, Console(file=out, width=200))
    assert "certified pixel accuracy, abstained pixels wrong" in out.getvalue()
