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
``advonnx.dataset``), else with every dataset. ``runner.py`` plans and runs a suite (chunks,
stages, metadata), ``work.py`` computes one chunk's rows.

``worst_case = true`` (``advonnx run --worst-case``) orchestrates like AutoAttack: on
classification models the attacks run in the listed order, each only on the samples that
earlier attacks did not break at its norm and eps (``runner.py``); the others get rows of
status "skipped", error "broken by <attack>". The leaderboard adds the combined worst case.

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

import copy
import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from .attacks import make_attack
from .budgets import parse_eps
from .errors import AdvonnxError
from .suite_entries import AttackEntry, DatasetEntry, ModelEntry, parse_corruptions, parse_severities
from .suite_overrides import (
    _attacked_input,
    _class_names,
    _override_attacks,
    _override_corruptions,
    _override_inputs,
    _override_run,
    _override_targets,
)
from .target_map import split_target_map

BUILTIN_SUITES = ("quick", "full")


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
            "attacks": [
                {**{k: v for k, v in a.__dict__.items() if k != "target_map" or v}, "eps": [t for _, t in a.eps]}
                for a in self.attacks
            ],
            "headline": self.headline,
            "corruptions": self.corruptions,
            "severities": self.severities,
            **({"worst_case": True} if self.worst_case else {}),
            **({} if self.masking_checks else {"masking_checks": False}),
            **({"transfer_matrix": True} if self.transfer_matrix else {}),
        }

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def with_overrides(
        self,
        *,
        models: list[str] | None = None,
        data: str | None = None,
        attack: list[str] | None = None,
        eps: str | None = None,
        norm: str | None = None,
        steps: int | None = None,
        max_queries: int | None = None,
        worst_case: bool = False,
        masking_checks: bool = True,
        transfer_matrix: bool = False,
        targeted: bool = False,
        target_map: str | None = None,
        costs: str | Path | None = None,
        limit: int | None = None,
        seed: int | None = None,
        gradient: str | None = None,
        input_name: str | None = None,
        attack_inputs: str | None = None,
        output_name: str | None = None,
        value_range: str | None = None,
        votes: int | None = None,
        eot: int | None = None,
        layout: str | None = None,
        sampling_rate: str | None = None,
        output_layout: str | None = None,
        patch_size: str | None = None,
        overlap: str | None = None,
        blend: str | None = None,
        orientation: str | None = None,
        spacing: str | None = None,
        intensity: str | None = None,
        class_names: str | None = None,
        corruptions: str | None = None,
        severities: str | None = None,
        save_examples: int | None = None,
        chunk_size: int | None = None,
    ) -> Suite:
        """A copy of this suite with the options of ``advonnx run`` applied (same names; None or
        False: as the suite has it). ``models`` (ONNX paths) and ``data`` (one dataset) replace
        the suite's; ``attack``: ``--attack`` specs, replacing its attacks and headline (fgsm,pgd
        if it has none). Every setting is checked now, not mid-run (AdvonnxError)."""
        s = copy.deepcopy(self)
        input_name, joint, eps = _attacked_input(input_name, attack_inputs, eps)
        overrides: dict[str, Any] = {
            k: v
            for k, v in (
                ("input_name", input_name),
                ("output_name", output_name),
                ("value_range", value_range),
                ("layout", layout),
                ("votes", votes),
                ("eot", eot),
                ("sampling_rate", sampling_rate),
                ("output_layout", output_layout),
                ("patch_size", patch_size),
                ("overlap", overlap),
                ("blend", blend),
                ("attack_inputs", joint),
            )
            if v is not None
        }
        if joint and (corruptions or severities):
            raise AdvonnxError(
                "--corruptions change one input: drop them for a joint attack (--attack-inputs), "
                "or corrupt one input with --input"
            )
        if class_names is not None:
            overrides["class_names"] = _class_names(class_names)
        if intensity is not None:
            from .data import parse_intensity_rule

            parse_intensity_rule(intensity)  # a typo fails now, with the valid rules
        _override_inputs(
            s, models, data, overrides, limit=limit, orientation=orientation, spacing=spacing, intensity=intensity
        )
        specs = _override_attacks(s, attack, eps, norm, steps, max_queries)
        _override_corruptions(s, corruptions, severities)
        if joint:  # fail now, naming the attacks that run jointly
            from .joint import check_joint_attack

            for a in s.attacks:
                check_joint_attack(a.name)
        _override_targets(s, specs, target_map, targeted)
        if costs is not None:
            from .clinical import read_costs

            read_costs(costs)  # a bad file fails now, not after the run
            s.costs = str(costs)
        _override_run(
            s,
            worst_case=worst_case,
            masking_checks=masking_checks,
            transfer_matrix=transfer_matrix,
            seed=seed,
            gradient=gradient,
            save_examples=save_examples,
            chunk_size=chunk_size,
        )
        return s


