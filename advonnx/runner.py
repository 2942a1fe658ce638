"""Running a suite into ``OUT/<run_id>/``: plan the work units (``plan.py``), write the run
metadata, execute the units in stages here or on Dask (``distributed.py``), each chunk once.

Work is cut into chunks (model × dataset × attack setting × block of ``chunk_size`` samples);
each chunk has its own seeded random stream, so results do not depend on batch size, chunk
order or resumption. ``--resume`` finishes the latest run in OUT with the same configuration.

Worst case (``worst_case = true``): on classification models the attacks run in the listed
order, in stages (stage k is planned once every chunk of stages < k is written, locally or on
Dask), and each unit of attack k lists the samples of its block that earlier attacks already
broke at its norm and eps (a minimal-norm result breaks at every eps at or above its norm; a
sample misclassified unattacked counts as broken). Those samples are not attacked again: their
rows have status "skipped" and error "broken by <attack>" (``worst_case.py``).
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, distributed
from .joint import JointInputModel
from .plan import pairs, plan_suite, unit_key
from .results import EXAMPLES_DIR, RUN_META, RunStore, find_run_folders, read_results, read_run_meta
from .rows import Row
from .suite import Suite, load_suite
from .work import WorkUnit, cached_dataset, cached_model, execute_unit


class Runner:
    """Runs a suite into ``OUT/<run_id>/``; ``progress`` is a rich Progress or None.

    ``cluster``: None (this process), ``local:N`` (a Dask LocalCluster of N single-threaded
    workers) or ``tcp://HOST:PORT`` (an existing Dask scheduler). Only this process writes the
    result folder, each chunk once, so retried or duplicated tasks never duplicate rows.
    """

    def __init__(
        self,
        suite: Suite,
        *,
        out: str | Path = "advonnx-results",
        resume: bool = False,
        device: str = "auto",
        batch_size: int = 64,
        progress: Any = None,
        log: Callable[[str], None] | None = None,
        cluster: str | None = None,
    ):
        self.suite = suite
        self.out = Path(out)
        self.resume = resume
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        self.log: Callable[[str], None] = log or (lambda msg: None)
        self.cluster = cluster
        self.transfer_notes: list[str] = []  # plan(): models or pairs the transfer matrix leaves out
        self.groups: dict[tuple[str, str], dict[str, str]] = {}  # plan(): (model, dataset) -> {sample: group}

    def _run_folder(self) -> tuple[Path, str]:
        chash = self.suite.config_hash()
        if self.resume:
            for folder in reversed(find_run_folders(self.out) if self.out.exists() else []):
                meta = read_run_meta(folder)
                if meta.get("config_hash") == chash:
                    return folder, meta["run_id"]
            self.log(f"nothing to resume in {self.out} for this suite and settings: starting a new run")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_id = f"{self.suite.name}-{stamp}-{chash[:6]}"
        return self.out / run_id, run_id

    def plan(self, run_id: str, models: dict[str, Any]) -> tuple[list[WorkUnit], list[tuple[str, Row]]]:
        """Every work unit of the suite, in a fixed order, plus the rows of skipped samples."""
        p = plan_suite(self.suite, run_id, models, device=self.device, batch_size=self.batch_size, cluster=self.cluster)
        self.groups, self.transfer_notes = p.groups, p.transfer_notes
        return p.units, p.skipped

    def run(self) -> tuple[Path, Any]:
        """Plan, write the metadata, execute every unit not yet written; returns the run folder and
        its rows (a pyarrow Table)."""
        folder, run_id = self._run_folder()
        # with a cluster this process only plans (specs, shapes, sample ids) and writes rows: it
        # loads the models on its CPU, and the workers load them on --device (a GPU-less laptop
        # can drive GPU workers)
        plan_device = "cpu" if self.cluster else self.device
        models: dict[str, Any] = {}
        for entry in self.suite.models:
            models[entry.name] = cached_model(entry, plan_device, self.batch_size)
        units, skipped = self.plan(run_id, models)
        specs = {n: _spec_summary(m) for n, m in models.items()}
        for line in value_range_warnings(specs):
            self.log(line)
        for line in self.transfer_notes:
            self.log(line)
        meta = self._meta(run_id, models, specs)
        fresh = not folder.exists()
        try:
            self._write(folder, meta, units, skipped, models)
        except BaseException:
            if fresh:
                _remove_empty_run(folder)
            raise
        table = read_results(folder)
        if self.suite.masking_checks:
            from .masking import write_masking

            write_masking(folder, table)
        return folder, table

    def _meta(self, run_id: str, models: dict[str, Any], specs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The run metadata (``_run.json`` and every Parquet file's): configuration, versions,
        host, execution providers, model specs, datasets, headline."""
        meta = {
            "run_id": run_id,
            "suite": self.suite.name,
            "suite_source": self.suite.source,
            "config": self.suite.config(),
            "config_hash": self.suite.config_hash(),
            "versions": _versions(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "execution_providers": (
                {n: f"cluster workers, --device {self.device}" for n in models}
                if self.cluster
                else {n: m.execution_provider for n, m in models.items()}
            ),
            "cuda_note": "" if self.cluster else next((m.cuda_note for m in models.values() if m.cuda_note), ""),
            "specs": specs,
            "datasets": _dataset_summary(self.suite, models),
            "headline": self.suite.headline,
            "seed": self.suite.seed,
            "cluster": self.cluster or "",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"transfer_notes": self.transfer_notes} if self.transfer_notes else {}),
        }
        if self.suite.costs:  # for the expected cost per sample (clinical.py); rows do not depend on it
            from .clinical import read_costs

            meta["costs"] = read_costs(self.suite.costs)
        return meta

    def _write(
        self, folder: Path, meta: dict, units: list[WorkUnit], skipped: list[tuple[str, Row]], models: dict[str, Any]
    ) -> None:
        with RunStore(folder, meta) as store:
            store.groups = self.groups
            for key, r in skipped:
                if not store.has_chunk(key):
                    store.write_chunk(key, [r])
            tasks = self._progress_tasks(units)
            done: list[WorkUnit] = []
            for stage in sorted({u.stage for u in units}):  # one stage unless worst_case
                staged = [u for u in units if u.stage == stage]
                if stage > 0:
                    staged = self._with_skips(staged, done, store, models)
                pending = []
                for u in staged:
                    if store.has_chunk(u.key):
                        self._advance(tasks, u)
                    else:
                        pending.append(u)
                if self.cluster and pending:
                    workers = distributed.run_distributed(
                        self.cluster, pending, store, lambda u: self._advance(tasks, u), self.log
                    )
                    for w, count in workers.items():
                        meta.setdefault("workers", {})[w] = meta.get("workers", {}).get(w, 0) + count
                else:
                    for u in pending:
                        rows, examples = execute_unit(u)
                        store.write_chunk(u.key, rows, examples)
                        self._advance(tasks, u)
                done.extend(staged)

    def _with_skips(
        self, units: list[WorkUnit], done: list[WorkUnit], store: RunStore, models: dict[str, Any]
    ) -> list[WorkUnit]:
        """Worst case: each unit of a later attack, told which of its samples the written rows of
        earlier attacks (same model, dataset, norm) already broke at its eps. The chunk key (and
        so the random stream) includes the skip list, which the earlier rows determine: a resumed
        run plans the same units."""
        import pyarrow.parquet as pq

        from .worst_case import first_breaks, skip_reason

        cols = [
            "model",
            "dataset",
            "sample_id",
            "attack",
            "kind",
            "task",
            "norm",
            "eps",
            "status",
            "clean_correct",
            "success",
            "min_norm",
            "targeted",
            "adv_correct",
            "linf",
            "l2",
            "l0",
        ]
        rows = [
            r
            for u in done
            if u.corruption is None
            for r in pq.read_table(store.chunk_path(u.key), columns=cols).to_pylist()
        ]
        breaks = first_breaks(rows)
        out = []
        for u in units:
            assert u.attack is not None  # stages > 0 hold attacks only
            model = models.get(u.model.name) or cached_model(u.model, u.device, u.batch_size, u.threads)
            ids = cached_dataset(u.dataset, model, u.model.name).sample_ids
            per = breaks.get((u.model.name, u.dataset.name, u.attack.norm), {})
            skip = tuple(
                (i, why) for i in range(u.start, u.stop) if (why := skip_reason(per.get(ids[i]), u.eps)) is not None
            )
            key = unit_key({"unit": u.key}, [list(p) for p in skip]) if skip else u.key
            out.append(dataclasses.replace(u, skip=skip, key=key))
        return out

    def _progress_tasks(self, units: list[WorkUnit]) -> dict[str, Any]:
        tasks: dict[str, Any] = {}
        if self.progress is None:
            return tasks
        for u in units:
            label = _unit_label(u)
            if label not in tasks:
                total = sum(v.stop - v.start for v in units if _unit_label(v) == label)
                tasks[label] = self.progress.add_task(label, total=total)
        return tasks

    def _advance(self, tasks: dict[str, Any], unit: WorkUnit) -> None:
        if self.progress is not None:
            self.progress.advance(tasks[_unit_label(unit)], unit.stop - unit.start)


