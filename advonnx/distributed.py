"""Running work units on a Dask cluster (``--cluster local:N`` or ``tcp://HOST:PORT``).

The science is the same code path as a local run: workers call ``advonnx.work.execute_unit``
on plain-data work units, each worker process caching its models (a model is read once per
worker, not per task). A unit of a streamed dataset carries its block's sample references (file
paths, or the npz member and sample indices; ``Dataset.block``), never arrays: each worker reads
its own blocks from those paths, so on a real cluster the data must sit on a shared file system
(or be copied to the same path on every node).
Only the client writes results, each chunk once: a task retried after a worker died, or run
twice, never duplicates rows. Needs the ``dask`` extra (``pip install "advonnx[dask]"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import AdvonnxError
from .work import WorkUnit, execute_unit

RETRIES = 3


def _client(cluster: str) -> tuple[Any, Any]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise AdvonnxError('--cluster needs Dask: pip install "advonnx[dask]"') from None
    if cluster.startswith("local:"):
        try:
            n = int(cluster.split(":", 1)[1])
        except ValueError:
            raise AdvonnxError(f"--cluster {cluster!r}: write local:N with N workers, e.g. local:2") from None
        if n < 1:
            raise AdvonnxError("--cluster local:N needs N >= 1")
        # One onnxruntime thread per worker process (WorkUnit.threads = 1): N workers use N cores.
        lc = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40)
        return Client(lc), lc
    if cluster.startswith(("tcp://", "tls://", "ucx://")):
        try:
            return Client(cluster, timeout="30s"), None
        except (OSError, TimeoutError) as err:
            raise AdvonnxError(f"--cluster {cluster}: cannot reach the Dask scheduler ({err})") from None
    raise AdvonnxError(f"--cluster {cluster!r}: use local:N or tcp://HOST:PORT")


def run_distributed(
    cluster: str, units: list[WorkUnit], store: Any, on_done: Callable[[WorkUnit], None], log: Callable[[str], None]
) -> dict[str, int]:
    """Execute ``units`` on the cluster, writing each finished chunk; returns tasks per worker."""
    from dask.distributed import as_completed

    client, local = _client(cluster)
    per_worker: dict[str, int] = {}
    try:
        futures = {
            client.submit(_execute_with_worker, u, key=f"advonnx-{u.key}", retries=RETRIES, pure=False): u
            for u in units
        }
        for future in as_completed(futures):
            unit = futures[future]
            rows, examples, worker = future.result()
            per_worker[worker] = per_worker.get(worker, 0) + 1
            if not store.has_chunk(unit.key):
                store.write_chunk(unit.key, rows, examples)
            on_done(unit)
    finally:
        client.close()
        if local is not None:
            local.close()
    return per_worker


def _execute_with_worker(unit: WorkUnit) -> tuple[list[dict], dict | None, str]:
    from dask.distributed import get_worker

    rows, examples = execute_unit(unit)
    return rows, examples, get_worker().address
