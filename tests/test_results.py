"""Parquet rows: round trip, metadata, chunk atomicity, resume, determinism."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advonnx.errors import AdvonnxError
from advonnx.results import SCHEMA, RunStore, empty_row, read_results, rows_to_table, run_metadata
from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps
from models import save, small_cnn


def _row(i):
    r = empty_row()
    r.update(
        run_id="r",
        model="m",
        sample_id=f"s{i}",
        attack="pgd",
        norm="linf",
        eps=8 / 255,
        eps_text="8/255",
        targeted=False,
        label=i % 3,
        clean_pred=1,
        adv_pred=2,
        success=True,
        queries=10,
        l2=0.5,
        linf=0.03,
        psnr=math.inf,
        ssim=0.99,
        dice_per_class=[1.0, 0.5],
        status="ok",
        seed=0,
    )
    return r


def test_parquet_round_trip_keeps_every_column_and_metadata(tmp_path):
    meta = {"run_id": "r", "versions": {"onnx": "1"}, "headline": {"attack": "pgd"}}
    store = RunStore(tmp_path / "run", meta)
    rows = [_row(i) for i in range(5)]
    store.write_chunk("abc", rows, {"x": np.zeros((2, 3))})
    store.close()
    table = read_results(tmp_path / "run")
    assert table.schema.names == SCHEMA.names
    assert [dict(r) for r in table.to_pylist()] == rows
    assert run_metadata(table) == meta
    assert json.loads((tmp_path / "run" / "_run.json").read_text(encoding="utf-8")) == meta
    assert np.load(tmp_path / "run" / "_examples" / "part-abc.npz")["x"].shape == (2, 3)
    import pyarrow.dataset as ds

    assert ds.dataset(str(tmp_path / "run"), format="parquet").to_table().num_rows == 5
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(tmp_path / "run" / "part-abc.parquet")
    assert list(frame.columns) == SCHEMA.names and len(frame) == 5


def test_temporary_files_are_never_read(tmp_path):
    store = RunStore(tmp_path / "run", {"run_id": "r"})
    store.write_chunk("a", [_row(0)])
    (tmp_path / "run" / ".part-b.parquet.123.tmp").write_bytes(b"partial garbage")
    assert read_results(tmp_path / "run").num_rows == 1
    store.close()


def test_second_writer_is_refused(tmp_path):
    a = RunStore(tmp_path / "run", {"run_id": "r"})
    with pytest.raises(AdvonnxError, match="another advonnx run"):
        RunStore(tmp_path / "run", {"run_id": "r"})
    a.close()
    RunStore(tmp_path / "run", {"run_id": "r"}).close()


def test_rows_to_table_rejects_unknown_types():
    r = _row(0)
    r["queries"] = "many"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        rows_to_table([r])


def test_parse_eps():
    assert parse_eps("8/255,0.03") == [(8 / 255, "8/255"), (0.03, "0.03")]
    with pytest.raises(AdvonnxError):
        parse_eps("abc")


def _suite(tmp_path, chunk_size=4):
    model = save(small_cnn(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (10, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 3)
    return Suite(
        name="t",
        models=[ModelEntry("m", model)],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[
            AttackEntry("pgd", "linf", parse_eps("0.05"), {"steps": 2}),
            AttackEntry("fgsm", "l2", parse_eps("0.2,0.4")),
        ],
        chunk_size=chunk_size,
        save_examples=2,
        masking_checks=False,
    )


def _comparable(table):
    rows = table.drop(["time_s", "run_id"]).to_pylist()
    return sorted(rows, key=lambda r: (r["attack"], r["norm"], r["eps"], r["sample_id"]))


def test_runner_rows_and_determinism_across_batch_sizes(tmp_path):
    s = _suite(tmp_path)
    folder, t1 = Runner(s, out=tmp_path / "a", batch_size=3).run()
    assert t1.num_rows == 10 * 3
    assert set(t1.column("status").to_pylist()) == {"ok"}
    _, t2 = Runner(s, out=tmp_path / "b", batch_size=64).run()
    assert _comparable(t1) == _comparable(t2)
    assert list((folder / "_examples").glob("part-*.npz"))


def test_resume_recomputes_only_missing_chunks(tmp_path):
    s = _suite(tmp_path)
    folder, full = Runner(s, out=tmp_path / "out").run()
    parts = sorted(folder.glob("part-*.parquet"))
    assert len(parts) == 3 * 3  # 3 settings × 3 blocks of ≤ 4 samples
    for p in parts[::2]:
        p.unlink()
    folder2, resumed = Runner(s, out=tmp_path / "out", resume=True).run()
    assert folder2 == folder
    assert _comparable(resumed) == _comparable(full)
    assert len(resumed.column("sample_id")) == 30


def test_read_results_errors(tmp_path):
    with pytest.raises(AdvonnxError, match="no such"):
        read_results(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvonnxError, match="no advonnx results"):
        read_results(tmp_path / "empty")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(AdvonnxError, match="not a readable Parquet"):
        read_results(bad)


def test_chunk_is_valid_parquet_with_metadata(tmp_path):
    s = _suite(tmp_path)
    folder, _ = Runner(s, out=tmp_path / "o").run()
    f = next(folder.glob("part-*.parquet"))
    meta = json.loads(pq.read_schema(f).metadata[b"advonnx"])
    assert meta["seed"] == 0 and "onnxruntime" in meta["versions"] and meta["execution_providers"]["m"]


def test_corruption_rows(tmp_path):
    s = _suite(tmp_path)
    s.attacks = s.attacks[:1]
    s.corruptions, s.severities = ["gaussian_noise", "ghosting"], [1, 5]
    _, t = Runner(s, out=tmp_path / "c").run()
    rows = [r for r in t.to_pylist() if r["kind"] == "corruption"]
    assert len(rows) == 10 * 2 * 2
    assert {(r["attack"], r["eps"]) for r in rows} == {
        (n, float(v)) for n in ("gaussian_noise", "ghosting") for v in (1, 5)
    }
    assert all(r["norm"] == "none" and r["gradient"] == "none" and r["l2"] > 0 for r in rows)
    assert all(r["success"] == (r["adv_pred"] != r["label"]) for r in rows)
