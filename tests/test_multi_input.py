"""Models with several inputs: one attacked (``--input``, or guessed), the others fed per sample
from the data and held fixed (a signal + clinical covariates model made here in torch)."""

from __future__ import annotations

import numpy as np
import pytest

import advonnx
from advonnx.errors import AdvonnxError, ModelError

torch = pytest.importorskip("torch")

F = 3  # covariates (age, sex, site)
T = 64


class SignalWithFeatures(torch.nn.Module):
    """signal (N, 1, T) → 1-D CNN → global average; concatenated with features (N, F) → head."""

    def __init__(self, classes=3):
        super().__init__()
        self.c1 = torch.nn.Conv1d(1, 6, 5, padding=2)
        self.c2 = torch.nn.Conv1d(6, 6, 3, padding=1)
        self.f = torch.nn.Linear(F, 6)
        self.head = torch.nn.Linear(12, classes)

    def forward(self, signal, features):
        h = torch.relu(self.c1(signal))
        h = torch.relu(self.c2(h)).mean(dim=2)
        # the covariates scale the signal path too, so the input gradient depends on them
        g = torch.tanh(self.f(features))
        return self.head(torch.cat([h * (1 + g), g], dim=1))


def export(net, path, names=("signal", "features")):
    net.eval()
    torch.onnx.export(
        net,
        (torch.zeros(2, 1, T), torch.zeros(2, F)),
        str(path),
        input_names=list(names),
        output_names=["logits"],
        dynamic_axes={n: {0: "N"} for n in names},
        dynamo=False,
    )
    return str(path)


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T) / T
    y = rng.integers(0, 3, n)
    x = 0.5 + 0.3 * np.sin(2 * np.pi * (2 + 3 * y)[:, None, None] * t + rng.uniform(0, 6, (n, 1, 1)))
    feats = np.stack([rng.uniform(20, 80, n) / 100, rng.integers(0, 2, n), rng.integers(0, 3, n) / 2], axis=1)
    return np.clip(x, 0, 1).astype(np.float32), feats.astype(np.float32), y


@pytest.fixture(scope="module")
def two_input(tmp_path_factory):
    torch.manual_seed(0)
    net = SignalWithFeatures()
    path = export(net, tmp_path_factory.mktemp("mi") / "sig_feat.onnx")
    return net, path


def test_attacked_input_guessed_and_others_held(two_input):
    _, path = two_input
    m = advonnx.load_model(path)
    s = m.spec
    assert s.input_name == "signal" and s.layout == "NCW" and s.num_classes == 3
    assert s.extra_inputs == (("features", (None, F), "float32"),)
    x, f, _ = data()
    with pytest.raises(AdvonnxError, match="features"):
        m.predict(x)  # the covariates must be given
    with pytest.raises(AdvonnxError, match=r"shape \(5, 3\) for a batch of 12"):
        m.predict(x, extras={"features": f[:5]})
    with pytest.raises(AdvonnxError, match="not inputs held fixed"):
        m.predict(x, extras={"features": f, "age": f[:, 0]})


def test_gradients_match_torch_autograd(two_input):
    net, path = two_input
    m = advonnx.load_model(path)
    x, f, y = data()
    extras = {"features": f}
    scores = m.predict(x, extras=extras)
    xt = torch.tensor(x, requires_grad=True)
    logits = net(xt, torch.tensor(f))
    np.testing.assert_allclose(scores, logits.detach().numpy(), atol=1e-5)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y), reduction="sum")
    loss.backward()
    value, grad = m.value_and_grad(x, y, loss="ce", gradient="exact", extras=extras)
    assert np.linalg.norm(grad - xt.grad.numpy()) <= 1e-4 * np.linalg.norm(xt.grad.numpy())
    np.testing.assert_allclose(value.sum(), loss.item(), rtol=1e-5)
    # other covariates, another gradient, still torch's: the features really are fed per sample
    f2 = f[::-1].copy()
    _, g2 = m.value_and_grad(x, y, loss="ce", gradient="exact", extras={"features": f2})
    xt2 = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(net(xt2, torch.tensor(f2)), torch.tensor(y), reduction="sum").backward()
    assert np.linalg.norm(g2 - xt2.grad.numpy()) <= 1e-4 * np.linalg.norm(xt2.grad.numpy())
    assert np.linalg.norm(g2 - grad) > 0.1 * np.linalg.norm(grad)


