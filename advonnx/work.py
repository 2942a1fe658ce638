"""Work units and their execution: one chunk (model × dataset × setting × block of samples)
becomes its rows (``rows.py``) and saved examples, in this process or on a Dask worker.

A unit is plain data (``WorkUnit``); ``execute_unit`` loads its model and dataset through
per-process caches (a worker reads each model once, not per task), runs the attack or
corruption on the block with the unit's own random stream (``Random(seed).spawn(key)``: rows do
not depend on batch size, chunk order or resumption) and judges the result.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .attacks import make_attack
from .attacks.base import adversarial
from .errors import AdvonnxError, DataError
from .factory import LoadedModel, load_model
from .joint import JointInputModel
from .metrics import confidence
from .model import ModelRunError
from .rows import Outcome, Row, certificate_rows, errored_rows, measured_rows, setting_columns, shape_text, skipped_rows
from .suite import AttackEntry, DatasetEntry, ModelEntry
from .target_map import NOT_ATTACKED, directions_for
from .transfer_matrix import transfer_rows
from .xp import Random, to_numpy

Examples = dict[str, Any] | None


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
_MODEL_CACHE: dict[tuple, LoadedModel] = {}
_DATA_CACHE: dict[tuple, Any] = {}


def _model_key(entry: ModelEntry, device: str, batch_size: int, threads: int | None) -> tuple:
    return (entry.path, json.dumps(entry.overrides, sort_keys=True, default=str), device, batch_size, threads)


def cached_model(entry: ModelEntry, device: str, batch_size: int, threads: int | None = None) -> LoadedModel:
    """The entry's model, loaded once per process (and device, batch size, threads)."""
    key = _model_key(entry, device, batch_size, threads)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(
            entry.path, device=device, batch_size=batch_size, threads=threads, **entry.overrides
        )
    return _MODEL_CACHE[key]


def _expectation(model: LoadedModel) -> Any:
    from .data import InputExpectation

    s = model.spec
    return InputExpectation(
        layout=s.layout,
        spatial_shape=s.spatial_shape,
        channels=s.channels,
        value_range=s.value_range,
        task=s.task,
        dtype=s.input_dtype,
        findings=s.num_classes if s.output_kind == "multilabel" else 0,
    )


def cached_dataset(dentry: DatasetEntry, model: LoadedModel, model_name: str = "") -> Any:
    """The dataset as ``model`` reads it (layout, size, value range, class names), loaded once per
    process; for a joint model, packed for its inputs."""
    from .data import load_dataset
    from .joint import joint_dataset

    loader = model.models[0] if isinstance(model, JointInputModel) else model  # joint: its first input, packed
    spec = loader.spec
    key = (
        dentry.path,
        dentry.limit,
        dentry.intensity,
        dentry.resize,
        dentry.orientation,
        dentry.spacing,
        repr(_expectation(loader)),
        spec.class_names,
        spec.input_name,
        spec.extra_inputs,
    )
    if key not in _DATA_CACHE:
        try:
            data = load_dataset(
                dentry.path,
                _expectation(loader),
                intensity=dentry.intensity,
                resize=dentry.resize,
                limit=dentry.limit,
                orientation=dentry.orientation,
                spacing=dentry.spacing,
                stream=True,
                class_names=list(spec.class_names) if spec.class_names else None,
            )
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
    if isinstance(model, JointInputModel):  # packed for its inputs and budgets (packing tells it the shapes)
        packed = (*key, "joint", tuple(model.names), tuple(model.weights))
        if packed not in _DATA_CACHE or model.shapes is None:
            _DATA_CACHE[packed] = joint_dataset(model, _DATA_CACHE[key])
        return _DATA_CACHE[packed]
    return _DATA_CACHE[key]


def execute_unit(unit: WorkUnit) -> tuple[list[Row], Examples]:
    """Rows (and saved examples) of one work unit; runs in this process or on a Dask worker."""
    model = cached_model(unit.model, unit.device, unit.batch_size, unit.threads)
    if unit.data is not None:  # the block's sample references, shipped with the unit
        data = unit.data
        unit = dataclasses.replace(
            unit, start=0, stop=len(data), data=None, skip=tuple((i - unit.start, why) for i, why in unit.skip)
        )
    else:
        data = cached_dataset(unit.dataset, model, unit.model.name)
    attack = None
    if unit.attack is not None and unit.eps > 0:
        attack = make_attack(unit.attack.name, norm=unit.attack.norm, eps=unit.eps, **unit.attack.settings)
    return _compute_block(unit, model, data, attack)


