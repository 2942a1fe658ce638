"""Query-only attacks (NES/SPSA PGD, Square, HopSkipJump): Square's schedule and patches against the
authors' code, settings; slow: vs torchattacks / ART on brain_cnn. Budget, range, re-queried success,
exact query budget and array-api-strict: tests/test_attack_contract.py."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import advonnx
from advonnx.attacks import make_attack
from advonnx.errors import AdvonnxError
from models import save, softmax_regression


def linear_image(
    *,
    nhwc: bool = False,
    features: bool = False,
    volume: bool = False,
    probabilities: bool = False,
    classes: int = 3,
    seed: int = 0,
):
    """Flatten → Gemm (→ Softmax) on 8×8 two-channel images (or 4×4×4 volumes): a toy that attacks can break."""
    from onnx import TensorProto, helper, numpy_helper

    from models import _model

    rng = np.random.default_rng(seed)
    d = 2 * 8 * 8  # the volumes are 4×4×4: as many features as the images
    w = (rng.normal(0, 1.0, (d, classes)) * 0.5).astype(np.float32)
    b = rng.normal(0, 0.1, classes).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["image"], ["f"]), helper.make_node("Gemm", ["f", "W", "b"], ["logits"])]
    out = "logits"
    if probabilities:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    shape = ["N", d] if features else ["N", 2, 4, 4, 4] if volume else ["N", 8, 8, 2] if nhwc else ["N", 2, 8, 8]
    return _model(
        nodes,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )


def _authors_pseudo_gaussian(x, y):
    """pseudo_gaussian_pert_rectangles of the authors' square_attack (github.com/max-andr/square-attack)."""
    delta = np.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    counter2 = [x_c - 1, y_c - 1]
    for counter in range(0, max(x_c, y_c)):
        delta[
            max(counter2[0], 0) : min(counter2[0] + (2 * counter + 1), x),
            max(0, counter2[1]) : min(counter2[1] + (2 * counter + 1), y),
        ] += 1.0 / (counter + 1) ** 2
        counter2[0] -= 1
        counter2[1] -= 1
    return delta / np.sqrt(np.sum(delta**2, keepdims=True))


