"""Streamed datasets, samples of varying size and --spacing.

- A dynamic-size classifier and segmenter (tiny torch convnets exported with symbolic H/W) on
  folders of mixed sizes: every sample is attacked at its own size (FGSM against torch autograd
  at that size), per-sample metrics equal a run on that sample alone, rows carry the shape.
- Runs read their datasets per block (never the whole dataset at once) and give the same rows as
  stacked arrays.
- --spacing resamples like a SimpleITK ResampleImageFilter (and like scipy's linear
  interpolation on the same grid).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from data_helpers import write_image

from advonnx.data import load_dataset
from advonnx.data.dataset import InputExpectation
from advonnx.data.stream import SampleArray
from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps

torch = pytest.importorskip("torch")

SIZES = [(12, 16), (16, 16), (20, 12), (12, 16), (16, 16), (20, 12)]
EPS = 0.03


class _Cls(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.c(x)).mean(dim=(2, 3)))


class _Seg(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = torch.nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x):
        return self.c2(torch.tanh(self.c1(x)))


def _export(net, path, dense: bool) -> str:
    out_axes = {0: "N", 2: "H", 3: "W"} if dense else {0: "N"}
    torch.onnx.export(
        net.eval(),
        (torch.zeros(1, 1, 16, 16),),
        str(path),
        input_names=["x"],
        output_names=["scores"],
        dynamo=False,
        dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "scores": out_axes},
    )
    return str(path)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    torch.manual_seed(0)
    cls, seg = _Cls(), _Seg()
    d = tmp_path_factory.mktemp("dyn")
    return (cls, _export(cls, d / "cls.onnx", False)), (seg, _export(seg, d / "seg.onnx", True))


def _images(rng):
    return [rng.integers(0, 256, size=s).astype(np.uint8) for s in SIZES]


def _run(tmp_path, model, data, *, chunk=4, attacks=None, name="r"):
    suite = Suite(
        name=name,
        models=[ModelEntry("m", model)],
        datasets=[DatasetEntry("d", str(data))],
        attacks=attacks or [AttackEntry("fgsm", "linf", parse_eps(str(EPS)))],
        chunk_size=chunk,
        save_examples=0,
        masking_checks=False,
    )
    _, table = Runner(suite, out=tmp_path / f"out-{name}").run()
    return [r for r in table.to_pylist() if r["kind"] == "adversarial"]


def test_dynamic_classifier_attacks_each_sample_at_its_own_size(tmp_path, nets):
    (net, model), _ = nets
    rng = np.random.default_rng(0)
    truth = {}
    for i, img in enumerate(_images(rng)):
        rel = f"{i % 3}/img{i}.png"
        write_image(tmp_path / "folder" / rel, img)
        truth[rel] = (img, i % 3)
    rows = _run(tmp_path, model, tmp_path / "folder")
    assert sorted(r["sample_id"] for r in rows) == sorted(truth)
    for r in rows:
        img, label = truth[r["sample_id"]]
        assert r["sample_shape"] == f"1x{img.shape[0]}x{img.shape[1]}"  # its own size: no resize
        x = torch.tensor(img[None, None] / 255.0, dtype=torch.float32, requires_grad=True)
        torch.nn.functional.cross_entropy(net(x), torch.tensor([label])).backward()
        x_adv = torch.clamp(x + EPS * x.grad.sign(), 0, 1).detach()
        delta = (x_adv - x).detach().numpy()
        assert r["label"] == label
        assert r["clean_pred"] == int(net(x).argmax())
        assert r["adv_pred"] == int(net(x_adv).argmax())
        np.testing.assert_allclose(r["l2"], np.linalg.norm(delta), rtol=1e-3)
        np.testing.assert_allclose(r["linf"], np.abs(delta).max(), rtol=1e-5)


def _manifest(path, pairs):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask"])
        w.writerows(pairs)
    return path


def test_dynamic_segmenter_per_sample_metrics_equal_single_sample_runs(tmp_path, nets):
    _, (net, model) = nets
    rng = np.random.default_rng(1)
    pairs, masks = [], {}
    for i, img in enumerate(_images(rng)):
        mask = (img // 86).astype(np.uint8)  # labels 0..2 that follow the intensity
        write_image(tmp_path / f"img{i}.png", img)
        write_image(tmp_path / f"mask{i}.png", mask)
        pairs.append((f"img{i}.png", f"mask{i}.png"))
        masks[f"img{i}.png"] = (img, mask)
    rows = {r["sample_id"]: r for r in _run(tmp_path, model, _manifest(tmp_path / "all.csv", pairs))}
    assert sorted(rows) == sorted(masks)
    cols = ("dice_clean", "dice_adv", "hd95_clean", "hd95_adv", "l2", "pixel_acc_clean", "pixel_acc_adv")
    for i, pair in enumerate(pairs):
        img, mask = masks[pair[0]]
        r = rows[pair[0]]
        assert r["sample_shape"] == f"1x{img.shape[0]}x{img.shape[1]}"
        with torch.no_grad():
            pred = net(torch.tensor(img[None, None] / 255.0, dtype=torch.float32)).argmax(1)[0].numpy()
        np.testing.assert_allclose(r["pixel_acc_clean"], np.mean(pred == mask), atol=1e-9)
        if i < 3:  # one sample of each size on its own
            alone = _run(tmp_path, model, _manifest(tmp_path / f"one{i}.csv", [pair]), name=f"one{i}")
            assert len(alone) == 1
            for c in cols:
                np.testing.assert_allclose(alone[0][c], r[c], rtol=1e-6, atol=1e-9, err_msg=c)


def test_runs_read_per_block_and_equal_stacked_arrays(tmp_path, monkeypatch, nets):
    import advonnx.data.load as load_mod
    import advonnx.data.sources.npz as npz_source
    import advonnx.suite as suite_mod
    from models import save, small_cnn

    model = save(small_cnn(size=12, seed=0), tmp_path / "m.onnx")
    n = 40
    x = np.random.default_rng(0).uniform(0, 1, (n, 1, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(n) % 3)
    calls = []
    real = npz_source._NpzSamples.__call__

    def spy(self, idx):
        calls.append(np.asarray(idx).copy())
        return real(self, idx)

    monkeypatch.setattr(npz_source._NpzSamples, "__call__", spy)
    attacks = [AttackEntry("pgd", "linf", parse_eps("0.05"), {"steps": 2}), AttackEntry("fgsm", "l2", parse_eps("0.5"))]
    suite_mod._DATA_CACHE.clear()
    streamed = _run(tmp_path, model, tmp_path / "d.npz", chunk=8, attacks=attacks, name="streamed")
    data = next(iter(suite_mod._DATA_CACHE.values()))
    assert isinstance(data.x, SampleArray)
    assert calls and max(len(c) for c in calls) <= 8  # per chunk, never the whole dataset
    assert sorted({int(i) for c in calls for i in c}) == list(range(n))
    assert len(calls) <= 2 * (2 * n // 8) + 2  # each block once per setting, plus prefetches

    real_load = load_mod.load_dataset
    monkeypatch.setattr(npz_source._NpzSamples, "__call__", real)
    monkeypatch.setattr("advonnx.data.load_dataset", lambda *a, **k: real_load(*a, **{**k, "stream": False}))
    suite_mod._DATA_CACHE.clear()
    stacked = _run(tmp_path, model, tmp_path / "d.npz", chunk=8, attacks=attacks, name="stacked")
    assert isinstance(next(iter(suite_mod._DATA_CACHE.values())).x, np.ndarray)
    suite_mod._DATA_CACHE.clear()

    def key(r):
        return (r["attack"], r["norm"], r["sample_id"])

    drop = ("time_s", "run_id")
    a = [{k: v for k, v in r.items() if k not in drop} for r in sorted(streamed, key=key)]
    b = [{k: v for k, v in r.items() if k not in drop} for r in sorted(stacked, key=key)]
    assert len(a) == 2 * n and a == b


def test_sample_array_prefetches_the_next_block_and_folders_read_lazily(tmp_path):
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, (8, 8)).astype(np.uint8) for _ in range(10)]
    for i, img in enumerate(imgs):
        write_image(tmp_path / "f" / f"{i:02d}.png", img)
    e = InputExpectation("NCHW", (8, 8), 1)
    ds = load_dataset(tmp_path / "f", e, intensity="divide:255", stream=True)
    x = ds.x
    assert isinstance(x, SampleArray) and x.reads == 0  # nothing read after the loading pass
    first = x[0:4]
    x._ahead[1].result()  # the prefetch of 4:8 in the background thread
    assert x.reads == 2
    second = x[4:8]
    x._ahead[1].result()
    assert x._ahead[0] == (8, 10) and x.reads == 3  # 4:8 came from the prefetch; then 8:10 prefetched
    np.testing.assert_allclose(np.concatenate([first, second])[:, 0], np.stack(imgs[:8]) / 255.0, atol=1e-7)
    eager = load_dataset(tmp_path / "f", e, intensity="divide:255")
    np.testing.assert_array_equal(np.asarray(x), eager.x)
    np.testing.assert_array_equal(x[[9, 2]], eager.x[[9, 2]])


def test_compressed_and_stored_npz_read_per_block_alike(tmp_path):
    x = np.random.default_rng(3).uniform(0, 1, (30, 1, 4, 5)).astype(np.float32)
    y = np.random.default_rng(4).integers(0, 3, (30, 4, 5))
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "b.npz", x=x, y=y)
    e = InputExpectation("NCHW", (4, 5), 1, task="segmentation")
    for name in ("a.npz", "b.npz"):
        ds = load_dataset(tmp_path / name, e, stream=True)
        np.testing.assert_array_equal(ds.x[3:11], x[3:11])
        np.testing.assert_array_equal(ds.x[[20, 1, 2]], x[[20, 1, 2]])
        np.testing.assert_array_equal(ds.y[0:30], y)
        np.testing.assert_array_equal(ds.subset([5, 6]).y[0:2], y[5:7])


def _sitk_reference(img: sitk.Image, spacing, interpolator) -> np.ndarray:
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing(spacing)
    f.SetSize([int(round(n * s / t)) for n, s, t in zip(img.GetSize(), img.GetSpacing(), spacing, strict=True)])
    f.SetOutputOrigin(img.GetOrigin())
    f.SetOutputDirection(img.GetDirection())
    f.SetInterpolator(interpolator)
    return sitk.GetArrayFromImage(f.Execute(img))


def test_spacing_resamples_like_simpleitk(tmp_path):
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(5)
    vol = rng.uniform(0, 1, (5, 9, 7)).astype(np.float32)
    lab = rng.integers(0, 3, (5, 9, 7)).astype(np.uint8)
    sp = (2.0, 0.75, 1.25)  # array order (z, y, x), mm
    write_image(tmp_path / "v.nii.gz", vol, spacing=sp)
    write_image(tmp_path / "m.nii.gz", lab, spacing=sp)
    _manifest(tmp_path / "m.csv", [("v.nii.gz", "m.nii.gz")])
    e = InputExpectation("NCDHW", None, 1, task="segmentation")
    ds = load_dataset(tmp_path / "m.csv", e, intensity="none", spacing="1.0,1.0,1.0")
    img = sitk.ReadImage(str(tmp_path / "v.nii.gz"))
    ref = _sitk_reference(img, (1.0, 1.0, 1.0), sitk.sitkLinear)
    assert ds.x.shape[2:] == ref.shape == (10, 7, 9)
    np.testing.assert_allclose(ds.x[0, 0], ref, atol=1e-6)
    ref_lab = _sitk_reference(sitk.ReadImage(str(tmp_path / "m.nii.gz")), (1.0, 1.0, 1.0), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(ds.y[0], ref_lab)
    assert ds.spacing == [(1.0, 1.0, 1.0)]
    assert ds.description["voxel_spacing"].startswith("1.0 x 1.0 x 1.0 mm")
    # independent: trilinear interpolation at the output voxel centres, inside the input grid
    zz, yy, xx = np.meshgrid(*(np.arange(n) * 1.0 / s for n, s in zip(ref.shape, sp, strict=True)), indexing="ij")
    inside = (zz <= vol.shape[0] - 1) & (yy <= vol.shape[1] - 1) & (xx <= vol.shape[2] - 1)
    lin = map_coordinates(vol.astype(np.float64), [zz, yy, xx], order=1)
    np.testing.assert_allclose(ds.x[0, 0][inside], lin[inside], atol=1e-5)
    assert (
        load_dataset(tmp_path / "m.csv", e, intensity="none").description["voxel_spacing"] == "as stored in each file"
    )


def test_cluster_units_carry_their_block_references(tmp_path, monkeypatch, nets):
    """With --cluster, a unit of a streamed folder carries its block's files (not the dataset's,
    not arrays); a worker that cannot load the dataset computes the same rows from them."""
    import pickle

    import advonnx.data as data_pkg
    import advonnx.distributed as distributed
    import advonnx.suite as suite_mod

    (_, model), _ = nets
    rng = np.random.default_rng(6)
    for i, img in enumerate(_images(rng)):
        write_image(tmp_path / "folder" / str(i % 3) / f"img{i}.png", img)
    local = _run(tmp_path, model, tmp_path / "folder", chunk=2, name="local")
    shipped = []

    def fake_run_distributed(cluster, units, store, on_done, log):
        real_load = data_pkg.load_dataset
        monkeypatch.setattr(data_pkg, "load_dataset", lambda *a, **k: pytest.fail("a worker loaded the dataset"))
        suite_mod._DATA_CACHE.clear()
        for u in units:
            u = pickle.loads(pickle.dumps(u))  # what Dask does to a task's arguments
            shipped.append(len(u.data.x._read.__self__.items))
            rows, examples = suite_mod.execute_unit(u)
            assert {r["sample_id"] for r in rows} == set(u.data.sample_ids)
            store.write_chunk(u.key, rows, examples)
            on_done(u)
        monkeypatch.setattr(data_pkg, "load_dataset", real_load)
        return {"fake": len(units)}

    monkeypatch.setattr(distributed, "run_distributed", fake_run_distributed)
    suite = Suite(
        name="cl",
        models=[ModelEntry("m", model)],
        datasets=[DatasetEntry("d", str(tmp_path / "folder"))],
        attacks=[AttackEntry("fgsm", "linf", parse_eps(str(EPS)))],
        chunk_size=2,
        save_examples=0,
        masking_checks=False,
    )
    _, table = Runner(suite, out=tmp_path / "out-cl", cluster="tcp://127.0.0.1:1").run()
    assert shipped == [2, 2, 2]  # each unit: its own 2 files of one size

    def strip(rows):
        return sorted(
            ({k: v for k, v in r.items() if k not in ("time_s", "run_id")} for r in rows), key=lambda r: r["sample_id"]
        )

    assert strip(r for r in table.to_pylist() if r["kind"] == "adversarial") == strip(local)


def test_sample_array_indexing_matches_numpy(tmp_path):
    x = np.random.default_rng(7).uniform(0, 1, (12, 1, 3, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x)
    s = load_dataset(tmp_path / "a.npz", InputExpectation("NCHW", (3, 4), 1), stream=True).x
    for key in (
        3,
        -1,
        slice(2, 9),
        slice(None, None, 3),
        [4, 0, 4],
        np.arange(12) % 2 == 0,
        (2, 0),
        (slice(1, 5), 0, 2),
    ):
        np.testing.assert_array_equal(s[key], x[key], err_msg=str(key))
    assert s.shape == x.shape and len(s) == 12 and s.take([1, 2]).shape == (2, 1, 3, 4)


def test_spacing_from_a_suite_is_recorded_and_rows_carry_the_resampled_shape(tmp_path):
    import json

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()
    model = tmp_path / "seg3d.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 1, 4, 4, 4),),
        str(model),
        input_names=["x"],
        output_names=["s"],
        dynamo=False,
        dynamic_axes={"x": {0: "N", 2: "D", 3: "H", 4: "W"}, "s": {0: "N", 2: "D", 3: "H", 4: "W"}},
    )
    rng = np.random.default_rng(8)
    write_image(tmp_path / "v.nii.gz", rng.uniform(0, 1, (5, 9, 7)).astype(np.float32), spacing=(2.0, 0.75, 1.25))
    write_image(tmp_path / "m.nii.gz", rng.integers(0, 3, (5, 9, 7)).astype(np.uint8), spacing=(2.0, 0.75, 1.25))
    _manifest(tmp_path / "m.csv", [("v.nii.gz", "m.nii.gz")])
    suite = Suite(
        name="sp",
        models=[ModelEntry("m", str(model))],
        datasets=[DatasetEntry("d", str(tmp_path / "m.csv"), intensity="none", spacing="1.0,1.0,1.0")],
        attacks=[AttackEntry("fgsm", "linf", parse_eps("0.01"))],
        save_examples=0,
        masking_checks=False,
    )
    folder, table = Runner(suite, out=tmp_path / "out").run()
    assert {r["sample_shape"] for r in table.to_pylist()} == {"1x10x7x9"}
    meta = json.loads((folder / "_run.json").read_text(encoding="utf-8"))
    assert meta["datasets"]["d"]["voxel_spacing"].startswith("1.0 x 1.0 x 1.0 mm")
    assert meta["datasets"]["d"]["orientation"] == "as stored in each file"


def test_streamed_nifti_segmentation_measures_hd95_in_mm_from_the_headers(tmp_path, nets):
    """Runs always stream file datasets; each sample keeps its header spacing, so HD95 is in mm
    (it was in pixels: streamed file datasets had no spacing)."""
    from advonnx.seg_metrics import hd95, mean_hd95

    _, (net, model) = nets
    rng = np.random.default_rng(2)
    spacings = [(2.0, 0.5), (0.7, 3.0), (2.0, 0.5)]
    pairs = []
    for i, (size, sp) in enumerate(zip(SIZES, spacings)):
        img = rng.integers(0, 256, size=size).astype(np.uint8)
        write_image(tmp_path / f"img{i}.nii.gz", img, spacing=sp)
        write_image(tmp_path / f"mask{i}.nii.gz", (img // 86).astype(np.uint8), spacing=sp)
        pairs.append((f"img{i}.nii.gz", f"mask{i}.nii.gz"))
    manifest = _manifest(tmp_path / "nii.csv", pairs)
    e = InputExpectation("NCHW", (None, None), 1, task="segmentation")
    ds = load_dataset(manifest, e, stream=True)
    by_id = dict(zip(ds.sample_ids, ds.spacing))
    for p, sp in zip(pairs, spacings):  # NIfTI stores float32 spacings
        np.testing.assert_allclose(by_id[p[0]], sp, rtol=1e-6)
    rows = {r["sample_id"]: r for r in _run(tmp_path, model, manifest, name="nii")}
    for i in range(len(ds.sample_ids)):
        x, mask = np.asarray(ds.x[i : i + 1]), np.asarray(ds.y[i : i + 1])
        with torch.no_grad():
            pred = net(torch.tensor(x, dtype=torch.float32)).argmax(1).numpy()
        expected = mean_hd95(hd95(pred, mask, 3, [by_id[ds.sample_ids[i]]]))[0]
        in_pixels = mean_hd95(hd95(pred, mask, 3, None))[0]
        assert rows[ds.sample_ids[i]]["hd95_clean"] == pytest.approx(expected, rel=1e-6)
        assert expected != pytest.approx(in_pixels)  # the spacing matters for these samples