def _compute_block(unit: WorkUnit, model: Any, data: Any, attack: Any) -> tuple[list[Row], Examples]:
    mapping, outside = _target_map_skips(unit, model, data, attack)
    if unit.skip or outside:  # a class outside the target map is not attacked, whatever broke it before
        why = {**dict(unit.skip), **dict(outside)}
        return _compute_with_skips(dataclasses.replace(unit, skip=tuple(sorted(why.items()))), model, data, attack)
    if attack is not None and attack.name == "certify":
        return certificate_rows(unit, model, data, attack)
    start, stop = unit.start, unit.stop
    x = data.x[start:stop]
    ids = data.sample_ids[start:stop]
    # a model's other inputs: this block's rows, held fixed (only spec.input_name is attacked or corrupted)
    extras = {k: v[start:stop] for k, v in (getattr(data, "extras", None) or {}).items()} or None
    common = setting_columns(unit, model, attack, shape_text(x))
    if isinstance(model, JointInputModel) and unit.corruption is not None:
        raise AdvonnxError(
            f"{unit.model.name}: corruptions change one input; drop --corruptions for a joint attack "
            "(--attack-inputs), or corrupt one input with --input"
        )
    t0 = time.perf_counter()
    try:
        out, untargetable = _run_setting(unit, model, data, attack, mapping, x, extras)
    except ModelRunError as err:
        return errored_rows(common, ids, str(err), time.perf_counter() - t0), None
    out.elapsed = time.perf_counter() - t0
    _decide(out, model, attack, extras, corrupted=unit.corruption is not None)
    spacing = None if not data.spacing else list(data.spacing[start:stop])
    rows = measured_rows(common, ids, out, model, spacing)
    _annotate(rows, unit, model, attack, out, untargetable)
    spec = model.spec
    if (
        unit.transfer_to
        and attack is not None
        and spec.task == "classification"
        and spec.output_kind != "multilabel"
        and not common["targeted"]
    ):
        targets = [(e.name, cached_model(e, unit.device, unit.batch_size, unit.threads)) for e in unit.transfer_to]
        rows = rows + transfer_rows(targets, rows, x, out.res_x, out.labels, common)
    return rows, _examples(unit, model, attack, out, ids, extras)


def _run_setting(
    unit: WorkUnit, model: Any, data: Any, attack: Any, mapping: dict[int, int], x: Any, extras: dict | None
) -> tuple[Outcome, list[str | None]]:
    """Runs the unit's attack (targets drawn from its random stream), corruption or identity on
    the block ``x``, and the model on both; also, per sample, why a targeted sample has no target."""
    spec, aentry, corruption = model.spec, unit.attack, unit.corruption
    y = None if data.y is None else data.y[unit.start : unit.stop]
    fixed = {"extras": extras} if extras else {}
    targeted = bool(aentry and aentry.targeted)
    rng = Random(unit.seed).spawn(unit.key)
    untargetable: list[str | None] = [None] * len(x)  # targeted: why a sample has no target
    res = targets = None
    if attack is None:
        clean_pred = to_numpy(model.classify(x, **fixed))
        res_x = x
        if corruption is not None:
            from .corruptions import apply_corruption

            spacing = data.spacing[unit.start] if data.spacing and len(set(data.spacing)) == 1 else None
            if spacing is None and spec.sampling_rate:  # a signal's sample period in seconds
                spacing = (1.0 / spec.sampling_rate,)
            res_x = to_numpy(
                apply_corruption(
                    corruption, x, int(unit.eps), rng, layout=spec.layout, value_range=spec.value_range, spacing=spacing
                )
            )
        queries = np.zeros(len(x), np.int64)
        gradient = "none"
        labels = clean_pred if y is None else y
    else:
        target = None
        if targeted:
            assert aentry is not None
            ref = to_numpy(model.classify(x, **fixed)) if y is None else y
            if spec.output_kind == "multilabel":  # named findings' states, or one random finding flipped
                target, untargetable = _mapped_targets(spec, ref, aentry.target_map, rng)
            else:
                target = (ref + 1 + rng.integers(0, spec.num_classes - 1, ref.shape)) % spec.num_classes
                if mapping:  # the named directions (a randomized model's unlabeled vote may stray: random target)
                    target = np.array([mapping.get(int(r), int(t)) for r, t in zip(ref, target)], dtype=np.int64)
        res = attack(model, x, y, target=target, targeted=targeted, rng=rng, gradient=unit.gradient, **fixed)
        res_x, queries, gradient = to_numpy(res.x_adv), res.queries, res.gradient
        clean_pred, labels = to_numpy(res.clean_pred), to_numpy(res.labels)
        targets = to_numpy(res.target) if targeted else None
    clean_scores = to_numpy(model.predict(x, **fixed))
    adv_scores = to_numpy(model.predict(res_x, **fixed))
    out = Outcome(
        x=x,
        res_x=res_x,
        labels=labels,
        clean_pred=clean_pred,
        adv_pred=clean_pred,
        clean_scores=clean_scores,
        adv_scores=adv_scores,
        success=np.zeros(len(x), bool),
        queries=queries,
        gradient=gradient,
        elapsed=0.0,
        res=res,
        targets=targets,
    )
    return out, untargetable