def _authors_meta(s, transpose):
    delta = np.zeros([s, s])
    delta[: s // 2] = _authors_pseudo_gaussian(s // 2, s)
    delta[s // 2 :] = _authors_pseudo_gaussian(s - s // 2, s) * (-1)
    delta /= np.sqrt(np.sum(delta**2, keepdims=True))
    return delta.T if transpose else delta


@pytest.mark.parametrize("s", [3, 4, 5, 8, 13])
def test_square_l2_patterns_extend_the_authors_2d_ones(s):
    from advonnx.attacks.square import _meta_pseudo_gaussian, _pseudo_gaussian_rectangles

    for h, w in ((s, s), (s // 2, s), (s, s - s // 2), (2, 7)):
        np.testing.assert_allclose(
            _pseudo_gaussian_rectangles((h, w)), _authors_pseudo_gaussian(h, w), rtol=0, atol=1e-15
        )
    for axis in (0, 1):
        np.testing.assert_allclose(_meta_pseudo_gaussian(s, 2, axis), _authors_meta(s, axis == 1), rtol=0, atol=1e-15)
    cube = _meta_pseudo_gaussian(s, 3, 2)  # 3-D: unit norm, + in the first half along the axis, − in the second
    assert cube.shape == (s, s, s) and np.isclose(np.sum(cube**2), 1.0)
    assert (cube[:, :, : s // 2] >= 0).all() and (cube[:, :, s // 2 :] <= 0).all()


@pytest.mark.parametrize("volume", [False, True], ids=["features", "ncdhw"])
def test_square_l2_keeps_the_whole_budget_beyond_2d(tmp_path, volume):
    # the authors' L2 search moves mass between windows at ‖δ‖₂ = eps; away from the box it stays there
    m = advonnx.load_model(save(linear_image(features=not volume, volume=volume, seed=2), tmp_path / "m.onnx"))
    x = np.random.default_rng(1).uniform(0.4, 0.6, (6,) + tuple(m.spec.input_shape[1:])).astype(np.float32)
    res = advonnx.attack(m, x, None, "square", rng=0, norm="l2", eps=0.05, max_queries=30)
    norms = np.linalg.norm((res.x_adv - x).reshape(len(x), -1).astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 0.05, rtol=1e-4)


def test_square_l2_refuses_inputs_too_small_for_a_window(tmp_path):
    from onnx import TensorProto, helper

    from models import _model

    proto = _model(
        [helper.make_node("Flatten", ["image"], ["logits"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [],
    )
    m = advonnx.load_model(save(proto, tmp_path / "m.onnx"))
    with pytest.raises(AdvonnxError, match="spatial side >= 4"):
        advonnx.attack(m, np.full((2, 3), 0.5, np.float32), None, "square", norm="l2", eps=0.1)


def test_square_spends_budget_on_robust_samples_only(tmp_path):
    """Per-sample early stop: a broken sample's queries are its count at first success."""
    m = advonnx.load_model(save(linear_image(), tmp_path / "m.onnx"))
    x = np.random.default_rng(2).uniform(0, 1, (16, 2, 8, 8)).astype(np.float32)
    res = advonnx.attack(m, x, None, "square", rng=0, norm="linf", eps=0.03, max_queries=200)
    assert res.success.any() and (~res.success).any()
    assert np.all(res.queries[~res.success] == 200)
    assert res.queries[res.success].mean() < 200


def test_hsj_minimal_norm_shrinks_with_queries(tmp_path):
    proto, *_ = softmax_regression(d=20, classes=3)
    m = advonnx.load_model(save(proto, tmp_path / "r.onnx"))
    x = np.random.default_rng(0).uniform(0.3, 0.7, (6, 20)).astype(np.float32)
    few = advonnx.attack(m, x, None, "hsj", rng=0, norm="l2", max_queries=150)
    many = advonnx.attack(m, x, None, "hsj", rng=0, norm="l2", max_queries=2000)
    assert few.success.all() and many.success.all()
    assert np.median(many.min_norm) < 0.8 * np.median(few.min_norm)
    # on a linear model the minimal L2 distance to the boundary is known exactly
    assert np.all(many.min_norm >= _linear_min_l2(proto, x) * (1 - 1e-3))
    assert np.median(many.min_norm / _linear_min_l2(proto, x)) < 1.2


def _linear_min_l2(proto, x):
    from onnx import numpy_helper

    w = numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    b = numpy_helper.to_array(proto.graph.initializer[1]).astype(np.float64)
    z = x.astype(np.float64) @ w + b
    y = z.argmax(1)
    best = np.full(len(x), np.inf)
    for j in range(w.shape[1]):
        wd = w[:, j][None, :] - w[:, y].T
        gap = z[np.arange(len(x)), y] - z[:, j]
        dist = gap / np.maximum(np.linalg.norm(wd, axis=1), 1e-12)
        best = np.where(y == j, best, np.minimum(best, dist))
    return best


def test_targeted_square_and_hsj(tmp_path):
    m = advonnx.load_model(save(linear_image(), tmp_path / "m.onnx"))
    x = np.random.default_rng(4).uniform(0, 1, (6, 2, 8, 8)).astype(np.float32)
    target = (m.classify(x) + 1) % 3
    for name, kw in (("square", dict(eps=0.5, max_queries=300)), ("hsj", dict(max_queries=800))):
        res = advonnx.attack(m, x, None, name, rng=0, targeted=True, target=target, **kw)
        assert np.array_equal(res.success, m.classify(res.x_adv) == target)
        assert res.success.mean() >= 0.5


def test_settings_and_needs():
    with pytest.raises(AdvonnxError, match="no setting"):
        make_attack("square", eps=0.1, steps=3)
    assert make_attack("hopskipjump", norm="l2").name == "hsj"
    assert make_attack("square", eps=0.1).needs == "scores"
    assert make_attack("hsj").needs == "decisions"
    assert "max_queries=100" in repr(make_attack("nes", eps=0.1, max_queries=100))


# -- slow: against the established libraries on the suite's trained CNN -------------------------


def _correct(model, x, y, n):
    ok = np.nonzero(model.classify(x) == y)[0][:n]
    return x[ok], y[ok]


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps,queries,p_init", [("linf", 8 / 255, 1000, 0.8), ("l2", 1.0, 500, 0.1)])
def test_square_vs_torchattacks(brain_cnn_path, brain_patches, norm, eps, queries, p_init):
    # both searches (L∞ sign windows; L2 pseudo-Gaussian windows moving mass at constant norm)
    # against the authors' algorithm as torchattacks ports it: same weights, budget and seeds
    torch = pytest.importorskip("torch")
    ta = pytest.importorskip("torchattacks")
    from reference.brain_cnn_torch import brain_cnn_from_onnx

    from advonnx.xp import norms

    m = advonnx.load_model(brain_cnn_path)
    x, y = _correct(m, *brain_patches, 100)
    assert len(x) >= 100
    net = brain_cnn_from_onnx(brain_cnn_path).eval()
    ours, theirs, t_ours, t_theirs = [], [], 0.0, 0.0
    for seed in range(3):
        t0 = time.perf_counter()
        r = advonnx.attack(m, x, y, "square", rng=seed, norm=norm, eps=eps, max_queries=queries, p_init=p_init)
        t_ours += time.perf_counter() - t0
        assert norms(r.x_adv - x, norm).max() <= eps * (1 + 1e-5)
        ours.append(r.success.mean())
        torch.manual_seed(seed)
        atk = ta.Square(
            net,
            norm={"linf": "Linf", "l2": "L2"}[norm],
            eps=eps,
            n_queries=queries,
            p_init=p_init,
            loss="margin",
            seed=seed,
        )
        t0 = time.perf_counter()
        xa = atk(torch.from_numpy(x), torch.from_numpy(y).long()).detach().numpy()
        t_theirs += time.perf_counter() - t0
        assert norms(xa - x, norm).max() <= eps * (1 + 1e-5)
        theirs.append((m.classify(xa) != y).mean())
    se = np.sqrt(np.mean(theirs) * (1 - np.mean(theirs)) / len(x))
    print(
        f"square {norm} {eps:.4g}, {queries}q: ours {np.mean(ours):.3f} {t_ours:.1f}s, "
        f"torchattacks {np.mean(theirs):.3f} {t_theirs:.1f}s"
    )
    assert np.mean(theirs) > 0.1  # the budget breaks samples at all
    assert np.mean(ours) >= np.mean(theirs) - 2 * se
    # Wall time is measured by benchmarks/bench_blackbox.py (nox -s bench), never asserted in a
    # test: a shared CI machine makes timings noise.


@pytest.mark.slow
def test_hsj_l2_vs_art(brain_cnn_path, brain_patches):
    pytest.importorskip("art")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_blackbox import hsj_vs_art

    m = advonnx.load_model(brain_cnn_path)
    x, y = _correct(m, *brain_patches, 50)
    assert len(x) >= 50
    r = hsj_vs_art(m, brain_cnn_path, x, y, seeds=(0, 1, 2), max_iter=4)
    print(r)
    assert r["ratio"] <= 1.1 or r["ratio"] <= 1 + r["art_spread"]
    # Time vs ART: benchmarks/bench_blackbox.py (not asserted here; timings on CI are noise).


def test_gradient_masking_check_flags_models():
    from advonnx.leaderboard import query_curve
    from advonnx.masking import masking_checks
    from advonnx.results import empty_row, rows_to_table

    rows = []
    for i in range(100):
        base = {
            **empty_row(),
            "model": "m",
            "dataset": "d",
            "norm": "linf",
            "eps": 0.1,
            "sample_id": str(i),
            "kind": "adversarial",
            "status": "ok",
            "task": "classification",
            "clean_correct": True,
        }
        wb_broken, bb_broken = i < 10, i < 40  # black-box breaks 30 samples the white-box attack did not
        rows.append(
            {
                **base,
                "attack": "pgd",
                "gradient": "exact",
                "adv_correct": not wb_broken,
                "success": wb_broken,
                "queries": 10,
            }
        )
        rows.append(
            {
                **base,
                "attack": "square",
                "gradient": "none",
                "adv_correct": not bb_broken,
                "success": bb_broken,
                "queries": i * 10 if bb_broken else 1000,
                "max_queries": 1000,
            }
        )
    ((m,),) = [masking_checks(rows_to_table(rows))["models"]]  # tests/test_masking.py has the rest
    (g,) = m["checks"]
    assert g["strong_robust"] == 0.9 and g["weak_robust"] == 0.6 and g["fired"] and m["suspected"]
    assert (g["only_weak"], g["only_strong"]) == (30, 0)
    # a black-box attack that is weaker than the white-box one is not a warning sign
    for r in rows:
        if r["attack"] == "square":
            r["adv_correct"] = True
    assert not masking_checks(rows_to_table(rows))["models"][0]["suspected"]
    curve = query_curve([r for r in rows if r["attack"] == "pgd"], 100)
    assert curve[-1] == (100.0, 0.1)
