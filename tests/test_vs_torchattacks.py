"""FGSM and PGD on exact ONNX gradients vs torchattacks on the same weights (issue: exact gradients).

The suite's brain_cnn, 300 test patches, torchattacks 3.5 with the same eps, step size and steps.
"""

import numpy as np
import pytest
from reference.brain_cnn_torch import brain_cnn_from_onnx

import advonnx

torch = pytest.importorskip("torch")
torchattacks = pytest.importorskip("torchattacks")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(brain_cnn_path, brain_patches):
    torch.set_num_threads(2)
    x, y = brain_patches
    net = brain_cnn_from_onnx(brain_cnn_path)
    model = advonnx.load_model(brain_cnn_path)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), ref, rtol=1e-4, atol=1e-4)  # same weights
    return model, net, x, y


def _torch_adv(atk, x, y):
    return atk(torch.from_numpy(x), torch.from_numpy(y)).numpy()


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_fgsm_agrees_with_torchattacks(setup, eps):
    model, net, x, y = setup
    ours = advonnx.attack(model, x, y, "fgsm", eps=eps, gradient="exact")
    theirs = _torch_adv(torchattacks.FGSM(net, eps=eps), x, y)
    ours_wrong = model.classify(ours.x_adv) != y
    theirs_wrong = model.classify(theirs) != y
    agree = (ours_wrong == theirs_wrong).mean()
    assert agree >= 0.98, agree
    assert abs(ours_wrong.mean() - theirs_wrong.mean()) <= 0.01


@pytest.mark.parametrize("eps", [2 / 255, 8 / 255])
def test_pgd_without_random_start_agrees(setup, eps):
    model, net, x, y = setup
    alpha, steps = eps / 4, 10
    ours = advonnx.attack(
        model, x, y, "pgd", eps=eps, steps=steps, step_size=alpha, random_start=False, gradient="exact"
    )
    theirs = _torch_adv(torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False), x, y)
    ours_wrong = model.classify(ours.x_adv) != y
    theirs_wrong = model.classify(theirs) != y
    assert (ours_wrong == theirs_wrong).mean() >= 0.98
    assert abs(ours_wrong.mean() - theirs_wrong.mean()) <= 0.01


def test_pgd_with_random_start_within_3_points(setup):
    model, net, x, y = setup
    eps, alpha, steps = 4 / 255, 1 / 255, 10
    torch.manual_seed(0)
    theirs = _torch_adv(torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=True), x, y)
    ours = advonnx.attack(model, x, y, "pgd", eps=eps, steps=steps, step_size=alpha, gradient="exact", rng=0)
    ours_acc = (model.classify(ours.x_adv) == y).mean()
    theirs_acc = (model.classify(theirs) == y).mean()
    assert abs(ours_acc - theirs_acc) <= 0.03, (ours_acc, theirs_acc)
