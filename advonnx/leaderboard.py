"""The rich leaderboard: renders a run's :class:`~advonnx.summary.RunSummary` to the terminal.

The figures themselves (per setting, per model, per run) are computed once in
:mod:`advonnx.summary`; this module only lays them out: one table per model × dataset (its
settings, the headline ones bold), then the worst case over attacks, cascade stages, the clinical
view, natural corruptions against adversarial robustness, the notes and the transfer matrix.
The names this module has always offered (``summarize``, ``headline_key``, ``setting_label``,
``percent``, ...) are re-exported from there.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from .summary import ModelSummary, RunSummary, SettingSummary, summarize_run
from .summary.headline import headline_for, headline_key
from .summary.notes import certified_lines, interval_note, masking_notes
from .summary.setting import (
    QUERY_FRACTIONS,
    _balanced,
    _carried,
    _counted,
    _masking_counts,
    _median,
    per_finding,
    percent,
    query_curve,
    setting_label,
    summarize,
)
from .summary.tables import (
    BOOTSTRAP,
    CERTIFIED_RADII,
    bootstrap_ci,
    cascade_stages,
    certified_curves,
    compare_rows,
    corruption_summary,
    minimal_norm_curves,
    spearman,
)

__all__ = [
    "render",
    "render_run",
    "summarize",
    "headline_for",
    "headline_key",
    "setting_label",
    "percent",
    "query_curve",
    "per_finding",
    "masking_notes",
    "interval_note",
    "certified_lines",
    "certified_curves",
    "cascade_stages",
    "cascade_table",
    "worst_case_table",
    "compare_rows",
    "corruption_summary",
    "minimal_norm_curves",
    "spearman",
    "bootstrap_ci",
    "contrast_pairs",
    "BOOTSTRAP",
    "CERTIFIED_RADII",
    "QUERY_FRACTIONS",
    "_balanced",
    "_carried",
    "_counted",
    "_masking_counts",
    "_median",
]


def contrast_pairs(
    summaries: list[dict], headline: dict[str, Any], table: pa.Table, *, all_pairs: bool = False
) -> list[dict[str, Any]]:
    """Model pairs on one dataset, at the headline setting, with equivalent clean figures (TOST
    within ±2 points) and different robust ones (exact McNemar p < 0.05): ``compare.contrast_tests``."""
    from .compare import contrast_tests

    return contrast_tests(table, summaries, headline, all_pairs=all_pairs) if headline else []


def _ci(v: float, ci: tuple[float, float]) -> str:
    if math.isnan(v):
        return "–"
    if math.isnan(ci[0]):
        return percent(v)
    return f"{percent(v)} [dim]({percent(ci[0])}–{percent(ci[1])})[/dim]"


def _small_table(title: str):
    from rich import box
    from rich.table import Table

    return Table(
        title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1)
    )


def _head(m: ModelSummary) -> str:
    """The title of a model's table: rank, model, dataset, framework, gradients, clean figure."""
    s0 = m.reference
    head = (
        f"[bold]{m.rank}. {s0.model}[/bold] on {s0.dataset} · {s0.framework} · "
        f"{'queries only' if s0.gradient in ('none', '') else s0.gradient + ' gradients'} · clean {s0.metric} {_ci(s0.clean, s0.clean_ci)} % · n={s0.n} in {s0.groups} groups"
    )
    flags = [f"{v} {k}" for k, v in (("invalid", s0.invalid), ("errored", s0.errored), ("skipped", s0.skipped)) if v]
    if flags:
        head += " [red](" + ", ".join(flags) + ")[/red]"
    return head


