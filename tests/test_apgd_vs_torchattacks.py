"""APGD-CE and APGD-DLR (100 steps) on exact ONNX gradients vs torchattacks' APGD on the same
weights (issue 16): the suite's brain_cnn and brain_mobilenet, 300 test patches, linf 2/255 and
4/255. Per-sample agreement on "robust" >= 97 % and our robust accuracy <= theirs + 1 point.
"""

import numpy as np
import pytest
import torch
from reference.sequential_torch import sequential_from_onnx

import advonnx

torchattacks = pytest.importorskip("torchattacks")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["brain_cnn", "brain_mobilenet"])
def setup(request, brain_cnn_path, brain_mobilenet_path, brain_patches):
    torch.set_num_threads(2)
    path = brain_cnn_path if request.param == "brain_cnn" else brain_mobilenet_path
    x, y = brain_patches
    y = y.astype(np.int64)
    net = sequential_from_onnx(path)
    model = advonnx.load_model(path)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), ref, rtol=1e-4, atol=1e-4)  # same weights
    return model, net, x, y


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("eps", [2 / 255, 4 / 255])
def test_apgd_agrees_with_torchattacks(setup, eps, loss):
    model, net, x, y = setup
    ours = advonnx.attack(model, x, y, "apgd", eps=eps, steps=100, loss=loss, gradient="exact", rng=0)
    theirs_x = torchattacks.APGD(net, eps=eps, steps=100, loss=loss, seed=0)(
        torch.from_numpy(x), torch.from_numpy(y)).detach().numpy()
    clean_ok = model.classify(x) == y
    ours_robust = clean_ok & (ours.adv_pred == y)  # AutoAttack's count: correct clean and attacked
    theirs_robust = clean_ok & (model.classify(theirs_x) == y)
    assert np.abs(theirs_x - x).max() <= eps * (1 + 1e-5)
    agree = (ours_robust == theirs_robust).mean()
    assert agree >= 0.97, agree
    assert ours_robust.mean() <= theirs_robust.mean() + 0.01, (ours_robust.mean(), theirs_robust.mean())
