"""The contract every corruption keeps: shape, dtype, range, determinism, layout, errors."""

from __future__ import annotations

import numpy as np
import pytest
from corruption_helpers import batch

from advonnx.corruptions import CORRUPTIONS, Corruption, apply_corruption, corruption_names
from advonnx.errors import AdvonnxError
from advonnx.xp import Random

NAMES = [n for n, c in CORRUPTIONS.items() if "image" in c.modalities]  # signal ones: test_signal_corruptions.py
# corruptions drawing per-element noise: the only ones whose draws depend on the layout
ELEMENTWISE = {"gaussian_noise", "rician_noise", "poisson_noise", "speckle_noise"}
DETERMINISTIC = {"gaussian_blur", "ghosting", "jpeg", "downsample_upsample", "pixelate"}


def test_registry_lists_the_sixteen_corruptions():
    assert NAMES == [
        "gaussian_noise", "rician_noise", "poisson_noise", "speckle_noise",
        "gaussian_blur", "motion_blur", "bias_field", "ghosting", "spike", "kspace_motion",
        "gamma", "brightness", "contrast", "jpeg", "downsample_upsample", "pixelate",
    ]  # fmt: skip
    for name, c in ((n, CORRUPTIONS[n]) for n in NAMES):
        assert isinstance(c, Corruption) and c.name == name
        assert len(c.severity_params) == 5 and callable(c.fn)
        assert c.description and "\n" not in c.description and c.source
        assert c.host_only == (name == "jpeg")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NCDHW"])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_range_kept(name, layout):
    x = batch(layout)
    for severity in (1, 5):
        y = apply_corruption(name, x, severity, Random(3), layout=layout)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
        assert not np.array_equal(y, x), f"{name} severity {severity} changed nothing"


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


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(name, nchw):
    a = apply_corruption(name, nchw, 3, Random(7), layout="NCHW")
    b = apply_corruption(name, nchw, 3, Random(7), layout="NCHW")
    np.testing.assert_array_equal(a, b)
    c = apply_corruption(name, nchw, 3, Random(8), layout="NCHW")
    assert np.array_equal(a, c) == (name in DETERMINISTIC)


@pytest.mark.parametrize("name", sorted(set(NAMES) - ELEMENTWISE))
def test_channels_last_equals_channels_first(name):
    """Per-sample draws do not depend on the layout, so NHWC is NCHW transposed."""
    first = apply_corruption(name, batch("NCHW"), 4, Random(5), layout="NCHW")
    last = apply_corruption(name, batch("NHWC"), 4, Random(5), layout="NHWC")
    np.testing.assert_allclose(np.moveaxis(last, -1, 1), first, atol=1e-5)


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
    y = apply_corruption(
        "gaussian_blur", x, 5, Random(0), layout="NCDHW", value_range=(0, 1), spacing=(3, 1, 1)
    )[0, 0]

    def sd(profile, centre):
        p = profile / profile.sum()
        d = np.arange(p.size) - centre
        return np.sqrt((p * d**2).sum())

    sd_depth, sd_row = sd(y.sum(axis=(1, 2)), 10), sd(y.sum(axis=(0, 2)), 56)
    assert sd_row == pytest.approx(6.0 * np.sqrt(112 / 224), rel=0.05)  # 6 px at 224, sqrt rule
    assert sd_depth == pytest.approx(sd_row / 3, rel=0.05)
