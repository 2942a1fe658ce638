"""Gradient-masking checks (Athalye, Carlini & Wagner 2018; Carlini et al. 2019, "On evaluating
adversarial robustness", §5): warning signs that a model's white-box robust accuracy is an
artefact of useless gradients, computed from result rows alone.

Per model × dataset × norm, every sample's outcome is paired across attack settings (by its
``sample_id``): a sample is *broken* by a setting when the model gets it wrong unattacked or the
attack changed its decision (robust = clean correct AND adversarial correct, as AutoAttack
counts). The checks:

``blackbox_beats_gradient``
    At each eps, the union of the query-only attacks (Square, HopSkipJump: gradient ``none``)
    against the union of the gradient attacks (exact or estimated gradients, budgeted). Exact
    McNemar test on the discordant samples; fires when the query-only side breaks more samples
    and p < 0.05. With gradients that carry information, a gradient attack is at least as
    strong as a random search.
``estimated_beats_exact``
    The same test between the exact- and the estimated-gradient runs of one attack.
``single_step_beats_iterative``
    Single-step gradient attacks (FGSM: 1 step) against iterative ones (PGD, BIM) at the same
    eps; fires when the single step breaks significantly more samples.
``more_steps_gain``
    One attack with at least 5× the steps × restarts of another run of it at the same eps: fires
    when the longer run's robust accuracy is more than 2 points lower (paired, same samples)
    and the difference is significant (McNemar p < 0.05).
``large_eps_not_zero``
    At a large linf budget (half the input value range, where any input can be moved to mid-grey)
    the gradient attacks must reach 0 % robust accuracy; fires when any sample survives.

Worst-case runs (``worst_case.py``): a sample a setting skipped because an earlier attack broke
it says nothing about that setting, so it is left out of that setting's pairs (counted as
``excluded``); a sample misclassified unattacked is broken for every setting. The extra attacks
the suite runner adds for these checks (``check_attacks``, rows of kind ``check``) run on the
first ``CHECK_SAMPLES`` (32) samples of every dataset and never skip, so the checks cover the same
samples in every run mode.

The per-model verdict is ``no sign of masking``, ``masking suspected: <checks>`` or ``not
checked`` (no gradient attack). A run stores it in ``_masking.json`` beside its Parquet chunks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from .stats import mcnemar_exact, wilson_interval

ALPHA = 0.05  # significance level of every paired test
STEPS_FACTOR = 5  # more-steps check: a run with >= 5x the steps x restarts of another
SINGLE_STEP = ("fgsm",)  # the single-step vs iterative check compares these families
ITERATIVE = ("pgd", "bim", "apgd")
STEPS_MARGIN = 0.02  # ... may gain at most 2 points of robust accuracy
SWEEP_FRACTION = 0.5  # large-eps point: half the width of the value range (linf)
CHECK_SAMPLES = 32  # the checks' extra attacks run on the first 32 samples of each dataset (cost)
CHECK_QUERIES = 500  # Square queries of the check's black-box attack
MASKING_FILE = "_masking.json"

CHECK_TITLES = {
    "blackbox_beats_gradient": "query-only attacks beat gradient attacks",
    "estimated_beats_exact": "estimated gradients beat exact ones",
    "single_step_beats_iterative": "single-step beats iterative",
    "more_steps_gain": "more steps keep gaining",
    "large_eps_not_zero": "large eps leaves samples robust",
}
NO_SIGN = "no sign of masking"
NOT_CHECKED = "not checked"
SUSPECTED = "masking suspected"

_COLUMNS = (
    "model",
    "dataset",
    "task",
    "kind",
    "attack",
    "norm",
    "eps",
    "gradient",
    "steps",
    "restarts",
    "max_queries",
    "settings",
    "sample_id",
    "status",
    "error",
    "clean_correct",
    "adv_correct",
    "min_norm",
)


# ------------------------------------------------------------------------------- per-sample outcomes


def _outcome(r: dict[str, Any]) -> bool | None | str:
    """True: broken; False: robust; None: skipped because an earlier attack broke it (unknown
    for this setting); "drop": says nothing (invalid, errored)."""
    if r["status"] == "ok":
        return not (bool(r["clean_correct"]) and bool(r["adv_correct"]))
    if r["status"] == "skipped":
        if r.get("clean_correct") is False or (r.get("error") or "").startswith("misclassified"):
            return True
        return None
    return "drop"


def _setting_key(r: dict[str, Any]) -> tuple:
    """(kind, attack, its parameters but eps): one attack setting across budgets."""
    try:
        params = {k: v for k, v in json.loads(r["settings"] or "{}").items() if k != "eps"}
    except ValueError:
        params = {"settings": r["settings"]}
    return (r["kind"], r["attack"], json.dumps(params, sort_keys=True, default=str))


def _needs(attack: str) -> str:
    from .attacks.registry import attack_class
    from .errors import AdvonnxError

    try:
        return attack_class(attack).needs
    except AdvonnxError:
        return ""


class _Setting:
    """One attack setting's outcomes at one (model, dataset, norm, eps)."""

    def __init__(self, r: dict[str, Any]):
        self.kind, self.attack = r["kind"], r["attack"]
        self.gradient = r["gradient"] or ""
        self.needs = _needs(r["attack"])
        self.steps = int(r["steps"] or 1)
        self.restarts = int(r["restarts"] or 1)
        self.max_queries = r["max_queries"]
        self.minimal = False
        self.outcomes: dict[str, bool | None] = {}

    def add(self, r: dict[str, Any]) -> None:
        o = _outcome(r)
        if isinstance(o, str):  # "drop"
            return
        self.outcomes[r["sample_id"]] = o
        if r["status"] == "ok":
            self.minimal = self.minimal or r["min_norm"] is not None

    @property
    def side(self) -> str:
        if self.needs:
            return "gradient" if self.needs == "gradient" else "query"
        return "query" if self.gradient in ("none", "") else "gradient"

    def label(self) -> str:
        what = self.attack
        if self.max_queries:
            what += f" {self.max_queries} queries"
        elif self.side == "gradient":
            what += f" {self.steps} step{'s' if self.steps != 1 else ''}"
            what += f" × {self.restarts} restarts" if self.restarts > 1 else ""
            what += f" ({self.gradient})"
        if self.kind == "check":
            what += f" (a check's attack, first {len(self.outcomes)} samples)"
        return what