def _decide(out: Outcome, model: Any, attack: Any, extras: dict | None, *, corrupted: bool) -> None:
    """The decisions on the clean and attacked block, and per sample whether the setting broke it:
    the attack's judgement, else (corruptions) a changed decision against the reference."""
    spec, x, res_x, res = model.spec, out.x, out.res_x, out.res
    fixed = {"extras": extras} if extras else {}
    multilabel = spec.output_kind == "multilabel"
    if attack is not None and model.votes > 1:  # a randomized model: the attack's majority decisions
        out.adv_pred, out.clean_pred = to_numpy(res.adv_pred), to_numpy(res.clean_pred)
    elif spec.label_output or model.votes > 1:  # the model's own decisions; a randomized model's majority
        out.adv_pred, out.clean_pred = to_numpy(model.classify(res_x, **fixed)), to_numpy(model.classify(x, **fixed))
    elif multilabel:  # (N, K) 0/1 decision vectors
        out.adv_pred = _multilabel_decisions(spec, out.adv_scores)
        out.clean_pred = _multilabel_decisions(spec, out.clean_scores)
    else:
        out.adv_pred = np.argmax(out.adv_scores, axis=spec.class_axis)
        out.clean_pred = np.argmax(out.clean_scores, axis=spec.class_axis)
    if attack is not None:
        out.success = to_numpy(res.success)
    elif corrupted:
        out.success = to_numpy(adversarial(out.adv_pred, out.labels, targeted=False, multilabel=multilabel))


def _annotate(
    rows: list[Row], unit: WorkUnit, model: Any, attack: Any, out: Outcome, untargetable: list[str | None]
) -> None:
    """Columns only some settings have: each input's perturbation of a joint attack, targeted
    samples without a target (skipped, not counted), a universal perturbation's fit split."""
    if isinstance(model, JointInputModel):  # the perturbation of each input, in its value units (linf/l2
        # columns: the packed vector's; PSNR/SSIM of a packed, budget-scaled vector mean nothing: left empty)
        budgets = model.budgets(unit.eps)
        for r, norms_i in zip(rows, model.input_norms(out.x, out.res_x)):
            norms_i = {n: {"eps": budgets[n], **v} for n, v in norms_i.items()}
            r.update(input_norms=json.dumps(norms_i, sort_keys=True), psnr=None, ssim=None)
    for r, why in zip(rows, untargetable, strict=True):  # targeted samples without a target: not counted
        if why:
            r.update(status="skipped", error=why, success=None, robust=None, adv_correct=None, target=None)
    if attack is not None and attack.name == "uap":  # which samples fitted the universal perturbation
        from .attacks.universal import fit_mask

        for r, fit in zip(rows, fit_mask(len(rows), attack.fit_fraction), strict=True):
            r["uap_split"] = "fit" if fit else "held_out"


def _examples(unit: WorkUnit, model: Any, attack: Any, out: Outcome, ids: list[str], extras: dict | None) -> Examples:
    """The first ``unit.save_examples`` samples before and after (attacks and corruptions)."""
    k = unit.save_examples
    if k <= 0 or (attack is None and unit.corruption is None):
        return None
    x, res_x = out.x, out.res_x
    examples = {
        "x": x[:k],
        "x_adv": res_x[:k],
        "sample_id": np.asarray(ids[:k]),
        "label": np.asarray(out.labels[:k]),
        "clean_pred": out.clean_pred[:k],
        "adv_pred": out.adv_pred[:k],
        # a model's other inputs, as fed (held fixed): the examples can be replayed
        **{f"held_{name}": v[:k] for name, v in (extras or {}).items()},
    }
    if isinstance(model, JointInputModel):  # x / x_adv are the packed vectors: each attacked input too, unpacked
        for name, v in model.unpack(x[:k]).items():
            examples[f"x_{name}"] = to_numpy(v)
        for name, v in model.unpack(res_x[:k]).items():
            examples[f"x_adv_{name}"] = to_numpy(v)
    return examples


def _multilabel_decisions(spec: Any, scores: np.ndarray) -> np.ndarray:
    """(N, K) 0/1 decisions of a multi-label model from its decision scores (OnnxModel.classify's rule)."""
    thr = spec.threshold if spec.scores == "probabilities" else 0.0
    return (scores > thr).astype(np.int64)


