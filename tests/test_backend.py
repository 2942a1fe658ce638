"""Device choice and IO binding (bound NumPy buffers on the CPU; CuPy on CUDA when present)."""

import numpy as np
import pytest

import advonnx
from advonnx import backend
from advonnx.errors import AdvonnxError


def test_cpu_requested():
    d = backend.resolve_device("cpu")
    assert d.kind == "cpu" and d.providers == ["CPUExecutionProvider"]


def test_auto_without_cuda_provider_explains(monkeypatch):
    monkeypatch.setattr(backend.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    d = backend.resolve_device("auto")
    assert d.kind == "cpu" and "no CUDA execution provider" in d.reason


def test_cuda_requested_but_missing_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(backend.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(AdvonnxError) as err:
        backend.resolve_device("cuda:0")
    assert "--device cuda:0" in str(err.value) and "\n" not in str(err.value)


def test_cuda_provider_that_falls_back_is_not_used(monkeypatch):
    class FakeSession:
        def __init__(self, *a, **k):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(
        backend.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(backend.ort, "InferenceSession", FakeSession)
    ok, why = backend.cuda_status(0)
    assert not ok and "fell back to CPU" in why
    assert backend.resolve_device("auto").kind == "cpu"


def test_bad_device_name():
    with pytest.raises(AdvonnxError, match="auto, cpu, cuda"):
        backend.resolve_device("tpu")
    with pytest.raises(AdvonnxError, match="cuda:N"):
        backend.resolve_device("cuda:x")


def test_io_binding_matches_plain_runs(brain_cnn_path, brain_patches):
    x, y = brain_patches
    x, y = x[:70], y[:70]
    plain = advonnx.load_model(brain_cnn_path, batch_size=32)
    bound = advonnx.load_model(brain_cnn_path, batch_size=32, io_binding=True)
    assert bound.io_binding and not plain.io_binding
    np.testing.assert_array_equal(plain.predict(x), bound.predict(x))
    lp, gp = plain.value_and_grad(x, y)
    lb, gb = bound.value_and_grad(x, y)
    np.testing.assert_array_equal(gp, gb)
    np.testing.assert_array_equal(lp, lb)


def _cupy():
    cp = pytest.importorskip("cupy")
    ok, why = backend.cuda_status(0)
    if not ok:
        pytest.skip(why)
    return cp


@pytest.mark.cuda
def test_cuda_predict_and_gradients_match_cpu(brain_cnn_path, brain_patches):
    cp = _cupy()
    x, y = brain_patches
    cpu = advonnx.load_model(brain_cnn_path, device="cpu")
    gpu = advonnx.load_model(brain_cnn_path, device="cuda")
    assert gpu.execution_provider == "CUDAExecutionProvider"
    xs, ys = cp.asarray(x), cp.asarray(y)
    np.testing.assert_allclose(cp.asnumpy(gpu.predict(xs)), cpu.predict(x), rtol=1e-4, atol=1e-4)
    _, g_cpu = cpu.value_and_grad(x, y)
    _, g_gpu = gpu.value_and_grad(xs, ys)
    assert isinstance(g_gpu, cp.ndarray)
    g_gpu = cp.asnumpy(g_gpu).reshape(len(x), -1)
    g_cpu = g_cpu.reshape(len(x), -1)
    err = np.linalg.norm(g_gpu - g_cpu, axis=1) / np.maximum(np.linalg.norm(g_cpu, axis=1), 1e-12)
    assert np.median(err) <= 1e-4


@pytest.mark.cuda
def test_cuda_attack_stays_on_device(brain_cnn_path, brain_patches):
    cp = _cupy()
    x, y = brain_patches
    gpu = advonnx.load_model(brain_cnn_path, device="cuda")
    cpu = advonnx.load_model(brain_cnn_path, device="cpu")
    r = advonnx.attack(gpu, cp.asarray(x), cp.asarray(y), "pgd", eps=4 / 255, steps=10, random_start=False)
    assert isinstance(r.x_adv, cp.ndarray)
    ref = advonnx.attack(cpu, x, y, "pgd", eps=4 / 255, steps=10, random_start=False)
    agree = (cp.asnumpy(r.success) == ref.success).mean()
    assert agree >= 0.99
