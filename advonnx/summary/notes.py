"""The leaderboard's footnotes (rich console markup), from a run's summary: what the figures
mean, the contrast pairs, the masking verdicts, corruption normalization, robustness curves
from minimal norms, certified accuracy, universal perturbations and self-inflicted masking."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .setting import percent, setting_label

if TYPE_CHECKING:
    from .run import RunSummary


def masking_notes(summaries: list[dict]) -> list[str]:
    """Leaderboard notes: straight-through gradients, zero first gradients, saturated probabilities."""
    notes = []
    straight = sorted({(s["model"], s["straight_through"]) for s in summaries if s.get("straight_through")})
    for model, ops in straight:
        notes.append(
            f"{model}: gradients exact + straight-through: {ops.replace(',', ', ')} "
            "(piecewise-constant ops passed as the identity, BPDA)"
        )
    for s in summaries:
        if s.get("zero_gradient") and s.get("kind") == "adversarial":
            notes.append(
                f"[bold red]zero gradient:[/bold red] {s['model']} · {setting_label(s)}: {s['zero_gradient']} of "
                f"{s['n']} samples had an exactly zero input gradient at the first step (masked or flat)"
            )
    sat: dict[str, int] = {}
    for s in summaries:
        if s.get("saturated"):
            sat[s["model"]] = max(sat.get(s["model"], 0), s["saturated"])
    for model, k in sorted(sat.items()):
        notes.append(
            f"[bold red]saturated probabilities:[/bold red] {model}: {k} samples score p = 1 exactly in float32 "
            "(attacks see probabilities only: their losses give no gradient there)"
        )
    return notes


def interval_note(summaries: list[dict]) -> str:
    """The footer line naming the interval methods and what they cover."""
    from ..summary_stats import BOOTSTRAP_METHOD, PROPORTION_METHOD

    methods = [f"accuracies: {PROPORTION_METHOD}"] if any(s["metric"] == "accuracy" for s in summaries) else []
    methods += [f"Dice, mCE: {BOOTSTRAP_METHOD}"]
    return (
        "95 % intervals: " + "; ".join(methods) + "; n in G groups (patient/volume: rows' group); they cover "
        "test-set sampling, not attack strength"
    )


def certified_lines(table: pa.Table, curves: list[dict[str, Any]] | None = None) -> list[str]:
    """The terminal lines of :func:`tables.certified_curves` (``curves``, computed when not given)."""
    from .tables import certified_curves

    lines = []
    for c in certified_curves(table) if curves is None else curves:
        curve = " · ".join(f"{percent(a)} at {r:g}" for r, a in c["curve"])
        what = "certified pixel accuracy, abstained pixels wrong" if c.get("task") == "segmentation" else "L2"
        lines.append(
            f"certified (randomized smoothing, σ={c['sigma']:g}, {what}, lower bound): {c['model']} on "
            f"{c['dataset']}: {curve} (n={c['n']})"
        )
        for eps, low, high, label in c["sandwich"]:
            lines.append(
                f"  {c['model']} L2 eps={eps:g}: the smoothed classifier is certified on {percent(low)} (a lower "
                f"bound for it); the base model under {label} keeps ≤ {percent(high)} (an upper bound for the "
                "base model; attacking the smoothed one needs EOT over the noise)"
            )
    return lines


def _meaning_notes(summaries: list[dict], headline: dict[str, Any]) -> list[str]:
    """What the figures mean: references, upper bounds, ASR, multi-label, worst case, headline."""
    notes = []
    if any(s["label_source"] == "clean_prediction" for s in summaries):
        notes.append(
            "no labels given for some data: the model's clean predictions are the reference, so clean accuracy is 100 % by construction"
        )
    if any(s.get("kind") != "corruption" and s["metric"] == "accuracy" for s in summaries):
        notes.append(
            "≤: robust accuracy under attack is an upper bound (robust = correct clean and under the "
            "attack; NaN/Inf outputs count as broken); a stronger attack can only lower it"
        )
    notes.append(
        "ASR = share of the samples classified correctly before the attack that it broke; "
        "median ‖δ‖ over broken samples (L2 for corruptions)"
    )
    if any(s.get("per_finding") for s in summaries):
        notes.append(
            "multi-label: correct = every finding decided as the reference (exact match), an untargeted attack "
            "succeeds when any finding flips; per finding: robust % of each finding alone (findings by output index)"
        )
    if any(s.get("carried") for s in summaries):
        notes.append(
            "worst case: each attack skipped the samples earlier attacks broke at or below its eps and counts "
            "them as broken, so its robust % is the worst case up to it; ‖δ‖ and queries describe the samples "
            "it attacked"
        )
    if headline:
        notes.append(
            f"sorted by robust {' / '.join(sorted({s['metric'] for s in summaries}))} at the headline setting: "
            f"{headline.get('attack', '?')} {headline.get('norm', '')} eps={headline.get('eps', '?')} (bold)"
            + "".join(
                f"; on {d}: {h.get('attack', '?')} {h.get('norm', '')} eps={h.get('eps', '?')}"
                for d, h in (headline.get("datasets") or {}).items()
            )
        )
    return notes


def _contrast_notes(contrasts) -> list[str]:
    from ..compare import contrast_text, unproven_text

    notes = []
    for c in contrasts:
        if c["equivalent_clean"] and c["different_robust"]:
            notes.append(
                f"[bold magenta]equal clean, different robust:[/bold magenta] {c['hi']['model']} vs "
                f"{c['lo']['model']} at {setting_label(c['lo'])}: {contrast_text(c)}"
            )
        elif c["different_robust"]:
            notes.append(
                f"different robust: {c['hi']['model']} vs {c['lo']['model']} at {setting_label(c['lo'])}: "
                f"{unproven_text(c)}"
            )
    return notes


def _corruption_note(run: RunSummary) -> list[str]:
    if not run.corruptions:
        return []
    refs = sorted({r["reference"] for r in run.corruptions})
    rhos = "; ".join(
        f"{d}: {'–' if math.isnan(r) else f'{r:+.2f}'} over {n} models" for d, (r, n) in run.corruption_spearman.items()
    )
    return [
        f"mCE and rBE (relative balanced error) are normalized to {', '.join(refs)} (= 1.00 per dataset); "
        f"Adv. robust = robust % at the headline setting; Spearman ρ between it and mean corruption "
        f"robustness, per dataset: {rhos}"
    ]


def run_notes(run: RunSummary, table: pa.Table, summaries: list[dict[str, Any]]) -> list[str]:
    """Every footnote of the leaderboard, in its order (``summaries``: ``run``'s settings in
    leaderboard order as dicts)."""
    from ..masking import verdict_lines
    from ..universal_summary import uap_lines
    from .tables import minimal_norm_curves

    notes = _meaning_notes(summaries, run.headline)
    notes += _contrast_notes(run.contrasts)
    notes.append(interval_note(summaries))
    notes += verdict_lines(run.masking)  # per-model verdict and the evidence of fired checks
    notes += _corruption_note(run)
    notes += minimal_norm_curves(table, summaries)
    notes += certified_lines(table, list(run.certified))
    notes += uap_lines(table)
    notes += masking_notes(summaries)
    if any(s["curve"] and s["gradient"] != "exact" for s in summaries):
        notes.append("ASR at ⅒·¼·½·1 of Q: success within that share of the query budget Q (queries at first success)")
    return notes