def test_attacking_a_subset_uses_each_samples_own_inputs(two_input):
    _, path = two_input
    m = advonnx.load_model(path)
    x, f, y = data()
    full = advonnx.attack(m, x, y, "pgd", eps=0.05, steps=5, random_start=False, extras={"features": f})
    for i in (0, 5, 11):
        one = advonnx.attack(
            m,
            x[i : i + 1],
            y[i : i + 1],
            "pgd",
            eps=0.05,
            steps=5,
            random_start=False,
            extras={"features": f[i : i + 1]},
        )
        np.testing.assert_allclose(one.x_adv[0], full.x_adv[i], atol=1e-6)
        assert one.adv_pred[0] == full.adv_pred[i]


def test_estimated_gradients_feed_each_probe_its_samples_inputs(two_input):
    _, path = two_input
    m = advonnx.load_model(path)
    x, f, y = data(n=4)
    _, exact = m.value_and_grad(x, y, loss="ce", gradient="exact", extras={"features": f})
    _, est = m.value_and_grad(x, y, loss="ce", gradient="estimated", extras={"features": f})
    cos = (exact * est).reshape(4, -1).sum(1) / (
        np.linalg.norm(exact.reshape(4, -1), axis=1) * np.linalg.norm(est.reshape(4, -1), axis=1)
    )
    assert cos.min() > 0.5, cos


class SignalWithScalogram(torch.nn.Module):
    """A spindle-detector shape: raw signal (N, 1, T) and its scalogram (N, 4, T), both spatial."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv1d(5, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, signal, scalogram):
        return self.head(torch.relu(self.c(torch.cat([signal, scalogram], dim=1))).mean(dim=2))


def test_ambiguous_inputs_need_a_name(tmp_path, capsys):
    torch.manual_seed(0)
    path = export_pair(tmp_path / "spindle.onnx")
    assert _run_cli("inspect", path) == 2
    err = capsys.readouterr().err
    assert "signal (?, 1, 64), scalogram (?, 4, 64)" in err and len(err.strip().splitlines()) == 1, err
    assert _run_cli("inspect", path, "--input", "signal") == 0
    out = capsys.readouterr().out
    assert "(attacked)" in out and "scalogram" in out
    with pytest.raises(ModelError, match=r"signal \(\?, 1, 64\), scalogram \(\?, 4, 64\).*--input NAME") as err:
        advonnx.load_model(path)
    assert "\n" not in str(err.value)
    m = advonnx.load_model(path, input_name="scalogram")
    assert m.spec.input_name == "scalogram" and m.spec.extra_inputs[0][0] == "signal"
    with pytest.raises(ModelError, match="patch_size"):
        advonnx.load_model(path, input_name="signal", patch_size="32")


def export_pair(path):
    net = SignalWithScalogram().eval()
    torch.onnx.export(
        net,
        (torch.zeros(2, 1, T), torch.zeros(2, 4, T)),
        str(path),
        input_names=["signal", "scalogram"],
        output_names=["logits"],
        dynamic_axes={"signal": {0: "N"}, "scalogram": {0: "N"}},
        dynamo=False,
    )
    return str(path)


def _run_cli(*args):
    """`advonnx ...` in this process (fast); returns the exit code (0 when main returns)."""
    from advonnx.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


def test_cli_inspect_and_run_hold_the_covariates_per_sample(tmp_path, two_input, capsys):
    """`advonnx inspect` lists both inputs; `advonnx run` on an npz with x and features attacks the
    signal with each sample's own covariates: the rows equal per-sample runs of the Python API."""
    import json

    from advonnx.results import read_results

    net, path = two_input
    assert _run_cli("inspect", path) == 0
    out = capsys.readouterr().out
    assert "signal" in out and "(attacked)" in out and "held fixed" in out and "features" in out
    x, f, y = data(n=10)
    np.savez(tmp_path / "d.npz", x=x, features=f, y=y)
    code = _run_cli(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack",
        "pgd(random_start=false)",
        "--eps",
        "0.05",
        "--steps",
        "5",
        "--no-masking-checks",
        "--chunk-size",
        "4",
        "--out",
        tmp_path / "out",
        "-q",
    )
    assert code == 0, capsys.readouterr().err
    folder = next((tmp_path / "out").iterdir())
    t = read_results(folder).to_pandas()
    assert set(t["attacked_inputs"]) == {"signal"} and set(t["status"]) == {"ok"}
    meta = json.loads((folder / "_run.json").read_text(encoding="utf-8"))
    inputs = meta["datasets"]["d"]["inputs"]
    assert inputs["signal"].startswith("attacked") and "npz array 'features'" in inputs["features"]
    m = advonnx.load_model(path)
    for i in (0, 3, 9):  # chunks of 4: samples 0, 3 (first chunk) and 9 (last chunk, partial)
        one = advonnx.attack(
            m,
            x[i : i + 1],
            y[i : i + 1],
            "pgd",
            eps=0.05,
            steps=5,
            random_start=False,
            extras={"features": f[i : i + 1]},
        )
        row = t[t["sample_id"] == f"npz:{i}"].iloc[0]
        assert int(row["adv_pred"]) == int(one.adv_pred[0]) and row["linf"] == pytest.approx(
            float(one.linf[0]), abs=1e-6
        )
        with torch.no_grad():
            assert int(row["clean_pred"]) == int(net(torch.tensor(x[i : i + 1]), torch.tensor(f[i : i + 1])).argmax())


