"""The same suite on a Dask LocalCluster: identical rows, resumable, robust to a dying worker."""

import dataclasses
import os
import signal
import threading
import time

import numpy as np
import pytest

from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps
from models import save, small_cnn

pytest.importorskip("dask.distributed")
KEY = ("model", "dataset", "sample_id", "kind", "attack", "norm", "eps")  # kind: the masking checks


def _suite(tmp_path, n=96):
    a = save(small_cnn(size=12, seed=0), tmp_path / "a.onnx")
    b = save(small_cnn(size=12, seed=1, nhwc=False), tmp_path / "b.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (n, 1, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(n) % 3)
    return Suite(
        name="dist",
        models=[ModelEntry("a", a), ModelEntry("b", b)],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[
            AttackEntry("pgd", "linf", parse_eps("0.02,0.05"), {"steps": 3}),
            AttackEntry("fgsm", "l2", parse_eps("0.3")),
        ],
        corruptions=["gaussian_noise"],
        severities=[2],
        chunk_size=16,
        seed=3,
    )


def _rows(table):
    rows = table.drop(["time_s", "run_id"]).to_pylist()
    keys = [tuple(r[k] for k in KEY) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in KEY))


def test_client_plans_on_cpu_and_workers_get_the_requested_device(tmp_path, monkeypatch):
    # a GPU-less client driving GPU workers: planning must not open CUDA here, the units carry it
    import advonnx.distributed as distributed

    seen = []

    def fake_run_distributed(cluster, units, store, on_done, log):
        seen.extend(units)
        for u in units:
            from advonnx.work import execute_unit

            rows, examples = execute_unit(dataclasses.replace(u, device="cpu"))
            store.write_chunk(u.key, rows, examples)
            on_done(u)
        return {"fake-worker": len(units)}

    monkeypatch.setattr(distributed, "run_distributed", fake_run_distributed)
    folder, table = Runner(
        _suite(tmp_path, n=16), out=tmp_path / "out", cluster="tcp://127.0.0.1:1", device="cuda"
    ).run()
    assert seen and {u.device for u in seen} == {"cuda"}
    assert table.num_rows > 0
    import json

    meta = json.loads((folder / "_run.json").read_text(encoding="utf-8"))
    assert set(meta["execution_providers"].values()) == {"cluster workers, --device cuda"}


@pytest.mark.slow
def test_local_cluster_rows_equal_local_run(tmp_path):
    s = _suite(tmp_path)
    _, local = Runner(s, out=tmp_path / "local").run()
    folder, dist = Runner(s, out=tmp_path / "dask", cluster="local:2").run()
    assert _rows(dist) == _rows(local)
    import json

    meta = json.loads((folder / "_run.json").read_text(encoding="utf-8"))
    assert meta["cluster"] == "local:2"
    import pyarrow.dataset as ds

    assert ds.dataset(str(folder), format="parquet").to_table().num_rows == local.num_rows


@pytest.mark.slow
def test_killed_worker_task_is_retried_without_duplicates(tmp_path):
    from dask.distributed import Client, LocalCluster

    s = _suite(tmp_path, n=160)
    _, local = Runner(s, out=tmp_path / "local").run()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40)
    client = Client(cluster)
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill_one():
        # Mid-run: once some chunks are written (workers loaded their models and ran tasks).
        deadline = time.time() + 120
        while time.time() < deadline and len(list((tmp_path / "dask").glob("*/part-*.parquet"))) < 3:
            time.sleep(0.02)
        os.kill(pids[0], signal.SIGKILL)
        killed.append(len(list((tmp_path / "dask").glob("*/part-*.parquet"))))

    threading.Thread(target=kill_one, daemon=True).start()
    try:
        _, dist = Runner(s, out=tmp_path / "dask", cluster=cluster.scheduler_address).run()
    finally:
        client.close()
        cluster.close()
    assert killed, "the worker was not killed"
    total = len(list((tmp_path / "dask").glob("*/part-*.parquet")))
    assert killed[0] < total, "the worker was killed only after the run had finished"
    assert _rows(dist) == _rows(local)
