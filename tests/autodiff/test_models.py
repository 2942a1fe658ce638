"""Gradient graphs of exported PyTorch nets against torch.autograd on the same weights."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest

from advonnx import losses
from advonnx.autodiff import (
    GRAD_INPUT_COTANGENT,
    GRAD_INPUT_LABEL,
    GRAD_INPUT_MASK,
    GRAD_OUTPUT_GRAD,
    GRAD_OUTPUT_LOSS,
    GRAD_OUTPUT_SCORES,
    gradient_model,
)

from .harness import check_default_domain, ort_session, rel_err

torch = pytest.importorskip("torch")  # without torch the module is skipped, not a collection error
F = torch.nn.functional

from .nets import NETS, NHWC, FullyConvSeg, WithSoftmax, export, make_net  # noqa: E402

EXPORTERS = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo")]
# torch.export is seconds per net: the fast loop keeps one dynamo export (resnet, shared through
# `exported` by test_classification_losses, test_dynamic_batch_sizes, test_weights_are_not_duplicated)
SLOW_DYNAMO = [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo", marks=pytest.mark.slow)]
FAST_DYNAMO_NET = "resnet"
TOL = 1e-4


@functools.cache
def exported(name: str, dynamo: bool, wrap: str = ""):
    net = make_net(name)
    if wrap == "softmax":
        net = WithSoftmax(net).eval()
    elif wrap == "nhwc":
        net = NHWC(net).eval()
    return net, export(net, dynamo=dynamo)


def torch_loss(scores, y, loss: str, *, probabilities=False, mask=None, axis=1):
    if axis != 1:
        scores = scores.movedim(axis, 1)
    if loss == "margin":
        onehot = F.one_hot(y, scores.shape[1]).to(scores.dtype)
        return (scores - onehot * 1e9).max(1).values - (scores * onehot).sum(1)
    if probabilities:
        logp = torch.log(scores.clamp(losses.PROB_FLOOR, 1.0))
        per = -logp.gather(1, y.unsqueeze(1)).squeeze(1)
    else:
        per = F.cross_entropy(scores, y, reduction="none")
    if loss == "ce":
        return per
    per = per.flatten(1)
    w = torch.ones_like(per) if mask is None else mask.flatten(1)
    return (per * w).sum(1) / w.sum(1).clamp(min=1.0)


def torch_value_and_grad(net, x, y, loss, **kw):
    xr = torch.as_tensor(x).clone().requires_grad_(True)
    scores = net(xr)
    lt = torch_loss(scores, torch.as_tensor(y), loss, **kw)
    (g,) = torch.autograd.grad(lt.sum(), xr)
    return scores.detach().numpy(), lt.detach().numpy(), g.numpy()


def run_grad(model, loss, x, y, mask=None, **kw):
    gm = gradient_model(model, loss=loss, **kw)
    feed = {model.graph.input[0].name: x, GRAD_INPUT_LABEL: y}
    if loss == "seg_ce":
        feed[GRAD_INPUT_MASK] = np.ones(y.shape, np.float32) if mask is None else mask
    out = ort_session(gm).run([GRAD_OUTPUT_SCORES, GRAD_OUTPUT_LOSS, GRAD_OUTPUT_GRAD], feed)
    return gm, out


def assert_per_sample(got, expected, tol=TOL):
    assert got.shape == expected.shape
    errs = [rel_err(got[i], expected[i]) for i in range(len(got))]
    assert max(errs) <= tol, f"per-sample relative errors {errs}"


def sample(net, n=3, seed=0, seg=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *net.input_shape)).astype(np.float32)
    with torch.no_grad():
        z = net(torch.as_tensor(x))
    shape = (n, *z.shape[2:]) if seg else (n,)
    return x, rng.integers(0, z.shape[1], shape).astype(np.int64)


@pytest.mark.parametrize(
    "name,dynamo",
    [
        pytest.param(
            name,
            dynamo,
            id=f"{name}-{'dynamo' if dynamo else 'torchscript'}",
            marks=pytest.mark.slow if dynamo and name != FAST_DYNAMO_NET else (),
        )
        for name in sorted(NETS)
        for dynamo in (False, True)
    ],
)
def test_net_gradient_matches_torch(name, dynamo):
    net, model = exported(name, dynamo)
    seg = name == "unet"
    loss = "seg_ce" if seg else "ce"
    x, y = sample(net, seg=seg)
    gm, (scores, lv, g) = run_grad(model, loss, x, y)
    check_default_domain(gm)
    ts, tl, tg = torch_value_and_grad(net, x, y, loss)
    np.testing.assert_allclose(scores, ts, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lv, tl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(lv, losses.compute(loss, scores, y, probabilities=False), rtol=1e-5, atol=1e-6)
    assert_per_sample(g, tg)


@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_classification_losses(loss, dynamo):
    net, model = exported("resnet", dynamo)
    x, y = sample(net, n=4, seed=1)
    _, (scores, lv, g) = run_grad(model, loss, x, y)
    ts, tl, tg = torch_value_and_grad(net, x, y, loss)
    np.testing.assert_allclose(lv, losses.compute(loss, scores, y, probabilities=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lv, tl, rtol=1e-4, atol=1e-5)
    assert_per_sample(g, tg)


@pytest.mark.parametrize("dynamo", SLOW_DYNAMO)
def test_ce_on_probabilities(dynamo):
    net, model = exported("small_cnn", dynamo, "softmax")
    x, y = sample(net, n=4, seed=2)
    _, (scores, lv, g) = run_grad(model, "ce", x, y, probabilities=True)
    np.testing.assert_allclose(lv, losses.compute("ce", scores, y, probabilities=True), rtol=1e-5, atol=1e-6)
    _, tl, tg = torch_value_and_grad(net, x, y, "ce", probabilities=True)
    assert_per_sample(g, tg)


def test_seg_ce_with_mask():
    net, model = exported("unet", False)
    x, y = sample(net, n=3, seed=3, seg=True)
    mask = (np.random.default_rng(3).random(y.shape) > 0.5).astype(np.float32)
    mask[2] = 0.0  # an empty mask: loss and gradient zero
    _, (scores, lv, g) = run_grad(model, "seg_ce", x, y, mask=mask)
    np.testing.assert_allclose(
        lv, losses.compute("seg_ce", scores, y, probabilities=False, mask=mask), rtol=1e-5, atol=1e-6
    )
    _, tl, tg = torch_value_and_grad(net, x, y, "seg_ce", mask=torch.as_tensor(mask))
    assert_per_sample(g[:2], tg[:2])
    assert not np.any(g[2])


def test_seg_ce_channels_last_output():
    """class_axis=-1: a segmentation model whose scores are (N, H, W, C)."""

    class Last(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_net("unet")
            self.input_shape = self.net.input_shape

        def forward(self, x):
            return self.net(x).permute(0, 2, 3, 1)

    net = Last().eval()
    model = export(net, dynamo=False)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, 3, (2, 32, 32)).astype(np.int64)
    _, (scores, lv, g) = run_grad(model, "seg_ce", x, y, class_axis=-1)
    np.testing.assert_allclose(lv, losses.compute("seg_ce", scores, y, probabilities=False, axis=-1), rtol=1e-5)
    _, _, tg = torch_value_and_grad(net, x, y, "seg_ce", axis=3)
    assert_per_sample(g, tg)


@pytest.mark.parametrize("dynamo", SLOW_DYNAMO)
def test_nhwc_model(dynamo):
    net, model = exported("small_cnn", dynamo, "nhwc")
    assert model.graph.node[0].op_type == "Transpose" or any(n.op_type == "Transpose" for n in model.graph.node[:3])
    x, y = sample(net, n=3, seed=5)
    gm, (_, _, g) = run_grad(model, "ce", x, y)
    assert g.shape == x.shape
    _, _, tg = torch_value_and_grad(net, x, y, "ce")
    assert_per_sample(g, tg)


def test_cotangent_vjp_matches_torch():
    net, model = exported("mobilenet", False)
    x, _ = sample(net, n=3, seed=6)
    cot = np.random.default_rng(6).standard_normal((3, 10)).astype(np.float32)
    gm = gradient_model(model, loss="cotangent")
    assert GRAD_OUTPUT_LOSS not in [o.name for o in gm.graph.output]
    check_default_domain(gm)
    scores, g = ort_session(gm).run([GRAD_OUTPUT_SCORES, GRAD_OUTPUT_GRAD], {"input": x, GRAD_INPUT_COTANGENT: cot})
    xr = torch.as_tensor(x).clone().requires_grad_(True)
    (tg,) = torch.autograd.grad(net(xr), xr, grad_outputs=torch.as_tensor(cot))
    assert_per_sample(g, tg.numpy())


def test_dynamic_batch_sizes():
    net, model = exported("resnet", True)
    gm = gradient_model(model, loss="ce")
    sess = ort_session(gm)
    for n in (1, 5):
        x, y = sample(net, n=n, seed=n)
        _, lv, g = sess.run(None, {"input": x, GRAD_INPUT_LABEL: y})
        assert lv.shape == (n,) and g.shape == x.shape
        _, tl, tg = torch_value_and_grad(net, x, y, "ce")
        assert_per_sample(g, tg)


@pytest.mark.parametrize("dynamo", SLOW_DYNAMO)
def test_dynamic_height_and_width(dynamo):
    """A fully convolutional net exported with dynamic H and W: one gradient graph serves
    every input size."""
    torch.manual_seed(0)
    net = FullyConvSeg().eval()
    model = export(net, dynamo=dynamo, dynamic_spatial=True)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert not isinstance(dims[2], int) and not isinstance(dims[3], int)
    gm = gradient_model(model, loss="seg_ce")
    sess = ort_session(gm)
    rng = np.random.default_rng(11)
    for h, w in ((16, 24), (32, 8)):
        x = rng.standard_normal((2, 1, h, w)).astype(np.float32)
        y = rng.integers(0, 2, (2, h, w)).astype(np.int64)
        _, lv, g = sess.run(None, {"input": x, GRAD_INPUT_LABEL: y, GRAD_INPUT_MASK: np.ones(y.shape, np.float32)})
        _, tl, tg = torch_value_and_grad(net, x, y, "seg_ce")
        np.testing.assert_allclose(lv, tl, rtol=1e-4)
        assert_per_sample(g, tg)


def test_single_logit_binary_model():
    """(N, 1) scores: the loss treats them as two classes, as advonnx.losses does."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1)).eval()
    net.input_shape = (3, 4)
    model = export(net, dynamo=False)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 4)).astype(np.float32)
    y = np.array([0, 1, 1, 0], np.int64)
    _, (scores, lv, g) = run_grad(model, "ce", x, y)
    two = losses.binary_to_two_class(scores, probabilities=False)
    np.testing.assert_allclose(lv, losses.compute("ce", two, y, probabilities=False), rtol=1e-5)
    xr = torch.as_tensor(x).clone().requires_grad_(True)
    z = net(xr)
    lt = F.cross_entropy(torch.cat([torch.zeros_like(z), z], 1), torch.as_tensor(y), reduction="none")
    (tg,) = torch.autograd.grad(lt.sum(), xr)
    assert_per_sample(g, tg.numpy())