def _columns(group: tuple[SettingSummary, ...]) -> tuple[list[tuple[str, str]], bool, bool, int]:
    """The columns of a model's table; whether it shows the query curve and minimal norms, and
    its number of findings (multi-label)."""
    seg = group[0].metric == "Dice"
    show_curve = any(g.curve and g.gradient != "exact" for g in group)
    show_min = any(not math.isnan(g.median_min_norm) for g in group)
    columns = [("Attack", "left"), ("Robust Dice" if seg else "Robust %", "right"), ("95% CI", "right")]
    columns += [("Dice drop", "right")] if seg else [("ASR %", "right")]
    columns += [] if seg else [("Med ‖δ‖", "right")]  # segmentation: no sample is "broken", no median
    columns += [("Min ‖δ‖ med/mean", "right")] if show_min else []
    columns += [("Queries", "right")]
    columns += [("ASR % at ⅒·¼·½·1 Q", "right")] if show_curve else []
    findings = max((len(g.per_finding) for g in group), default=0)
    columns += [("Robust % per finding " + "·".join(str(k) for k in range(findings)), "right")] if findings else []
    columns += [("Time s", "right")]
    return columns, show_curve, show_min, findings


def _cells(s: SettingSummary, seg: bool, show_curve: bool, show_min: bool, findings: int) -> list[str]:
    lo, hi = s.robust_ci
    bound = "" if s.kind == "corruption" or seg or math.isnan(s.robust) else ("≥ " if s.kind == "certificate" else "≤ ")
    cells = [setting_label(s), bound + percent(s.robust), "–" if math.isnan(lo) else f"{percent(lo)}–{percent(hi)}"]
    cells += [f"{100 * (s.clean - s.robust):.1f}"] if seg else [percent(s.asr)]
    cells += [] if seg else ["–" if math.isnan(s.median_norm) else f"{s.median_norm:.3g}"]
    if show_min:
        med, mean = s.median_min_norm, s.mean_min_norm
        cells += ["–" if math.isnan(med) else f"{med:.3g}/{mean:.3g}"]
    cells += ["–" if math.isnan(s.queries) else f"{s.queries:.0f}"]
    if show_curve:
        cells += ["·".join(f"{100 * a:.0f}" for _, a in s.curve) if s.curve and s.gradient != "exact" else "–"]
    if findings:
        cells += ["·".join(f"{100 * v:.0f}" for v in s.per_finding) or "–"]
    cells += [f"{s.time_s:.1f}"]
    return cells


def model_table(run: RunSummary, m: ModelSummary):
    """The rich table of one model × dataset: a row per setting, the headline ones bold."""
    from rich import box
    from rich.table import Table

    columns, show_curve, show_min, findings = _columns(m.settings)
    seg = m.settings[0].metric == "Dice"
    t = Table(
        title=_head(m), title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1)
    )
    for name, justify in columns:
        t.add_column(
            name,
            justify="left" if justify == "left" else "right",
            no_wrap=name in ("Attack", "Queries", "Time s"),
            min_width=14 if name == "Attack" else 11 if name == "95% CI" else None,
        )
    for s in m.settings:
        t.add_row(*_cells(s, seg, show_curve, show_min, findings), style="bold" if run.is_headline(s) else None)
    return t


def _worst_case_table(rows, console) -> None:
    t = _small_table("Worst case over attacks (robust % = no attack broke the sample at or below eps)")
    for col in ("Model", "Dataset", "Norm", "Eps", "Robust %", "95% CI", "n (groups)", "Attacks"):
        t.add_column(col, justify="right" if col in ("Eps", "Robust %", "95% CI", "n (groups)") else "left")
    for r in sorted(rows, key=lambda r: (r["model"], r["dataset"], r["norm"], r["eps"])):
        t.add_row(
            r["model"],
            r["dataset"],
            r["norm"],
            f"{r['eps']:.4g}",
            "≤ " + percent(r["robust"]),
            f"{percent(r['ci'][0])}–{percent(r['ci'][1])}",
            f"{r['n']} ({r['groups']})",
            ",".join(r["attacks"]),
        )
    console.print(t)


