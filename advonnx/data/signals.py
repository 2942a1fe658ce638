"""Physiological recordings (EDF/EDF+/BDF via edfio, WFDB via wfdb) cut into model windows.

A recording becomes consecutive, non-overlapping windows of the model's time length T (a model
with a dynamic time axis gets the whole recording as one sample); the tail shorter than T is
dropped and counted in the description. Channels must match the model's (a recording with other
channels is refused with its channel labels listed). Values are the physical values the file
declares (µV, mV), mapped by the intensity rule: ``auto`` takes them as stored and refuses values
outside the model's value range. The sample period (1 / sampling rate, seconds) is each window's
spacing, which the hertz-defined signal corruptions read. No labels: clean predictions are the
reference.

The readers are optional (``pip install "advonnx[signals]"``); a missing one is named in the error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import Dataset, InputExpectation
from .intensity import IntensityRule, apply_rule

EDF_SUFFIXES = (".edf", ".bdf")
WFDB_SUFFIXES = (".hea",)
SUFFIXES = EDF_SUFFIXES + WFDB_SUFFIXES


def is_recording(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def _missing(package: str, what: str, err) -> Exception:
    return err(f"reading {what} needs the '{package}' package: pip install \"advonnx[signals]\"")


def read_recording(path: Path, err) -> tuple[np.ndarray, float, list[str]]:
    """(channels, samples) float64 physical values, sampling rate in Hz, channel labels."""
    if path.suffix.lower() in EDF_SUFFIXES:
        try:
            import edfio
        except ImportError:
            raise _missing("edfio", "EDF/BDF files", err) from None
        try:
            edf = edfio.read_edf(path) if path.suffix.lower() == ".edf" else edfio.read_bdf(path)
        except Exception as ex:  # noqa: BLE001 - any reader failure is the user's file
            raise err(
                f"{path}: cannot read as {path.suffix[1:].upper()} ({type(ex).__name__}: {ex}); check the file"
            ) from None
        signals = [s for s in edf.signals]
        if not signals:
            raise err(f"{path}: the recording holds no signals; check the file")
        rates = {float(s.sampling_frequency) for s in signals}
        if len(rates) != 1:
            raise err(
                f"{path}: channels are sampled at different rates ({', '.join(f'{r:g}' for r in sorted(rates))} Hz); "
                "resample them to one rate (e.g. with MNE) and save an .npz"
            )
        length = min(len(s.data) for s in signals)
        data = np.stack([np.asarray(s.data[:length], dtype=np.float64) for s in signals])
        return data, rates.pop(), [s.label for s in signals]
    try:
        import wfdb
    except ImportError:
        raise _missing("wfdb", "WFDB records", err) from None
    try:
        record = wfdb.rdrecord(str(path.with_suffix("")))
    except Exception as ex:  # noqa: BLE001
        raise err(
            f"{path}: cannot read as a WFDB record ({type(ex).__name__}: {ex}); check the .hea and .dat files"
        ) from None
    if record.p_signal is None:
        raise err(f"{path}: the WFDB record holds no physical signal; check the file")
    return np.asarray(record.p_signal, dtype=np.float64).T, float(record.fs), list(record.sig_name)


def load_recording(path: Path, e: InputExpectation, rule: IntensityRule, limit, desc: dict, err) -> Dataset:
    """One recording as windows of the model's length in its layout (see module docstring)."""
    data, fs, labels = read_recording(path, err)
    channels, total = data.shape
    if e.channels is not None and e.channels != channels:
        raise err(
            f"{path}: the recording has {channels} channels ({', '.join(labels)}) but the model takes "
            f"{e.channels}; select the model's channels and save them as an .npz (x of shape (N, C, T))"
        )
    if not np.all(np.isfinite(data)):
        raise err(f"{path}: the recording holds NaN or infinite values; clean it first")
    length = e.spatial_shape[0] if e.spatial_shape else total
    if total < length:
        raise err(
            f"{path}: the recording has {total} samples ({total / fs:g} s), shorter than one window of the "
            f"model ({length} samples)"
        )
    count = total // length
    if limit is not None:
        count = min(count, int(limit))
    windows = data[:, : count * length].reshape(channels, count, length).transpose(1, 0, 2)
    lo, hi = e.value_range
    kind = "none" if rule.kind == "auto" else rule.kind
    if kind == "none":
        if windows.min() < lo or windows.max() > hi:
            raise err(
                f"{path}: physical values span [{windows.min():g}, {windows.max():g}] but the model takes "
                f"[{lo:g}, {hi:g}]; declare the model's value range (--value-range) or pass an intensity rule "
                "(--intensity minmax, percentile:0.5-99.5, divide:K)"
            )
        x = windows
    else:
        rule = IntensityRule(kind, rule.a, rule.b)
        x = np.stack(
            [apply_rule(w, rule, (lo, hi), eight_bit=False, name=f"{path} window {i}") for i, w in enumerate(windows)]
        )
    if not e.channels_first:
        x = x.transpose(0, 2, 1)
    x = np.ascontiguousarray(x, dtype=e.dtype)
    ids = [f"{path.stem}:{i * length / fs:g}s" for i in range(count)]
    desc["format"] = f"{path.suffix[1:].upper()} recording ({', '.join(labels)}; {fs:g} Hz)"
    desc["spacing"] = f"sample period 1/{fs:g} s from the recording"
    desc["label_source"] = "none: a recording without labels; the model's predictions are the reference"
    desc["intensity_rule"] = f"{kind} (physical values as stored)" if kind == "none" else str(rule)
    tail = total - (total // length) * length
    desc["notes"] += (
        f"{count} windows of {length} samples ({length / fs:g} s), no overlap"
        + (f"; last {tail} samples dropped" if tail else "")
        + "; "
    )
    desc["groups"] = f"1 group: the windows of one recording ({path.stem})"
    return Dataset(x, None, ids, [(1.0 / fs,)] * count, [], desc, None, groups=[path.stem] * count)
