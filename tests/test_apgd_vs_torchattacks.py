"""APGD-CE and APGD-DLR (100 steps) on exact ONNX gradients vs torchattacks' APGD on the same
weights (issue 16): the suite's brain_cnn and brain_mobilenet, 300 test patches, linf 2/255 and
4/255. Per-sample agreement on "robust" >= 97 % and our robust accuracy <= theirs + 1 point.
"""

import numpy as np
import pytest
from reference.sequential_torch import sequential_from_onnx

import advonnx

torch = pytest.importorskip("torch")
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
    theirs_x = (
        torchattacks.APGD(net, eps=eps, steps=100, loss=loss, seed=0)(torch.from_numpy(x), torch.from_numpy(y))
        .detach()
        .numpy()
    )
    clean_ok = model.classify(x) == y
    ours_robust = clean_ok & (ours.adv_pred == y)  # AutoAttack's count: correct clean and attacked
    theirs_robust = clean_ok & (model.classify(theirs_x) == y)
    assert np.abs(theirs_x - x).max() <= eps * (1 + 1e-5)
    agree = (ours_robust == theirs_robust).mean()
    assert agree >= 0.97, agree
    assert ours_robust.mean() <= theirs_robust.mean() + 0.01, (ours_robust.mean(), theirs_robust.mean())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from reference.digits_cnn_onnx import digits_cnn

    torch.set_num_threads(2)
    path, x, y = digits_cnn(tmp_path_factory.mktemp("digits") / "digits.onnx")
    net = sequential_from_onnx(path)
    model = advonnx.load_model(path)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)
    assert (model.classify(x) == y).mean() > 0.9
    return model, net, x, y


@pytest.mark.parametrize("attack", ["ce", "dlr", "apgdt"])
def test_digits_cnn_apgd_and_apgdt_agree_with_torchattacks(digits, attack):
    """10 classes: APGD-CE, APGD-DLR and APGD-T (targeted DLR over the 9 other classes, as
    torchattacks' APGDT with n_classes=10) at linf 0.05, 50 steps. (At 0.1 torchattacks' own
    runs with seeds 0 and 1 agree on only 97.2 % of the samples under APGD-DLR-100: the random
    start alone reaches the 97 % bar there.)"""
    model, net, x, y = digits
    eps, steps = 0.05, 50
    if attack == "apgdt":
        ours = advonnx.attack(model, x, y, "apgdt", eps=eps, steps=steps, gradient="exact", rng=0)
        atk = torchattacks.APGDT(net, eps=eps, steps=steps, n_classes=10, seed=0)
    else:
        ours = advonnx.attack(model, x, y, "apgd", eps=eps, steps=steps, loss=attack, gradient="exact", rng=0)
        atk = torchattacks.APGD(net, eps=eps, steps=steps, loss=attack, seed=0)
    theirs_x = atk(torch.from_numpy(x), torch.from_numpy(y)).detach().numpy()
    clean_ok = model.classify(x) == y
    ours_robust = clean_ok & (ours.adv_pred == y)
    theirs_robust = clean_ok & (model.classify(theirs_x) == y)
    assert theirs_robust.mean() < clean_ok.mean() - 0.1  # the budget matters: a real comparison
    agree = (ours_robust == theirs_robust).mean()
    assert agree >= 0.97, agree
    assert ours_robust.mean() <= theirs_robust.mean() + 0.01, (ours_robust.mean(), theirs_robust.mean())


# CI runs one case (about 5 min on 2 cores); benchmarks/bench_autoattack.py runs the matrix
# (brain_cnn and brain_mobilenet at 2/255 and 4/255, the digits CNN) with wall times
AUTOATTACK_CASES = [("brain_mobilenet", 2 / 255)]


@pytest.mark.parametrize("case,eps", AUTOATTACK_CASES, ids=[f"{c}-{e:.4f}" for c, e in AUTOATTACK_CASES])
def test_autoattack_standard_is_no_weaker_than_a_faithful_torchattacks_composition(
    request, case, eps, brain_cnn_path, brain_mobilenet_path, brain_patches
):
    """AutoAttack 'standard' composed from torchattacks at the paper's budgets
    (reference/autoattack_torch.py: APGD-CE 100, APGD-T 100, FAB-T 100, Square 5000, cascade)
    vs ours on the same weights, the first 100 samples: ours <= theirs + 0.5 point. The full
    matrix (both brain models at 2/255 and 4/255, digits) with wall times is
    benchmarks/bench_autoattack.py."""
    from reference.autoattack_torch import autoattack_standard

    torch.set_num_threads(2)
    if case == "digits":
        model, net, x, y = request.getfixturevalue("digits")
    else:
        path = brain_cnn_path if case == "brain_cnn" else brain_mobilenet_path
        x, y = brain_patches
        net, model = sequential_from_onnx(path), advonnx.load_model(path)
    x, y = x[:100], y[:100].astype(np.int64)
    clean_ok = model.classify(x) == y
    theirs = autoattack_standard(net, model.classify, x, y, eps=eps, n_classes=model.spec.num_classes)
    ours = advonnx.attack(model, x, y, "autoattack", eps=eps, version="standard", gradient="exact", rng=0)
    ours_robust = clean_ok & (np.asarray(ours.adv_pred) == y)
    print(
        f"\nautoattack standard, {case} linf {eps:.4f}, {len(x)} samples: clean {clean_ok.mean():.3f}, "
        f"ours {ours_robust.mean():.3f}, torchattacks composition {theirs.mean():.3f}"
    )
    assert ours_robust.mean() <= theirs.mean() + 0.005, (ours_robust.mean(), theirs.mean())
