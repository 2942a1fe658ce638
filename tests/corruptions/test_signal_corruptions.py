"""Signal corruptions (ECG/EEG batches (N, C, T) and (N, T, C)): SNR, physics, errors (shape, range,
determinism, layouts, severity: test_corruption_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest
from corruption_helpers import DT, FS, ecg_like

from advonnx.corruptions import CORRUPTIONS, apply_corruption, corruption_names
from advonnx.errors import AdvonnxError
from advonnx.xp import Random

SIGNAL = [n for n, c in CORRUPTIONS.items() if "signal" in c.modalities]
SNR_NAMES = ("powerline", "baseline_wander", "electrode_motion")


def test_registry_has_the_signal_corruptions():
    assert SIGNAL == [
        "gaussian_noise",
        "powerline",
        "baseline_wander",
        "electrode_motion",
        "amplitude_scaling",
        "channel_dropout",
    ]
    assert corruption_names("all", modality="signal") == SIGNAL
    assert not set(SIGNAL[1:]) & set(corruption_names("all"))  # "all" alone: image corruptions


@pytest.mark.parametrize("name", SNR_NAMES)
@pytest.mark.parametrize("severity", [1, 3])
def test_snr_is_the_stated_one(name, severity):
    """The added noise's RMS per (sample, channel) is std(signal) / 10^(snr/20) (no clipping at
    these levels on a mid-range signal)."""
    x = ecg_like()
    y = apply_corruption(name, x, severity, Random(1), layout="NCW", spacing=DT).astype(np.float64)
    noise = y - x
    snr = 20 * np.log10(x.std(axis=2) / np.sqrt(np.mean((noise - noise.mean(axis=2, keepdims=True)) ** 2, axis=2)))
    np.testing.assert_allclose(snr, CORRUPTIONS[name].severity_params[severity - 1], atol=0.05)


def test_powerline_is_mains_frequency():
    x = np.full((4, 2, int(2 * FS)), 0.5, np.float32)
    x[:, :, ::50] += 0.01  # some signal (a flat one gets the 1 % floor anyway)
    noise = apply_corruption("powerline", x, 3, Random(2), layout="NCW", spacing=DT) - x
    spectrum = np.abs(np.fft.rfft(noise, axis=2))
    freqs = np.fft.rfftfreq(noise.shape[2], 1 / FS)
    peaks = freqs[np.argmax(spectrum, axis=2)]
    assert set(np.unique(peaks)) <= {50.0, 60.0}
    assert np.all(peaks == peaks[:, :1])  # one mains frequency per sample, on every channel


def test_baseline_wander_is_below_half_a_hertz():
    x = ecg_like(seconds=20.0)
    noise = (apply_corruption("baseline_wander", x, 5, Random(4), layout="NCW", spacing=DT) - x).astype(np.float64)
    window = np.hanning(noise.shape[2])  # against the leakage of a window of non-integer periods
    power = np.abs(np.fft.rfft((noise - noise.mean(axis=2, keepdims=True)) * window, axis=2)) ** 2
    freqs = np.fft.rfftfreq(noise.shape[2], 1 / FS)
    assert power[..., freqs <= 0.75].sum() / power.sum() > 0.999


def test_channel_dropout_flattens_the_stated_fraction():
    x = ecg_like()
    y = apply_corruption("channel_dropout", x, 3, Random(0), layout="NCW", spacing=DT)
    flat = np.isclose(y, x.mean(axis=2, keepdims=True)) & ~np.isclose(x, x.mean(axis=2, keepdims=True))
    changed = (y != x).mean(axis=2)
    assert np.all(changed <= 0.4 + 1e-3) and flat.any()
    whole = apply_corruption("channel_dropout", x, 5, Random(0), layout="NCW", spacing=DT)
    np.testing.assert_allclose(whole, np.broadcast_to(x.mean(axis=2, keepdims=True), x.shape), atol=1e-6)


def test_errors_name_what_to_do():
    x = ecg_like()
    with pytest.raises(AdvonnxError, match="sampling rate"):
        apply_corruption("powerline", x, 1, Random(0), layout="NCW")
    with pytest.raises(AdvonnxError, match="above 120 Hz"):
        apply_corruption("powerline", x, 1, Random(0), layout="NCW", spacing=(1 / 100.0,))
    with pytest.raises(AdvonnxError, match="applies to signal"):
        apply_corruption("channel_dropout", np.zeros((1, 1, 8, 8), np.float32), 1, Random(0), layout="NCHW")
    with pytest.raises(AdvonnxError, match="applies to image"):
        apply_corruption("ghosting", x, 1, Random(0), layout="NCW")
    # without a sampling rate the time-free ones still run
    apply_corruption("amplitude_scaling", x, 2, Random(0), layout="NCW")


def test_runs_under_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    x = ecg_like(n=2, channels=2, seconds=1.0)
    for name in SIGNAL:
        strict = apply_corruption(name, xps.asarray(x), 4, Random(9), layout="NCW", spacing=DT)
        np.testing.assert_allclose(
            np.asarray(strict), apply_corruption(name, x, 4, Random(9), layout="NCW", spacing=DT), atol=1e-5
        )