def test_cli_errors_are_one_line(tmp_path, two_input, capsys):
    _, path = two_input
    x, f, y = data(n=4)
    np.savez(tmp_path / "nofeat.npz", x=x, y=y)
    for args, needle in (
        (("--data", tmp_path / "nofeat.npz"), "no array named 'features'"),
        # a joint attack reads the second attacked input from the data too
        (("--data", tmp_path / "nofeat.npz", "--attack-inputs", "signal,features"), "no array named 'features'"),
    ):
        code = _run_cli(
            "run", "--model", path, *args, "--attack", "fgsm", "--eps", "0.05", "--out", tmp_path / "o", "-q"
        )
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


class ImageWithCovariates(torch.nn.Module):
    """image (N, 1, 8, 8) → conv → global average, concatenated with covariates (N, 3) → head."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(7, 2)

    def forward(self, image, covariates):
        return self.head(torch.cat([torch.relu(self.c(image)).mean(dim=(2, 3)), covariates], dim=1))


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    torch.manual_seed(1)
    net = ImageWithCovariates().eval()
    path = tmp_path_factory.mktemp("img") / "img_cov.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 3)),
        str(path),
        input_names=["image", "covariates"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "covariates": {0: "N"}},
        dynamo=False,
    )
    return net, str(path)


def _manifest(tmp_path, n=6, per_file=False):
    """PNG images listed with their covariates: columns covariates:age,sex,site, or one .npy each."""
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    cov = np.stack([rng.uniform(0.2, 0.8, n), rng.integers(0, 2, n), rng.integers(0, 3, n)], axis=1)
    head = "path,label," + ("covariates" if per_file else "covariates:age,covariates:sex,covariates:site")
    lines = [head]
    for i in range(n):
        sitk.WriteImage(
            sitk.GetImageFromArray(rng.integers(0, 256, (8, 8)).astype(np.uint8)), str(tmp_path / f"{i}.png")
        )
        if per_file:
            np.save(tmp_path / f"cov{i}.npy", cov[i])
            cells = f"cov{i}.npy"
        else:
            cells = ",".join(f"{v:g}" for v in cov[i])
        lines.append(f"{i}.png,{i % 2},{cells}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "m.csv", cov.astype(np.float32)


@pytest.mark.parametrize("per_file", [False, True])
def test_manifest_gives_covariates_by_column_or_file(tmp_path, image_model, per_file):
    from advonnx.suite import DatasetEntry, cached_dataset

    _, path = image_model
    m = advonnx.load_model(path)
    csv, cov = _manifest(tmp_path, per_file=per_file)
    ds = cached_dataset(DatasetEntry(name="m", path=str(csv)), m)
    np.testing.assert_allclose(ds.extras["covariates"], cov, rtol=1e-5)  # written with 6 digits
    assert ds.x.shape == (6, 1, 8, 8) and list(ds.y) == [0, 1, 0, 1, 0, 1]
    source = ds.description["input:covariates"]
    assert ("covariates:age,covariates:sex,covariates:site" in source) != per_file
    sub = ds.subset([4, 1])
    np.testing.assert_array_equal(sub.extras["covariates"], ds.extras["covariates"][[4, 1]])


def test_votes_tile_the_held_inputs(image_model):
    """A majority over repeated evaluations feeds every copy its own sample's covariates."""
    net, path = image_model
    m = advonnx.load_model(path)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    cov = rng.uniform(-3, 3, (5, 3)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.tensor(x), torch.tensor(cov)).argmax(1).numpy()
    np.testing.assert_array_equal(m.classify(x, votes=3, extras={"covariates": cov}), want)


