"""SegPGD (Gu et al., ECCV 2022; issue 16) against a PyTorch transcription of the paper's update.

The transcription (Alg. 1 / eq. 4 of the paper) computes the split loss
``((1 − λ_t) Σ_{correct} CE + λ_t Σ_{wrong} CE) / (H·W)``, ``λ_t = (t − 1) / (2T)``, with torch
autograd on the model's scores and takes its input gradient from the ONNX model's exact
vector-Jacobian product (the cotangent is torch's ∂L/∂scores), then the PGD step. advonnx's
implementation instead feeds the pixel weights as the mask of its ``seg_ce`` gradient graph.
Fast: a tiny segmenter, without random start (the same iterates). Slow: the suite's trained
brain_unet and brain_sdnet, mean Dice under attack within 0.01, with independent random starts.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_paper_attacks import SUITES, tiny_segmenter

import advonnx
from advonnx.attacks.segpgd import segpgd_lambda, segpgd_weights
from advonnx.metrics import confusion_overlap
from models import save, small_cnn

torch = pytest.importorskip("torch")


def segpgd_transcription(model, x, y, *, eps, alpha, steps, norm="linf", noise=None):
    """The paper's SegPGD, written out: x^0 = x + U(−ε, ε); for t = 1..T the split loss at x^{t−1},
    x^t = Π_ε(x^{t−1} + α sign(∇L)) (L2: α ∇L / ‖∇L‖₂ and the L2 ball), clipped to [0, 1]."""
    F = torch.nn.functional
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    x_adv = xt.clone() if noise is None else (xt + torch.from_numpy(noise)).clamp(0, 1)
    hw = float(np.prod(y.shape[1:]))
    for t in range(1, steps + 1):
        z = torch.from_numpy(model.predict(x_adv.numpy())).requires_grad_()
        lam = (t - 1) / (2 * steps)
        ce = F.cross_entropy(z, yt, reduction="none")
        correct = (z.argmax(1) == yt).float()
        loss = (((1 - lam) * ce * correct).flatten(1).sum(1) + (lam * ce * (1 - correct)).flatten(1).sum(1)) / hw
        loss.sum().backward()
        _, g = model.value_and_grad(x_adv.numpy(), cotangent=z.grad.numpy(), gradient="exact")
        g = torch.from_numpy(g)
        if norm == "linf":
            x_adv = xt + (x_adv + alpha * g.sign() - xt).clamp(-eps, eps)
        else:
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
            delta = x_adv + alpha * g - xt
            n = delta.flatten(1).norm(dim=1)
            delta = delta * torch.where(n > eps, eps / n.clamp_min(1e-12), torch.ones_like(n))[:, None, None, None]
            x_adv = xt + delta
        x_adv = x_adv.clamp(0, 1)
    return x_adv.numpy()


def test_lambda_schedule_and_weights():
    assert [segpgd_lambda(s, 4) for s in range(4)] == [0.0, 1 / 8, 2 / 8, 3 / 8]
    pred, lab = np.array([[0, 1, 2]]), np.array([[0, 2, 2]])
    np.testing.assert_allclose(segpgd_weights(pred, lab, 0.25, np.float32), [[0.75, 0.25, 0.75]])
    np.testing.assert_allclose(segpgd_weights(pred, lab, 0.25, np.float32, targeted=True), [[0.25, 0.75, 0.25]])


@pytest.fixture(scope="module")
def tiny_seg(tmp_path_factory):
    m = advonnx.load_model(save(tiny_segmenter(kernel=3), tmp_path_factory.mktemp("sp") / "seg.onnx"))
    x = np.random.default_rng(4).uniform(0.3, 0.7, (4, 1, 8, 8)).astype(np.float32)
    y = np.random.default_rng(5).integers(0, 3, (4, 8, 8))  # labels unlike the predictions
    return m, x, y


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_segpgd_follows_the_transcription_on_a_tiny_segmenter(tiny_seg, norm, eps):
    m, x, y = tiny_seg
    steps, alpha = 6, 2.5 * eps / 6
    ours = advonnx.attack(m, x, y, "segpgd", norm=norm, eps=eps, steps=steps, random_start=False, gradient="exact")
    ref = segpgd_transcription(m, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm)
    np.testing.assert_allclose(ours.x_adv, ref, atol=1e-5)
    # and it is not PGD: the mean-CE iterates differ once wrong pixels are weighted down
    pgd = advonnx.attack(m, x, y, "pgd", norm=norm, eps=eps, steps=steps, random_start=False, gradient="exact")
    assert np.abs(pgd.x_adv - ours.x_adv).max() > 1e-3
    assert (ours.queries == 2 * steps).all()  # a prediction and a gradient per step


def test_segpgd_refuses_classifiers(tmp_path):
    m = advonnx.load_model(save(small_cnn(), tmp_path / "c.onnx"))
    with pytest.raises(advonnx.AdvonnxError, match="does not attack classification"):
        advonnx.attack(m, np.zeros((1, 1, 8, 8), np.float32), None, "segpgd")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,norm,eps", [("brain_unet", "linf", 4 / 255), ("brain_sdnet", "linf", 4 / 255), ("brain_sdnet", "l2", 0.5)]
)
def test_segpgd_on_trained_segmenters_vs_transcription(name, norm, eps):
    model = advonnx.load_model(SUITES / "models" / f"{name}.onnx")
    d = np.load(SUITES / "data" / "brain_slices_test.npz")
    x, y = d["x"], d["y"].astype(np.int64)
    steps, alpha = 10, 2.5 * eps / 10
    ours = advonnx.attack(model, x, y, "segpgd", norm=norm, eps=eps, steps=steps, gradient="exact", rng=0)
    gen = np.random.default_rng(123)  # an independent random start, as the paper's (Linf: uniform in the box)
    if norm == "linf":
        noise = gen.uniform(-eps, eps, x.shape).astype(np.float32)
    else:
        g = gen.normal(size=x.shape)
        g /= np.linalg.norm(g.reshape(len(x), -1), axis=1)[:, None, None, None]
        noise = (g * eps * gen.uniform(size=(len(x), 1, 1, 1)) ** (1 / g[0].size)).astype(np.float32)
    theirs = segpgd_transcription(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, noise=noise)
    dice = lambda p: confusion_overlap(p, y, model.spec.num_classes)[0]  # noqa: E731
    d_clean, d_o, d_t = dice(model.classify(x)), dice(np.asarray(ours.adv_pred)), dice(model.classify(theirs))
    print(
        f"SegPGD {name} {norm} eps={eps:.4g} steps={steps} n={len(x)}: mean Dice clean {d_clean.mean():.4f} "
        f"ours {d_o.mean():.4f} transcription {d_t.mean():.4f}; per class ours {np.round(d_o.mean(0), 4)} "
        f"transcription {np.round(d_t.mean(0), 4)}"
    )
    assert abs(d_o.mean() - d_t.mean()) <= 0.01
    assert d_o.mean() < d_clean.mean() - 0.005
