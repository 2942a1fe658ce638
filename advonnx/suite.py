"""Suites: models × datasets × attack settings, declared in TOML, run into a result folder.

A suite file::

    name = "quick"
    seed = 0
    save_examples = 4
    [headline]                      # the setting the leaderboard sorts by
    attack = "pgd"; norm = "linf"; eps = "2/255"
    [[datasets]]
    name = "brain-tissue-patch"; path = "data/brain_patches_test.npz"   # relative to the TOML
    [[models]]
    name = "brain_cnn"; path = "models/brain_cnn.onnx"; dataset = "brain-tissue-patch"
    [[attacks]]
    name = "pgd"; norm = "linf"; eps = ["1/255", "2/255"]; steps = 10    # other keys: settings

A model is paired with the dataset it names (``dataset = ...``, or its ONNX metadata
``advonnx.dataset``), else with every dataset. Work is cut into chunks (model × dataset ×
attack setting × block of ``chunk_size`` samples); each chunk has its own seeded random
stream, so results do not depend on batch size, chunk order or resumption.

``worst_case = true`` (``advonnx run --worst-case``) orchestrates like AutoAttack: on
classification models the attacks run in the listed order, in stages (stage k is planned once
every chunk of stages < k is written, locally or on Dask), and each unit of attack k lists the
samples of its block that earlier attacks already broke at its norm and eps (a minimal-norm
result breaks at every eps at or above its norm; a sample misclassified unattacked counts as
broken). Those samples are not attacked again: their rows have status "skipped" and error
"broken by <attack>". The leaderboard adds the combined worst case (``worst_case.py``).

``target_map = "malignant:benign"`` (suite-wide, for every targeted attack without its own; or
per ``[[attacks]]`` entry with ``targeted = true``; ``--target-map``): targeted attacks in these
directions only (``target_map.py``); samples of other classes get "skipped" rows with error
"not attacked: ...". ``costs = "costs.csv"``: a cost matrix (``clinical.read_costs``) stored in
the run metadata for the expected cost per sample; rows do not depend on it.

``masking_checks = true`` (default; ``--no-masking-checks`` turns it off): on every classifier
that the suite attacks with a gradient attack, the runner adds the attacks the gradient-masking
checks need (``masking.check_attacks``) on the first ``masking.CHECK_SAMPLES`` samples, as rows
of kind "check" (stage 0, never skipped), and stores the verdicts in ``_masking.json``.

``transfer_matrix = true`` (``advonnx run --transfer-matrix``): each chunk of an untargeted
adversarial setting also feeds its adversarial examples to the other models of the dataset that
read the same inputs, rows of kind "transfer" in the same chunk (``transfer_matrix.py``).

A universal perturbation (``uap``) is one unit over the whole dataset whatever ``chunk_size``
(one δ per model × dataset × setting, never staged); rows carry ``uap_split`` (fit | held_out).
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from . import __version__
from .attacks import attack_class, make_attack
from .attacks.base import check_multilabel, dense_success, multilabel_success
from .errors import AdvonnxError, DataError
from .joint import JointInputModel, check_joint_attack
from .metrics import confidence, confusion_overlap, pixel_accuracy, psnr, ssim
from .model import ModelRunError, OnnxModel, load_model
from .results import RunStore, empty_row, find_run_folders, read_results, read_run_meta
from .seg_metrics import hd95, mean_hd95
from .spec import _fraction
from .target_map import NOT_ATTACKED, directions_for, split_target_map
from .xp import Random, to_numpy

BUILTIN_SUITES = ("quick", "full")


@dataclass
class ModelEntry:
    name: str
    path: str
    dataset: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetEntry:
    name: str
    path: str
    limit: int | None = None
    intensity: str = "auto"
    resize: str = "resample"
    orientation: str | None = None  # e.g. "RAS": volumes reoriented on reading; None: as stored
    spacing: str | None = None  # e.g. "1.0,1.0,1.0" (mm): images resampled to it on reading; None: as stored
    # None: the suite's corruptions / severities; [] (corruptions = []): none for this dataset
    corruptions: list[str] | None = None
    severities: list[int] | None = None


@dataclass
class AttackEntry:
    name: str
    norm: str = "linf"
    eps: list[tuple[float, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    targeted: bool = False
    datasets: list[str] = field(default_factory=list)  # run only on these datasets ([] = all)
    # targeted only: "SOURCE:TARGET,..." directions (target_map.py; multi-label "FINDING:absent");
    # "" = a random target per sample
    target_map: str = ""


@dataclass
class Suite:
    name: str
    models: list[ModelEntry]
    datasets: list[DatasetEntry]
    attacks: list[AttackEntry]
    description: str = ""
    seed: int = 0
    save_examples: int = 4
    chunk_size: int = 128
    gradient: str = "auto"
    headline: dict[str, Any] = field(default_factory=dict)
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=list)
    source: str = ""
    worst_case: bool = False  # AutoAttack style: later attacks run only on still-robust samples
    masking_checks: bool = True  # add the attacks the gradient-masking checks need (masking.py)
    costs: str = ""  # a K×K cost-matrix CSV (clinical.read_costs): stored in the run metadata, not in rows
    transfer_matrix: bool = False  # feed each model's adversarial examples to the others (transfer_matrix.py)

    def config(self) -> dict[str, Any]:
        """Everything that determines the rows (not where they are written)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
            "gradient": self.gradient,
            "models": [m.__dict__ for m in self.models],
            "datasets": [d.__dict__ for d in self.datasets],
            "attacks": [{**{k: v for k, v in a.__dict__.items() if k != "target_map" or v},
                         "eps": [t for _, t in a.eps]} for a in self.attacks],
            "headline": self.headline,
            "corruptions": self.corruptions,
            "severities": self.severities,
            **({"worst_case": True} if self.worst_case else {}),
            **({} if self.masking_checks else {"masking_checks": False}),
            **({"transfer_matrix": True} if self.transfer_matrix else {}),
        }

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def parse_eps(value: Any) -> list[tuple[float, str]]:
    """Budgets from ``8/255``, ``0.03``, ``"1/255,2/255"`` or a list of those."""
    if isinstance(value, (int, float)):
        items = [value]
    elif isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v]
    else:
        items = list(value)
    out = []
    for item in items:
        text = str(item)
        try:
            val = float(_fraction(text))
        except (ValueError, ZeroDivisionError):
            raise AdvonnxError(f"eps {text!r} is not a number; write e.g. 8/255 or 0.03") from None
        if not val >= 0:
            raise AdvonnxError(f"eps {text!r} must be >= 0")
        out.append((val, text))
    if not out:
        raise AdvonnxError("no eps given; write e.g. --eps 2/255,8/255")
    return out


