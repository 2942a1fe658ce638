"""Each artefact has the signature its physics predicts, on synthetic phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from corruption_helpers import batch, phantom_2d

from advonnx.corruptions import CORRUPTIONS, apply_corruption
from advonnx.corruptions.jpeg import jpeg_planes, quantization_table
from advonnx.xp import Random


def _ghost_prediction(x, n, intensity, h_axis):
    """Comb on signed k_H = 0, ±n, ±2n... scaled by 1 - intensity, k_H = 0 kept: for n | H the
    change is intensity * (mean along H - mean of the n replicas shifted by multiples of H/n)."""
    size = x.shape[h_axis]
    replicas = sum(np.roll(x, j * size // n, axis=h_axis) for j in range(n)) / n
    return intensity * (x.mean(axis=h_axis, keepdims=True) - replicas)


@pytest.mark.parametrize("severity", [2, 5])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NCDHW"])
def test_ghosts_are_replicas_shifted_by_h_over_n(layout, severity):
    n_ghosts, intensity = CORRUPTIONS["ghosting"].severity_params[severity - 1]
    x = batch(layout, n=2) * 0.4 + 0.3  # stays inside [0, 1]: nothing clipped
    h_axis = {"NCHW": 2, "NHWC": 1, "NCDHW": 3}[layout]
    y = apply_corruption("ghosting", x, severity, Random(0), layout=layout)
    expected = _ghost_prediction(x.astype(np.float64), n_ghosts, intensity, h_axis)
    np.testing.assert_allclose(y - x, expected, atol=2e-6)
    assert np.abs(expected).max() > 5e-4


def test_ghost_of_a_small_square_lands_h_over_n_rows_away():
    """Severity 5 (n = 4) on 64 rows: a dark replica 16 rows below, none in between or beside."""
    x = np.full((1, 1, 64, 64), 0.4, np.float32)
    x[0, 0, 10:16, 30:36] = 0.9
    diff = (apply_corruption("ghosting", x, 5, Random(0), layout="NCHW") - x)[0, 0]
    replica = diff[26:32, 30:36].mean()  # 64 / 4 = 16 rows down
    between = diff[18:24, 30:36].mean()
    beside = diff[26:32, 46:52].mean()  # same rows, other columns
    assert between - replica == pytest.approx(0.5 / 4, rel=1e-3)  # intensity * step / n
    assert abs(beside) < 1e-5


def test_spike_adds_a_plane_wave_everywhere():
    """One k-space spike: the change is a single sinusoid across the whole field of view."""
    x = batch("NCHW", n=1) * 0.5 + 0.25  # away from the clip limits
    y = apply_corruption("spike", x, 1, Random(4), layout="NCHW")
    spectrum = np.abs(np.fft.fft2((y - x)[0, 0]))
    spectrum[0, 0] = 0.0
    peak = np.sort(spectrum.ravel())[::-1]
    assert peak[1] > 0.95 * peak[0] and peak[2] < 0.05 * peak[0]  # +k and -k only


@pytest.mark.parametrize("severity", [1, 5])
def test_spike_equals_the_kspace_definition_in_float64(severity):
    """spike() adds plane waves directly; TorchIO's definition, computed here by FFT in float64:
    add ``intensity x max|spectrum|`` at each drawn k-space position, transform back, real part."""
    from advonnx.corruptions import _ops, kspace

    n_spikes, intensity = CORRUPTIONS["spike"].severity_params[severity - 1]
    x = np.random.default_rng(3).uniform(0.1, 0.9, (2, 1, 10, 12, 14)).astype(np.float32)
    axes = (2, 3, 4)
    y = kspace.spike(x, (n_spikes, intensity), Random(5), spatial_axes=axes, value_range=(0.0, 1.0))
    rng = Random(5)
    positions = [_ops.integers(rng, 0, x.shape[a], (2, kspace.MAX_SPIKES), x) for a in axes]
    spectrum = np.fft.fftn(x.astype(np.float64), axes=axes)
    peak = np.abs(spectrum).max(axis=axes)
    for i in range(2):
        for s in range(n_spikes):
            spectrum[(i, 0) + tuple(int(p[i, s]) for p in positions)] += intensity * peak[i, 0]
    want = np.real(np.fft.ifftn(spectrum, axes=axes))
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6 * (1 + intensity * n_spikes))


def test_bias_field_is_smooth_and_multiplicative():
    x = np.full((1, 1, 32, 32), 0.5, np.float32)
    y = apply_corruption("bias_field", x, 5, Random(2), layout="NCHW")[0, 0]
    assert np.ptp(y) > 0.1  # it did something
    assert np.abs(np.diff(y, 2, axis=0)).max() < 0.05 * np.ptp(y)  # and it is smooth
    zero = apply_corruption("bias_field", np.zeros_like(x), 5, Random(2), layout="NCHW")
    assert np.all(zero == 0.0)  # multiplicative: no signal, no field


def test_motion_blur_and_kspace_motion_keep_a_flat_image_flat():
    x = np.full((2, 1, 48, 48), 0.4, np.float32)
    for name in ("motion_blur", "kspace_motion", "gaussian_blur", "downsample_upsample"):
        y = apply_corruption(name, x, 5, Random(1), layout="NCHW")
        np.testing.assert_allclose(y, x, atol=1e-5, err_msg=name)


def test_rician_noise_biases_the_dark_background_upwards():
    x = np.zeros((1, 1, 64, 64), np.float32)
    y = apply_corruption("rician_noise", x, 5, Random(0), layout="NCHW")
    sigma = CORRUPTIONS["rician_noise"].severity_params[4]
    assert y.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh mean


def test_poisson_noise_variance_follows_the_signal():
    photons = CORRUPTIONS["poisson_noise"].severity_params[0]
    x = np.full((1, 1, 128, 128), 0.5, np.float32)
    y = apply_corruption("poisson_noise", x, 1, Random(0), layout="NCHW")
    assert y.var() == pytest.approx(0.5 / photons, rel=0.05)


def test_jpeg_quality_100_is_nearly_lossless_and_tables_follow_ijg():
    assert quantization_table(50)[0, 0] == 16 and quantization_table(100).max() == 1
    assert quantization_table(10)[0, 0] == 80  # 16 * 500 / 100
    planes = np.round(phantom_2d(40) * 255.0)[None].astype(np.float64)
    assert np.abs(jpeg_planes(planes, 100) - planes).max() <= 1.0
    assert np.abs(jpeg_planes(planes, 7) - planes).mean() > 2.0


def test_pixelate_gives_constant_blocks():
    x = batch("NCHW", n=1)  # 64 px; scale 0.25 -> 16 cells of 4 px
    y = apply_corruption("pixelate", x, 5, Random(0), layout="NCHW")[0, 0]
    blocks = y.reshape(16, 4, 16, 4)
    assert np.all(blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3)) < 1e-6)
    np.testing.assert_allclose(blocks.mean(axis=(1, 3)), x[0, 0].reshape(16, 4, 16, 4).mean(axis=(1, 3)), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.27, 5.0, 9.0])  # 3 to 55 taps: direct sums and FFT
def test_gaussian_filter_equals_scipy_on_both_paths(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    from advonnx.corruptions import _ops

    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 40, 37, 50))
    radius = max(1, int(np.ceil(3 * sigma)))
    for axis in (2, 3, 4):
        ours = _ops.gaussian_filter1d(x, axis, sigma)
        want = ndimage.gaussian_filter1d(x, sigma, axis=axis, mode="nearest", radius=radius)
        np.testing.assert_allclose(ours, want, rtol=0, atol=1e-12)
