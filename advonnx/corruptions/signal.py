"""Natural corruptions of 1-D physiological signals (ECG, EEG): batches (N, C, T) or (N, T, C).

Each function has the corruption signature ``fn(x, param, rng, *, spatial_axes, value_range,
spacing)``: ``spatial_axes`` is the one time axis, ``spacing`` the sample period in seconds
(``1 / sampling_rate``; needed by the corruptions defined in hertz or seconds).

Additive noises are set by a signal-to-noise ratio in dB, as in the MIT-BIH Noise Stress Test
Database (Moody, Muldrow & Mark 1984: records at 24, 18, 12, 6, 0 and -6 dB): the noise of each
(sample, channel) is scaled to ``rms(signal) / 10 ** (snr / 20)``, where rms is the channel's
standard deviation over the window, floored at 1 % of the value range so that a flat channel
still gets noise.
"""

from __future__ import annotations

import math

from advonnx.corruptions import _ops
from advonnx.errors import AdvonnxError
from advonnx.xp import namespace

#: noise RMS floor, as a fraction of the value range (a flat channel still gets noise)
RMS_FLOOR = 0.01


def _axes(x, spatial_axes) -> tuple[int, int]:
    """(time axis, channel axis) of a (N, C, T) or (N, T, C) batch."""
    if x.ndim != 3 or len(spatial_axes) != 1:
        raise AdvonnxError(f"signal corruptions need a (N, C, T) or (N, T, C) batch, not shape {tuple(x.shape)}")
    time = spatial_axes[0]
    return time, 3 - time


def _sample_period(spacing, name: str) -> float:
    if spacing is None:
        raise AdvonnxError(
            f"{name} is defined in hertz and needs the sampling rate: declare it "
            "(--sampling-rate HZ, sidecar `sampling_rate`, metadata `advonnx.sampling_rate`)"
        )
    return float(spacing[0])


def _per_channel(rng, x, time: int, draw):
    """A per-(sample, channel) draw shaped to broadcast over the time axis."""
    shape = [x.shape[0], x.shape[1], x.shape[2]]
    shape[time] = 1
    return draw(tuple(shape))


def _noise_scale(x, snr_db: float, time: int, value_range):
    """Per-(sample, channel) noise RMS for ``snr_db`` (see module docstring)."""
    xp = namespace(x)
    lo, hi = value_range
    rms = xp.std(x, axis=time, keepdims=True)
    rms = xp.maximum(rms, xp.asarray(RMS_FLOOR * (hi - lo), dtype=x.dtype))
    return rms / 10.0 ** (snr_db / 20.0)


def _unit_rms(v, time: int):
    """``v`` scaled to unit RMS along ``time`` (zero-mean noise shapes)."""
    xp = namespace(v)
    v = v - xp.mean(v, axis=time, keepdims=True)
    return v / xp.maximum(xp.sqrt(xp.mean(v * v, axis=time, keepdims=True)), xp.asarray(1e-12, dtype=v.dtype))


def _time(x, time: int, dt: float):
    """Sample times in seconds, shaped to broadcast along ``time``."""
    return _ops.along(_ops.arange_like(x, x.shape[time]) * dt, time, x.ndim)


def powerline(x, snr_db, rng, *, spatial_axes, value_range, spacing=None):
    """Mains interference: a 50 or 60 Hz sinusoid (per sample) with its 3rd harmonic at a third of
    the amplitude, random phase per channel, at ``snr_db`` (fundamental + harmonic)."""
    xp = namespace(x)
    time, _ = _axes(x, spatial_axes)
    dt = _sample_period(spacing, "powerline")
    if 1.0 / dt <= 2 * 60.0:
        raise AdvonnxError(
            f"powerline needs a sampling rate above 120 Hz (got {1 / dt:g} Hz): at lower rates the "
            "acquisition's anti-aliasing filter removes mains interference"
        )
    n = x.shape[0]
    sixty = xp.astype(_ops.uniform(rng, (n,), 0.0, 1.0, x) < 0.5, x.dtype)
    mains = _ops.per_sample(50.0 + 10.0 * sixty, x.ndim)
    phase = _per_channel(rng, x, time, lambda s: _ops.uniform(rng, s, 0.0, 2 * math.pi, x))
    t = _time(x, time, dt)
    wave = xp.sin(2 * math.pi * mains * t + phase)
    if 1.0 / dt > 2 * 180.0:  # the 3rd harmonic only where it is below Nyquist
        wave = wave + xp.sin(2 * math.pi * 3 * mains * t + 3 * phase) / 3.0
    return x + _noise_scale(x, snr_db, time, value_range) * _unit_rms(wave, time)