def _mapped_targets(spec: Any, ref: np.ndarray, target_map: str, rng: Random) -> tuple[np.ndarray, list[str | None]]:
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
        target = np.broadcast_to(
            multilabel_target(parse_target_map(target_map, names, k, multilabel=True), k), ref.shape
        ).copy()
        met = np.all((target < 0) | (target == ref), axis=1)
        for i in np.flatnonzero(met):
            why[i] = f"{NO_TARGET}the reference already has {target_map!r}"
        return target, why
    pick = to_numpy(rng.integers(0, k, (len(ref),)))
    target = np.full(ref.shape, -1, dtype=np.int64)
    rows = np.arange(len(ref))
    target[rows, pick] = 1 - ref[rows, pick]
    return target, why


def _compute_with_skips(unit: WorkUnit, model: Any, data: Any, attack: Any) -> tuple[list[Row], Examples]:
    """A worst-case unit: the attack runs on the block's still-robust samples only (same random
    stream, the unit's key); the others get "skipped" rows with their clean columns."""
    why = dict(unit.skip)
    keep = [i for i in range(unit.start, unit.stop) if i not in why]
    rows_by_index: dict[int, Row] = {}
    examples = None
    transferred: list[Row] = []
    if keep:
        sub = SimpleNamespace(
            x=data.x[keep],
            y=None if data.y is None else data.y[keep],
            sample_ids=[data.sample_ids[i] for i in keep],
            spacing=[data.spacing[i] for i in keep] if data.spacing else data.spacing,
            extras={k: v[keep] for k, v in (getattr(data, "extras", None) or {}).items()},
            class_names=getattr(data, "class_names", None),
        )
        rows, examples = _compute_block(dataclasses.replace(unit, start=0, stop=len(keep), skip=()), model, sub, attack)
        rows_by_index.update(zip(keep, rows[: len(keep)]))
        transferred = rows[len(keep) :]  # transfer matrix: the attacked samples' rows of kind "transfer"
    gone = sorted(why)
    xs = data.x[gone]
    spec = model.spec
    fixed = {"extras": {k: v[gone] for k, v in data.extras.items()}} if getattr(data, "extras", None) else {}
    scores = to_numpy(model.predict(xs, **fixed))
    multilabel = spec.output_kind == "multilabel"
    pred = (
        to_numpy(model.classify(xs, **fixed))
        if spec.label_output or model.votes > 1
        else _multilabel_decisions(spec, scores)
        if multilabel
        else np.argmax(scores, axis=spec.class_axis)
    )
    labels = pred if data.y is None else np.asarray(data.y[gone])
    conf = (
        np.full(len(gone), np.nan)
        if multilabel
        else to_numpy(confidence(scores, pred, probabilities=spec.scores == "probabilities"))
    )
    common = setting_columns(unit, model, attack, shape_text(xs))
    skipped = skipped_rows(
        common, [data.sample_ids[i] for i in gone], labels, pred, conf, [why[i] for i in gone], multilabel
    )
    rows_by_index.update(zip(gone, skipped))
    return [rows_by_index[i] for i in range(unit.start, unit.stop)] + transferred, examples


def class_names(model: Any, data: Any) -> list[str]:
    """The class names of a model's outputs: the model's own, else the dataset's (may be [])."""
    return list(model.spec.class_names or getattr(data, "class_names", None) or [])


def _target_map_skips(unit: WorkUnit, model: Any, data: Any, attack: Any) -> tuple[dict[int, int], tuple]:
    """A targeted unit with a target map: {source class: target class} for this model, and
    (index, reason) for the block's samples whose reference label (the label, else the clean
    prediction) is no source class: they are not attacked (``target_map.NOT_ATTACKED``)."""
    a = unit.attack
    if attack is None or a is None or not (a.targeted and a.target_map) or model.spec.output_kind == "multilabel":
        return {}, ()
    names = class_names(model, data)
    mapping = dict(directions_for(a.target_map, names, model.spec.num_classes)[0])
    x = data.x[unit.start : unit.stop]
    extras = {k: v[unit.start : unit.stop] for k, v in (getattr(data, "extras", None) or {}).items()}
    ref = (
        to_numpy(model.classify(x, **({"extras": extras} if extras else {})))
        if data.y is None
        else np.asarray(data.y[unit.start : unit.stop])
    )
    skip = tuple(
        (
            unit.start + i,
            f"{NOT_ATTACKED} {names[c] if c < len(names) else c} is no source of the target map {a.target_map}",
        )
        for i, c in enumerate(int(v) for v in ref)
        if c not in mapping
    )
    return mapping, skip
