"""Sliding-window inference against MONAI's ``sliding_window_inference`` on the same weights:
stitched scores and the input gradient through the stitching (torch autograd through MONAI)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import advonnx
from advonnx.errors import AdvonnxError
from advonnx.sliding import SlidingWindowModel, scan_starts

torch = pytest.importorskip("torch")
inferers = pytest.importorskip("monai.inferers")

ROI = (8, 12, 10)


class Seg3d(torch.nn.Module):
    """Two 3x3x3 convolutions (same padding) to 3 classes: a fully convolutional segmenter."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv3d(1, 6, 3, padding=1)
        self.c2 = torch.nn.Conv3d(6, 3, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.tanh(self.c1(x)))


@pytest.fixture(scope="module")
def seg3d(tmp_path_factory):
    torch.manual_seed(0)
    net = Seg3d().eval()
    path = tmp_path_factory.mktemp("sw") / "seg3d.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 1, *ROI),),
        str(path),
        input_names=["x"],
        output_names=["scores"],
        dynamic_axes={"x": {0: "N"}},
        dynamo=False,
    )
    return net, str(path)


def volume(shape=(2, 1, 19, 12, 23), seed=0):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("blend,overlap", [("constant", 0.25), ("gaussian", 0.5), ("gaussian", 0.0)])
def test_scores_and_gradient_equal_monai(seg3d, blend, overlap):
    net, path = seg3d
    model = SlidingWindowModel(advonnx.load_model(path), ROI, overlap=overlap, blend=blend, windows_per_call=5)
    x = volume()
    ours = model.predict(x)
    xt = torch.tensor(x, requires_grad=True)
    ref = inferers.sliding_window_inference(xt, ROI, 3, net, overlap=overlap, mode=blend)
    assert ours.shape == tuple(ref.shape)
    np.testing.assert_allclose(ours, ref.detach().numpy(), atol=1e-5)
    y = ref.detach().numpy().argmax(axis=1)
    y[:, ::3] = (y[:, ::3] + 1) % 3  # some wrong pixels, so the loss has a real gradient
    loss, grad = model.value_and_grad(x, y, loss="seg_ce", gradient="exact")
    ce = torch.nn.functional.cross_entropy(ref, torch.tensor(y), reduction="none").mean(dim=(1, 2, 3))
    ce.sum().backward()
    np.testing.assert_allclose(loss, ce.detach().numpy(), rtol=1e-5)
    assert np.linalg.norm(grad - xt.grad.numpy()) / np.linalg.norm(xt.grad.numpy()) < 1e-4


def test_cotangent_and_padding(seg3d):
    """A vector-Jacobian product through the stitching equals autograd's; an input smaller than the
    window on an axis is padded like MONAI's."""
    net, path = seg3d
    model = SlidingWindowModel(advonnx.load_model(path), ROI, overlap=0.25)
    x = volume((1, 1, 6, 30, 10), seed=1)  # D < roi
    xt = torch.tensor(x, requires_grad=True)
    ref = inferers.sliding_window_inference(xt, ROI, 4, net, overlap=0.25)
    cot = np.random.default_rng(2).normal(size=ref.shape).astype(np.float32)
    value, grad = model.value_and_grad(x, None, cotangent=cot, gradient="exact")
    (ref * torch.tensor(cot)).sum().backward()
    np.testing.assert_allclose(value, [(ref.detach().numpy() * cot).sum()], rtol=1e-4)
    assert np.linalg.norm(grad - xt.grad.numpy()) / np.linalg.norm(xt.grad.numpy()) < 1e-4


def test_pgd_on_a_volume_larger_than_the_window(seg3d):
    _, path = seg3d
    model = SlidingWindowModel(advonnx.load_model(path), ROI, overlap=0.25, blend="gaussian")
    x = volume((2, 1, 14, 20, 17), seed=3)
    res = advonnx.attack(model, x, None, "pgd", norm="linf", eps=0.1, steps=5)
    assert res.x_adv.shape == x.shape and float(res.linf.max()) <= 0.1 + 1e-6
    clean = model.classify(x)
    assert (model.classify(res.x_adv) != clean).mean() > (
        model.classify(
            np.clip(x + 0.1 * np.sign(np.random.default_rng(0).normal(size=x.shape)), 0, 1).astype(np.float32)
        )
        != clean
    ).mean()


def test_scan_starts_match_monai_and_errors(seg3d):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for size, roi, overlap in [(19, 8, 0.25), (12, 12, 0.5), (23, 10, 0.0), (100, 7, 0.9), (9, 8, 0.75)]:
        interval = _get_scan_interval((size,), (roi,), 1, (overlap,))
        monai_starts = [s[0].start for s in dense_patch_slices((size,), (roi,), interval)]
        assert scan_starts(size, roi, overlap) == monai_starts, (size, roi, overlap)
    _, path = seg3d
    m = advonnx.load_model(path)
    with pytest.raises(AdvonnxError, match="takes windows of"):
        SlidingWindowModel(m, (8, 8, 8))
    with pytest.raises(AdvonnxError, match="overlap"):
        SlidingWindowModel(m, ROI, overlap=1.0)
    with pytest.raises(AdvonnxError, match="blend"):
        SlidingWindowModel(m, ROI, blend="hann")


@pytest.mark.slow
def test_cli_attacks_a_volume_larger_than_the_window(seg3d, tmp_path):
    net, path = seg3d
    x = volume((2, 1, 20, 24, 18), seed=4)
    y = inferers.sliding_window_inference(torch.tensor(x), ROI, 4, net, overlap=0.25).detach().numpy().argmax(axis=1)
    np.savez(tmp_path / "vols.npz", x=x, y=y)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "advonnx.cli",
            "run",
            "--model",
            path,
            "--data",
            str(tmp_path / "vols.npz"),
            "--patch-size",
            "8,12,10",
            "--attack",
            "pgd",
            "--eps",
            "0.05",
            "--out",
            str(tmp_path / "o"),
            "-q",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    from advonnx.results import read_results

    t = read_results(next((tmp_path / "o").iterdir())).to_pandas()
    assert set(t["status"]) == {"ok"} and list(t["attack"]) == ["pgd", "pgd"]
    clean = t[t["attack"] == "pgd"]["dice_clean"].to_numpy()
    np.testing.assert_allclose(clean, 1.0)  # labels are MONAI's stitched predictions: ours agree exactly
    assert (t[t["attack"] == "pgd"]["dice_adv"] < 1.0).all()
