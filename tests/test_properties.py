"""Property tests (Hypothesis): budgets and ranges, metric identities, lossless Parquet."""

import math

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import advonnx
from advonnx.metrics import confusion_overlap, pixel_accuracy, psnr, ssim
from advonnx.oracles import EstimatorConfig
from advonnx.results import SCHEMA, rows_to_table
from models import save, small_cnn, softmax_regression

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(
    d=st.integers(2, 40),
    classes=st.integers(2, 6),
    n=st.integers(1, 9),
    lo=st.floats(-300, 300),
    width=st.floats(0.01, 1000),
    eps_frac=st.floats(1e-4, 0.5),
    norm=st.sampled_from(["linf", "l2"]),
    name=st.sampled_from(["fgsm", "bim", "pgd"]),
    gradient=st.sampled_from(["exact", "estimated"]),
    seed=st.integers(0, 2**16),
)
def test_attacks_stay_in_budget_and_range(
    tmp_path_factory, d, classes, n, lo, width, eps_frac, norm, name, gradient, seed
):
    proto, *_ = softmax_regression(d=d, classes=classes, seed=seed % 7)
    hi = lo + width
    path = save(proto, tmp_path_factory.mktemp("p") / "m.onnx")
    m = advonnx.load_model(
        path, value_range=(lo, hi), scale=1.0 / width, mean=[lo / width], estimator=EstimatorConfig(samples=4)
    )
    x = np.random.default_rng(seed).uniform(lo, hi, (n, d)).astype(np.float32)
    x = np.clip(x, np.float32(lo), np.float32(hi))
    eps = eps_frac * width * (math.sqrt(d) if norm == "l2" else 1.0)
    settings_ = {"norm": norm, "eps": eps}
    if name != "fgsm":
        settings_["steps"] = 2
    res = advonnx.attack(m, x, None, name, rng=seed, gradient=gradient, **settings_)
    assert res.x_adv.shape == x.shape and np.all(np.isfinite(res.x_adv))
    assert res.x_adv.min() >= np.float32(lo) and res.x_adv.max() <= np.float32(hi)
    delta = res.x_adv.astype(np.float64) - x
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    tol = eps * 1e-5 + 4 * np.finfo(np.float32).eps * max(abs(lo), abs(hi))
    assert np.all(size <= eps + tol)


masks = st.integers(1, 4).flatmap(
    lambda c: st.tuples(
        st.just(c),
        st.lists(st.lists(st.integers(0, c - 1), min_size=9, max_size=9), min_size=1, max_size=4),
        st.lists(st.lists(st.integers(0, c - 1), min_size=9, max_size=9), min_size=1, max_size=4),
    )
)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_overlap_identities(case):
    c, a, b = case
    k = min(len(a), len(b))
    a = np.array(a[:k]).reshape(k, 3, 3)
    b = np.array(b[:k]).reshape(k, 3, 3)
    dice_self, iou_self = confusion_overlap(a, a, c)
    assert np.all(dice_self == 1) and np.all(iou_self == 1)
    dice, iou = confusion_overlap(a, b, c)
    assert np.all(iou <= dice + 1e-12) and np.all((0 <= iou) & (dice <= 1))
    np.testing.assert_allclose(dice, 2 * iou / (1 + iou))  # Dice = 2 IoU / (1 + IoU)
    d2, _ = confusion_overlap(b, a, c)
    np.testing.assert_allclose(dice, d2)
    assert np.all(pixel_accuracy(a, a) == 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.floats(1e-3, 0.3))
def test_psnr_ssim_identities(seed, noise):
    x = np.random.default_rng(seed).uniform(0, 1, (2, 1, 12, 12))
    assert np.all(np.isinf(psnr(x, x, (0, 1))))
    np.testing.assert_allclose(ssim(x, x, (0, 1), "NCHW"), 1.0)
    y = np.clip(x + noise * np.random.default_rng(seed + 1).normal(size=x.shape), 0, 1)
    assert np.all(ssim(x, y, (0, 1), "NCHW") < 1)
    mse = ((x - y) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(psnr(x, y, (0, 1)), 10 * np.log10(1 / mse))


def test_ssim_hand_computed_constant_images():
    # Two constant images a, b: SSIM = (2ab + C1) / (a² + b² + C1) (variances vanish).
    a, b = 0.2, 0.6
    x = np.full((1, 1, 9, 9), a)
    y = np.full((1, 1, 9, 9), b)
    c1 = (0.01) ** 2
    np.testing.assert_allclose(ssim(x, y, (0, 1), "NCHW"), (2 * a * b + c1) / (a * a + b * b + c1))


optional_float = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
row_strategy = st.fixed_dictionaries(
    {
        "run_id": st.text(max_size=8),
        "sample_id": st.text(max_size=12),
        "attack": st.sampled_from(["pgd", "fgsm"]),
        "eps": optional_float,
        "label": st.one_of(st.none(), st.integers(-(2**62), 2**62)),
        "success": st.one_of(st.none(), st.booleans()),
        "l2": optional_float,
        "dice_per_class": st.one_of(st.none(), st.lists(st.floats(allow_nan=False), max_size=5)),
        "status": st.sampled_from(["ok", "invalid", "errored", "skipped"]),
        "error": st.one_of(st.none(), st.text()),
    }
)


@settings(max_examples=50, deadline=None)
@given(st.lists(row_strategy, min_size=1, max_size=6))
def test_parquet_round_trip_is_lossless(tmp_path_factory, rows):
    import pyarrow.parquet as pq

    full = [{**{k: None for k in SCHEMA.names}, **r} for r in rows]
    path = tmp_path_factory.mktemp("pq") / "t.parquet"
    pq.write_table(rows_to_table(full, {"a": 1}), path)
    back = pq.read_table(path).to_pylist()
    for orig, got in zip(full, back, strict=True):
        for k in SCHEMA.names:
            a, b = orig[k], got[k]
            if isinstance(a, float) and math.isnan(a):
                assert math.isnan(b)
            else:
                assert a == b, (k, a, b)
    assert pa.types.is_list(pq.read_schema(path).field("dice_per_class").type)


def test_nhwc_attack_budget(tmp_path):
    m = advonnx.load_model(save(small_cnn(nhwc=True, channels=3, size=8), tmp_path / "m.onnx"))
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    r = advonnx.attack(m, x, None, "pgd", eps=0.03, steps=3)
    assert np.abs(r.x_adv - x).max() <= 0.03 * (1 + 1e-6)
