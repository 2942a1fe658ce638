"""1-D signal models (EEG/ECG-style (N, C, T) and (N, T, C) inputs): layout guess, exact
gradients against torch autograd, attacks and corruptions end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import advonnx
from advonnx.errors import AdvonnxError
from advonnx.results import read_results

torch = pytest.importorskip("torch")


class SignalCNN(torch.nn.Module):
    """Conv1d → ReLU → MaxPool → Conv1d → ReLU → global average → Linear (an ECG-net in small)."""

    def __init__(self, channels=3, classes=4, channels_last=False):
        super().__init__()
        self.channels_last = channels_last
        self.c1 = torch.nn.Conv1d(channels, 8, 7, padding=3)
        self.c2 = torch.nn.Conv1d(8, 8, 5, padding=2)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x):
        if self.channels_last:
            x = x.transpose(1, 2)
        h = torch.relu(self.c1(x))
        h = torch.nn.functional.max_pool1d(h, 2)
        h = torch.relu(self.c2(h)).mean(dim=2)
        return self.head(h)


def export(net, shape, path, *, dynamo=False):
    net.eval()
    x = torch.zeros(shape)
    kwargs = {"dynamo": dynamo}
    if not dynamo:
        kwargs["dynamic_axes"] = {"signal": {0: "N"}}
    torch.onnx.export(net, (x,), str(path), input_names=["signal"], output_names=["logits"], **kwargs)
    return str(path)


def signals(n=24, channels=3, length=128, seed=0):
    """Sines of a class-dependent frequency plus noise, (N, C, T) in [0, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / length
    y = rng.integers(0, 4, n)
    x = 0.5 + 0.3 * np.sin(2 * np.pi * (2 + 3 * y)[:, None, None] * t + rng.uniform(0, 6, (n, channels, 1)))
    x += rng.normal(0, 0.05, x.shape)
    return np.clip(x, 0, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def ncw_model(tmp_path_factory):
    torch.manual_seed(0)
    net = SignalCNN()
    path = export(net, (2, 3, 128), tmp_path_factory.mktemp("sig") / "ecg_ncw.onnx")
    return net, path


def test_layout_guess_ncw_and_nwc(tmp_path, ncw_model):
    _, path = ncw_model
    m = advonnx.load_model(path)
    assert m.spec.layout == "NCW" and m.spec.task == "classification" and m.spec.num_classes == 4
    assert m.spec.channels == 3 and m.spec.spatial_shape == (128,)
    torch.manual_seed(0)
    nwc = export(SignalCNN(channels_last=True), (2, 128, 3), tmp_path / "ecg_nwc.onnx")
    m2 = advonnx.load_model(nwc)
    assert m2.spec.layout == "NWC" and m2.spec.channels == 3 and m2.spec.spatial_shape == (128,)


def test_declared_layout_must_fit_rank(ncw_model):
    _, path = ncw_model
    with pytest.raises(AdvonnxError, match="does not fit"):
        advonnx.load_model(path, layout="NCHW")


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_exact_gradient_equals_torch_autograd(tmp_path, dynamo):
    torch.manual_seed(1)
    net = SignalCNN().eval()
    path = export(net, (2, 3, 128), tmp_path / f"ecg_{dynamo}.onnx", dynamo=dynamo)
    m = advonnx.load_model(path)
    x, y = signals(8)
    loss, grad = m.value_and_grad(x, y, loss="ce", gradient="exact")
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(net(xt), torch.tensor(y), reduction="none")
    ref.sum().backward()
    assert np.allclose(loss, ref.detach().numpy(), atol=1e-5)
    err = np.linalg.norm(grad - xt.grad.numpy()) / np.linalg.norm(xt.grad.numpy())
    assert err < 1e-4


def test_attacks_and_metrics_on_signals(ncw_model):
    _, path = ncw_model
    m = advonnx.load_model(path, value_range="0,1")
    x, _ = signals(16)
    for name, kw in (("pgd", {"eps": 0.05, "steps": 5}), ("square", {"eps": 0.05, "max_queries": 50})):
        res = advonnx.attack(m, x, None, name, norm="linf", **kw)
        assert res.x_adv.shape == x.shape
        assert float(np.max(res.linf)) <= 0.05 + 1e-6
        assert np.all((res.x_adv >= 0) & (res.x_adv <= 1))


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "advonnx.cli", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.slow
def test_cli_run_with_signal_corruptions(tmp_path, ncw_model):
    """`advonnx run` on a signal model: attacks plus the corruptions that fit signals (image ones
    left out), the sampling rate from the npz; without one, a one-line error and no run folder."""
    _, path = ncw_model
    x, y = signals(12)
    np.savez(tmp_path / "ecg.npz", x=x, y=y, sampling_rate=np.float64(250.0))
    r = _cli(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "ecg.npz",
        "--attack",
        "pgd",
        "--eps",
        "0.05",
        "--corruptions",
        "all",
        "--severities",
        "1,5",
        "--out",
        tmp_path / "out",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    t = read_results(next((tmp_path / "out").iterdir()))
    corr = set(t.filter(t.column("kind").to_numpy(zero_copy_only=False) == "corruption").column("attack").to_pylist())
    assert corr == {
        "gaussian_noise",
        "powerline",
        "baseline_wander",
        "electrode_motion",
        "amplitude_scaling",
        "channel_dropout",
    }
    assert set(t.column("status").to_pylist()) == {"ok"}
    np.savez(tmp_path / "norate.npz", x=x, y=y)
    r = _cli(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "norate.npz",
        "--attack",
        "pgd",
        "--eps",
        "0.05",
        "--corruptions",
        "powerline",
        "--out",
        tmp_path / "out2",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "--sampling-rate" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out2").exists()
    r = _cli("inspect", path, "--sampling-rate", "250", cwd=tmp_path)
    assert r.returncode == 0 and "NCW (1-D signal)" in r.stdout and "250 Hz" in r.stdout


# -- recordings ------------------------------------------------------------------------------


def _recording(seconds=3.2, fs=250.0, channels=3):
    t = np.arange(int(seconds * fs)) / fs
    return np.stack([0.4 * np.sin(2 * np.pi * (1 + c) * t) + 0.1 * c for c in range(channels)]), fs


def _expect(layout="NCW", length=128, channels=3, value_range=(-1.0, 1.0)):
    from advonnx.data.dataset import InputExpectation

    return InputExpectation(layout=layout, spatial_shape=(length,), channels=channels, value_range=value_range)


@pytest.mark.parametrize("fmt", ["edf", "wfdb"])
def test_recordings_become_model_windows(tmp_path, fmt):
    """EDF (edfio) and WFDB (wfdb) recordings: consecutive windows of the model's length, in its
    layout, equal to the written physical values (to the files' 16-bit resolution), sample period
    as spacing, no labels."""
    from advonnx.data import load_dataset

    data, fs = _recording()
    if fmt == "edf":
        edfio = pytest.importorskip("edfio")
        signals_ = [edfio.EdfSignal(ch, fs, label=f"EEG{c}", physical_range=(-1.0, 1.0)) for c, ch in enumerate(data)]
        edfio.Edf(signals_, data_record_duration=0.4).write(tmp_path / "rec.edf")
        path = tmp_path / "rec.edf"
    else:
        wfdb = pytest.importorskip("wfdb")
        wfdb.wrsamp(
            "rec",
            fs=fs,
            units=["mV"] * 3,
            sig_name=["I", "II", "III"],
            p_signal=data.T,
            fmt=["16"] * 3,
            adc_gain=[30000.0] * 3,
            baseline=[0] * 3,
            write_dir=str(tmp_path),
        )
        path = tmp_path / "rec.hea"
    ds = load_dataset(path, _expect())
    count = data.shape[1] // 128
    assert ds.x.shape == (count, 3, 128) and ds.y is None
    expected = data[:, : count * 128].reshape(3, count, 128).transpose(1, 0, 2)
    np.testing.assert_allclose(ds.x, expected, atol=1e-4)
    assert ds.spacing == [(1 / fs,)] * count and ds.sample_ids[1] == f"rec:{128 / fs:g}s"
    assert "dropped" in ds.description["notes"]
    assert ds.groups == ["rec"] * count  # windows of one recording: one group (issue 20)
    nwc = load_dataset(path, _expect("NWC"))
    np.testing.assert_array_equal(nwc.x, ds.x.transpose(0, 2, 1))


def test_recording_errors_are_one_line(tmp_path):
    from advonnx.data import load_dataset
    from advonnx.errors import DataError

    edfio = pytest.importorskip("edfio")
    data, fs = _recording()
    edfio.Edf(
        [edfio.EdfSignal(ch, fs, label=f"EEG{c}", physical_range=(-1.0, 1.0)) for c, ch in enumerate(data)],
        data_record_duration=0.4,
    ).write(tmp_path / "rec.edf")
    with pytest.raises(DataError, match="3 channels .*EEG0, EEG1, EEG2.* model takes 2"):
        load_dataset(tmp_path / "rec.edf", _expect(channels=2))
    with pytest.raises(DataError, match="--value-range"):
        load_dataset(tmp_path / "rec.edf", _expect(value_range=(0.0, 0.5)))
    scaled = load_dataset(tmp_path / "rec.edf", _expect(value_range=(0.0, 1.0)), intensity="minmax")
    assert scaled.x.min() >= 0 and scaled.x.max() <= 1
    with pytest.raises(DataError, match="shorter than one window"):
        load_dataset(tmp_path / "rec.edf", _expect(length=10_000))


# -- sequence-first outputs ------------------------------------------------------------------


class PerStepCNN(torch.nn.Module):
    """Per-timestep scores emitted sequence-first, (T, N, K), as recurrent detectors do."""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        self.c1 = torch.nn.Conv1d(channels, 8, 5, padding=2)
        self.c2 = torch.nn.Conv1d(8, classes, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.relu(self.c1(x))).permute(2, 0, 1)


def test_sequence_first_output_layout(tmp_path):
    """Declared TNC: transposed to batch-first inside the graph, so decisions, dense metrics and
    exact gradients see (N, K, T); undeclared, the (T, N, K) output is refused or misread, and a
    declared layout of the wrong rank or batch axis is refused."""
    torch.manual_seed(2)
    net = PerStepCNN().eval()
    path = export(net, (2, 3, 64), tmp_path / "detector.onnx")
    m = advonnx.load_model(path, output_layout="TNC")
    assert m.spec.task == "segmentation" and m.spec.num_classes == 4 and m.spec.class_axis == 1
    x, _ = signals(5, length=64)
    ref = net(torch.tensor(x)).detach().numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(m.predict(x), ref, atol=1e-5)
    labels = ref.argmax(axis=1)
    np.testing.assert_array_equal(m.classify(x), labels)
    _, grad = m.value_and_grad(x, labels, loss="seg_ce", gradient="exact")
    xt = torch.tensor(x, requires_grad=True)
    logits = net(xt).permute(1, 2, 0)
    torch.nn.functional.cross_entropy(logits, torch.tensor(labels), reduction="none").mean(dim=1).sum().backward()
    assert np.linalg.norm(grad - xt.grad.numpy()) / np.linalg.norm(xt.grad.numpy()) < 1e-4
    with pytest.raises(AdvonnxError, match="--output-layout"):
        advonnx.load_model(path)  # undeclared: the batch is not on axis 0, so nothing is guessed
    with pytest.raises(AdvonnxError, match="has 2 axes"):
        advonnx.load_model(path, output_layout="NC")
    with pytest.raises(AdvonnxError, match="check the N axis"):
        advonnx.load_model(path, output_layout="NTC")
    with pytest.raises(AdvonnxError, match="letters"):
        advonnx.load_model(path, output_layout="TXC")


# -- recurrent nets on signals ---------------------------------------------------------------


class SeizureLSTM(torch.nn.Module):
    """A bidirectional LSTM over a (N, C, T) signal, per-timestep scores emitted sequence-first
    (T, N, K), as recurrent detectors are often exported."""

    def __init__(self, channels=3, hidden=8, classes=4):
        super().__init__()
        self.lstm = torch.nn.LSTM(channels, hidden, bidirectional=True)
        self.head = torch.nn.Linear(2 * hidden, classes)

    def forward(self, x):
        seq, _ = self.lstm(x.permute(2, 0, 1))  # (T, N, 2H)
        return self.head(seq)


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_bidirectional_lstm_sequence_first_exact_gradients(tmp_path, dynamo):
    torch.manual_seed(3)
    net = SeizureLSTM().eval()
    path = export(net, (2, 3, 40), tmp_path / f"lstm_{dynamo}.onnx", dynamo=dynamo)
    m = advonnx.load_model(path, output_layout="TNC", value_range="0,1")
    assert m.spec.layout == "NCW" and m.spec.task == "segmentation" and m.spec.num_classes == 4
    assert m.gradient_mode("auto", loss="seg_ce") == "exact"
    x, _ = signals(6, length=40)
    ref = net(torch.tensor(x)).permute(1, 2, 0)
    labels = ref.detach().numpy().argmax(axis=1)
    labels[:, ::4] = (labels[:, ::4] + 1) % 4
    _, grad = m.value_and_grad(x, labels, loss="seg_ce", gradient="exact")
    xt = torch.tensor(x, requires_grad=True)
    out = net(xt).permute(1, 2, 0)
    torch.nn.functional.cross_entropy(out, torch.tensor(labels), reduction="none").mean(dim=1).sum().backward()
    assert np.linalg.norm(grad - xt.grad.numpy()) / np.linalg.norm(xt.grad.numpy()) < 1e-4
    res = advonnx.attack(m, x, None, "pgd", norm="linf", eps=0.05, steps=5)
    assert res.gradient == "exact" and float(np.max(res.linf)) <= 0.05 + 1e-6


@pytest.mark.slow
def test_cli_attacks_a_recurrent_signal_model(tmp_path):
    torch.manual_seed(4)
    net = SeizureLSTM().eval()
    path = export(net, (2, 3, 40), tmp_path / "lstm.onnx")
    x, _ = signals(8, length=40)
    np.savez(tmp_path / "eeg.npz", x=x, sampling_rate=np.float64(256.0))
    r = _cli("inspect", path, "--output-layout", "TNC", cwd=tmp_path)
    assert r.returncode == 0 and "NCW" in r.stdout and "exact" in r.stdout, r.stdout + r.stderr
    r = _cli(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "eeg.npz",
        "--output-layout",
        "TNC",
        "--attack",
        "fgsm,pgd",
        "--eps",
        "0.05",
        "--corruptions",
        "powerline,baseline_wander",
        "--severities",
        "3",
        "--out",
        tmp_path / "out",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    t = read_results(next((tmp_path / "out").iterdir())).to_pandas()
    assert set(t["status"]) == {"ok"} and set(t.loc[t["attack"] == "pgd", "gradient"]) == {"exact"}