def _suite_from_dict(raw: dict[str, Any], base: Path, source: str) -> Suite:
    def resolve(p: str) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base / path))

    try:
        datasets = [
            DatasetEntry(name=d.get("name") or Path(d["path"]).stem, path=resolve(d["path"]),
                         limit=d.get("limit"), intensity=d.get("intensity", "auto"),
                         resize=d.get("resize", "resample"), orientation=d.get("orientation"),
                         spacing=None if d.get("spacing") is None else ",".join(map(str, d["spacing"]))
                         if isinstance(d["spacing"], list) else str(d["spacing"]),
                         corruptions=parse_corruptions(d["corruptions"]) if "corruptions" in d else None,
                         severities=parse_severities(d["severities"]) if "severities" in d else None)
            for d in raw.get("datasets", [])
        ]
        models = []
        for m in raw.get("models", []):
            m = dict(m)
            path = resolve(m.pop("path"))
            name = m.pop("name", None) or Path(path).stem
            dataset = m.pop("dataset", "")
            models.append(ModelEntry(name=name, path=path, dataset=dataset, overrides=m))
        attacks = []
        for a in raw.get("attacks", []):
            a = dict(a)
            name = a.pop("name")
            norm = a.pop("norm", "linf")
            eps = parse_eps(a.pop("eps", "8/255"))
            targeted = bool(a.pop("targeted", False))
            only = a.pop("datasets", [])
            only = [only] if isinstance(only, str) else list(only)
            tmap = str(a.pop("target_map", "") or "")
            attacks.append(AttackEntry(name=name, norm=norm, eps=eps, settings=a, targeted=targeted,
                                       datasets=only, target_map=tmap))
    except KeyError as err:
        raise AdvonnxError(f"{source}: an entry lacks the key {err}; see `advonnx run --help` for the suite format") from None
    if not models:
        raise AdvonnxError(f"{source}: no [[models]] declared")
    if not datasets:
        raise AdvonnxError(f"{source}: no [[datasets]] declared")
    for a in attacks:  # validate every setting now, not an hour into the run
        unknown = set(a.datasets) - {d.name for d in datasets}
        if unknown:
            raise AdvonnxError(f"{source}: attack {a.name} names dataset(s) {', '.join(sorted(unknown))}, "
                               "which the suite does not declare")
        for eps, _ in a.eps:
            make_attack(a.name, norm=a.norm, eps=eps or 1e-12, **a.settings)
    known = set(raw) - {"name", "description", "seed", "save_examples", "chunk_size", "gradient",
                        "headline", "datasets", "models", "attacks", "corruptions", "severities", "worst_case",
                        "masking_checks", "target_map", "costs", "transfer_matrix"}
    if known:
        raise AdvonnxError(f"{source}: unknown suite key(s) {', '.join(sorted(known))}")
    if raw.get("target_map"):  # suite-wide: every targeted attack without its own map
        for a in attacks:
            if a.targeted and not a.target_map:
                a.target_map = str(raw["target_map"])
    for a in attacks:
        if a.target_map:
            from .target_map import split_target_map

            split_target_map(a.target_map)
            if not a.targeted:
                raise AdvonnxError(f"{source}: attack {a.name} has a target_map but is not targeted; add targeted = true")
    return Suite(
        costs=resolve(raw["costs"]) if raw.get("costs") else "",
        name=str(raw.get("name", Path(source).stem)), description=str(raw.get("description", "")),
        models=models, datasets=datasets, attacks=attacks, seed=int(raw.get("seed", 0)),
        save_examples=int(raw.get("save_examples", 4)), chunk_size=int(raw.get("chunk_size", 128)),
        gradient=str(raw.get("gradient", "auto")), headline=dict(raw.get("headline", {})), source=source,
        corruptions=parse_corruptions(raw.get("corruptions", [])),
        severities=parse_severities(raw.get("severities", "1-5")) if raw.get("corruptions") else [],
        worst_case=bool(raw.get("worst_case", False)), masking_checks=bool(raw.get("masking_checks", True)),
        transfer_matrix=bool(raw.get("transfer_matrix", False)),
    )


def parse_corruptions(value: Any) -> list[str]:
    """Corruption names from ``"all"``, ``"a,b"`` or a list; [] for none."""
    if not value:
        return []
    from .corruptions import corruption_names

    # "all" takes image and signal corruptions; each model gets those that fit its layout
    return corruption_names(value if isinstance(value, str) else ",".join(map(str, value)), modality=None)