def test_old_opset_is_lifted_and_checked():
    """MaxPool's VJP scatters (ScatterElements reduction=add, opset 16): an opset-13 model is
    lifted with onnx's version converter and still matches torch."""
    net = make_net("small_cnn")
    import io
    import warnings

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 3, 32, 32),),
            f,
            dynamo=False,
            opset_version=13,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )
    model = onnx.load_from_string(f.getvalue())
    assert model.opset_import[0].version == 13
    x, y = sample(net, seed=8)
    gm, (_, _, g) = run_grad(model, "ce", x, y)
    assert max(i.version for i in gm.opset_import if i.domain in ("", "ai.onnx")) >= 16
    _, _, tg = torch_value_and_grad(net, x, y, "ce")
    assert_per_sample(g, tg)


def test_external_data_is_kept(tmp_path):
    net, model = exported("small_cnn", False)
    src = tmp_path / "model.onnx"
    onnx.save(
        model, src, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    light = onnx.load(src, load_external_data=False)
    gm = gradient_model(light, loss="ce")
    external = [t for t in gm.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == len(model.graph.initializer)
    out = tmp_path / "model.grad.onnx"
    onnx.save(gm, out)
    assert out.stat().st_size < 200_000  # weights stay in weights.bin
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x, y = sample(net, seed=9)
    _, _, g = sess.run(None, {"input": x, GRAD_INPUT_LABEL: y})
    _, _, tg = torch_value_and_grad(net, x, y, "ce")
    assert_per_sample(g, tg)


def test_weights_are_not_duplicated():
    net, model = exported("resnet", True)
    gm = gradient_model(model, loss="ce")
    size = sum(t.ByteSize() for t in model.graph.initializer)
    grown = sum(t.ByteSize() for t in gm.graph.initializer) - size
    assert grown < 0.05 * size, f"gradient graph added {grown} bytes of initializers"
