"""The contract every registered corruption keeps, images and signals alike: shape, dtype and
value range kept, deterministic per seed (and seed-free where it draws nothing), channels-last
equal to channels-first where its draws are per sample or channel, distance to the clean input
growing with severity, and the NumPy result under array-api-strict. Errors and image-only
properties follow.

Adding a corruption: its function, its ``Corruption`` entry in the registry and one line in
``CONTRACT``. A registered corruption without a line fails
``test_every_registered_corruption_has_a_contract_entry``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from corruption_helpers import DT, batch, ecg_like

from advonnx.corruptions import CORRUPTIONS, Corruption, apply_corruption, corruption_names
from advonnx.corruptions import noise as noise_ops
from advonnx.corruptions.registry import register, unregister
from advonnx.errors import AdvonnxError
from advonnx.xp import Random


@dataclass(frozen=True)
class Props:
    """What the contract expects of one corruption."""

    random: bool = True  # a different seed gives a different result
    elementwise: bool = False  # draws per element, in array order: the layouts differ


# One line per registered corruption.
CONTRACT: dict[str, Props] = {
    "gaussian_noise": Props(elementwise=True),
    "rician_noise": Props(elementwise=True),
    "poisson_noise": Props(elementwise=True),
    "speckle_noise": Props(elementwise=True),
    "gaussian_blur": Props(random=False),
    "motion_blur": Props(),
    "bias_field": Props(),
    "ghosting": Props(random=False),
    "spike": Props(),
    "kspace_motion": Props(),
    "gamma": Props(),
    "brightness": Props(),
    "contrast": Props(),
    "jpeg": Props(random=False),
    "downsample_upsample": Props(random=False),
    "pixelate": Props(random=False),
    "powerline": Props(),
    "baseline_wander": Props(),
    "electrode_motion": Props(elementwise=True),
    "amplitude_scaling": Props(),
    "channel_dropout": Props(),
}
FIRST_LAST = {"image": [("NCHW", "NHWC"), ("NCDHW", "NDHWC")], "signal": [("NCW", "NWC")]}
NAMES = [n for n, c in CORRUPTIONS.items() if "image" in c.modalities]  # the image-only tests below


def missing_entries() -> list[str]:
    return sorted(set(CORRUPTIONS) - set(CONTRACT))


def test_every_registered_corruption_has_a_contract_entry():
    assert missing_entries() == [], "add a line to CONTRACT in tests/corruptions/test_corruption_contract.py"
    assert sorted(set(CONTRACT) - set(CORRUPTIONS)) == []


def test_a_registered_corruption_without_a_contract_line_is_detected():
    toy = Corruption(
        "toy_noise",
        "Toy.",
        "A test.",
        (0.01, 0.02, 0.03, 0.04, 0.05),
        False,
        noise_ops.gaussian_noise,
        ("image", "signal"),
    )
    register(toy)
    try:
        assert missing_entries() == ["toy_noise"]
        with pytest.raises(AdvonnxError, match="taken"):
            register(Corruption("toy_noise", "Other.", "A test.", toy.severity_params, False, noise_ops.gaussian_noise))
        CONTRACT["toy_noise"] = Props(elementwise=True)  # the one line; the toy then meets the contract
        for layout in _layouts("toy_noise"):
            test_shape_dtype_range_and_determinism("toy_noise", layout)
        test_distance_grows_with_severity("toy_noise", "NCHW")
    finally:
        unregister("toy_noise")
        CONTRACT.pop("toy_noise", None)
    assert missing_entries() == []


def _layouts(name: str) -> list[str]:
    return [lay for m in CORRUPTIONS[name].modalities for pair in FIRST_LAST[m] for lay in pair]


def _input(layout: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """A clean batch in ``layout`` and its spacing (a signal's sample period)."""
    if layout in ("NCW", "NWC"):
        x = ecg_like()
        return (x if layout == "NCW" else np.ascontiguousarray(np.moveaxis(x, 1, -1))), DT
    return batch(layout), None


def _all_layouts():
    return [pytest.param(n, lay, id=f"{n}-{lay}") for n in CORRUPTIONS for lay in _layouts(n)]


@pytest.mark.parametrize("name,layout", _all_layouts())
def test_shape_dtype_range_and_determinism(name, layout):
    x, spacing = _input(layout)
    for severity in (1, 5):
        y = apply_corruption(name, x, severity, Random(3), layout=layout, spacing=spacing)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
        assert not np.array_equal(y, x), f"{name} severity {severity} changed nothing"
        np.testing.assert_array_equal(y, apply_corruption(name, x, severity, Random(3), layout=layout, spacing=spacing))
    same = [apply_corruption(name, x, 3, Random(seed), layout=layout, spacing=spacing) for seed in (7, 8)]
    assert np.array_equal(*same) == (not CONTRACT[name].random), "seed dependence"


def _first_last():
    return [
        pytest.param(n, first, last, id=f"{n}-{last}")
        for n in CORRUPTIONS
        if not CONTRACT.get(n, Props()).elementwise
        for m in CORRUPTIONS[n].modalities
        for first, last in FIRST_LAST[m]
    ]


@pytest.mark.parametrize("name,first,last", _first_last())
def test_channels_last_equals_channels_first(name, first, last):
    """Per-sample / per-channel draws do not depend on the layout: channels-last is channels-first
    transposed (float32 means summed in another order)."""
    (xf, spacing), (xl, _) = _input(first), _input(last)
    a = apply_corruption(name, xf, 4, Random(5), layout=first, spacing=spacing)
    b = apply_corruption(name, xl, 4, Random(5), layout=last, spacing=spacing)
    np.testing.assert_allclose(np.moveaxis(b, -1, 1), a, atol=1e-5)


def _first_layouts():
    return [
        pytest.param(n, first, id=f"{n}-{first}")
        for n in CORRUPTIONS
        for m in CORRUPTIONS[n].modalities
        for first, _ in FIRST_LAST[m]
    ]


@pytest.mark.parametrize("name,layout", _first_layouts())
def test_distance_grows_with_severity(name, layout):
    """RMS distance to the clean input, one fixed seed per severity (the same draws scaled:
    severities share their random numbers)."""
    x, spacing = _input(layout)
    if layout not in ("NCW", "NWC"):
        x = batch(layout, n=4)
    rms = [
        float(
            np.sqrt(
                np.mean(
                    (apply_corruption(name, x, s, Random(0), layout=layout, spacing=spacing).astype(np.float64) - x)
                    ** 2
                )
            )
        )
        for s in range(1, 6)
    ]
    assert all(b > a for a, b in zip(rms, rms[1:])), (name, rms)
    assert rms[0] > 2e-5, (name, rms)


@pytest.mark.parametrize("name,layout", [p for p in _all_layouts() if p.values[1] in ("NHWC", "NCDHW", "NCW")])
def test_array_api_strict_gives_the_numpy_result(name, layout):
    """No NumPy-only call (host-only corruptions: the result comes back in the input's namespace)."""
    xps = pytest.importorskip("array_api_strict")
    x, spacing = _input(layout)
    strict = apply_corruption(name, xps.asarray(x), 4, Random(9), layout=layout, spacing=spacing)
    assert type(strict) is type(xps.asarray(x)) and strict.dtype == xps.float32 and strict.shape == x.shape
    np.testing.assert_allclose(
        np.asarray(strict), apply_corruption(name, x, 4, Random(9), layout=layout, spacing=spacing), atol=1e-6
    )


def test_registry_lists_the_corruptions():
    assert NAMES == [
        "gaussian_noise", "rician_noise", "poisson_noise", "speckle_noise",
        "gaussian_blur", "motion_blur", "bias_field", "ghosting", "spike", "kspace_motion",
        "gamma", "brightness", "contrast", "jpeg", "downsample_upsample", "pixelate",
    ]  # fmt: skip
    for name, c in CORRUPTIONS.items():
        assert isinstance(c, Corruption) and c.name == name
        assert len(c.severity_params) == 5 and callable(c.fn)
        assert c.description and "\n" not in c.description and c.source
    assert [n for n, c in CORRUPTIONS.items() if c.host_only] == ["jpeg"]


@pytest.mark.parametrize("name", NAMES)
def test_other_value_range_dtype_and_layout(name):
    """float64 NDHWC in [-1, 1]: parameters are relative to the range and the result stays in it."""
    x = batch("NDHWC").astype(np.float64) * 2.0 - 1.0
    y = apply_corruption(name, x, 4, Random(0), layout="NDHWC", value_range=(-1.0, 1.0))
    assert y.shape == x.shape and y.dtype == np.float64
    assert y.min() >= -1.0 and y.max() <= 1.0
    # the same corruption in [0, 1] units, mapped: relative parameters give the same picture
    y01 = apply_corruption(name, (x + 1.0) / 2.0, 4, Random(0), layout="NDHWC")
    np.testing.assert_allclose((y + 1.0) / 2.0, y01, atol=1e-6 if name != "jpeg" else 1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_integer_images_stay_integer(name):
    x = np.round(batch("NCHW") * 255).astype(np.uint8)
    y = apply_corruption(name, x, 3, Random(0), layout="NCHW", value_range=(0, 255))
    assert y.dtype == np.uint8 and y.shape == x.shape


def test_bad_severity_name_layout_and_range(nchw):
    for severity in (0, 6, -1, 2.0, True, "3", None):
        with pytest.raises(AdvonnxError, match="severity"):
            apply_corruption("gaussian_noise", nchw, severity, Random(0), layout="NCHW")
    with pytest.raises(AdvonnxError, match="unknown corruption 'fog'.*gaussian_noise"):
        apply_corruption("fog", nchw, 1, Random(0), layout="NCHW")
    with pytest.raises(AdvonnxError, match="layout"):
        apply_corruption("gamma", nchw, 1, Random(0), layout="NCDHW")
    with pytest.raises(AdvonnxError, match="layout"):
        apply_corruption("gamma", nchw, 1, Random(0), layout="CHWN")
    with pytest.raises(AdvonnxError, match="value_range"):
        apply_corruption("gamma", nchw, 1, Random(0), layout="NCHW", value_range=(1, 0))
    with pytest.raises(AdvonnxError, match="spacing"):
        apply_corruption("gaussian_blur", nchw, 1, Random(0), layout="NCHW", spacing=(1, 1, 1))


def test_corruption_names():
    assert corruption_names() == NAMES == corruption_names("all")
    assert corruption_names(" ghosting, spike,ghosting") == ["ghosting", "spike"]
    with pytest.raises(AdvonnxError) as err:
        corruption_names("ghosting,snow")
    message = str(err.value)
    assert "\n" not in message and "'snow'" in message and all(n in message for n in NAMES)
    with pytest.raises(AdvonnxError):
        corruption_names("")


def test_int_seed_accepted(nchw):
    a = apply_corruption("spike", nchw, 2, 11, layout="NCHW")
    np.testing.assert_array_equal(a, apply_corruption("spike", nchw, 2, Random(11), layout="NCHW"))


def test_spacing_makes_blur_physically_isotropic():
    """With 3x thicker slices, the depth axis gets a third of the in-plane blur (in voxels)."""
    x = np.zeros((1, 1, 21, 112, 112), np.float32)
    x[0, 0, 10, 56, 56] = 1.0
    y = apply_corruption("gaussian_blur", x, 5, Random(0), layout="NCDHW", value_range=(0, 1), spacing=(3, 1, 1))[0, 0]

    def sd(profile, centre):
        p = profile / profile.sum()
        d = np.arange(p.size) - centre
        return np.sqrt((p * d**2).sum())

    sd_depth, sd_row = sd(y.sum(axis=(1, 2)), 10), sd(y.sum(axis=(0, 2)), 56)
    assert sd_row == pytest.approx(6.0 * np.sqrt(112 / 224), rel=0.05)  # 6 px at 224, sqrt rule
    assert sd_depth == pytest.approx(sd_row / 3, rel=0.05)
