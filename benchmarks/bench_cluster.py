"""Dask scaling check and a paper estimate of a suite's wall time on N workers.

1. Measured: the ``quick`` suite run by the CLI (a fresh process each, model loading and Dask
   start-up included) with no cluster (onnxruntime default threads, and ADVONNX_THREADS=1),
   ``--cluster local:1`` and ``--cluster local:2`` (one onnxruntime thread per worker). On a
   2-core machine ``local:2`` can at best halve ``local:1``; the ratio is the scaling check.
2. Estimated on paper: each chunk's cost is the sum of its rows' ``time_s`` (every row carries
   its chunk's elapsed time divided by the chunk's samples), read from the single-thread local
   run's Parquet files (one file per chunk = one Dask task). The wall time on N workers is
   the longest-processing-time-first schedule of those task costs plus a per-worker start-up
   (model loading, measured as the ``local:1`` wall time minus its summed task costs), bounded
   below by max(sum/N, longest task). The estimate is for ``--estimate-suite`` (default
   ``full``) when its TOML exists and every one of its tasks has a measured twin (same model,
   attack, norm, eps, settings); otherwise for the measured suite's own tasks, and it says so.

Writes benchmarks/results/cluster.json and prints a Markdown table.

    python benchmarks/bench_cluster.py [--suite quick] [--workers 1,2,4,8,16,32,64] [--costs-from RUN_DIR]
    python benchmarks/bench_cluster.py --configs "" --costs-from /tmp/full/<run_id>   # estimate only
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from _benchlib import RESULTS, ROOT, markdown_table, write_results

OUT = RESULTS / "cluster.json"


def run_cli(suite: str, out: Path, cluster: str | None, threads: str | None) -> dict:
    env = dict(os.environ)
    env.pop("ADVONNX_THREADS", None)
    if threads is not None:
        env["ADVONNX_THREADS"] = threads
    cmd = [sys.executable, "-c", "from advonnx.cli import main; main()", "run", suite, "--out", str(out)]
    if cluster:
        cmd += ["--cluster", cluster]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    return {
        "cluster": cluster or "none",
        "ADVONNX_THREADS": threads or "default",
        "wall_s": wall,
        "load_average_before": load,
        "load_average_after": os.getloadavg()[0],
        "folder": str(folders[-1]),
    }


def chunk_costs(folder: Path) -> dict[str, dict]:
    """One entry per chunk file: its summed ``time_s`` and the setting it belongs to."""
    costs = {}
    for f in sorted(Path(folder).glob("part-*.parquet")):
        t = pq.read_table(f, columns=["model", "attack", "norm", "eps", "time_s", "status"]).to_pylist()
        if not t or all(r["status"] == "skipped" for r in t):
            continue
        r0 = t[0]
        costs[f.name] = {
            "model": r0["model"],
            "attack": r0["attack"],
            "norm": r0["norm"],
            "eps": r0["eps"],
            "samples": len(t),
            "cost_s": float(sum(r["time_s"] or 0.0 for r in t)),
        }
    return costs


def lpt_makespan(costs: list[float], n: int, startup: float) -> float:
    """Longest-processing-time-first list schedule on ``n`` workers (Dask's greedy is close to it)."""
    loads = [startup] * n
    heapq.heapify(loads)
    for c in sorted(costs, reverse=True):
        heapq.heappush(loads, heapq.heappop(loads) + c)
    return max(loads)


def estimate(costs: list[float], workers: list[int], startup: float) -> list[dict]:
    total = sum(costs)
    rows = []
    for n in workers:
        rows.append(
            {
                "workers": n,
                "tasks": len(costs),
                "lpt_wall_s": lpt_makespan(costs, n, startup),
                "lower_bound_s": startup + max(total / n, max(costs)),
                "speedup_vs_1": lpt_makespan(costs, 1, startup) / lpt_makespan(costs, n, startup),
            }
        )
    return rows


def full_suite_costs(name: str, measured: dict[str, dict]) -> tuple[list[float] | None, str]:
    """Task costs of suite ``name`` from the measured chunks of the same setting, if all have one."""
    from advonnx.suite import BUILTIN_SUITES, load_suite

    path = Path(name)
    builtin = ROOT / "advonnx" / "suites" / f"{name}.toml"
    if not path.exists() and not (name in BUILTIN_SUITES and builtin.exists()):
        return (
            None,
            f"suite {name!r} not found (no {builtin.relative_to(ROOT)}): estimated from the measured suite's tasks instead",
        )
    from advonnx.suite import Runner, cached_model

    suite = load_suite(name)
    runner = Runner(suite, cluster="local:1")
    models = {e.name: cached_model(e, "cpu", 64) for e in suite.models}
    units, _ = runner.plan("estimate", models)
    per_sample: dict[tuple, float] = {}
    for c in measured.values():
        k = (c["model"], c["attack"], c["norm"], c["eps"])
        per_sample.setdefault(k, []).append(c["cost_s"] / c["samples"])
    costs, missing = [], set()
    for u in units:
        attack = u.corruption or (u.attack.name if u.attack else "none")
        norm = u.attack.norm if u.attack else None
        k = (u.model.name, attack, norm, u.eps_text)
        hits = [
            v
            for kk, v in per_sample.items()
            if kk[0] == k[0] and kk[1] == k[1] and kk[3] == k[3] and (norm is None or kk[2] == norm)
        ]
        if not hits:
            missing.add(k)
            continue
        costs.append(sum(hits[0]) / len(hits[0]) * (u.stop - u.start))
    if missing:
        return None, (
            f"suite {name!r}: {len(missing)} of its settings were not measured (e.g. {sorted(missing)[0]}); "
            "estimated from the measured suite's tasks instead"
        )
    return costs, f"suite {name!r}: {len(costs)} tasks costed from the measured per-sample times of the same settings"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--estimate-suite", default="full")
    ap.add_argument("--workers", default="1,2,4,8,16,32,64")
    ap.add_argument(
        "--configs",
        default="none:default,none:1,local:1,local:2",
        help="comma-separated CLUSTER:THREADS (CLUSTER none = no --cluster); empty: keep the runs "
        "already in cluster.json and only redo the estimate (needs --costs-from)",
    )
    ap.add_argument(
        "--costs-from",
        default=None,
        help="a run folder (part-*.parquet) of the estimated suite, e.g. from `advonnx run full`: "
        "its chunks are the tasks of the estimate",
    )
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    result = {
        "suite": args.suite,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "runs": [],
    }
    if not args.configs:
        if not args.costs_from:
            raise SystemExit("--configs '' needs --costs-from")
        result = json.loads(OUT.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        for i, cfg in enumerate(c for c in args.configs.split(",") if c):
            cl, _, th = cfg.rpartition(":")
            cl = None if cl == "none" else cl
            if cl and cl.startswith("local"):
                cl, th = cfg, None  # workers get one thread each from --cluster local:N
            r = run_cli(args.suite, Path(tmp) / f"r{i}", cl, None if th in (None, "default") else th)
            costs = chunk_costs(Path(r["folder"]))
            r["tasks"] = len(costs)
            r["sum_task_s"] = sum(c["cost_s"] for c in costs.values())
            r["_costs"] = costs
            print(
                f"{r['cluster']:9s} threads={r['ADVONNX_THREADS']:7s} wall {r['wall_s']:7.1f} s  "
                f"tasks {r['tasks']}  summed task time {r['sum_task_s']:7.1f} s  "
                f"load {r['load_average_before']:.2f}->{r['load_average_after']:.2f}",
                flush=True,
            )
            result["runs"].append(r)
    by = {(r["cluster"], r["ADVONNX_THREADS"]): r for r in result["runs"]}
    l1, l2 = by.get(("local:1", "default")), by.get(("local:2", "default"))
    if l1 and l2:
        result["local2_speedup_vs_local1"] = l1["wall_s"] / l2["wall_s"]
    # task costs: the single-threaded measurement (ADVONNX_THREADS=1 local run, else local:1)
    base = by.get(("none", "1")) or l1 or result["runs"][0]
    startup = max(0.0, l1["wall_s"] - l1["sum_task_s"]) if l1 else 0.0
    if args.costs_from:
        chunks = chunk_costs(Path(args.costs_from))
        costs = [c["cost_s"] for c in chunks.values()]
        note = (
            f"tasks = the {len(costs)} chunks of a measured run in {args.costs_from} "
            f"(models: {', '.join(sorted({c['model'] for c in chunks.values()}))})"
        )
        source = f"run folder {args.costs_from}"
    else:
        measured = base["_costs"]
        costs, note = full_suite_costs(args.estimate_suite, measured)
        if costs is None:
            costs = [c["cost_s"] for c in measured.values()]
        source = f"{base['cluster']} threads={base['ADVONNX_THREADS']}"
    result["estimate"] = {
        "note": note,
        "cost_source": source,
        "startup_s": startup,
        "total_task_s": sum(costs),
        "longest_task_s": max(costs),
        "rows": estimate(costs, workers, startup),
    }
    for r in result["runs"]:
        r.pop("_costs", None)
        r.pop("folder", None)
    write_results("cluster", result, indent=1)
    print(
        "\n"
        + markdown_table(
            ["run", "ADVONNX_THREADS", "wall s:", "tasks:", "summed task s:", "load avg"],
            [
                [
                    r["cluster"],
                    str(r["ADVONNX_THREADS"]),
                    f"{r['wall_s']:.1f}",
                    str(r["tasks"]),
                    f"{r['sum_task_s']:.1f}",
                    f"{r['load_average_before']:.2f}→{r['load_average_after']:.2f}",
                ]
                for r in result["runs"]
            ],
        )
    )
    if "local2_speedup_vs_local1" in result:
        print(f"\nlocal:2 vs local:1 speed-up: {result['local2_speedup_vs_local1']:.2f}x (ideal on 2 cores: 2.0x)")
    e = result["estimate"]
    print(f"\nEstimate ({e['note']}; costs from {e['cost_source']}; start-up {e['startup_s']:.1f} s per worker)\n")
    print(
        markdown_table(
            ["workers:", "tasks:", "LPT wall s:", "lower bound s:", "speed-up:"],
            [
                [
                    str(r["workers"]),
                    str(r["tasks"]),
                    f"{r['lpt_wall_s']:.1f}",
                    f"{r['lower_bound_s']:.1f}",
                    f"{r['speedup_vs_1']:.2f}",
                ]
                for r in e["rows"]
            ],
        )
    )


if __name__ == "__main__":
    main()