def run_suite(suite: str | Path | Suite = "quick", **kwargs: Any) -> Any:
    """Run a built-in suite name, a TOML path or a :class:`Suite`; returns a pyarrow Table."""
    s = suite if isinstance(suite, Suite) else load_suite(suite)
    _, table = Runner(s, **kwargs).run()
    return table


def _unit_label(u: WorkUnit) -> str:
    if u.corruption is not None or u.attack is None:
        return f"{u.model.name} · {u.corruption} severity {u.eps_text}"
    check = " (masking check)" if u.check else ""
    return f"{u.model.name} · {u.attack.name} {u.attack.norm} {u.eps_text}{check}"


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import pyarrow

    return {
        "advonnx": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }


def _remove_empty_run(folder: Path) -> None:
    """Delete a run folder this process created when it failed before its first chunk (it holds
    only the lock, _run.json and temporaries), and its parent if that is left empty."""
    if not folder.is_dir() or any(folder.glob("part-*.parquet")):
        return
    if any(p.name not in (".lock", RUN_META, EXAMPLES_DIR) and not p.name.endswith(".tmp") for p in folder.iterdir()):
        return  # something not ours: leave it
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # only if empty (the --out folder this run made)
    except OSError:
        pass


def _dataset_summary(suite: Suite, models: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per dataset: the intensity rule asked for and the one applied, and where labels and class
    names came from (for _run.json and every Parquet file's metadata). A dataset read
    differently for another model (another layout or size) lists that model's reading too."""
    out: dict[str, dict[str, Any]] = {}
    for entry, dentry in pairs(suite, models):
        model = models[entry.name]
        d = cached_dataset(dentry, model, entry.name)
        rec = {
            "path": dentry.path,
            "intensity": dentry.intensity,
            "intensity_rule": d.description.get("intensity_resolved") or d.description.get("intensity_rule", ""),
            "label_source": d.description.get("label_source", ""),
            "class_names": list(model.spec.class_names or d.class_names or []),
            "class_names_source": (
                model.spec.source("class_names") if model.spec.class_names else "dataset" if d.class_names else "none"
            ),
            "format": d.description.get("format", ""),
            "samples": len(d),
            "groups": d.description.get("groups") or "none given: each sample its own group",
            "orientation": d.description.get("orientation", "as stored in each file"),
            "voxel_spacing": d.description.get("voxel_spacing", "as stored in each file"),
            # several model inputs: where each came from (attacked, or held fixed per sample)
            **(
                {"inputs": {k[len("input:") :]: v for k, v in d.description.items() if k.startswith("input:")}}
                if model.spec.extra_inputs
                else {}
            ),
        }
        if dentry.name not in out:
            out[dentry.name] = {**rec, "models": [entry.name]}
        elif {k: v for k, v in out[dentry.name].items() if k not in ("models", "per_model")} == rec:
            out[dentry.name]["models"].append(entry.name)
        else:
            out[dentry.name].setdefault("per_model", {})[entry.name] = rec
    return out


def value_range_warnings(specs: dict[str, dict[str, Any]]) -> list[str]:
    """One line per model whose input value range was assumed, not declared (``specs``: the
    run metadata's ``specs``)."""
    lines = []
    for name, s in specs.items():
        if s.get("value_range_source", "assumed") == "assumed":
            lo, hi = s.get("value_range", (0.0, 1.0))
            lines.append(
                f"warning: {name}: value range [{lo:g}, {hi:g}] assumed (not declared in the model, "
                "a sidecar or --value-range); eps is in these units, so check it"
            )
    return lines


def _spec_summary(model: Any) -> dict[str, Any]:
    s = model.spec
    return {
        "layout": s.layout,
        "task": s.task,
        "scores": s.scores,
        "output_kind": s.output_kind,
        "num_classes": s.num_classes,
        "class_names": list(s.class_names),
        "value_range": list(s.value_range),
        "value_range_source": s.sources.get("value_range", "assumed"),
        "framework": s.framework,
        "exporter": s.exporter,
        "training": s.training,
        "gradient": model.gradient_label(model.gradient_mode("auto")),
        "randomized": list(s.randomized),
        "votes": model.votes,
        "eot": model.eot,
        "attacked_output": s.attacked_output,
        "logits_rule": s.logits_rule,
        "input_type": s.input_integer or s.input_dtype,
        **(
            {"attacked_input": s.input_name, "held_inputs": [n for n, _, _ in s.extra_inputs]} if s.extra_inputs else {}
        ),
        # joint attacks: each input's budget per unit of eps (eps_i = weight * eps) and value range
        **(
            {
                "joint_inputs": {
                    n: {"eps_weight": w, "value_range": list(m.spec.value_range)}
                    for n, w, m in zip(model.names, model.weights, model.models)
                }
            }
            if isinstance(model, JointInputModel)
            else {}
        ),
    }
