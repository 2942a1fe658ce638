"""The on-disk cache of gradient sessions: same gradients, reused, rebuilt when corrupted,
off with ADVONNX_CACHE=0, size-capped, safe under concurrent runs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import advonnx
from advonnx import gradcache
from models import save, small_cnn


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVONNX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ADVONNX_CACHE", raising=False)
    monkeypatch.delenv("ADVONNX_CACHE_MAX_MB", raising=False)
    return tmp_path / "cache" / "grad"


@pytest.fixture
def case(tmp_path):
    path = save(small_cnn(seed=3), tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    return path, x, np.arange(5) % 3


def _grad(path, x, y, loss="ce", **kw):
    return advonnx.load_model(path, device="cpu", **kw).value_and_grad(x, y, loss=loss, gradient="exact")


def _count_builds(monkeypatch):
    import advonnx.autodiff as autodiff

    calls = {"n": 0, "checks": 0}
    real, real_check = autodiff.gradient_model, autodiff.unsupported_ops

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    def counting_check(*a, **k):
        calls["checks"] += 1
        return real_check(*a, **k)

    monkeypatch.setattr(autodiff, "gradient_model", counting)
    monkeypatch.setattr(autodiff, "unsupported_ops", counting_check)
    return calls


def test_warm_start_reuses_the_entry_and_gives_the_same_gradients(cache, case, monkeypatch):
    path, x, y = case
    monkeypatch.setenv("ADVONNX_CACHE", "0")
    ref_loss, ref_grad = _grad(path, x, y)
    assert not cache.exists()
    monkeypatch.delenv("ADVONNX_CACHE")
    builds = _count_builds(monkeypatch)
    cold = _grad(path, x, y)
    assert builds["n"] == 1 and builds["checks"] == 1 and len(list(cache.glob("*.onnx"))) == 1
    warm = _grad(path, x, y)  # a new model object, as in a second run: nothing rebuilt or re-checked
    assert builds["n"] == 1 and builds["checks"] == 1
    for got in (cold, warm):
        np.testing.assert_allclose(got[0], ref_loss, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[1], ref_grad, rtol=1e-5, atol=1e-7)
    # another loss or other preprocessing is another entry
    _grad(path, x, y, loss="margin")
    _grad(path, x, y, mean="0.1", std="0.5")  # preprocessing folded into the graph
    assert builds["n"] == 3 and len(list(cache.glob("*.onnx"))) == 3
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".build-*"))


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip"])
def test_corrupted_entry_is_ignored_and_rebuilt(cache, case, monkeypatch, damage):
    path, x, y = case
    ref = _grad(path, x, y)
    (entry,) = cache.glob("*.onnx")
    data = entry.read_bytes()
    entry.write_bytes(
        {
            "garbage": b"not a model",
            "truncate": data[: len(data) // 2],
            "flip": data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],
        }[damage]
    )
    builds = _count_builds(monkeypatch)
    got = _grad(path, x, y)
    assert builds["n"] == 1
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-7)
    (entry,) = cache.glob("*.onnx")
    assert gradcache._verified(entry)  # one valid entry again (optimized bytes may differ run to run)


def test_cache_off_and_size_cap(cache, case, tmp_path, monkeypatch):
    path, x, y = case
    monkeypatch.setenv("ADVONNX_CACHE", "0")
    _grad(path, x, y)
    assert not cache.exists()
    monkeypatch.delenv("ADVONNX_CACHE")
    _grad(path, x, y)
    (first,) = cache.glob("*.onnx")
    size = first.stat().st_size
    os.utime(first, (1, 1))  # long unused
    monkeypatch.setenv("ADVONNX_CACHE_MAX_MB", str(1.5 * size / 2**20))
    _grad(path, x, y, loss="margin")
    left = list(cache.glob("*.onnx"))
    assert len(left) == 1 and left[0] != first and sum(p.stat().st_size for p in left) <= 1.5 * size


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("ADVONNX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gradcache.cache_dir() == tmp_path / "xdg" / "advonnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert gradcache.cache_dir() == Path.home() / ".cache" / "advonnx"


CHILD = """
import sys, numpy as np, advonnx
x = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
loss, grad = advonnx.load_model(sys.argv[1], device="cpu").value_and_grad(x, np.arange(5) % 3, gradient="exact")
np.save(sys.argv[2], grad)
"""


@pytest.mark.slow
def test_concurrent_runs_share_one_valid_entry(cache, case, tmp_path):
    path, x, y = case
    env = {**os.environ, "ADVONNX_CACHE_DIR": str(cache.parent), "PYTHONPATH": str(Path(advonnx.__file__).parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(tmp_path / f"g{i}.npy")], env=env)
        for i in range(4)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    grads = [np.load(tmp_path / f"g{i}.npy") for i in range(4)]
    ref = _grad(path, x, y)[1]
    for g in grads:
        np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-7)
    entries = list(cache.glob("*.onnx"))  # racing writers may each leave a (valid) copy
    assert entries and all(gradcache._verified(e) for e in entries)
    assert not [p for p in cache.iterdir() if p.suffix not in (".onnx", ".ops", ".digest")]  # no temporaries


def test_rewritten_model_file_is_not_served_a_stale_entry(cache, case, monkeypatch):
    """Same path, same size, new weights: the digest memo keys on the file's identity (size and
    modification time), so the new model gets its own, correct gradients."""
    path, x, y = case
    _grad(path, x, y)
    st = os.stat(path)
    save(small_cnn(seed=4), path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert os.stat(path).st_size == st.st_size
    got = _grad(path, x, y)
    monkeypatch.setenv("ADVONNX_CACHE", "0")
    ref = _grad(path, x, y)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-7)
    assert len(list(cache.glob("*.onnx"))) == 2


def test_a_changed_gradient_builder_does_not_reuse_the_old_graphs(cache, case, monkeypatch):
    """The key holds the autodiff source digest: rules changed under the same version number
    build (and store) a new graph instead of reopening the one the old rules built."""
    path, x, y = case
    builds = _count_builds(monkeypatch)
    _grad(path, x, y)
    _grad(path, x, y)
    assert builds["n"] == 1 and builds["checks"] == 1
    assert len(gradcache.builder_digest()) == 64
    monkeypatch.setattr(gradcache, "builder_digest", lambda: "0" * 64)
    _grad(path, x, y)
    assert builds["n"] == 2 and builds["checks"] == 2 and len(list(cache.glob("*.onnx"))) == 2