def worst_case_table(table: pa.Table, console) -> list[dict[str, Any]]:
    """The combined worst case over attacks per model × dataset × norm × eps (``worst_case.py``):
    a sample counts as broken at eps when any attack broke it at or below eps (a minimal-norm
    result at every eps at or above its norm). Printed where a norm has two attacks or more."""
    from .worst_case import worst_case

    rows = [r for r in worst_case(table.to_pylist()) if len(r["attacks"]) >= 2]
    if rows:
        _worst_case_table(rows, console)
    return rows


def _cascade_table(rows, console) -> None:
    t = _small_table("Cascade stages (robust % after each stage ≤; −points the stage removed)")
    for col in ("Model", "Dataset", "Setting", "Clean %", "Stages"):
        t.add_column(col, justify="right" if col == "Clean %" else "left")
    for c in rows:
        t.add_row(
            c["model"],
            c["dataset"],
            f"{c['attack']} {c['norm']} {c['eps_text']}",
            percent(c["clean"]),
            " → ".join(f"{label} ≤ {percent(r)} (−{d:.1f})" for label, r, d in c["stages"]),
        )
    console.print(t)


def cascade_table(table: pa.Table, console) -> list[dict[str, Any]]:
    """What each stage of a cascade (autoattack) added, per model: robust % after the stage and
    the points it removed (robust % is an upper bound)."""
    rows = cascade_stages(table)
    if rows:
        _cascade_table(rows, console)
    return rows


def _corruption_table(run: RunSummary, console) -> None:
    ct = _small_table("Natural corruptions vs adversarial robustness")
    for col in ("Model", "Mean corr. %", "mCE", "rBE", "Bal. err. %", "Adv. robust %"):
        ct.add_column(col, justify="left" if col == "Model" else "right")
    for r in run.corruptions:
        mce = (
            "–"
            if math.isnan(r["mce"])
            else f"{r['mce']:.2f}"
            + ("" if math.isnan(r["mce_ci"][0]) else f" [dim]({r['mce_ci'][0]:.2f}–{r['mce_ci'][1]:.2f})[/dim]")
        )
        ct.add_row(
            r["model"],
            _ci(r["mean_corruption"], r["mean_corruption_ci"]),
            mce,
            "–" if math.isnan(r["rbe"]) else f"{r['rbe']:.2f}",
            percent(r["mean_balanced_error"]),
            percent(r["adversarial"]),
        )
    console.print(ct)


def render_run(
    run: RunSummary,
    table: pa.Table,
    console,
    *,
    title: str = "advonnx leaderboard",
    costs: dict[str, Any] | None = None,
) -> None:
    """Print the leaderboard of ``run`` (the summary of ``table``) to a rich console."""
    from .clinical_view import clinical_table
    from .transfer_matrix import render_transfer

    console.print(f"[bold underline]{title}[/bold underline]")
    for m in run.models:
        console.print(model_table(run, m))
    if run.worst_case:
        _worst_case_table(run.worst_case, console)
    if run.cascades:
        _cascade_table(run.cascades, console)
    clinical_table(table, console, headline=run.headline, costs=costs)  # per class, costly directions, calibration
    if run.corruptions:
        _corruption_table(run, console)
    for n in run.notes:
        console.print(f"[dim]•[/dim] {n}")
    render_transfer(table, console, run.headline)


def render(
    table: pa.Table,
    console,
    *,
    headline: dict[str, Any] | None = None,
    title: str = "advonnx leaderboard",
    costs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Print the leaderboard of a result table to a rich console; returns the setting summaries
    (dicts, leaderboard order)."""
    run = summarize_run(table, headline)
    if not run.settings:
        console.print("[yellow]no result rows to show[/yellow]")
        return []
    if not getattr(console, "is_terminal", True) and console.width < 110:
        console.width = 110  # logs and pipes: wide enough for every column, no truncated settings
    render_run(run, table, console, title=title, costs=costs)
    return run.summaries()