def _suite_from_dict(raw: dict[str, Any], base: Path, source: str) -> Suite:
    def resolve(p: str) -> str:
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base / path))

    try:
        datasets = [_dataset_entry(d, resolve) for d in raw.get("datasets", [])]
        models = [_model_entry(m, resolve) for m in raw.get("models", [])]
        attacks = [_attack_entry(a) for a in raw.get("attacks", [])]
    except KeyError as err:
        raise AdvonnxError(
            f"{source}: an entry lacks the key {err}; see `advonnx run --help` for the suite format"
        ) from None
    if not models:
        raise AdvonnxError(f"{source}: no [[models]] declared")
    if not datasets:
        raise AdvonnxError(f"{source}: no [[datasets]] declared")
    for a in attacks:  # validate every setting now, not an hour into the run
        unknown = set(a.datasets) - {d.name for d in datasets}
        if unknown:
            raise AdvonnxError(
                f"{source}: attack {a.name} names dataset(s) {', '.join(sorted(unknown))}, "
                "which the suite does not declare"
            )
        for eps, _ in a.eps:
            make_attack(a.name, norm=a.norm, eps=eps or 1e-12, **a.settings)
    known = set(raw) - {
        "name",
        "description",
        "seed",
        "save_examples",
        "chunk_size",
        "gradient",
        "headline",
        "datasets",
        "models",
        "attacks",
        "corruptions",
        "severities",
        "worst_case",
        "masking_checks",
        "target_map",
        "costs",
        "transfer_matrix",
    }
    if known:
        raise AdvonnxError(f"{source}: unknown suite key(s) {', '.join(sorted(known))}")
    _check_target_maps(attacks, str(raw.get("target_map") or ""), source)
    return Suite(
        costs=resolve(raw["costs"]) if raw.get("costs") else "",
        name=str(raw.get("name", Path(source).stem)),
        description=str(raw.get("description", "")),
        models=models,
        datasets=datasets,
        attacks=attacks,
        seed=int(raw.get("seed", 0)),
        save_examples=int(raw.get("save_examples", 4)),
        chunk_size=int(raw.get("chunk_size", 128)),
        gradient=str(raw.get("gradient", "auto")),
        headline=dict(raw.get("headline", {})),
        source=source,
        corruptions=parse_corruptions(raw.get("corruptions", [])),
        severities=parse_severities(raw.get("severities", "1-5")) if raw.get("corruptions") else [],
        worst_case=bool(raw.get("worst_case", False)),
        masking_checks=bool(raw.get("masking_checks", True)),
        transfer_matrix=bool(raw.get("transfer_matrix", False)),
    )


def _dataset_entry(d: dict[str, Any], resolve: Callable[[str], str]) -> DatasetEntry:
    """A ``[[datasets]]`` entry (KeyError: a required key is missing)."""
    return DatasetEntry(
        name=d.get("name") or Path(d["path"]).stem,
        path=resolve(d["path"]),
        limit=d.get("limit"),
        intensity=d.get("intensity", "auto"),
        resize=d.get("resize", "resample"),
        orientation=d.get("orientation"),
        spacing=None
        if d.get("spacing") is None
        else ",".join(map(str, d["spacing"]))
        if isinstance(d["spacing"], list)
        else str(d["spacing"]),
        corruptions=parse_corruptions(d["corruptions"]) if "corruptions" in d else None,
        severities=parse_severities(d["severities"]) if "severities" in d else None,
    )


def _model_entry(m: dict[str, Any], resolve: Callable[[str], str]) -> ModelEntry:
    """A ``[[models]]`` entry: keys other than name, path and dataset are load_model overrides."""
    m = dict(m)
    path = resolve(m.pop("path"))
    name = m.pop("name", None) or Path(path).stem
    dataset = m.pop("dataset", "")
    return ModelEntry(name=name, path=path, dataset=dataset, overrides=m)


def _attack_entry(a: dict[str, Any]) -> AttackEntry:
    """An ``[[attacks]]`` entry: keys other than the entry's fields are the attack's settings."""
    a = dict(a)
    name = a.pop("name")
    norm = a.pop("norm", "linf")
    eps = parse_eps(a.pop("eps", "8/255"))
    targeted = bool(a.pop("targeted", False))
    only = a.pop("datasets", [])
    only = [only] if isinstance(only, str) else list(only)
    tmap = str(a.pop("target_map", "") or "")
    return AttackEntry(name=name, norm=norm, eps=eps, settings=a, targeted=targeted, datasets=only, target_map=tmap)


def _check_target_maps(attacks: list[AttackEntry], suite_map: str, source: str) -> None:
    """The suite-wide ``target_map`` goes to every targeted attack without its own; each map's
    syntax is checked, and a map on an untargeted attack refused."""
    if suite_map:  # suite-wide: every targeted attack without its own map
        for a in attacks:
            if a.targeted and not a.target_map:
                a.target_map = suite_map
    for a in attacks:
        if a.target_map:
            split_target_map(a.target_map)
            if not a.targeted:
                raise AdvonnxError(
                    f"{source}: attack {a.name} has a target_map but is not targeted; add targeted = true"
                )


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


_MOVED = {
    "WorkUnit": "work",
    "execute_unit": "work",
    "cached_model": "work",
    "cached_dataset": "work",
    "_MODEL_CACHE": "work",
    "_DATA_CACHE": "work",
    "_dense_certificate_rows": "rows",
    "Runner": "runner",
    "run_suite": "runner",
    "value_range_warnings": "runner",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)