@pytest.mark.slow
def test_cli_manifest_worst_case_corruptions_and_masking_checks(tmp_path, image_model):
    """The whole runner on an image + covariates manifest: worst-case skips, the masking checks'
    extra attacks and corruptions (only the image is corrupted) all feed each sample's covariates."""
    import subprocess
    import sys

    from advonnx.results import read_results

    net, path = image_model
    csv, cov = _manifest(tmp_path, n=8)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "advonnx.cli",
            "run",
            "--model",
            path,
            "--data",
            str(csv),
            "--attack",
            "fgsm,pgd",
            "--eps",
            "0.1",
            "--worst-case",
            "--corruptions",
            "gaussian_noise",
            "--severities",
            "3",
            "--out",
            str(tmp_path / "out"),
            "-q",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    t = read_results(next((tmp_path / "out").iterdir())).to_pandas()
    assert set(t["kind"]) == {"adversarial", "check", "corruption"} and set(t["attacked_inputs"]) == {"image"}
    assert {"ok", "skipped"} >= set(t["status"]) and (t["status"] == "ok").any()
    from advonnx.suite import DatasetEntry, cached_dataset

    ds = cached_dataset(DatasetEntry(name="m", path=str(csv)), advonnx.load_model(path))
    with torch.no_grad():
        clean = net(torch.tensor(ds.x), torch.tensor(ds.extras["covariates"])).argmax(1).numpy()
    by_id = dict(zip(ds.sample_ids, clean))
    for _, row in t[t["status"] == "ok"].iterrows():
        assert row["clean_pred"] == by_id[row["sample_id"]]
    # saved examples carry the covariates they were judged with; torch on (x_adv, covariates) agrees
    files = sorted((next((tmp_path / "out").iterdir()) / "_examples").glob("part-*.npz"))
    assert files
    for f in files:
        z = np.load(f)
        rows = [ds.sample_ids.index(str(s)) for s in z["sample_id"]]
        np.testing.assert_array_equal(z["held_covariates"], ds.extras["covariates"][rows])
        with torch.no_grad():
            adv = net(torch.tensor(z["x_adv"]), torch.tensor(z["held_covariates"])).argmax(1).numpy()
        np.testing.assert_array_equal(adv, z["adv_pred"])


