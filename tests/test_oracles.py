"""Estimated gradients against the analytic gradient of a softmax regression."""

import numpy as np
import pytest

import advonnx
from advonnx.oracles import EstimatorConfig
from models import save, small_cnn, softmax_regression


def _analytic_ce_grad(x, y, w, b):
    z = x.astype(np.float64) @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (p - np.eye(w.shape[1])[y]) @ w.T


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _regression(tmp_path, d=784):
    proto, w, b = softmax_regression(d=d, classes=10, seed=0)
    model = advonnx.load_model(save(proto, tmp_path / "softreg.onnx"))
    x = np.random.default_rng(1).uniform(0, 1, (16, d)).astype(np.float32)
    y = np.random.default_rng(2).integers(0, 10, 16)
    return model, x, y, w, b


@pytest.fixture
def regression(tmp_path):
    return _regression(tmp_path)


# MNIST-sized (784 features, 4001 queries per sample) is the claim; a quarter of it runs in the fast loop
@pytest.mark.parametrize("d,samples", [pytest.param(784, 2000, marks=pytest.mark.slow), (196, 500)])
def test_nes_orthogonal_cosine_above_0_9_within_10000_queries(tmp_path, d, samples):
    model, x, y, w, b = _regression(tmp_path, d)
    model.estimator = EstimatorConfig(method="nes", samples=samples)  # 2 samples + 1 queries per sample
    counts = np.zeros(16, np.int64)
    loss, g = model.value_and_grad(x, y, gradient="estimated", counter=lambda idx: np.add.at(counts, idx, 1))
    cos = _cos(g, _analytic_ce_grad(x, y, w, b))
    assert cos.mean() > 0.9, cos
    assert counts.max() <= 10_000 and np.all(counts == 2 * samples + 1)
    z = x @ w + b
    ref_loss = -(z[np.arange(16), y] - np.log(np.exp(z).sum(1)))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)


def test_nes_gaussian_is_unbiased_direction(regression):
    model, x, y, w, b = regression
    model.estimator = EstimatorConfig(method="nes", samples=400, orthogonal=False)
    _, g = model.value_and_grad(x, y, gradient="estimated")
    assert _cos(g, _analytic_ce_grad(x, y, w, b)).mean() > 0.4  # sqrt(q/(q+d)) ≈ 0.58 in theory


def test_spsa_estimate(regression):
    model, x, y, w, b = regression
    model.estimator = EstimatorConfig(method="spsa", samples=400)
    _, g = model.value_and_grad(x, y, gradient="estimated")
    assert _cos(g, _analytic_ce_grad(x, y, w, b)).mean() > 0.4


@pytest.mark.parametrize("d", [pytest.param(784, marks=pytest.mark.slow), 196])
def test_cotangent_vjp_estimate(tmp_path, d):
    """As many orthogonal directions as features: the cotangent's VJP is recovered exactly."""
    model, x, y, w, b = _regression(tmp_path, d)
    model.estimator = EstimatorConfig(samples=d)
    cot = np.random.default_rng(3).normal(size=(16, 10)).astype(np.float32)
    loss, g = model.value_and_grad(x, cotangent=cot, gradient="estimated")
    np.testing.assert_allclose(loss, ((x @ w + b) * cot).sum(1), rtol=1e-4, atol=1e-4)
    assert _cos(g, cot @ w.T).min() > 0.999


def test_estimator_is_deterministic_per_seed(regression):
    from advonnx.xp import Random

    model, x, y, *_ = regression
    a = model.value_and_grad(x, y, gradient="estimated", rng=Random(5))[1]
    b = model.value_and_grad(x, y, gradient="estimated", rng=Random(5))[1]
    assert np.array_equal(a, b)


def test_a_model_on_cuda_builds_its_gradient_graph_for_cuda_kernels(tmp_path, monkeypatch):
    """The gradient graph is built for the execution provider that runs it (``kernels``), so
    CPU-only constructions (MaxUnpool) never reach a CUDA session."""
    import dataclasses

    import advonnx.autodiff as autodiff

    seen = []
    real = autodiff.gradient_model

    def recording(*a, **k):
        seen.append(k.get("kernels", "cpu"))
        return real(*a, **k)

    monkeypatch.setattr(autodiff, "gradient_model", recording)
    monkeypatch.setenv("ADVONNX_CACHE", "0")
    x = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    on_cpu = advonnx.load_model(save(small_cnn(), tmp_path / "m.onnx"), device="cpu")
    cpu_grad = on_cpu.value_and_grad(x, np.arange(3), loss="ce", gradient="exact")[1]
    on_cuda = advonnx.load_model(tmp_path / "m.onnx", device="cpu")
    on_cuda.device = dataclasses.replace(on_cuda.device, kind="cuda")  # the kind, not the providers
    cuda_grad = on_cuda.value_and_grad(x, np.arange(3), loss="ce", gradient="exact")[1]
    assert seen == ["cpu", "cuda"]
    np.testing.assert_allclose(cuda_grad, cpu_grad, rtol=1e-5, atol=1e-7)