def _union(settings: list[_Setting]) -> dict[str, bool | None]:
    """Per sample: broken when any setting broke it; unknown (None) when none broke it but one
    skipped it; robust when every setting that covers it left it robust."""
    out: dict[str, bool | None] = {}
    for s in settings:
        for sid, o in s.outcomes.items():
            prev = out.get(sid, o)
            out[sid] = True if (o is True or prev is True) else (None if (o is None or prev is None) else False)
    return out


def _paired(strong: list[_Setting], weak: list[_Setting], check: str, **where) -> dict[str, Any] | None:
    """Exact McNemar test: does ``weak`` (expected no stronger) break more samples than ``strong``?"""
    a, b = _union(strong), _union(weak)
    common = [sid for sid in a if sid in b]
    paired = [sid for sid in common if a[sid] is not None and b[sid] is not None]
    if not paired:
        return None
    only_weak = sum(bool(b[s] and not a[s]) for s in paired)  # broken by the weaker side only
    only_strong = sum(bool(a[s] and not b[s]) for s in paired)
    n = len(paired)
    p = mcnemar_exact(only_weak, only_strong)
    return {
        "check": check,
        **where,
        "n": n,
        "excluded": len(common) - n,
        "strong": ", ".join(s.label() for s in strong),
        "weak": ", ".join(s.label() for s in weak),
        "strong_robust": sum(not a[s] for s in paired) / n,
        "weak_robust": sum(not b[s] for s in paired) / n,
        "only_weak": only_weak,
        "only_strong": only_strong,
        "p_value": p,
        "fired": bool(only_weak > only_strong and p < ALPHA),
    }


# ------------------------------------------------------------------------------------- the checks


