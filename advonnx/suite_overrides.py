"""The ``advonnx run`` options applied to a copy of a suite (:meth:`Suite.with_overrides`): one
helper per group of options (inputs, attacks, corruptions, targets, run switches), each raising
``AdvonnxError`` on a bad value before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .attacks import attack_class, make_attack
from .budgets import parse_eps
from .errors import AdvonnxError
from .suite_entries import AttackEntry, DatasetEntry, ModelEntry, parse_corruptions, parse_severities
from .target_map import split_target_map

if TYPE_CHECKING:
    from .suite import Suite


def _attacked_input(
    input_name: str | None, attack_inputs: str | None, eps: str | None
) -> tuple[str | None, str | None, str | None]:
    """``(input to attack, joint attack_inputs override, --eps)`` from ``--input``,
    ``--attack-inputs`` and ``--eps``: one name is ``--input``; several attack jointly
    (advonnx.joint), with per-input budgets ``a=0.01,b=0.05`` the first input's is the eps."""
    if attack_inputs is None:
        return input_name, None, eps
    from .joint import parse_attack_inputs

    pairs = parse_attack_inputs(attack_inputs)
    if len(pairs) == 1:
        if input_name and input_name != pairs[0][0]:
            raise AdvonnxError(f"--attack-inputs {attack_inputs!r}: give one input name (or use --input alone)")
        if pairs[0][1] is not None:
            raise AdvonnxError(f"--attack-inputs {attack_inputs!r}: one input takes its budget from --eps")
        return pairs[0][0], None, eps
    if input_name:
        raise AdvonnxError(f"--input {input_name} with --attack-inputs {attack_inputs}: name the attacked inputs once")
    if pairs[0][1] is not None:
        if eps is not None:
            raise AdvonnxError(f"--attack-inputs {attack_inputs!r} gives each input's budget: drop --eps")
        eps = attack_inputs.split(",")[0].partition("=")[2].strip()
    return None, attack_inputs, eps


def _class_names(text: str) -> list[str]:
    """``--class-names benign,malignant``: each class once."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names or len(set(names)) != len(names):
        raise AdvonnxError(f"--class-names {text!r}: give each class once, comma-separated, e.g. benign,malignant")
    return names


def _override_inputs(
    s: Suite,
    models: list[str] | None,
    data: str | None,
    overrides: dict[str, Any],
    *,
    limit: int | None,
    orientation: str | None,
    spacing: str | None,
    intensity: str | None,
) -> None:
    """``--model`` / ``--data`` replace the suite's models and datasets; the model overrides
    (``--input``, ``--value-range``, ...) and dataset options apply to every entry."""
    if models:
        s.models = [ModelEntry(name=Path(m).stem, path=str(Path(m)), overrides=dict(overrides)) for m in models]
    elif overrides:
        for m in s.models:
            m.overrides.update(overrides)
    if data:
        s.datasets = [
            DatasetEntry(
                name=Path(data).stem or "data",
                path=str(Path(data)),
                limit=limit,
                orientation=orientation,
                spacing=spacing,
            )
        ]
        for m in s.models:
            m.dataset = s.datasets[0].name
    elif limit is not None:
        for d in s.datasets:
            d.limit = limit
    for d in s.datasets if orientation else []:
        d.orientation = orientation
    for d in s.datasets if spacing else []:
        d.spacing = spacing
    if intensity is not None:
        for d in s.datasets:
            d.intensity = intensity


def _override_attacks(
    s: Suite, attack: list[str] | None, eps: str | None, norm: str | None, steps: int | None, max_queries: int | None
) -> dict[int, Any]:
    """``--attack`` specs (or fgsm,pgd when the suite has no attacks) replace the suite's attacks
    and headline; else ``--eps``, ``--norm`` and ``--steps`` change them. Returns each new
    entry's spec (by ``id``), whose own settings win over ``--steps`` and ``--max-queries``."""
    from .attack_spec import parse_attack_specs

    specs = {}  # entry -> its spec, whose settings win over --steps / --max-queries
    if attack or not s.attacks:
        budgets = parse_eps(eps or "2/255,8/255")
        s.attacks = []
        for spec in parse_attack_specs(attack) or parse_attack_specs("fgsm,pgd"):
            own = attack_class(spec.name).norms  # an attack of one norm (jsma: l0, certify: l2) takes it
            entry = AttackEntry(
                name=spec.name,
                norm=spec.norm or norm or ("linf" if "linf" in own else own[0]),
                eps=spec.eps or budgets,
                targeted=bool(spec.targeted),
                datasets=spec.datasets or [],
            )
            s.attacks.append(entry)
            specs[id(entry)] = spec
            if steps and "steps" in attack_class(spec.name).parameters():
                entry.settings["steps"] = steps
        last = s.attacks[-1]
        s.headline = {"attack": last.name, "norm": last.norm, "eps": last.eps[-1][1]}
    else:
        for a in s.attacks:
            if eps:
                a.eps = parse_eps(eps)
            if norm:
                a.norm = norm
            if steps and "steps" in attack_class(a.name).parameters():
                a.settings["steps"] = steps
    for a in s.attacks:  # --max-queries goes to the attacks that have it; then the spec's own settings
        if max_queries is not None and "max_queries" in attack_class(a.name).parameters():
            if max_queries < 1:
                raise AdvonnxError("--max-queries must be >= 1")
            a.settings["max_queries"] = max_queries
        if id(a) in specs:
            a.settings.update(specs[id(a)].settings)
            for value, _ in a.eps:  # every setting is built now, as a suite file's are, not mid-run
                make_attack(a.name, norm=a.norm, eps=value or 1e-12, **a.settings)
    return specs


