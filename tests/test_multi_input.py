"""Models with several inputs: one attacked (``--input``, or guessed), the others fed per sample
from the data and held fixed (a signal + clinical covariates model made here in torch)."""

from __future__ import annotations

import numpy as np
import pytest

import advonnx
from advonnx.errors import AdvonnxError, ModelError

torch = pytest.importorskip("torch")

F = 3  # covariates (age, sex, site)
T = 64


class SignalWithFeatures(torch.nn.Module):
    """signal (N, 1, T) → 1-D CNN → global average; concatenated with features (N, F) → head."""

    def __init__(self, classes=3):
        super().__init__()
        self.c1 = torch.nn.Conv1d(1, 6, 5, padding=2)
        self.c2 = torch.nn.Conv1d(6, 6, 3, padding=1)
        self.f = torch.nn.Linear(F, 6)
        self.head = torch.nn.Linear(12, classes)

    def forward(self, signal, features):
        h = torch.relu(self.c1(signal))
        h = torch.relu(self.c2(h)).mean(dim=2)
        # the covariates scale the signal path too, so the input gradient depends on them
        g = torch.tanh(self.f(features))
        return self.head(torch.cat([h * (1 + g), g], dim=1))


def export(net, path, names=("signal", "features")):
    net.eval()
    torch.onnx.export(net, (torch.zeros(2, 1, T), torch.zeros(2, F)), str(path), input_names=list(names),
                      output_names=["logits"], dynamic_axes={n: {0: "N"} for n in names}, dynamo=False)
    return str(path)


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T) / T
    y = rng.integers(0, 3, n)
    x = 0.5 + 0.3 * np.sin(2 * np.pi * (2 + 3 * y)[:, None, None] * t + rng.uniform(0, 6, (n, 1, 1)))
    feats = np.stack([rng.uniform(20, 80, n) / 100, rng.integers(0, 2, n), rng.integers(0, 3, n) / 2], axis=1)
    return np.clip(x, 0, 1).astype(np.float32), feats.astype(np.float32), y


@pytest.fixture(scope="module")
def two_input(tmp_path_factory):
    torch.manual_seed(0)
    net = SignalWithFeatures()
    path = export(net, tmp_path_factory.mktemp("mi") / "sig_feat.onnx")
    return net, path


def test_attacked_input_guessed_and_others_held(two_input):
    _, path = two_input
    m = advonnx.load_model(path)
    s = m.spec
    assert s.input_name == "signal" and s.layout == "NCW" and s.num_classes == 3
    assert s.extra_inputs == (("features", (None, F), "float32"),)
    with pytest.raises(AdvonnxError, match="features"):
        m.predict(data()[0])  # the covariates must be given


def test_gradients_match_torch_autograd(two_input):
    net, path = two_input
    m = advonnx.load_model(path)
    x, f, y = data()
    extras = {"features": f}
    scores = m.predict(x, extras=extras)
    xt = torch.tensor(x, requires_grad=True)
    logits = net(xt, torch.tensor(f))
    np.testing.assert_allclose(scores, logits.detach().numpy(), atol=1e-5)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y), reduction="sum")
    loss.backward()
    value, grad = m.value_and_grad(x, y, loss="ce", gradient="exact", extras=extras)
    assert np.linalg.norm(grad - xt.grad.numpy()) <= 1e-4 * np.linalg.norm(xt.grad.numpy())
    np.testing.assert_allclose(value.sum(), loss.item(), rtol=1e-5)
    # other covariates, another gradient, still torch's: the features really are fed per sample
    f2 = f[::-1].copy()
    _, g2 = m.value_and_grad(x, y, loss="ce", gradient="exact", extras={"features": f2})
    xt2 = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(net(xt2, torch.tensor(f2)), torch.tensor(y), reduction="sum").backward()
    assert np.linalg.norm(g2 - xt2.grad.numpy()) <= 1e-4 * np.linalg.norm(xt2.grad.numpy())
    assert np.linalg.norm(g2 - grad) > 0.1 * np.linalg.norm(grad)


def test_attacking_a_subset_uses_each_samples_own_inputs(two_input):
    _, path = two_input
    m = advonnx.load_model(path)
    x, f, y = data()
    full = advonnx.attack(m, x, y, "pgd", eps=0.05, steps=5, random_start=False, extras={"features": f})
    for i in (0, 5, 11):
        one = advonnx.attack(m, x[i:i + 1], y[i:i + 1], "pgd", eps=0.05, steps=5, random_start=False,
                             extras={"features": f[i:i + 1]})
        np.testing.assert_allclose(one.x_adv[0], full.x_adv[i], atol=1e-6)
        assert one.adv_pred[0] == full.adv_pred[i]


def test_estimated_gradients_feed_each_probe_its_samples_inputs(two_input):
    _, path = two_input
    m = advonnx.load_model(path)
    x, f, y = data(n=4)
    _, exact = m.value_and_grad(x, y, loss="ce", gradient="exact", extras={"features": f})
    _, est = m.value_and_grad(x, y, loss="ce", gradient="estimated", extras={"features": f})
    cos = (exact * est).reshape(4, -1).sum(1) / (np.linalg.norm(exact.reshape(4, -1), axis=1)
                                                  * np.linalg.norm(est.reshape(4, -1), axis=1))
    assert cos.min() > 0.5, cos
