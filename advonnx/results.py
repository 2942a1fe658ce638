"""Results: one Parquet row per (run, model, dataset, sample, attack setting).

A run writes into its own folder ``OUT/<run_id>/``: ``_run.json`` (config, versions, host),
``part-<key>.parquet`` chunks (one per model × dataset × attack setting × sample block) and,
for the first K samples of each model × attack setting, ``_examples/part-<key>.npz``. Names
starting with ``_`` or ``.`` are skipped by pyarrow/duckdb/pandas dataset readers, so the run
folder reads as one table: ``pyarrow.dataset.dataset(folder)``. Each
chunk is written to a temporary name, fsynced and atomically renamed, so a killed run loses at
most the chunk in flight and ``--resume`` recomputes only the missing ones. Temporary files are
never read as results. The run's metadata is also stored in every chunk's key-value metadata
(key ``advonnx``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import AdvonnxError

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("model_sha256", pa.string()),
        ("framework", pa.string()),
        ("task", pa.string()),
        ("dataset", pa.string()),
        ("sample_id", pa.string()),
        # patient / subject / volume / study the sample belongs to (npz 'group', manifest column
        # 'group', DICOM PatientID, one recording, else the file stem); intervals resample groups.
        # Absent in runs written before it: each sample is then its own group (``summary_stats``)
        ("group", pa.string()),
        ("sample_shape", pa.string()),  # the sample's array shape in the model's layout, e.g. "1x32x32"
        ("attack", pa.string()),
        ("kind", pa.string()),  # adversarial | corruption | clean | check (extra attacks of masking.py) | transfer
        ("norm", pa.string()),
        ("eps", pa.float64()),
        ("eps_text", pa.string()),
        ("targeted", pa.bool_()),
        ("steps", pa.int64()),
        ("restarts", pa.int64()),
        ("max_queries", pa.int64()),
        ("settings", pa.string()),  # JSON of every attack parameter
        ("gradient", pa.string()),  # exact | estimated | none
        # the model inputs attacked (or corrupted), comma-separated; a model's other inputs are held fixed
        ("attacked_inputs", pa.string()),
        # joint attacks (--attack-inputs): JSON {input: {"eps": .., "linf": .., "l2": ..}}, each input's
        # budget and perturbation in its value units (linf/l2/eps are the packed, budget-scaled vector's)
        ("input_norms", pa.string()),
        ("label", pa.int64()),
        ("target", pa.int64()),  # targeted attacks: the target class
        ("label_source", pa.string()),  # dataset | clean_prediction
        ("clean_pred", pa.int64()),
        ("adv_pred", pa.int64()),
        ("clean_confidence", pa.float64()),
        ("adv_confidence", pa.float64()),
        ("clean_correct", pa.bool_()),
        ("adv_correct", pa.bool_()),
        # success: the attack's own goal on x_adv (untargeted: adv_pred != label, so also True for
        # samples already wrong before the attack; targeted: adv_pred == target). Count robustness
        # with `robust` instead.
        ("success", pa.bool_()),
        # robust: clean_correct AND adv_correct (AutoAttack's count); False for invalid rows (NaN/Inf
        # outputs count as broken), null for skipped and errored rows and for segmentation.
        ("robust", pa.bool_()),
        ("queries", pa.int64()),
        ("l0", pa.float64()),
        ("l2", pa.float64()),
        ("linf", pa.float64()),
        ("min_norm", pa.float64()),
        # certify rows: the certified L2 radius (value units) of the smoothed prediction, 0 when it
        # abstains or is wrong (adv_pred = the smoothed prediction, -1 = abstain; eps = sigma)
        ("certified_radius", pa.float64()),
        ("rho", pa.float64()),  # minimal-norm attacks: ‖r‖₂/‖x‖₂ of min_norm's adversarial (DeepFool's ρ = mean)
        ("l0_pixels", pa.int64()),  # changed spatial positions, any channel (l0 counts elements)
        # cascades (autoattack): the stage that broke the sample (apgd-ce, apgd-t, ...), "clean" =
        # misclassified unattacked, "" = robust; null for other attacks
        ("broken_by", pa.string()),
        # transfer matrix (kind "transfer", ``advonnx run --transfer-matrix``): the source model's
        # adversarial example of this sample (row columns model, attack, norm, eps, settings: the
        # source's setting) fed to ``transfer_target``; clean_pred / adv_pred / clean_correct are the
        # target's; fooled_source = the source classified it correctly clean and wrongly under its own
        # attack; fooled_target = the target classifies the source's example wrongly (transfer_matrix.py)
        ("transfer_target", pa.string()),
        ("fooled_source", pa.bool_()),
        ("fooled_target", pa.bool_()),
        # uap rows: "fit" (the sample helped fit the universal perturbation) or "held_out" (the
        # leaderboard counts these only); null for other attacks
        ("uap_split", pa.string()),
        ("psnr", pa.float64()),
        ("ssim", pa.float64()),
        ("pixel_acc_clean", pa.float64()),
        ("pixel_acc_adv", pa.float64()),
        ("dice_clean", pa.float64()),
        ("dice_adv", pa.float64()),
        ("iou_clean", pa.float64()),
        ("iou_adv", pa.float64()),
        ("hd95_clean", pa.float64()),
        ("hd95_adv", pa.float64()),
        ("dice_per_class", pa.list_(pa.float64())),
        # multi-label models (independent sigmoids; null otherwise): the reference, clean and
        # adversarial 0/1 decision vectors (label, clean_pred, adv_pred stay null), the findings whose
        # decision the attack flipped (adv != clean), the findings decided differently from the
        # reference (Hamming distance) clean and adversarial, and a targeted attack's target vector
        # (-1 = free). clean_correct / adv_correct = exact match, robust = both (AutoAttack's count).
        ("label_vector", pa.list_(pa.int64())),
        ("clean_vector", pa.list_(pa.int64())),
        ("adv_vector", pa.list_(pa.int64())),
        ("flipped", pa.list_(pa.int64())),
        ("hamming_clean", pa.int64()),
        ("hamming_adv", pa.int64()),
        ("target_vector", pa.list_(pa.int64())),
        ("value_range_declared", pa.bool_()),
        # exact gradients: ops passed as the identity (straight-through / BPDA), e.g. "Round,Sign"
        ("straight_through", pa.string()),
        # the sample's input gradient was exactly 0 at the attack's first gradient step (null: no gradient)
        ("zero_gradient", pa.bool_()),
        # the attacked scores are probabilities (no final Softmax/Sigmoid to look through) and the clean
        # float32 scores saturate: p_y == 1 or max p == 1 exactly (null: logits attacked, or not classification)
        ("saturated", pa.bool_()),
        # ok | invalid | errored | skipped. Worst-case runs (``worst_case = true``): a sample that an
        # earlier attack of the suite already broke at this norm and eps (or the model misclassifies
        # unattacked) is not attacked again: status "skipped", error "broken by <attack>" (or
        # "misclassified unattacked"), clean columns filled, adversarial columns null.
        ("status", pa.string()),
        ("error", pa.string()),
        ("time_s", pa.float64()),
        ("seed", pa.int64()),
    ]
)
TIMING_COLUMNS = ("time_s",)
RUN_META = "_run.json"
EXAMPLES_DIR = "_examples"
STATUSES = ("ok", "invalid", "errored", "skipped")
META_KEY = b"advonnx"


def setting_key(r: dict[str, Any]) -> tuple[str, str, bool]:
    """What distinguishes one attack setting from another: the attack, its settings without the
    budget (``eps``, ``norm`` are columns of their own) and whether it was targeted."""
    try:
        params = json.loads(r.get("settings") or "{}")
    except (TypeError, ValueError):
        params = {"settings": r.get("settings")}
    rest = {k: v for k, v in params.items() if k not in ("eps", "norm")} if isinstance(params, dict) else params
    return (r["attack"], json.dumps(rest, sort_keys=True, default=str), bool(r.get("targeted")))


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def attack_labels(rows) -> dict[tuple[str, str, bool], str]:
    """A short readable label per setting (:func:`setting_key`) of ``rows``: the attack name, the
    settings in which settings of the attack at one norm and eps differ (``pgd(steps=10)`` vs
    ``pgd(steps=50)``; a step size derived from eps does not count), and ``targeted``."""
    groups: dict[tuple, set] = {}
    for r in rows:
        groups.setdefault((r["attack"], r.get("norm"), r.get("eps")), set()).add(setting_key(r))
    params = {k: json.loads(k[1]) if k[1].startswith("{") else {"settings": k[1]} for ks in groups.values() for k in ks}
    differ: dict[str, set] = {}
    for (attack, _, _), ks in groups.items():
        names = {n for k in ks for n in params[k]}
        differ.setdefault(attack, set()).update(
            n for n in names if len({json.dumps(params[k].get(n), sort_keys=True, default=str) for k in ks}) > 1
        )
    out = {}
    for k, p in params.items():
        inner = ", ".join(f"{n}={_short(p[n])}" for n in sorted(differ[k[0]]) if n in p)
        out[k] = k[0] + (f"({inner})" if inner else "") + (" targeted" if k[2] else "")
    return out


def empty_row() -> dict[str, Any]:
    return {name: None for name in SCHEMA.names}


def rows_to_table(rows: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in SCHEMA.names}
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    if metadata is not None:
        table = table.replace_schema_metadata({META_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()})
    return table


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, write) -> None:
    """Write via ``write(fileobj)`` to a temp file in the same folder, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class RunStore:
    """The folder of one run: locked while a process writes it."""

    def __init__(self, folder: str | os.PathLike, metadata: dict[str, Any]):
        self.folder = Path(folder)
        self.metadata = metadata
        #: {(model, dataset): {sample_id: group}}: fills rows' ``group`` as chunks are written
        self.groups: dict[tuple[str, str], dict[str, str]] = {}
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.folder / ".lock", "a+")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise AdvonnxError(
                f"{self.folder}: another advonnx run is writing this folder; wait for it or choose another --out"
            ) from None
        for stale in self.folder.glob(".part-*.tmp"):
            stale.unlink(missing_ok=True)
        atomic_write_bytes(
            self.folder / RUN_META,
            lambda f: f.write(json.dumps(metadata, indent=2, sort_keys=True, default=str).encode()),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def chunk_path(self, key: str) -> Path:
        return self.folder / f"part-{key}.parquet"

    def has_chunk(self, key: str) -> bool:
        return self.chunk_path(key).is_file()

    def write_chunk(self, key: str, rows: list[dict[str, Any]], examples: dict[str, np.ndarray] | None = None) -> Path:
        """Atomically write one chunk (and its examples first, so a chunk implies its examples)."""
        if examples:
            arrays: dict[str, Any] = examples  # savez's stubs type **kwds as its allow_pickle flag
            atomic_write_bytes(examples_path(self.folder, key), lambda f: np.savez_compressed(f, **arrays))
        for r in rows:
            if r.get("group") is None and r.get("sample_id") is not None:
                where = (str(r.get("model")), str(r.get("dataset")))
                r["group"] = self.groups.get(where, {}).get(r["sample_id"], r["sample_id"])
        table = rows_to_table(rows, self.metadata)
        path = self.chunk_path(key)
        atomic_write_bytes(path, lambda f: pq.write_table(table, f, compression="zstd"))
        return path


def examples_path(folder: str | os.PathLike, key: str) -> Path:
    """Where the saved adversarial examples of chunk ``key`` live."""
    return Path(folder) / EXAMPLES_DIR / f"part-{key}.npz"


def example_files(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(examples .npz, its chunk .parquet) pairs of a run folder, in a stable order."""
    folder = Path(folder)
    return [
        (f, folder / f.name.replace(".npz", ".parquet")) for f in sorted((folder / EXAMPLES_DIR).glob("part-*.npz"))
    ]


def read_run_meta(folder: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(folder) / RUN_META).read_text(encoding="utf-8"))


def find_run_folders(path: str | os.PathLike) -> list[Path]:
    """Run folders (holding _run.json) at or directly below ``path``, oldest first."""
    p = Path(path)
    if (p / RUN_META).is_file():
        return [p]
    runs = [d for d in p.iterdir() if d.is_dir() and (d / RUN_META).is_file()] if p.is_dir() else []
    return sorted(runs, key=lambda d: (d.stat().st_mtime, d.name))


def read_results(path: str | os.PathLike, *, all_runs: bool = False) -> pa.Table:
    """Rows of a Parquet file, a run folder, or the latest run in an output folder."""
    p = Path(path)
    if not p.exists():
        raise AdvonnxError(f"{p}: no such results file or folder")
    if p.is_file():
        try:
            return pq.read_table(p)
        except (pa.ArrowInvalid, OSError) as err:
            raise AdvonnxError(f"{p}: not a readable Parquet file ({err})") from None
    runs = find_run_folders(p)
    folders = runs if all_runs else runs[-1:]
    files = [f for d in folders for f in sorted(d.glob("part-*.parquet"))]
    if not files:
        files = sorted(p.glob("part-*.parquet"))
    if not files:
        raise AdvonnxError(f"{p}: no advonnx results (part-*.parquet) here; run `advonnx run --out {p}` first")
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowInvalid, OSError) as err:
            raise AdvonnxError(f"{f}: unreadable result chunk ({err}); delete it and run again with --resume") from None
    meta = tables[0].schema.metadata
    # runs written before a column was added (e.g. ``group``) read with it null
    return pa.concat_tables(
        [t.replace_schema_metadata(None) for t in tables], promote_options="default"
    ).replace_schema_metadata(meta)


def run_metadata(table: pa.Table) -> dict[str, Any]:
    meta = table.schema.metadata or {}
    raw = meta.get(META_KEY)
    return json.loads(raw) if raw else {}
