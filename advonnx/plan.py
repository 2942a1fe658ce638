"""Planning a suite: every work unit (model × dataset × setting × block of ``chunk_size``
samples) in a fixed order, with its chunk key, plus the rows of samples the data could not give.

A chunk key (``unit_key``) hashes what determines the rows, never the run id or time: it names
the chunk's file and seeds its random stream, so a resumed run plans the same units.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .attacks import attack_class, make_attack
from .attacks.base import check_multilabel
from .errors import AdvonnxError
from .joint import JointInputModel, check_joint_attack
from .rows import Row, row
from .spec import _fraction
from .suite import AttackEntry, DatasetEntry, ModelEntry, Suite
from .target_map import directions_for, split_target_map
from .work import WorkUnit, cached_dataset, class_names

# an attack setting (entry, None) or a corruption (None, name), its eps or severity (number,
# text) and what identifies the setting in the chunk key
Setting = tuple[AttackEntry | None, str | None, float, str, dict]


@dataclass
class Plan:
    units: list[WorkUnit]
    skipped: list[tuple[str, Row]]  # (chunk key, row) of samples the data could not give
    groups: dict[tuple[str, str], dict[str, str]]  # (model, dataset) -> {sample id: group}
    transfer_notes: list[str] = field(default_factory=list)  # models or pairs the transfer matrix leaves out


def unit_key(base: dict, *parts) -> str:
    """Chunk key and random-stream name: what determines the rows, never the run id or time."""
    stable = {k: v for k, v in base.items() if k != "run_id"}
    return hashlib.sha256(json.dumps([stable, *parts], sort_keys=True, default=str).encode()).hexdigest()[:20]


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pairs(suite: Suite, models: dict[str, Any]) -> list[tuple[ModelEntry, DatasetEntry]]:
    """(model, dataset) pairs: the dataset a model names (or its metadata does), else every one."""
    by_name = {d.name: d for d in suite.datasets}
    out = []
    for entry in suite.models:
        wanted = entry.dataset or models[entry.name].spec.dataset
        if wanted and wanted in by_name:
            out.append((entry, by_name[wanted]))
        elif entry.dataset:
            raise AdvonnxError(f"model {entry.name} names dataset {entry.dataset!r}, which the suite does not declare")
        else:
            out.extend((entry, d) for d in suite.datasets)
    return out


@dataclass
class _Planner:
    suite: Suite
    run_id: str
    models: dict[str, Any]
    device: str
    batch_size: int
    cluster: str | None
    map_entries: dict[str, bool] = field(default_factory=dict)  # target-map entry -> some model has both classes
    known_classes: set[str] = field(default_factory=set)

    @property
    def threads(self) -> int | None:
        return 1 if self.cluster else None

    def plan(self) -> Plan:
        units: list[WorkUnit] = []
        skipped: list[tuple[str, Row]] = []
        groups: dict[tuple[str, str], dict[str, str]] = {}
        peers: dict[tuple[str, str], list] = {}
        notes: list[str] = []
        if self.suite.transfer_matrix:
            from .transfer_matrix import transfer_peers

            peers, notes = transfer_peers(
                pairs(self.suite, self.models), self.models, lambda e, d: cached_dataset(d, self.models[e.name], e.name)
            )
        for entry, dentry in pairs(self.suite, self.models):
            model = self.models[entry.name]
            spec = model.spec
            data = cached_dataset(dentry, model, entry.name)
            groups[(entry.name, dentry.name)] = dict(zip(data.sample_ids, data.groups or data.sample_ids))
            base = {
                "run_id": self.run_id,
                "model": entry.name,
                "model_sha256": sha256(entry.path),
                "framework": spec.framework,
                "task": spec.task,
                "dataset": dentry.name,
                "seed": self.suite.seed,
                "value_range_declared": spec.value_range_declared,
                "label_source": "dataset" if data.y is not None else "clean_prediction",
            }
            settings = self._attack_settings(entry, dentry, model, data) + self._corruption_settings(
                entry, dentry, model, data
            )
            units += self._units(
                entry, dentry, model, data, base, settings, tuple(peers.get((entry.name, dentry.name), ()))
            )
            if self.suite.masking_checks and spec.task == "classification" and not isinstance(model, JointInputModel):
                units += self._check_units(entry, dentry, model, base, data)  # checks: one input
            for sid, reason in data.skipped:
                skipped.append(
                    (
                        unit_key(base, "skipped", sid),
                        row(base, sid, attack="none", kind="skipped", status="skipped", error=reason),
                    )
                )
        for e, used in self.map_entries.items():
            if not used:
                raise AdvonnxError(
                    f"target map entry {e!r}: no model of the suite has both classes; known classes: "
                    f"{', '.join(sorted(self.known_classes)) or 'none (use indices)'}"
                )
        return Plan(units, skipped, groups, notes)

    def _attack_settings(self, entry: ModelEntry, dentry: DatasetEntry, model: Any, data: Any) -> list[Setting]:
        """The suite's attack settings on this model × dataset (each eps one setting), checked now."""
        spec = model.spec
        settings: list[Setting] = []
        for a in self.suite.attacks:
            if a.datasets and dentry.name not in a.datasets:
                continue
            if a.target_map and a.targeted and spec.output_kind != "multilabel":
                names = class_names(model, data)
                self.known_classes.update(names)
                fit, rest = directions_for(a.target_map, names, spec.num_classes)
                for e in (f"{src}:{dst}" for src, dst in split_target_map(a.target_map)):
                    self.map_entries[e] = self.map_entries.get(e, False) or e not in rest
                if not fit:
                    model.notes_once(
                        f"{a.name} targeted: no direction of the target map {a.target_map!r} names "
                        f"{entry.name}'s classes; that setting is not run on it"
                    )
                    continue
            for eps, eps_text in a.eps:
                attack = make_attack(a.name, norm=a.norm, eps=eps, **a.settings) if eps > 0 else None
                if spec.output_kind == "multilabel":
                    check_multilabel(attack_class(a.name))
                if isinstance(model, JointInputModel):
                    check_joint_attack(a.name)
                if a.target_map and spec.output_kind == "multilabel":  # a typo fails now, naming the findings
                    from .target_map import parse_target_map

                    parse_target_map(a.target_map, list(spec.class_names) or None, spec.num_classes, multilabel=True)
                settings.append(
                    (
                        a,
                        None,
                        eps,
                        eps_text,
                        {
                            "attack": a.name,
                            "norm": a.norm,
                            "eps": eps_text,
                            "settings": repr(attack) if attack else "identity",
                            "targeted": a.targeted,
                            **({"target_map": a.target_map} if a.target_map and a.targeted else {}),
                        },
                    )
                )
        return settings

    def _corruption_settings(self, entry: ModelEntry, dentry: DatasetEntry, model: Any, data: Any) -> list[Setting]:
        """The corruptions × severities that apply to this model's inputs."""
        from .corruptions import CORRUPTIONS

        spec = model.spec
        corruptions = self.suite.corruptions if dentry.corruptions is None else dentry.corruptions
        if isinstance(model, JointInputModel) and corruptions:
            raise AdvonnxError(
                f"{entry.name}: corruptions change one input; drop --corruptions for a joint attack "
                "(--attack-inputs), or corrupt one input with --input"
            )
        severities = dentry.severities or self.suite.severities or [1, 2, 3, 4, 5]
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
        return [
            (None, name, float(severity), str(severity), {"corruption": name, "severity": str(severity)})
            for name in (c for c in corruptions if c not in unfit)
            for severity in severities
        ]

    def _units(
        self,
        entry: ModelEntry,
        dentry: DatasetEntry,
        model: Any,
        data: Any,
        base: dict,
        settings: list[Setting],
        peers: tuple,
    ) -> list[WorkUnit]:
        """Each setting cut into blocks of ``chunk_size`` samples; worst case: each attack its stage."""
        ship = bool(self.cluster) and hasattr(data.x, "detach")  # workers read their own blocks
        staged = self.suite.worst_case and model.spec.task == "classification"
        order = [a for a in self.suite.attacks if not a.datasets or dentry.name in a.datasets]
        units = []
        for a, corruption, eps, eps_text, setting in settings:
            # a universal perturbation is fitted on the whole dataset: one unit, never staged
            universal = a is not None and attack_class(a.name).name == "uap"
            stage = (
                next(i for i, b in enumerate(order) if b is a)
                if staged and a is not None and a.name != "certify" and not universal
                else 0
            )  # certificates: every sample
            to = peers if (a is not None and eps > 0 and not a.targeted and a.name != "certify") else ()
            # one size per block (streamed data grouped by size); a universal perturbation: one block
            blocks = [(0, len(data))] if universal else data.blocks(self.suite.chunk_size)
            for block, (start, stop) in enumerate(blocks):
                units.append(
                    WorkUnit(
                        key=unit_key(base, setting, start, stop),
                        model=entry,
                        dataset=dentry,
                        attack=a,
                        corruption=corruption,
                        eps=eps,
                        eps_text=eps_text,
                        start=start,
                        stop=stop,
                        save_examples=self.suite.save_examples if block == 0 else 0,
                        seed=self.suite.seed,
                        gradient=self.suite.gradient,
                        base=base,
                        device=self.device,
                        batch_size=self.batch_size,
                        threads=self.threads,
                        stage=stage,
                        transfer_to=to,
                        data=data.block(start, stop) if ship else None,
                    )
                )
        return units

    def _check_units(
        self, entry: ModelEntry, dentry: DatasetEntry, model: Any, base: dict, data: Any
    ) -> list[WorkUnit]:
        """The extra attacks of the gradient-masking checks on one model × dataset (``masking.
        check_attacks``), on its first ``CHECK_SAMPLES`` samples; never staged or skipped."""
        from .leaderboard import headline_for
        from .masking import CHECK_SAMPLES, check_attacks

        have = [
            {
                "name": attack_class(a.name).name,
                "norm": a.norm,
                "eps": [e for e, _ in a.eps],
                "settings": a.settings,
                "needs": attack_class(a.name).needs,
            }
            for a in self.suite.attacks
            if not a.targeted and (not a.datasets or dentry.name in a.datasets)
        ]
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
            setting = {
                "attack": a.name,
                "norm": a.norm,
                "eps": c["eps_text"],
                "settings": repr(attack),
                "targeted": False,
                "check": "masking",
            }
            for start, stop in data.blocks(self.suite.chunk_size, stop_all):
                units.append(
                    WorkUnit(
                        key=unit_key(base, setting, start, stop),
                        model=entry,
                        dataset=dentry,
                        attack=a,
                        corruption=None,
                        eps=c["eps"],
                        eps_text=c["eps_text"],
                        start=start,
                        stop=stop,
                        save_examples=0,
                        seed=self.suite.seed,
                        gradient=self.suite.gradient,
                        base=base,
                        device=self.device,
                        batch_size=self.batch_size,
                        threads=self.threads,
                        check=True,
                        data=data.block(start, stop) if self.cluster and hasattr(data.x, "detach") else None,
                    )
                )
        return units


def plan_suite(
    suite: Suite, run_id: str, models: dict[str, Any], *, device: str, batch_size: int, cluster: str | None
) -> Plan:
    """Every work unit of ``suite`` (its models loaded in ``models``), in a fixed order, plus the
    rows of skipped samples. Raises AdvonnxError for a setting that cannot run, before any work."""
    return _Planner(suite, run_id, models, device, batch_size, cluster).plan()