def test_chunks_padding_and_io_binding_keep_rows_together(tmp_path, two_input):
    """Batches split into onnxruntime calls (batch_size 4 of 11), a model fixed at batch 2 (the
    last call padded) and IO binding all feed each row its own covariates."""
    net, path = two_input
    fixed = str(tmp_path / "fixed.onnx")
    net.eval()
    torch.onnx.export(
        net,
        (torch.zeros(2, 1, T), torch.zeros(2, F)),
        fixed,
        input_names=["signal", "features"],
        output_names=["logits"],
        dynamo=False,
    )
    x, f, y = data(n=11, seed=4)
    with torch.no_grad():
        want = net(torch.tensor(x), torch.tensor(f)).numpy()
    ref_value, ref_grad = advonnx.load_model(path).value_and_grad(x, y, gradient="exact", extras={"features": f})
    for m in (
        advonnx.load_model(path, batch_size=4),
        advonnx.load_model(fixed),
        advonnx.load_model(path, batch_size=4, io_binding=True),
    ):
        np.testing.assert_allclose(m.predict(x, extras={"features": f}), want, atol=1e-5)
        value, grad = m.value_and_grad(x, y, gradient="exact", extras={"features": f})
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)
    assert advonnx.load_model(fixed).spec.fixed_batch == 2


class SignalWithSite(torch.nn.Module):
    """signal (N, 1, T) and an integer site index (N,) looked up in an embedding (int64 input)."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv1d(1, 4, 3, padding=1)
        self.site = torch.nn.Embedding(3, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, signal, site):
        return self.head(torch.relu(self.c(signal)).mean(dim=2) * self.site(site))


def test_integer_vector_input_from_npz_and_manifest(tmp_path):
    from advonnx.data.extras import load_extra_inputs
    from advonnx.suite import DatasetEntry, cached_dataset

    torch.manual_seed(2)
    net = SignalWithSite().eval()
    path = str(tmp_path / "site.onnx")
    torch.onnx.export(
        net,
        (torch.zeros(2, 1, T), torch.zeros(2, dtype=torch.int64)),
        path,
        input_names=["signal", "site"],
        output_names=["logits"],
        dynamic_axes={"signal": {0: "N"}, "site": {0: "N"}},
        dynamo=False,
    )
    m = advonnx.load_model(path)
    assert m.spec.input_name == "signal" and m.spec.extra_inputs == (("site", (None,), "int64"),)
    x, _, y = data(n=6)
    site = np.array([0, 2, 1, 1, 0, 2])
    np.savez(tmp_path / "s.npz", x=x, site=site, y=y % 2)
    ds = cached_dataset(DatasetEntry(name="s", path=str(tmp_path / "s.npz")), m)
    assert ds.extras["site"].dtype == np.int64 and list(ds.extras["site"]) == list(site)
    res = advonnx.attack(
        m, ds.x[:], ds.y, "pgd", eps=0.05, steps=3, extras=ds.extras
    )  # runs stream: x is read per block
    with torch.no_grad():
        want = net(torch.tensor(res.x_adv), torch.tensor(site)).argmax(1).numpy()
    np.testing.assert_array_equal(res.adv_pred, want)
    # the same values from a manifest column (one number per row); the images come from the npz here
    (tmp_path / "m.csv").write_text("path,site\n" + "".join(f"npz:{i},{s}\n" for i, s in enumerate(site)))
    again = load_extra_inputs(tmp_path / "m.csv", ds, m.spec.extra_inputs, "signal")
    np.testing.assert_array_equal(again.extras["site"], site)
    with pytest.raises(AdvonnxError, match="no column for the model input 'site'"):
        (tmp_path / "bad.csv").write_text("path,place\n" + "".join(f"npz:{i},{s}\n" for i, s in enumerate(site)))
        load_extra_inputs(tmp_path / "bad.csv", ds, m.spec.extra_inputs, "signal")