def parse_severities(value: Any) -> list[int]:
    """Severities from ``"1-5"``, ``"1,3,5"``, ``3`` or a list; each in 1..5."""
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            try:
                items.extend(range(int(lo), int(hi or lo) + 1))
            except ValueError:
                raise AdvonnxError(f"severities {value!r}: write e.g. 1-5 or 1,3,5") from None
    else:
        items = [int(v) for v in value]
    if not items or any(not 1 <= v <= 5 for v in items):
        raise AdvonnxError(f"severities {value!r} must lie in 1..5, e.g. 1-5 or 1,3,5")
    return sorted(set(items))


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name (``quick``, ``full``) or a suite TOML file."""
    text_name = str(name_or_path)
    if text_name in BUILTIN_SUITES:
        root = resources.files("advonnx") / "suites"
        path = Path(str(root / f"{text_name}.toml"))
    else:
        path = Path(text_name)
    if not path.is_file():
        raise AdvonnxError(f"{path}: no such suite file; give a TOML path or one of {', '.join(BUILTIN_SUITES)}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise AdvonnxError(f"{path}: not valid TOML ({err})") from None
    return _suite_from_dict(raw, path.parent, str(path))


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import pyarrow

    return {"advonnx": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "pyarrow": pyarrow.__version__, "python": platform.python_version()}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pairs(suite: Suite, models: dict[str, OnnxModel]) -> list[tuple[ModelEntry, DatasetEntry]]:
    by_name = {d.name: d for d in suite.datasets}
    pairs = []
    for entry in suite.models:
        wanted = entry.dataset or models[entry.name].spec.dataset
        if wanted and wanted in by_name:
            pairs.append((entry, by_name[wanted]))
        elif entry.dataset:
            raise AdvonnxError(f"model {entry.name} names dataset {entry.dataset!r}, which the suite does not declare")
        else:
            pairs.extend((entry, d) for d in suite.datasets)
    return pairs


def _expectation(model: OnnxModel):
    from .data import InputExpectation

    s = model.spec
    return InputExpectation(layout=s.layout, spatial_shape=s.spatial_shape, channels=s.channels,
                            value_range=s.value_range, task=s.task, dtype=s.input_dtype,
                            findings=s.num_classes if s.output_kind == "multilabel" else 0)


@dataclass(frozen=True)
class WorkUnit:
    """One chunk of work: a model × dataset × setting × block of samples. Plain data, so it can
    be shipped to a Dask worker; ``execute_unit`` computes its rows anywhere."""

    key: str
    model: ModelEntry
    dataset: DatasetEntry
    attack: AttackEntry | None
    corruption: str | None
    eps: float
    eps_text: str
    start: int
    stop: int
    save_examples: int
    seed: int
    gradient: str
    base: dict
    device: str
    batch_size: int
    threads: int | None = None
    # worst-case runs: the stage (index of the attack among the suite's attacks on this dataset;
    # planned once every earlier stage's chunks are written) and the samples (dataset indices)
    # that earlier attacks already broke at this norm and eps, with the reason, not attacked here
    stage: int = 0
    skip: tuple[tuple[int, str], ...] = ()
    # an extra attack of the gradient-masking checks (masking.py): rows of kind "check"
    check: bool = False
    # cluster runs of a streamed dataset: the block's samples as references (Dataset.block), read
    # by the worker itself; None: the worker loads the dataset from its path
    data: Any = field(default=None, compare=False, repr=False)
    # transfer matrix: the models (ModelEntry) this unit's adversarial examples are fed to, rows of
    # kind "transfer" in this chunk (transfer_matrix.py)
    transfer_to: tuple = ()


# Per-process caches: a worker loads each model and dataset once and reuses them across tasks.
_MODEL_CACHE: dict[tuple, OnnxModel] = {}
_DATA_CACHE: dict[tuple, Any] = {}


def _model_key(entry: ModelEntry, device: str, batch_size: int, threads: int | None) -> tuple:
    return (entry.path, json.dumps(entry.overrides, sort_keys=True, default=str), device, batch_size, threads)


def cached_model(entry: ModelEntry, device: str, batch_size: int, threads: int | None = None) -> OnnxModel:
    key = _model_key(entry, device, batch_size, threads)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(entry.path, device=device, batch_size=batch_size, threads=threads,
                                       **entry.overrides)
    return _MODEL_CACHE[key]


def cached_dataset(dentry: DatasetEntry, model: OnnxModel, model_name: str = ""):
    from .data import load_dataset
    from .joint import joint_dataset

    joint = isinstance(model, JointInputModel)  # loaded for its first input, then packed
    loader = model.models[0] if joint else model
    spec = loader.spec
    key = (dentry.path, dentry.limit, dentry.intensity, dentry.resize, dentry.orientation, dentry.spacing,
           repr(_expectation(loader)), spec.class_names, spec.input_name, spec.extra_inputs)
    if key not in _DATA_CACHE:
        try:
            data = load_dataset(dentry.path, _expectation(loader), intensity=dentry.intensity,
                                resize=dentry.resize, limit=dentry.limit, orientation=dentry.orientation,
                                spacing=dentry.spacing, stream=True,
                                class_names=list(spec.class_names) if spec.class_names else None)
            if spec.extra_inputs:  # the model's other inputs, per sample, held fixed
                from .data.extras import load_extra_inputs

                data = load_extra_inputs(dentry.path, data, spec.extra_inputs, spec.input_name)
        except DataError as err:
            raise DataError(f"dataset {dentry.name} for model {model_name or Path(spec.path).stem}: {err}") from None
        if data.y is not None and spec.task == "classification":
            bad = (data.y < 0) | (data.y >= spec.num_classes)
            if np.any(bad):
                raise DataError(
                    f"{dentry.path}: label {int(data.y[bad][0])} is outside model {model_name}'s "
                    f"{spec.num_classes} classes; fix the labels or the class names"
                )
        _DATA_CACHE[key] = data
    if joint:  # packed for this model's inputs and budgets (packing also tells the model the shapes)
        packed = (*key, "joint", tuple(model.names), tuple(model.weights))
        if packed not in _DATA_CACHE or model.shapes is None:
            _DATA_CACHE[packed] = joint_dataset(model, _DATA_CACHE[key])
        return _DATA_CACHE[packed]
    return _DATA_CACHE[key]


def execute_unit(unit: WorkUnit) -> tuple[list[dict], dict | None]:
    """Rows (and saved examples) of one work unit; runs in this process or on a Dask worker."""
    model = cached_model(unit.model, unit.device, unit.batch_size, unit.threads)
    if unit.data is not None:  # the block's sample references, shipped with the unit
        import dataclasses

        data = unit.data
        unit = dataclasses.replace(unit, start=0, stop=len(data), data=None,
                                   skip=tuple((i - unit.start, why) for i, why in unit.skip))
    else:
        data = cached_dataset(unit.dataset, model, unit.model.name)
    attack = None
    if unit.attack is not None and unit.eps > 0:
        attack = make_attack(unit.attack.name, norm=unit.attack.norm, eps=unit.eps, **unit.attack.settings)
    return _compute_block(unit, model, data, attack)


class Runner:
    """Runs a suite into ``OUT/<run_id>/``; ``progress`` is a rich Progress or None.

    ``cluster``: None (this process), ``local:N`` (a Dask LocalCluster of N single-threaded
    workers) or ``tcp://HOST:PORT`` (an existing Dask scheduler). Only this process writes the
    result folder, each chunk once, so retried or duplicated tasks never duplicate rows.
    """

    def __init__(self, suite: Suite, *, out: str | Path = "advonnx-results", resume: bool = False,
                 device: str = "auto", batch_size: int = 64, progress=None, log=None,
                 cluster: str | None = None):
        self.suite = suite
        self.out = Path(out)
        self.resume = resume
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.cluster = cluster
        self.transfer_notes: list[str] = []  # plan(): models or pairs the transfer matrix leaves out

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

    def plan(self, run_id: str, models: dict[str, OnnxModel]) -> tuple[list[WorkUnit], list[tuple[str, dict]]]:
        """Every work unit of the suite, in a fixed order, plus the rows of skipped samples."""
        units: list[WorkUnit] = []
        skipped: list[tuple[str, dict]] = []
        self.groups: dict[tuple[str, str], dict[str, str]] = {}
        threads = 1 if self.cluster else None
        map_entries: dict[str, bool] = {}  # target-map entry -> some model of the suite has both its classes
        known_classes: set[str] = set()
        peers: dict[tuple[str, str], list] = {}
        if self.suite.transfer_matrix:
            from .transfer_matrix import transfer_peers

            peers, self.transfer_notes = transfer_peers(_pairs(self.suite, models), models,
                                                        lambda e, d: cached_dataset(d, models[e.name], e.name))
        for entry, dentry in _pairs(self.suite, models):
            model = models[entry.name]
            spec = model.spec
            data = cached_dataset(dentry, model, entry.name)
            self.groups[(entry.name, dentry.name)] = dict(zip(data.sample_ids, data.groups or data.sample_ids))
            joint = isinstance(model, JointInputModel)
            base = {
                "run_id": run_id, "model": entry.name, "model_sha256": _sha256(entry.path),
                "framework": spec.framework, "task": spec.task, "dataset": dentry.name, "seed": self.suite.seed,
                "value_range_declared": spec.value_range_declared,
                "label_source": "dataset" if data.y is not None else "clean_prediction",
            }
            settings: list[tuple[AttackEntry | None, str | None, float, str, dict]] = []
            for a in self.suite.attacks:
                if a.datasets and dentry.name not in a.datasets:
                    continue
                if a.target_map and a.targeted and spec.output_kind != "multilabel":
                    names = _class_names(model, data)
                    known_classes.update(names)
                    fit, rest = directions_for(a.target_map, names, spec.num_classes)
                    for e in (f"{src}:{dst}" for src, dst in split_target_map(a.target_map)):
                        map_entries[e] = map_entries.get(e, False) or e not in rest
                    if not fit:
                        model.notes_once(f"{a.name} targeted: no direction of the target map {a.target_map!r} names "
                                         f"{entry.name}'s classes; that setting is not run on it")
                        continue
                for eps, eps_text in a.eps:
                    attack = make_attack(a.name, norm=a.norm, eps=eps, **a.settings) if eps > 0 else None
                    if spec.output_kind == "multilabel":
                        check_multilabel(attack_class(a.name))
                    if joint:
                        check_joint_attack(a.name)
                    if a.target_map and spec.output_kind == "multilabel":  # a typo fails now, naming the findings
                        from .target_map import parse_target_map

                        parse_target_map(a.target_map, list(spec.class_names) or None, spec.num_classes, multilabel=True)
                    settings.append((a, None, eps, eps_text, {
                        "attack": a.name, "norm": a.norm, "eps": eps_text,
                        "settings": repr(attack) if attack else "identity", "targeted": a.targeted,
                        **({"target_map": a.target_map} if a.target_map and a.targeted else {})}))
            corruptions = self.suite.corruptions if dentry.corruptions is None else dentry.corruptions
            if joint and corruptions:
                raise AdvonnxError(f"{entry.name}: corruptions change one input; drop --corruptions for a joint attack "
                                   "(--attack-inputs), or corrupt one input with --input")
            severities = dentry.severities or self.suite.severities or [1, 2, 3, 4, 5]
            from .corruptions import CORRUPTIONS

            unfit = [c for c in corruptions if not CORRUPTIONS[c].fits(spec.layout)]
            if unfit:
                model.notes_once(f"corruptions that do not apply to {spec.layout} inputs left out: {', '.join(unfit)}")
            rate_known = bool(spec.sampling_rate) or (data.spacing is not None and all(data.spacing))
            timed = [c for c in corruptions if CORRUPTIONS[c].needs_sampling_rate and c not in unfit]
            if timed and not rate_known:
                raise AdvonnxError(
                    f"{entry.name}: {', '.join(timed)} {'needs' if len(timed) == 1 else 'need'} the signal's sampling rate: pass --sampling-rate HZ "
                    f"(or store 'sampling_rate' in the npz, or declare it in the model's sidecar)"
                )
            for name in (c for c in corruptions if c not in unfit):
                for severity in severities:
                    settings.append((None, name, float(severity), str(severity),
                                     {"corruption": name, "severity": str(severity)}))
            ship = bool(self.cluster) and hasattr(data.x, "detach")  # workers read their own blocks
            staged = self.suite.worst_case and spec.task == "classification"
            order = [a for a in self.suite.attacks if not a.datasets or dentry.name in a.datasets]
            for a, corruption, eps, eps_text, setting in settings:
                # a universal perturbation is fitted on the whole dataset: one unit, never staged
                universal = a is not None and attack_class(a.name).name == "uap"
                stage = (next(i for i, b in enumerate(order) if b is a)
                         if staged and a is not None and a.name != "certify" and not universal else 0)  # certificates: every sample
                to = tuple(peers.get((entry.name, dentry.name), ())) if (
                    a is not None and eps > 0 and not a.targeted and a.name != "certify") else ()
                # one size per block (streamed data grouped by size); a universal perturbation: one block
                blocks = [(0, len(data))] if universal else data.blocks(self.suite.chunk_size)
                for block, (start, stop) in enumerate(blocks):
                    units.append(WorkUnit(
                        key=_key(base, setting, start, stop), model=entry, dataset=dentry, attack=a,
                        corruption=corruption, eps=eps, eps_text=eps_text, start=start, stop=stop,
                        save_examples=self.suite.save_examples if block == 0 else 0, seed=self.suite.seed,
                        gradient=self.suite.gradient, base=base, device=self.device,
                        batch_size=self.batch_size, threads=threads, stage=stage, transfer_to=to,
                        data=data.block(start, stop) if ship else None,
                    ))
            if self.suite.masking_checks and spec.task == "classification" and not joint:  # checks: one input
                units += self._check_units(entry, dentry, model, base, data, threads)
            for sid, reason in data.skipped:
                row = {**empty_row(), **base, "sample_id": sid, "attack": "none", "kind": "skipped",
                       "status": "skipped", "error": reason}
                skipped.append((_key(base, "skipped", sid), row))
        for e, used in map_entries.items():
            if not used:
                raise AdvonnxError(f"target map entry {e!r}: no model of the suite has both classes; known classes: "
                                   f"{', '.join(sorted(known_classes)) or 'none (use indices)'}")
        return units, skipped

    def _check_units(self, entry: ModelEntry, dentry: DatasetEntry, model: OnnxModel, base: dict, data,
                     threads: int | None) -> list[WorkUnit]:
        """The extra attacks of the gradient-masking checks on one model × dataset (``masking.
        check_attacks``), on its first ``CHECK_SAMPLES`` samples; never staged or skipped."""
        from .attacks.registry import attack_class
        from .leaderboard import headline_for
        from .masking import CHECK_SAMPLES, check_attacks

        have = [{"name": attack_class(a.name).name, "norm": a.norm, "eps": [e for e, _ in a.eps],
                 "settings": a.settings, "needs": attack_class(a.name).needs}
                for a in self.suite.attacks if not a.targeted and (not a.datasets or dentry.name in a.datasets)]
        h = headline_for(self.suite.headline, dentry.name)
        try:
            head_eps = float(_fraction(str(h["eps"]))) if h.get("norm") == "linf" and h.get("eps") else None
        except (ValueError, ZeroDivisionError):
            head_eps = None
        units = []
        stop_all = min(len(data), CHECK_SAMPLES)
        texts = {e: t for a in self.suite.attacks for e, t in a.eps}  # the suite's spelling of an eps
        for c in check_attacks(have, value_range=model.spec.value_range, headline_eps=head_eps):
            c["eps_text"] = texts.get(c["eps"], c["eps_text"])
            a = AttackEntry(name=c["name"], norm=c["norm"], eps=[(c["eps"], c["eps_text"])], settings=c["settings"])
            attack = make_attack(a.name, norm=a.norm, eps=c["eps"], **a.settings)
            setting = {"attack": a.name, "norm": a.norm, "eps": c["eps_text"], "settings": repr(attack),
                       "targeted": False, "check": "masking"}
            for start, stop in data.blocks(self.suite.chunk_size, stop_all):
                units.append(WorkUnit(
                    key=_key(base, setting, start, stop), model=entry, dataset=dentry, attack=a, corruption=None,
                    eps=c["eps"], eps_text=c["eps_text"], start=start, stop=stop, save_examples=0,
                    seed=self.suite.seed, gradient=self.suite.gradient, base=base, device=self.device,
                    batch_size=self.batch_size, threads=threads, check=True,
                    data=data.block(start, stop) if self.cluster and hasattr(data.x, "detach") else None))
        return units

    def run(self):
        folder, run_id = self._run_folder()
        # with a cluster this process only plans (specs, shapes, sample ids) and writes rows: it
        # loads the models on its CPU, and the workers load them on --device (a GPU-less laptop
        # can drive GPU workers)
        plan_device = "cpu" if self.cluster else self.device
        models: dict[str, OnnxModel] = {}
        for entry in self.suite.models:
            models[entry.name] = cached_model(entry, plan_device, self.batch_size)
        units, skipped = self.plan(run_id, models)
        specs = {n: _spec_summary(m) for n, m in models.items()}
        for line in value_range_warnings(specs):
            self.log(line)
        for line in self.transfer_notes:
            self.log(line)
        meta = {
            "run_id": run_id, "suite": self.suite.name, "suite_source": self.suite.source,
            "config": self.suite.config(), "config_hash": self.suite.config_hash(),
            "versions": _versions(), "host": socket.gethostname(), "platform": platform.platform(),
            "execution_providers": ({n: f"cluster workers, --device {self.device}" for n in models} if self.cluster
                                    else {n: m.execution_provider for n, m in models.items()}),
            "cuda_note": "" if self.cluster else next((m.cuda_note for m in models.values() if m.cuda_note), ""),
            "specs": specs, "datasets": _dataset_summary(self.suite, models),
            "headline": self.suite.headline, "seed": self.suite.seed, "cluster": self.cluster or "",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({"transfer_notes": self.transfer_notes} if self.transfer_notes else {}),
        }
        if self.suite.costs:  # for the expected cost per sample (clinical.py); rows do not depend on it
            from .clinical import read_costs

            meta["costs"] = read_costs(self.suite.costs)
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

    def _write(self, folder: Path, meta: dict, units: list[WorkUnit], skipped, models) -> None:
        with RunStore(folder, meta) as store:
            store.groups = getattr(self, "groups", {})
            for key, row in skipped:
                if not store.has_chunk(key):
                    store.write_chunk(key, [row])
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
                    from .distributed import run_distributed

                    workers = run_distributed(self.cluster, pending, store, lambda u: self._advance(tasks, u),
                                              self.log)
                    for w, count in workers.items():
                        meta.setdefault("workers", {})[w] = meta.get("workers", {}).get(w, 0) + count
                else:
                    for u in pending:
                        rows, examples = execute_unit(u)
                        store.write_chunk(u.key, rows, examples)
                        self._advance(tasks, u)
                done.extend(staged)

    def _with_skips(self, units: list[WorkUnit], done: list[WorkUnit], store, models) -> list[WorkUnit]:
        """Worst case: each unit of a later attack, told which of its samples the written rows of
        earlier attacks (same model, dataset, norm) already broke at its eps. The chunk key (and
        so the random stream) includes the skip list, which the earlier rows determine: a resumed
        run plans the same units."""
        import dataclasses

        import pyarrow.parquet as pq

        from .worst_case import first_breaks, skip_reason

        cols = ["model", "dataset", "sample_id", "attack", "kind", "task", "norm", "eps", "status",
                "clean_correct", "success", "min_norm", "targeted", "adv_correct", "linf", "l2", "l0"]
        rows = [r for u in done if u.corruption is None
                for r in pq.read_table(store.chunk_path(u.key), columns=cols).to_pylist()]
        breaks = first_breaks(rows)
        out = []
        for u in units:
            model = models.get(u.model.name) or cached_model(u.model, u.device, u.batch_size, u.threads)
            ids = cached_dataset(u.dataset, model, u.model.name).sample_ids
            per = breaks.get((u.model.name, u.dataset.name, u.attack.norm), {})
            skip = tuple((i, why) for i in range(u.start, u.stop)
                         if (why := skip_reason(per.get(ids[i]), u.eps)) is not None)
            key = _key({"unit": u.key}, [list(p) for p in skip]) if skip else u.key
            out.append(dataclasses.replace(u, skip=skip, key=key))
        return out

    def _progress_tasks(self, units: list[WorkUnit]) -> dict:
        tasks: dict[tuple, Any] = {}
        if self.progress is None:
            return tasks
        for u in units:
            label = _unit_label(u)
            if label not in tasks:
                total = sum(v.stop - v.start for v in units if _unit_label(v) == label)
                tasks[label] = self.progress.add_task(label, total=total)
        return tasks

    def _advance(self, tasks: dict, unit: WorkUnit) -> None:
        if self.progress is not None:
            self.progress.advance(tasks[_unit_label(unit)], unit.stop - unit.start)


def _certificate_rows(unit: WorkUnit, model: OnnxModel, data, attack) -> tuple[list[dict], None]:
    """Rows of a ``certify`` setting: per sample the smoothed classifier's prediction (clean_pred and
    adv_pred; -1 abstains) and its certified L2 radius; robust = certified correct (smoothed
    prediction right, not abstained), the certified accuracy as the radius goes to 0."""
    x = data.x[unit.start:unit.stop]
    ids = data.sample_ids[unit.start:unit.stop]
    shape = _shape_text(x)
    rng = Random(unit.seed).spawn(unit.key)
    t0 = time.perf_counter()
    try:
        if model.spec.extra_inputs:
            raise ModelRunError(f"certify does not support models with several inputs (this one also takes "
                                f"{', '.join(n for n, _, _ in model.spec.extra_inputs)}); use attacks")
        if model.spec.task == "segmentation":
            return _dense_certificate_rows(unit, model, data, attack, x, ids, shape, rng, t0), None
        cert = attack.certify(model, x, rng)
    except ModelRunError as err:
        common = {**unit.base, "sample_shape": shape, "attack": "certify", "kind": "certificate", "norm": "l2", "eps": unit.eps,
                  "eps_text": unit.eps_text, "status": "errored", "error": str(err)}
        return [{**empty_row(), **common, "sample_id": sid} for sid in ids], None
    elapsed = time.perf_counter() - t0
    labels = to_numpy(model.classify(x)) if data.y is None else np.asarray(data.y[unit.start:unit.stop])
    settings = json.dumps(_recorded(attack.params(), model), sort_keys=True, default=str)
    rows = []
    for i, sid in enumerate(ids):
        correct = bool(cert.prediction[i] == labels[i])
        rows.append({
            **empty_row(), **unit.base, "sample_id": sid, "sample_shape": shape, "attack": "certify",
            "kind": "certificate", "norm": "l2",
            "eps": unit.eps, "eps_text": unit.eps_text, "targeted": False, "steps": 0, "restarts": 0,
            # the certified classifier is the smoothed one: its prediction at x is both columns
            "settings": settings, "gradient": "none", "label": int(labels[i]), "clean_pred": int(cert.prediction[i]),
            "adv_pred": int(cert.prediction[i]), "clean_correct": correct,
            "adv_correct": correct, "robust": correct, "success": not correct,
            "queries": int(cert.queries[i]), "certified_radius": float(cert.radius[i]) if correct else 0.0,
            "status": "ok", "time_s": elapsed / len(ids),
        })
    return rows, None


def _dense_certificate_rows(unit: WorkUnit, model: OnnxModel, data, attack, x, ids, shape, rng, t0) -> list[dict]:
    """Rows of a ``certify`` setting on a segmentation model (SEGCERTIFY): per sample the certified
    pixel accuracy and Dice of the smoothed map against the reference (abstained pixels count as
    wrong) in the ``*_adv`` and ``*_clean`` columns, and the radius σ·Φ⁻¹(τ) every certified pixel
    holds within."""
    spec = model.spec
    cert = attack.certify_dense(model, x, rng)
    elapsed = time.perf_counter() - t0
    ref = to_numpy(model.classify(x)) if data.y is None else np.asarray(data.y[unit.start:unit.stop])
    dice, iou = confusion_overlap(cert.prediction, ref, spec.num_classes)
    acc = pixel_accuracy(cert.prediction, ref)  # ABSTAIN (-1) matches no class: a wrong pixel
    settings = json.dumps(_recorded(attack.params(), model), sort_keys=True, default=str)
    return [{
        **empty_row(), **unit.base, "sample_id": sid, "sample_shape": shape, "attack": "certify",
        "kind": "certificate", "norm": "l2", "eps": unit.eps, "eps_text": unit.eps_text, "targeted": False,
        "steps": 0, "restarts": 0, "settings": settings, "gradient": "none",
        "pixel_acc_clean": float(acc[i]), "pixel_acc_adv": float(acc[i]),
        "dice_clean": float(dice[i].mean()), "dice_adv": float(dice[i].mean()),
        "iou_clean": float(iou[i].mean()), "iou_adv": float(iou[i].mean()),
        "dice_per_class": [float(v) for v in dice[i]],
        "queries": int(cert.queries[i]), "certified_radius": float(cert.radius),
        "status": "ok", "time_s": elapsed / len(ids),
    } for i, sid in enumerate(ids)]


def _unit_label(u: WorkUnit) -> str:
    if u.corruption is not None:
        return f"{u.model.name} · {u.corruption} severity {u.eps_text}"
    check = " (masking check)" if u.check else ""
    return f"{u.model.name} · {u.attack.name} {u.attack.norm} {u.eps_text}{check}"


def _compute_block(unit: WorkUnit, model: OnnxModel, data, attack):
    mapping, outside = _target_map_skips(unit, model, data, attack)
    if unit.skip or outside:  # a class outside the target map is not attacked, whatever broke it before
        import dataclasses

        why = {**dict(unit.skip), **dict(outside)}
        return _compute_with_skips(dataclasses.replace(unit, skip=tuple(sorted(why.items()))), model, data, attack)
    if attack is not None and attack.name == "certify":
        return _certificate_rows(unit, model, data, attack)
    base, aentry, corruption = unit.base, unit.attack, unit.corruption
    eps, eps_text, start, stop, key = unit.eps, unit.eps_text, unit.start, unit.stop, unit.key
    spec = model.spec
    x = data.x[start:stop]
    y = None if data.y is None else data.y[start:stop]
    ids = data.sample_ids[start:stop]
    # a model's other inputs: this block's rows, held fixed (only spec.input_name is attacked or corrupted)
    extras = {k: v[start:stop] for k, v in (getattr(data, "extras", None) or {}).items()} or None
    fixed = {"extras": extras} if extras else {}
    params = attack.params() if attack else {}
    targeted = bool(aentry and aentry.targeted)
    common = {
        **base, "sample_shape": _shape_text(x), "attack": corruption or aentry.name,
        "kind": "corruption" if corruption else "check" if unit.check else "adversarial",
        "norm": "none" if corruption else aentry.norm, "eps": eps,
        "eps_text": eps_text, "targeted": targeted, "steps": params.get("steps", 1 if attack else 0),
        "restarts": params.get("restarts", 1 if attack else 0),
        "max_queries": params.get("max_queries"), "settings": _settings_json(params, model, aentry),
        "attacked_inputs": spec.input_name,
    }
    joint = isinstance(model, JointInputModel)
    if joint and corruption is not None:
        raise AdvonnxError(f"{unit.model.name}: corruptions change one input; drop --corruptions for a joint attack "
                           "(--attack-inputs), or corrupt one input with --input")
    rng = Random(unit.seed).spawn(key)
    multilabel = spec.output_kind == "multilabel"
    untargetable: list[str | None] = [None] * len(ids)  # targeted: why a sample has no target
    t0 = time.perf_counter()
    try:
        if attack is None:
            clean_pred = to_numpy(model.classify(x, **fixed))
            res_x = x
            if corruption is not None:
                from .corruptions import apply_corruption

                spacing = data.spacing[start] if data.spacing and len(set(data.spacing)) == 1 else None
                if spacing is None and spec.sampling_rate:  # a signal's sample period in seconds
                    spacing = (1.0 / spec.sampling_rate,)
                res_x = to_numpy(apply_corruption(corruption, x, int(eps), rng, layout=spec.layout,
                                                  value_range=spec.value_range, spacing=spacing))
            queries = np.zeros(len(x), np.int64)
            gradient = "none"
            labels = clean_pred if y is None else y
        else:
            target = None
            if targeted:
                ref = to_numpy(model.classify(x, **fixed)) if y is None else y
                if multilabel:  # named findings' states, or one random finding flipped
                    target, untargetable = _mapped_targets(spec, ref, aentry.target_map, rng)
                else:
                    target = (ref + 1 + rng.integers(0, spec.num_classes - 1, ref.shape)) % spec.num_classes
                    if mapping:  # the named directions (a randomized model's unlabeled vote may stray: random target)
                        target = np.array([mapping.get(int(r), int(t)) for r, t in zip(ref, target)], dtype=np.int64)
            res = attack(model, x, y, target=target, targeted=targeted, rng=rng,
                         gradient=unit.gradient, **fixed)
            res_x, queries, gradient = to_numpy(res.x_adv), res.queries, res.gradient
            clean_pred, labels = to_numpy(res.clean_pred), to_numpy(res.labels)
        clean_scores = to_numpy(model.predict(x, **fixed))
        adv_scores = to_numpy(model.predict(res_x, **fixed))
    except ModelRunError as err:
        elapsed = time.perf_counter() - t0
        rows = [{**empty_row(), **common, "sample_id": sid, "status": "errored", "error": str(err),
                 "time_s": elapsed / len(ids)} for sid in ids]
        return rows, None
    elapsed = time.perf_counter() - t0
    if attack is not None and model.votes > 1:  # a randomized model: the attack's majority decisions
        adv_pred, clean_pred = to_numpy(res.adv_pred), to_numpy(res.clean_pred)
    elif spec.label_output or model.votes > 1:  # the model's own decisions; a randomized model's majority
        adv_pred, clean_pred = to_numpy(model.classify(res_x, **fixed)), to_numpy(model.classify(x, **fixed))
    elif multilabel:  # (N, K) 0/1 decision vectors
        adv_pred, clean_pred = _multilabel_decisions(spec, adv_scores), _multilabel_decisions(spec, clean_scores)
    else:
        adv_pred = np.argmax(adv_scores, axis=spec.class_axis)
        clean_pred = np.argmax(clean_scores, axis=spec.class_axis)
    min_norm = rho = l0_pixels = broken_by = None
    if attack is not None:
        success = to_numpy(res.success)
        broken_by = res.broken_by
        min_norm = None if res.min_norm is None else to_numpy(res.min_norm).astype(np.float64)
        rho = None if res.rho is None else to_numpy(res.rho).astype(np.float64)
        l0_pixels = None if res.l0_pixels is None else to_numpy(res.l0_pixels)
    elif corruption is not None and multilabel:
        success = to_numpy(multilabel_success(adv_pred, labels, False))
    elif corruption is not None:
        success = dense_success(adv_pred, labels, False) if adv_pred.ndim > 1 else adv_pred != labels
    else:
        success = np.zeros(len(x), bool)
    vr = spec.value_range
    delta = (res_x - x).reshape(len(x), -1).astype(np.float64)
    p = to_numpy(psnr(x.astype(np.float64), res_x.astype(np.float64), vr))
    s = to_numpy(ssim(x, res_x, vr, spec.layout))
    finite_clean = np.isfinite(clean_scores.reshape(len(x), -1)).all(1)
    finite_adv = np.isfinite(adv_scores.reshape(len(x), -1)).all(1)
    finite = finite_clean & finite_adv
    rows = []
    straight = ",".join(model.straight_through_ops()) if gradient.startswith("exact") else None
    zero_grad = None if attack is None or res.zero_gradient is None else res.zero_gradient
    if multilabel:
        targets = to_numpy(res.target) if targeted and attack is not None else None
        rows = _multilabel_rows(common, ids, gradient, labels, clean_pred, adv_pred, targets, success, queries,
                                delta, p, s, finite_clean, finite_adv, min_norm, l0_pixels, straight, zero_grad,
                                elapsed)
    elif spec.task == "classification":
        saturated = _saturated(spec, clean_scores, labels)
        probs = spec.scores == "probabilities"
        cconf = to_numpy(confidence(clean_scores, clean_pred, probabilities=probs))
        aconf = to_numpy(confidence(adv_scores, adv_pred, probabilities=probs))
        targets = None
        if targeted and attack is not None:
            targets = to_numpy(res.target)
        for i, sid in enumerate(ids):
            ok = bool(finite[i])
            rows.append({
                **empty_row(), **common, "sample_id": sid, "gradient": gradient,
                "label": int(labels[i]), "clean_pred": int(clean_pred[i]), "adv_pred": int(adv_pred[i]),
                "target": None if targets is None else int(targets[i]),
                "clean_confidence": float(cconf[i]), "adv_confidence": float(aconf[i]),
                # NaN/Inf scores are never a correct answer; robust = clean AND adversarially correct
                "clean_correct": bool(clean_pred[i] == labels[i] and finite_clean[i]),
                "adv_correct": bool(adv_pred[i] == labels[i] and finite_adv[i]),
                "robust": bool(clean_pred[i] == labels[i] and adv_pred[i] == labels[i] and ok),
                "success": bool(success[i]), "queries": int(queries[i]),
                "l0": float(np.count_nonzero(delta[i])), "l2": float(np.linalg.norm(delta[i])),
                "linf": float(np.abs(delta[i]).max(initial=0.0)),
                "min_norm": None if min_norm is None else float(min_norm[i]), "psnr": float(p[i]), "ssim": float(s[i]),
                "rho": None if rho is None else float(rho[i]),
                "l0_pixels": None if l0_pixels is None else int(l0_pixels[i]),
                "straight_through": straight, "saturated": None if saturated is None else bool(saturated[i]),
                "zero_gradient": None if zero_grad is None or zero_grad[i] is None else bool(zero_grad[i]),
                "broken_by": None if broken_by is None else str(broken_by[i]),
                "status": "ok" if ok else "invalid",
                "error": None if ok else "model output is NaN or Inf",
                "time_s": elapsed / len(ids),
            })
    else:
        ref = labels
        dice_c, iou_c = confusion_overlap(clean_pred, ref, spec.num_classes)
        dice_a, iou_a = confusion_overlap(adv_pred, ref, spec.num_classes)
        pa_c, pa_a = pixel_accuracy(clean_pred, ref), pixel_accuracy(adv_pred, ref)
        # HD95 in mm from the data's spacing (1 mm per pixel for .npz); host-only, after the attack.
        spacing = None if not data.spacing else list(data.spacing[start:stop])
        if spacing is not None and any(sp is None or len(sp) != ref.ndim - 1 for sp in spacing):
            spacing = None
        hd_c = mean_hd95(hd95(clean_pred, ref, spec.num_classes, spacing))
        hd_a = mean_hd95(hd95(adv_pred, ref, spec.num_classes, spacing))
        for i, sid in enumerate(ids):
            ok = bool(finite[i])
            rows.append({
                **empty_row(), **common, "sample_id": sid, "gradient": gradient,
                "clean_correct": None, "adv_correct": None,
                "success": bool(success[i]),
                "queries": int(queries[i]),
                "l0": float(np.count_nonzero(delta[i])), "l2": float(np.linalg.norm(delta[i])),
                "linf": float(np.abs(delta[i]).max(initial=0.0)), "psnr": float(p[i]), "ssim": float(s[i]),
                "pixel_acc_clean": float(pa_c[i]), "pixel_acc_adv": float(pa_a[i]),
                "dice_clean": float(dice_c[i].mean()), "dice_adv": float(dice_a[i].mean()),
                "iou_clean": float(iou_c[i].mean()), "iou_adv": float(iou_a[i].mean()),
                "hd95_clean": float(hd_c[i]), "hd95_adv": float(hd_a[i]),
                "min_norm": None if min_norm is None else float(min_norm[i]),
                "rho": None if rho is None else float(rho[i]),
                "l0_pixels": None if l0_pixels is None else int(l0_pixels[i]),
                "dice_per_class": [float(v) for v in dice_a[i]],
                "straight_through": straight,
                "zero_gradient": None if zero_grad is None or zero_grad[i] is None else bool(zero_grad[i]),
                "status": "ok" if ok else "invalid",
                "error": None if ok else "model output is NaN or Inf",
                "time_s": elapsed / len(ids),
            })
    if joint:  # the perturbation of each input, in its value units (linf/l2 columns: the packed vector's;
        # PSNR/SSIM of a packed, budget-scaled vector mean nothing: left empty)
        budgets = model.budgets(eps)
        for row, norms_i in zip(rows, model.input_norms(x, res_x)):
            norms_i = {n: {"eps": budgets[n], **v} for n, v in norms_i.items()}
            row.update(input_norms=json.dumps(norms_i, sort_keys=True), psnr=None, ssim=None)
    for row, why in zip(rows, untargetable, strict=True):  # targeted samples without a target: not counted
        if why:
            row.update(status="skipped", error=why, success=None, robust=None, adv_correct=None, target=None)
    if attack is not None and attack.name == "uap":  # which samples fitted the universal perturbation
        from .attacks.universal import fit_mask

        for row, fit in zip(rows, fit_mask(len(rows), attack.fit_fraction), strict=True):
            row["uap_split"] = "fit" if fit else "held_out"
    if unit.transfer_to and attack is not None and spec.task == "classification" and not multilabel and not targeted:
        from .transfer_matrix import transfer_rows

        rows = rows + transfer_rows(unit, rows, x, res_x, labels, common)
    examples = None
    k = unit.save_examples
    if k > 0 and (attack is not None or corruption is not None):
        examples = {"x": x[:k], "x_adv": res_x[:k], "sample_id": np.asarray(ids[:k]),
                    "label": np.asarray(labels[:k]), "clean_pred": clean_pred[:k], "adv_pred": adv_pred[:k],
                    # a model's other inputs, as fed (held fixed): the examples can be replayed
                    **{f"held_{name}": v[:k] for name, v in (extras or {}).items()}}
        if joint:  # x / x_adv are the packed vectors: each attacked input too, unpacked
            for name, v in model.unpack(x[:k]).items():
                examples[f"x_{name}"] = to_numpy(v)
            for name, v in model.unpack(res_x[:k]).items():
                examples[f"x_adv_{name}"] = to_numpy(v)
    return rows, examples


def _multilabel_decisions(spec, scores: np.ndarray) -> np.ndarray:
    """(N, K) 0/1 decisions of a multi-label model from its decision scores (OnnxModel.classify's rule)."""
    thr = spec.threshold if spec.scores == "probabilities" else 0.0
    return (scores > thr).astype(np.int64)


def _mapped_targets(spec, ref: np.ndarray, target_map: str, rng: Random) -> tuple[np.ndarray, list[str | None]]:
    """Targets of a targeted attack on a multi-label model: the findings ``target_map`` names
    (advonnx.target_map), else a random finding per sample pushed to the other state. Also, per
    sample, why it has no target (None when it has one): the named findings already hold their
    states unattacked. Those samples get status "skipped" (``target_map.NO_TARGET``)."""
    from .target_map import NO_TARGET, multilabel_target, parse_target_map

    names = list(spec.class_names) or None
    ref = np.asarray(ref, dtype=np.int64)
    why: list[str | None] = [None] * len(ref)
    k = ref.shape[1]
    if target_map:
        target = np.broadcast_to(multilabel_target(parse_target_map(target_map, names, k, multilabel=True), k),
                                 ref.shape).copy()
        met = np.all((target < 0) | (target == ref), axis=1)
        for i in np.flatnonzero(met):
            why[i] = f"{NO_TARGET}the reference already has {target_map!r}"
        return target, why
    pick = to_numpy(rng.integers(0, k, (len(ref),)))
    target = np.full(ref.shape, -1, dtype=np.int64)
    rows = np.arange(len(ref))
    target[rows, pick] = 1 - ref[rows, pick]
    return target, why


def _multilabel_rows(common, ids, gradient, labels, clean_pred, adv_pred, targets, success, queries, delta, p, s,
                     finite_clean, finite_adv, min_norm, l0_pixels, straight, zero_grad, elapsed):
    """Rows of a multi-label model: decision vectors, flipped findings, Hamming distances; exact match
    clean / adversarial as clean_correct / adv_correct, robust = both (AutoAttack's count)."""
    labels = np.asarray(labels, dtype=np.int64)
    rows = []
    for i, sid in enumerate(ids):
        ok = bool(finite_clean[i] and finite_adv[i])
        clean_ok = bool(np.array_equal(clean_pred[i], labels[i]) and finite_clean[i])
        adv_ok = bool(np.array_equal(adv_pred[i], labels[i]) and finite_adv[i])
        rows.append({
            **empty_row(), **common, "sample_id": sid, "gradient": gradient,
            "label_vector": labels[i].tolist(), "clean_vector": clean_pred[i].tolist(),
            "adv_vector": adv_pred[i].tolist(), "flipped": np.flatnonzero(adv_pred[i] != clean_pred[i]).tolist(),
            "hamming_clean": int(np.sum(clean_pred[i] != labels[i])), "hamming_adv": int(np.sum(adv_pred[i] != labels[i])),
            "target_vector": None if targets is None else targets[i].tolist(),
            "clean_correct": clean_ok, "adv_correct": adv_ok, "robust": bool(clean_ok and adv_ok and ok),
            "success": bool(success[i]), "queries": int(queries[i]),
            "l0": float(np.count_nonzero(delta[i])), "l2": float(np.linalg.norm(delta[i])),
            "linf": float(np.abs(delta[i]).max(initial=0.0)),
            "min_norm": None if min_norm is None else float(min_norm[i]), "psnr": float(p[i]), "ssim": float(s[i]),
            "l0_pixels": None if l0_pixels is None else int(l0_pixels[i]), "straight_through": straight,
            "zero_gradient": None if zero_grad is None or zero_grad[i] is None else bool(zero_grad[i]),
            "status": "ok" if ok else "invalid", "error": None if ok else "model output is NaN or Inf",
            "time_s": elapsed / len(ids),
        })
    return rows


def _shape_text(x) -> str:
    """A block's per-sample shape as rows record it, e.g. ``1x32x32`` (a block holds one size)."""
    return "x".join(str(int(v)) for v in x.shape[1:])


def _saturated(spec, clean_scores: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Per sample: the attacked scores are probabilities and the clean float32 scores saturate
    (p_y == 1 or max p == 1 exactly: no loss on them has a gradient). None when logits are attacked."""
    if spec.attacked_scores != "probabilities" or clean_scores.ndim != 2:
        return None
    p = clean_scores.astype(np.float32)
    lab = np.asarray(labels, dtype=np.int64)
    p_y = np.take_along_axis(p, np.clip(lab, 0, p.shape[1] - 1)[:, None], axis=1)[:, 0]
    return (p_y == 1.0) | (p.max(axis=1) == 1.0)


def _compute_with_skips(unit: WorkUnit, model: OnnxModel, data, attack):
    """A worst-case unit: the attack runs on the block's still-robust samples only (same random
    stream, the unit's key); the others get "skipped" rows with their clean columns."""
    import dataclasses
    from types import SimpleNamespace

    why = dict(unit.skip)
    keep = [i for i in range(unit.start, unit.stop) if i not in why]
    rows_by_index: dict[int, dict] = {}
    examples = None
    transferred: list[dict] = []
    if keep:
        sub = SimpleNamespace(
            x=data.x[keep], y=None if data.y is None else data.y[keep],
            sample_ids=[data.sample_ids[i] for i in keep],
            spacing=[data.spacing[i] for i in keep] if data.spacing else data.spacing,
            extras={k: v[keep] for k, v in (getattr(data, "extras", None) or {}).items()},
            class_names=getattr(data, "class_names", None))
        rows, examples = _compute_block(dataclasses.replace(unit, start=0, stop=len(keep), skip=()), model, sub, attack)
        rows_by_index.update(zip(keep, rows[:len(keep)]))
        transferred = rows[len(keep):]  # transfer matrix: the attacked samples' rows of kind "transfer"
    gone = sorted(why)
    xs = data.x[gone]
    spec = model.spec
    fixed = {"extras": {k: v[gone] for k, v in data.extras.items()}} if getattr(data, "extras", None) else {}
    scores = to_numpy(model.predict(xs, **fixed))
    multilabel = spec.output_kind == "multilabel"
    pred = to_numpy(model.classify(xs, **fixed)) if spec.label_output or model.votes > 1 else \
        _multilabel_decisions(spec, scores) if multilabel else np.argmax(scores, axis=spec.class_axis)
    labels = pred if data.y is None else np.asarray(data.y[gone])
    conf = np.full(len(gone), np.nan) if multilabel else \
        to_numpy(confidence(scores, pred, probabilities=spec.scores == "probabilities"))
    params = attack.params() if attack else {}
    a = unit.attack
    for j, i in enumerate(gone):
        rows_by_index[i] = {
            **empty_row(), **unit.base, "sample_id": data.sample_ids[i], "sample_shape": _shape_text(xs[j:j + 1]),
            "attack": a.name, "kind": "adversarial",
            "norm": a.norm, "eps": unit.eps, "eps_text": unit.eps_text, "targeted": a.targeted,
            "steps": params.get("steps", 1 if attack else 0), "restarts": params.get("restarts", 1 if attack else 0),
            "max_queries": params.get("max_queries"), "settings": _settings_json(params, model, a),
            "attacked_inputs": spec.input_name,
            "label": None if multilabel else int(labels[j]), "clean_pred": None if multilabel else int(pred[j]),
            "clean_confidence": None if multilabel else float(conf[j]),
            "clean_correct": bool(np.array_equal(pred[j], labels[j])), "queries": 0, "status": "skipped", "error": why[i],
            "time_s": 0.0,
            **({"label_vector": np.asarray(labels[j]).tolist(), "clean_vector": pred[j].tolist(),
                "hamming_clean": int(np.sum(pred[j] != labels[j]))} if multilabel else {}),
        }
    return [rows_by_index[i] for i in range(unit.start, unit.stop)] + transferred, examples


def _class_names(model: OnnxModel, data) -> list[str]:
    """The class names of a model's outputs: the model's own, else the dataset's (may be [])."""
    return list(model.spec.class_names or getattr(data, "class_names", None) or [])


def _settings_json(params: dict, model: OnnxModel, entry: AttackEntry | None) -> str:
    """The ``settings`` column: the attack's recorded settings, and a targeted entry's target map."""
    rec = _recorded(params, model)
    if entry is not None and entry.targeted and entry.target_map:
        rec = {**rec, "target_map": entry.target_map}
    return json.dumps(rec, sort_keys=True, default=str)


def _target_map_skips(unit: WorkUnit, model: OnnxModel, data, attack) -> tuple[dict[int, int], tuple]:
    """A targeted unit with a target map: {source class: target class} for this model, and
    (index, reason) for the block's samples whose reference label (the label, else the clean
    prediction) is no source class: they are not attacked (``target_map.NOT_ATTACKED``)."""
    a = unit.attack
    if attack is None or a is None or not (a.targeted and a.target_map) or model.spec.output_kind == "multilabel":
        return {}, ()
    names = _class_names(model, data)
    mapping = dict(directions_for(a.target_map, names, model.spec.num_classes)[0])
    x = data.x[unit.start:unit.stop]
    extras = {k: v[unit.start:unit.stop] for k, v in (getattr(data, "extras", None) or {}).items()}
    ref = to_numpy(model.classify(x, **({"extras": extras} if extras else {}))) if data.y is None \
        else np.asarray(data.y[unit.start:unit.stop])
    skip = tuple((unit.start + i, f"{NOT_ATTACKED} {names[c] if c < len(names) else c} is no source of the target map "
                                  f"{a.target_map}")
                 for i, c in enumerate(int(v) for v in ref) if c not in mapping)
    return mapping, skip


def _recorded(params: dict, model: OnnxModel) -> dict:
    """An attack's settings as rows record them: with the votes per decision and gradient draws
    (EOT) when the model is randomized or they were declared."""
    if model.votes > 1 or model.eot > 1:
        return {**params, "votes": model.votes, **({"eot": model.eot} if params else {})}
    return params


def _key(base: dict, *parts) -> str:
    """Chunk key and random-stream name: what determines the rows, never the run id or time."""
    stable = {k: v for k, v in base.items() if k != "run_id"}
    return hashlib.sha256(json.dumps([stable, *parts], sort_keys=True, default=str).encode()).hexdigest()[:20]


def _remove_empty_run(folder: Path) -> None:
    """Delete a run folder this process created when it failed before its first chunk (it holds
    only the lock, _run.json and temporaries), and its parent if that is left empty."""
    import shutil

    from .results import EXAMPLES_DIR, RUN_META

    if not folder.is_dir() or any(folder.glob("part-*.parquet")):
        return
    if any(p.name not in (".lock", RUN_META, EXAMPLES_DIR) and not p.name.endswith(".tmp") for p in folder.iterdir()):
        return  # something not ours: leave it
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # only if empty (the --out folder this run made)
    except OSError:
        pass


def _dataset_summary(suite: Suite, models: dict[str, OnnxModel]) -> dict[str, dict[str, Any]]:
    """Per dataset: the intensity rule asked for and the one applied, and where labels and class
    names came from (for _run.json and every Parquet file's metadata). A dataset read
    differently for another model (another layout or size) lists that model's reading too."""
    out: dict[str, dict[str, Any]] = {}
    for entry, dentry in _pairs(suite, models):
        model = models[entry.name]
        d = cached_dataset(dentry, model, entry.name)
        rec = {"path": dentry.path, "intensity": dentry.intensity,
               "intensity_rule": d.description.get("intensity_resolved") or d.description.get("intensity_rule", ""),
               "label_source": d.description.get("label_source", ""),
               "class_names": list(model.spec.class_names or d.class_names or []),
               "class_names_source": (model.spec.source("class_names") if model.spec.class_names
                                      else "dataset" if d.class_names else "none"),
               "format": d.description.get("format", ""), "samples": len(d),
               "groups": d.description.get("groups") or "none given: each sample its own group",
               "orientation": d.description.get("orientation", "as stored in each file"),
               "voxel_spacing": d.description.get("voxel_spacing", "as stored in each file"),
               # several model inputs: where each came from (attacked, or held fixed per sample)
               **({"inputs": {k[len("input:"):]: v for k, v in d.description.items() if k.startswith("input:")}}
                  if model.spec.extra_inputs else {})}
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
            lines.append(f"warning: {name}: value range [{lo:g}, {hi:g}] assumed (not declared in the model, "
                         "a sidecar or --value-range); eps is in these units, so check it")
    return lines


def _spec_summary(model: OnnxModel) -> dict[str, Any]:
    s = model.spec
    return {"layout": s.layout, "task": s.task, "scores": s.scores, "output_kind": s.output_kind,
            "num_classes": s.num_classes, "class_names": list(s.class_names), "value_range": list(s.value_range),
            "value_range_source": s.sources.get("value_range", "assumed"), "framework": s.framework,
            "exporter": s.exporter, "training": s.training, "gradient": model.gradient_label(model.gradient_mode("auto")),
            "randomized": list(s.randomized), "votes": model.votes, "eot": model.eot,
            "attacked_output": s.attacked_output, "logits_rule": s.logits_rule,
            "input_type": s.input_integer or s.input_dtype,
            **({"attacked_input": s.input_name, "held_inputs": [n for n, _, _ in s.extra_inputs]} if s.extra_inputs else {}),
            # joint attacks: each input's budget per unit of eps (eps_i = weight * eps) and value range
            **({"joint_inputs": {n: {"eps_weight": w, "value_range": list(m.spec.value_range)}
                                 for n, w, m in zip(model.names, model.weights, model.models)}}
               if isinstance(model, JointInputModel) else {})}


def run_suite(suite: str | Path | Suite = "quick", **kwargs):
    """Run a built-in suite name, a TOML path or a :class:`Suite`; returns a pyarrow Table."""
    s = suite if isinstance(suite, Suite) else load_suite(suite)
    _, table = Runner(s, **kwargs).run()
    return table