def baseline_wander(x, snr_db, rng, *, spatial_axes, value_range, spacing=None):
    """Baseline wander (respiration, body movement): a sum of three sinusoids of 0.05-0.5 Hz with
    random frequencies, amplitudes and phases per (sample, channel), at ``snr_db``. A window shorter
    than the wander's period sees a slow drift, as a real recording would."""
    xp = namespace(x)
    time, _ = _axes(x, spatial_axes)
    dt = _sample_period(spacing, "baseline_wander")
    t = _time(x, time, dt)
    wave = xp.zeros_like(x)
    for _ in range(3):
        freq = _per_channel(rng, x, time, lambda s: _ops.uniform(rng, s, 0.05, 0.5, x))
        amp = _per_channel(rng, x, time, lambda s: _ops.uniform(rng, s, 0.5, 1.0, x))
        phase = _per_channel(rng, x, time, lambda s: _ops.uniform(rng, s, 0.0, 2 * math.pi, x))
        wave = wave + amp * xp.sin(2 * math.pi * freq * t + phase)
    return x + _noise_scale(x, snr_db, time, value_range) * _unit_rms(wave, time)


def electrode_motion(x, snr_db, rng, *, spatial_axes, value_range, spacing=None):
    """Electrode motion artefacts: abrupt baseline steps (one every 2 s on average, at least one
    per window) that relax exponentially with a 0.3 s time constant, plus a short burst of
    broadband noise at each step, per (sample, channel), at ``snr_db``."""
    xp = namespace(x)
    time, _ = _axes(x, spatial_axes)
    dt = _sample_period(spacing, "electrode_motion")
    length = x.shape[time]
    steps = max(1, round(length * dt / 2.0))
    t = _time(x, time, dt)
    wave = xp.zeros_like(x)
    tau, burst = 0.3, 0.1  # seconds
    for _ in range(steps):
        onset = _per_channel(rng, x, time, lambda s: _ops.uniform(rng, s, 0.0, length * dt, x))
        height = _per_channel(rng, x, time, lambda s: _ops.normal(rng, s, x))
        after = xp.astype(t >= onset, x.dtype)
        elapsed = xp.maximum(t - onset, xp.zeros_like(t))
        wave = wave + after * height * xp.exp(-elapsed / tau)
        near = xp.astype(elapsed < burst, x.dtype) * after
        wave = wave + near * 0.5 * _ops.normal(rng, x.shape, x)
    return x + _noise_scale(x, snr_db, time, value_range) * _unit_rms(wave, time)


def amplitude_scaling(x, amount, rng, *, spatial_axes, value_range, spacing=None):
    """Gain error (electrode impedance, amplifier calibration): each channel scaled by 1 ± amount
    (direction per channel) about its mean over the window."""
    xp = namespace(x)
    time, _ = _axes(x, spatial_axes)
    sign = _per_channel(rng, x, time, lambda s: _ops.rademacher(rng, s, x))
    mean = xp.mean(x, axis=time, keepdims=True)
    return mean + (x - mean) * (1.0 + amount * sign)


def channel_dropout(x, fraction, rng, *, spatial_axes, value_range, spacing=None):
    """Lost electrode contact (lead-off): each channel goes flat, at its mean over the window, for
    one random segment of ``fraction`` of the window (whole channels at fraction 1)."""
    xp = namespace(x)
    time, _ = _axes(x, spatial_axes)
    length = x.shape[time]
    span = max(1, round(fraction * length))
    start = _per_channel(rng, x, time, lambda s: _ops.uniform(rng, s, 0.0, float(length - span + 1), x))
    start = xp.floor(start)
    index = _ops.along(_ops.arange_like(x, length), time, x.ndim)
    off = (index >= start) & (index < start + span)
    mean = xp.mean(x, axis=time, keepdims=True)
    return xp.where(off, mean, x)