def masking_checks(table: pa.Table, *, value_ranges: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Every check on the classification rows of ``table`` (as ``results.read_results`` returns).

    Returns ``{"models": [{"model", "dataset", "verdict", "suspected": [check names],
    "checks": [evidence dicts]}]}``; each evidence dict has ``check``, ``norm``, ``eps``, ``n``
    (paired samples), the counts, ``p_value`` (McNemar checks), ``fired`` and ``text``.
    ``value_ranges``: {model: (lo, hi)} for the large-eps check; default from the run metadata
    stored in the table (``specs``), else [0, 1].
    """
    if value_ranges is None:
        from .results import run_metadata

        specs = run_metadata(table).get("specs") or {}
        value_ranges = {m: tuple(s["value_range"]) for m, s in specs.items() if s.get("value_range")}
    cols = [c for c in _COLUMNS if c in table.column_names]
    rows = [
        r
        for r in table.select(cols).to_pylist()
        if r.get("kind") in ("adversarial", "check") and r.get("task") == "classification"
    ]
    groups = _group_settings(rows)
    per_model: dict[tuple[str, str], list[dict[str, Any] | None]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for (model, dataset, norm, eps), settings in sorted(groups.items()):
        budgeted = [s for s in settings.values() if not s.minimal and s.outcomes]
        if any(s.side == "gradient" for s in budgeted):
            seen.add((model, dataset))
        per_model[(model, dataset)].extend(_checks_at(budgeted, norm, eps, value_ranges.get(model)))
    out = []
    for key in sorted(set(per_model) | seen):
        checks = [c for c in per_model.get(key, []) if c is not None]
        if not checks and key not in seen:
            continue
        for c in checks:
            c["text"] = evidence_text(c)
        fired = sorted({c["check"] for c in checks if c["fired"]})
        verdict = (
            f"{SUSPECTED}: {', '.join(CHECK_TITLES[c] for c in fired)}" if fired else NO_SIGN if checks else NOT_CHECKED
        )
        out.append({"model": key[0], "dataset": key[1], "verdict": verdict, "suspected": fired, "checks": checks})
    return {"models": out}


def _group_settings(rows: list[dict[str, Any]]) -> dict[tuple, dict[tuple, _Setting]]:
    """(model, dataset, norm, eps) -> {setting key: its outcomes}."""
    groups: dict[tuple, dict[tuple, _Setting]] = defaultdict(dict)
    # rows that ran first (they know their gradient mode), then worst-case skips (gradient null)
    # join every setting of their attack and parameters
    for r in sorted(rows, key=lambda r: r["gradient"] is None):
        g = groups[(r["model"], r["dataset"], r["norm"], float(r["eps"]))]
        key = _setting_key(r)
        targets = [s for k, s in g.items() if k[:3] == key and (r["gradient"] is None or k[3] == r["gradient"])]
        if not targets:
            g[(*key, r["gradient"] or "")] = s = _Setting(r)
            targets = [s]
        for s in targets:
            s.add(r)
    return groups


def _checks_at(
    budgeted: list[_Setting], norm: str, eps: float, lo_hi: tuple[float, float] | None
) -> list[dict[str, Any] | None]:
    """Every check's evidence at one (model, dataset, norm, eps) (None: a test without pairs)."""
    where = {"norm": norm, "eps": eps}
    grad = [s for s in budgeted if s.side == "gradient"]
    query = [s for s in budgeted if s.side == "query"]
    found: list[dict[str, Any] | None] = []
    if grad and query:
        found.append(_paired(grad, query, "blackbox_beats_gradient", **where))
    for attack in sorted({s.attack for s in grad}):
        exact = [s for s in grad if s.attack == attack and (s.gradient or "").startswith("exact")]
        est = [s for s in grad if s.attack == attack and s.gradient == "estimated"]
        if exact and est:
            found.append(_paired(exact, est, "estimated_beats_exact", **where))
    # by name: cascades and other attacks without a steps setting record steps = 1 in the rows
    single = [s for s in grad if s.attack in SINGLE_STEP or (s.attack in ITERATIVE and s.steps * s.restarts == 1)]
    iterative = [s for s in grad if s.attack in ITERATIVE and s.steps > 1]
    if single and iterative:
        found.append(_paired(iterative, single, "single_step_beats_iterative", **where))
    found.extend(_more_steps(grad, where))
    width = (lo_hi[1] - lo_hi[0]) if lo_hi else 1.0
    if norm == "linf" and grad and eps >= SWEEP_FRACTION * width * (1 - 1e-6):
        u = _union(grad)
        known = [o for o in u.values() if o is not None]
        if known:
            k, n = sum(not o for o in known), len(known)
            found.append(
                {
                    "check": "large_eps_not_zero",
                    **where,
                    "n": n,
                    "robust": k,
                    "robust_ci": wilson_interval(k, n),
                    "strong": ", ".join(s.label() for s in grad),
                    "value_range": list(lo_hi) if lo_hi else None,
                    "fired": k > 0,
                }
            )
    return found


def _more_steps(grad: list[_Setting], where: dict[str, Any]) -> list[dict[str, Any]]:
    """``more_steps_gain`` for every attack run at least ``STEPS_FACTOR`` times longer than another."""
    found = []
    for _, runs in sorted(_by(grad, lambda s: (s.attack, s.gradient)).items()):
        lo = min(runs, key=lambda s: s.steps * s.restarts)
        hi = max(runs, key=lambda s: s.steps * s.restarts)
        if hi.steps * hi.restarts >= STEPS_FACTOR * lo.steps * lo.restarts:
            e = _paired([hi], [lo], "more_steps_gain", **where)
            if e is not None:
                e["gain"] = e["weak_robust"] - e["strong_robust"]
                e["fired"] = bool(
                    e["gain"] > STEPS_MARGIN and e["only_weak"] < e["only_strong"] and e["p_value"] < ALPHA
                )
                found.append(e)
    return found


def _by(items, key):
    d = defaultdict(list)
    for s in items:
        d[key(s)].append(s)
    return d


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def evidence_text(c: dict[str, Any]) -> str:
    """One line of evidence for a check result (plain text)."""
    at = f"{c['norm']} eps={c['eps']:.4g}"
    if c["check"] == "large_eps_not_zero":
        lo, hi = c["robust_ci"]
        return (
            f"{at}: {c['robust']} of {c['n']} samples robust ({_pct(c['robust'] / c['n'])}, 95 % Wilson "
            f"{_pct(lo)}–{_pct(hi)}) under {c['strong']}; must be 0"
        )
    extra = f", {c['excluded']} skipped in a worst-case run left out" if c.get("excluded") else ""
    gain = f", gain {100 * c['gain']:.1f} points (margin {100 * STEPS_MARGIN:.0f})" if "gain" in c else ""
    return (
        f"{at}, {c['n']} paired samples{extra}: robust {_pct(c['weak_robust'])} under {c['weak']} vs "
        f"{_pct(c['strong_robust'])} under {c['strong']}; broken only by the first: {c['only_weak']}, only by "
        f"the second: {c['only_strong']}; exact McNemar p = {c['p_value']:.3g}{gain}"
    )


# ------------------------------------------------------------------------------------ persistence


def write_masking(folder: str | Path, table: pa.Table) -> dict[str, Any]:
    """Compute the checks of a run and store them as ``<folder>/_masking.json`` (atomic)."""
    from .results import atomic_write_bytes

    result = masking_checks(table)
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(Path(folder) / MASKING_FILE, lambda f: f.write(text.encode()))
    return result


def read_masking(folder: str | Path) -> dict[str, Any] | None:
    """The checks a run stored (None when the run has no ``_masking.json`` or it is unreadable)."""
    f = Path(folder) / MASKING_FILE
    try:
        result = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def short_text(c: dict[str, Any]) -> str:
    """A check's result in a few words: its name, where, and its key numbers (paired checks:
    samples broken only by the side that should be weaker vs only by the other)."""
    at = f"{c['norm']} {c['eps']:.4g}"
    if c["check"] == "large_eps_not_zero":
        return f"{at}: {c['robust']}/{c['n']} robust"
    gain = f", {100 * c['gain']:+.1f} pts" if "gain" in c else ""
    return (
        f"{CHECK_TITLES[c['check']]} at {at}? {c['only_weak']} vs {c['only_strong']} discordant of {c['n']}, "
        f"p={c['p_value']:.2g}{gain}"
    )


def verdict_lines(result: dict[str, Any], *, markup: bool = True) -> list[str]:
    """Leaderboard notes: one verdict per model and, for suspected models, each fired check's
    evidence (rich markup unless ``markup=False``)."""
    from rich.markup import escape

    esc = escape if markup else (lambda t: t)
    lines = []
    for m in result.get("models", []):
        if m["verdict"] == NOT_CHECKED:
            continue
        head = esc(f"gradient-masking checks, {m['model']} on {m['dataset']}: ")
        if m["suspected"]:
            line = head + (f"[bold red]{m['verdict']}[/bold red]" if markup else m["verdict"])
            fired = [c for c in m["checks"] if c["fired"]]
            line += esc(" — " + "; ".join(c["text"] for c in fired))
        else:
            line = (
                head
                + m["verdict"]
                + esc(f" ({len(m['checks'])} checks passed: " + "; ".join(short_text(c) for c in m["checks"]) + ")")
            )
        lines.append(line)
    return lines


def check_attacks(
    attacks: list[dict[str, Any]], *, value_range: tuple[float, float], headline_eps: float | None = None
) -> list[dict[str, Any]]:
    """The extra attack settings the checks need on one model × dataset, given the suite's
    settings there (dicts ``name``, ``norm``, ``eps`` (list of floats), ``settings``, ``needs``
    (``gradient`` | ``scores`` | ``decisions``)). Empty when no gradient attack runs there.

    Adds, at linf, what the suite lacks: a Square attack with ``CHECK_QUERIES`` queries at the
    check eps (the headline eps when a linf gradient attack uses it, else the largest linf eps
    of the gradient attacks), a PGD with ``STEPS_FACTOR`` times the steps of the suite's longest
    PGD/BIM there (and a 10-step PGD when the suite has none), and a 10-step PGD at half the
    value range. Returns dicts ``name``, ``norm``, ``eps`` (float), ``eps_text``, ``settings``.
    """
    grad = [a for a in attacks if a["needs"] == "gradient"]
    if not grad:
        return []
    width = float(value_range[1]) - float(value_range[0])
    big = SWEEP_FRACTION * width
    out = []
    linf_eps = sorted({e for a in grad if a["norm"] == "linf" for e in a["eps"] if e > 0})
    if linf_eps:
        eps = headline_eps if headline_eps in linf_eps else linf_eps[-1]
        text = f"{eps:.10g}"
        has_query = any(
            a["needs"] != "gradient"
            and a["norm"] == "linf"
            and eps in a["eps"]
            and (a["settings"].get("max_queries") or 0) >= CHECK_QUERIES
            for a in attacks
        )
        if not has_query:
            out.append(
                {
                    "name": "square",
                    "norm": "linf",
                    "eps": eps,
                    "eps_text": text,
                    "settings": {"max_queries": CHECK_QUERIES},
                }
            )
        iterative = [a for a in grad if a["name"] in ("pgd", "bim") and a["norm"] == "linf" and eps in a["eps"]]
        steps = max((int(a["settings"].get("steps", 10)) for a in iterative), default=0)
        if not iterative:
            steps = 10
            out.append({"name": "pgd", "norm": "linf", "eps": eps, "eps_text": text, "settings": {"steps": steps}})
        out.append(
            {"name": "pgd", "norm": "linf", "eps": eps, "eps_text": text, "settings": {"steps": STEPS_FACTOR * steps}}
        )
    if not any(a["norm"] == "linf" and max(a["eps"], default=0) >= big * (1 - 1e-6) for a in grad):
        out.append({"name": "pgd", "norm": "linf", "eps": big, "eps_text": f"{big:.10g}", "settings": {"steps": 10}})
    return out