def _override_corruptions(s: Suite, corruptions: str | None, severities: str | None) -> None:
    """``--corruptions`` (severities 1-5 unless ``--severities``) replace the suite's;
    ``--severities`` alone changes the suite's severities."""
    if corruptions is not None:
        s.corruptions = parse_corruptions(corruptions)
        s.severities = parse_severities(severities or "1-5")
    elif severities is not None:
        if not s.corruptions:
            raise AdvonnxError("--severities needs --corruptions (e.g. --corruptions all --severities 1-5)")
        s.severities = parse_severities(severities)


def _override_targets(s: Suite, specs: dict[int, Any], target_map: str | None, targeted: bool) -> None:
    """``--target-map`` and ``--targeted`` make the attacks targeted, except an ``--attack`` spec
    that says ``targeted=false``; a spec's own ``target_map`` makes its entry targeted."""
    if target_map is not None:
        split_target_map(target_map)  # syntax now; class names per model when the run is planned
        for a in s.attacks:
            if id(a) not in specs or specs[id(a)].targeted is None:  # pgd(targeted=false) stays untargeted
                a.targeted = True
            if a.targeted and not a.target_map:
                a.target_map = target_map
    for a in s.attacks:
        if id(a) in specs and specs[id(a)].target_map:  # pgd(target_map=...) is targeted
            a.target_map, a.targeted = specs[id(a)].target_map, True
    if targeted:
        for a in s.attacks:
            if id(a) not in specs or specs[id(a)].targeted is None:  # pgd(targeted=false) stays untargeted
                a.targeted = True


def _override_run(
    s: Suite,
    *,
    worst_case: bool,
    masking_checks: bool,
    transfer_matrix: bool,
    seed: int | None,
    gradient: str | None,
    save_examples: int | None,
    chunk_size: int | None,
) -> None:
    """The run-wide switches and numbers."""
    if worst_case:
        s.worst_case = True
    if not masking_checks:
        s.masking_checks = False
    if transfer_matrix:
        s.transfer_matrix = True
    if seed is not None:
        s.seed = seed
    if gradient:
        s.gradient = gradient
    if save_examples is not None:
        s.save_examples = save_examples
    if chunk_size is not None:
        if chunk_size < 1:
            raise AdvonnxError("--chunk-size must be >= 1")
        s.chunk_size = chunk_size


# Names that moved to the work and runner modules, still importable from here (tests, benchmarks,
# docs). Resolved on first use (PEP 562): this module imports neither; they import it.
