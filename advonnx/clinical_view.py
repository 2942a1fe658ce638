"""The clinical figures rendered: the leaderboard's compact terminal view (:func:`clinical_table`)
and the report's "Per class, costly directions and calibration" section (:func:`clinical_html`),
both from :func:`advonnx.clinical.clinical_summaries` and :func:`advonnx.clinical.flip_rates`."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa

from .clinical import INTERVAL_METHOD, clinical_summaries, flip_rates, headline_summaries

__all__ = ["clinical_table", "clinical_html"]


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def _rate_text(r: dict[str, Any]) -> str:
    return "–" if not r["n"] else f"{_pct(r['value'])} ({_pct(r['ci'][0])}–{_pct(r['ci'][1])})"


def clinical_table(
    table: pa.Table, console, *, headline: dict[str, Any] | None = None, costs: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The leaderboard's compact clinical view: per model at the headline setting its worst
    class, sensitivity/specificity (binary), ECE, expected cost, each
    clean → under attack; then the flip rate of every target-map direction."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    summaries = clinical_summaries(table, costs=costs)
    heads = headline_summaries(summaries, headline)
    if not heads:
        return heads
    binary = any("sensitivity" in s for s in heads)
    priced = any("cost_clean" in s for s in heads)
    t = Table(
        title="Per class and calibration at the headline setting (a → b: clean → under attack)",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
    )
    cols = ["Model", "Worst class ≤ % (CI)"]
    cols += ["Sens. %", "Spec. %"] if binary else []
    cols += ["ECE %"]
    cols += ["Cost"] if priced else []
    table_rows = []
    for s in heads:
        w = s["worst_class"]
        cells = [escape(s["model"]), escape(f"{w['name']} {_rate_text(w['robust'])}") if w else "–"]
        if binary:
            for key in ("sensitivity", "specificity"):
                v = s.get(key)
                cells.append(f"{_pct(v['clean']['value'])}→{_pct(v['adv']['value'])}" if v else "–")
        cells += [f"{_pct(s['ece_clean'])}→{_pct(s['ece_adv'])}"]
        if priced:
            cells.append(_cost_text(s).replace(" → ", "→"))
        table_rows.append(cells)
    for i, c in enumerate(cols):  # cells kept whole: headers may wrap, figures may not
        t.add_column(c, justify="left" if c == "Model" else "right", min_width=max(len(r[i]) for r in table_rows))
    for cells in table_rows:
        t.add_row(*cells)
    console.print(t)
    settings: dict[str, list[str]] = defaultdict(list)
    for s in heads:
        settings[f"{s['label']} {s['norm']} {s['eps_text']}"].append(s["model"])
    notes = ["settings: " + "; ".join(f"{', '.join(ms)}: {k}" for k, ms in settings.items())]
    notes += [
        f"per class: robust = correct clean and under attack, {INTERVAL_METHOD} intervals (test-set sampling "
        f"only, not attack strength); ECE: {heads[0]['ece_method']}; the report adds the confidence of wrong answers, "
        "confusion matrices and risk–coverage curves (advonnx report)"
    ]
    if binary:
        notes.append(
            "sensitivity/specificity: "
            + "; ".join(sorted({f"{s['model']}: positive = {s['positive']}" for s in heads if "positive" in s}))
        )
    if priced:
        notes.append(
            "cost = expected cost per sample, mean of C[true, predicted] of the cost matrix (--costs), clean and under attack"
        )
    for f in flip_rates(table):
        notes.append(
            f"target map {f['model']} {f['label']} {f['norm']} {f['eps_text']}: {f['direction']} flip rate "
            f"{_rate_text(f['flip'])} % of correctly classified sources; predicted as target: "
            f"{_pct(f['into_clean']['value'])} % clean → {_pct(f['into_adv']['value'])} % under attack "
            f"(n={f['into_clean']['n']}; {f['not_attacked']} samples of other classes not attacked)"
        )
    for n in notes:
        console.print(f"[dim]•[/dim] {escape(n)}")
    return heads


def _cost_text(s: dict[str, Any]) -> str:
    return f"{s['cost_clean']:.3g} → {s['cost_adv']:.3g}" if "cost_clean" in s else "–"


def _risk_coverage_svg(s: dict[str, Any]) -> str | None:
    """The risk–coverage curves (accuracy vs coverage) clean and under attack, as an SVG data URI."""
    from .report.figures import _mpl, _svg_uri

    if not s["risk_coverage_clean"]:
        return None
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(3.8, 2.8))
    for side, style, name in (("clean", "--", "clean"), ("adv", "-", "under attack")):
        pts = s[f"risk_coverage_{side}"]
        if pts:
            ax.plot(
                [100 * c for c, _, _ in pts],
                [100 * a for _, a, _ in pts],
                style,
                marker="o",
                ms=3,
                color="#64748b" if side == "clean" else "#dc2626",
                label=name,
            )
    ax.set_xlabel("coverage % (most confident kept)")
    ax.set_ylabel("accuracy %")
    ax.invert_xaxis()
    ax.set_title(f"{s['model']}: {s['label']} {s['norm']} {s['eps_text']}", fontsize=9)
    ax.legend(fontsize=8)
    return _svg_uri(fig)


def _confusion_html(m: list[list[int]], names: list[str], title: str) -> str:
    from .report.html import _e

    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    bold = ' style="font-weight:bold"'
    body = "".join(
        f"<tr><th>{_e(names[i])}</th>"
        + "".join(f'<td class="n"{bold if i == j else ""}>{v}</td>' for j, v in enumerate(row))
        + "</tr>"
        for i, row in enumerate(m)
    )
    return (
        f'<table class="lb" style="width:auto;min-width:280px"><caption>{_e(title)}</caption><thead><tr><th>true \\ predicted</th>{head}</tr>'
        f"</thead><tbody>{body}</tbody></table>"
    )


def clinical_html(
    table: pa.Table, *, headline: dict[str, Any] | None = None, costs: dict[str, Any] | None = None
) -> tuple[str, int]:
    """The report's "Per class and calibration" section body (HTML) and its number of plots: per
    model at the headline setting the full per-class table, sensitivity/specificity, confusion
    matrices clean and under attack, calibration and the risk–coverage curve; every setting in a
    compact table; the flip rate of every target-map direction."""
    from .report.html import _e

    summaries = clinical_summaries(table, costs=costs)
    if not summaries:
        return "", 0
    heads = headline_summaries(summaries, headline)
    parts, plots = [], 0

    def rate_td(r: dict[str, Any]) -> str:
        return f'<td class="n">{_e(_rate_text(r))}</td>'

    for s in heads:
        rows = "".join(
            f"<tr><td>{_e(p['name'])}</td><td class='n'>{p['n']}</td>{rate_td(p['clean'])}{rate_td(p['robust'])}</tr>"
            for p in s["per_class"]
        )
        facts = [
            f"n = {s['n']}",
            f"ECE clean {_pct(s['ece_clean'])} % → under attack {_pct(s['ece_adv'])} %",
            f"mean confidence of wrong answers {_pct(s['wrong_confidence_clean'])} % ({s['wrong_clean']} wrong) → "
            f"{_pct(s['wrong_confidence_adv'])} % ({s['wrong_adv']} wrong)",
        ]
        if "sensitivity" in s:
            facts.append(
                f"positive class {s['positive']}: sensitivity {_rate_text(s['sensitivity']['clean'])} → "
                f"{_rate_text(s['sensitivity']['adv'])} %, specificity {_rate_text(s['specificity']['clean'])} → "
                f"{_rate_text(s['specificity']['adv'])} %"
            )
        if "cost_clean" in s:
            facts.append(
                f"expected cost per sample {s['cost_clean']:.3g} → {s['cost_adv']:.3g} (max cell {s['cost_max']:g})"
            )
        if s["not_attacked"]:
            facts.append(f"{s['not_attacked']} samples of classes outside the target map not attacked")
        if s["n_adv"] < s["n"]:
            facts.append(f"confusion under attack over the {s['n_adv']} rows with an adversarial prediction")
        rc = " · ".join(
            f"{100 * c:.0f}%: {_pct(a)} → {_pct(b)}"
            for (c, a, _), (_, b, _) in zip(s["risk_coverage_clean"], s["risk_coverage_adv"])
        )
        uri = _risk_coverage_svg(s)
        plots += bool(uri)
        fig = (
            (
                f'<figure class="plot"><img alt="risk-coverage {_e(s["model"])}" src="{uri}"><figcaption>Accuracy '
                "when the model abstains on its least confident samples (dashed: clean; solid: under attack)."
                "</figcaption></figure>"
            )
            if uri
            else ""
        )
        parts.append(
            f'<div class="card" style="margin-bottom:16px"><h3 style="margin-top:0">{_e(s["model"])} on '
            f"{_e(s['dataset'])} · {_e(s['label'])} {_e(s['norm'])} ε={_e(s['eps_text'])}</h3>"
            f'<p class="sub">{"; ".join(_e(f) for f in facts)}</p>'
            '<div class="scroll"><table class="lb"><thead><tr><th>Class</th><th>n</th><th>Clean % (95% CI)</th>'
            f"<th>Robust % ≤ (95% CI)</th></tr></thead><tbody>{rows}</tbody></table></div>"
            f'<div class="scroll" style="display:flex;gap:24px;flex-wrap:wrap">'
            f"{_confusion_html(s['confusion_clean'], s['class_names'], 'clean')}"
            f"{_confusion_html(s['confusion_adv'], s['class_names'], 'under attack')}</div>"
            f'<p class="sub">Risk–coverage (coverage: accuracy clean → under attack): {_e(rc)}</p>{fig}</div>'
        )
    flips = flip_rates(table)
    if flips:
        body = "".join(
            f"<tr><td>{_e(f['model'])}</td><td>{_e(f['label'])} {_e(f['norm'])} {_e(f['eps_text'])}</td>"
            f"<td>{_e(f['direction'])}</td>{rate_td(f['flip'])}{rate_td(f['into_clean'])}{rate_td(f['into_adv'])}"
            f"<td class='n'>{f['not_attacked']}</td></tr>"
            for f in flips
        )
        parts.append(
            '<h3>Clinically costly directions (target map)</h3><p class="sub">Targeted attacks in the named directions '
            "only. Flip rate: share of the source samples classified correctly clean whose adversarial prediction is the "
            "target; predicted as target: share of all source samples, clean and under attack.</p>"
            '<div class="card"><div class="scroll"><table class="lb"><thead><tr><th>Model</th><th>Setting</th>'
            "<th>Direction</th><th>Flip rate % (95% CI)</th><th>Predicted as target clean %</th>"
            "<th>under attack %</th><th>Not attacked</th></tr></thead><tbody>" + body + "</tbody></table></div></div>"
        )
    compact = "".join(
        f"<tr><td>{_e(s['model'])}</td><td>{_e(s['label'])} {_e(s['norm'])} {_e(s['eps_text'])}</td>"
        f"<td>{_e(s['worst_class']['name']) if s['worst_class'] else '–'}</td>"
        f"{rate_td(s['worst_class']['robust']) if s['worst_class'] else '<td>–</td>'}"
        f"<td class='n'>{_pct(s['sensitivity']['adv']['value']) if 'sensitivity' in s else '–'}</td>"
        f"<td class='n'>{_pct(s['specificity']['adv']['value']) if 'specificity' in s else '–'}</td>"
        f"<td class='n'>{_pct(s['ece_clean'])} → {_pct(s['ece_adv'])}</td>"
        f"<td class='n'>{_cost_text(s)}</td></tr>"
        for s in summaries
    )
    parts.append(
        '<h3>Every setting</h3><div class="card"><div class="scroll"><table class="lb"><thead><tr><th>Model</th>'
        "<th>Setting</th><th>Worst class</th><th>Its robust % (95% CI)</th><th>Sens. % under attack</th>"
        "<th>Spec. % under attack</th><th>ECE % clean → adv</th><th>Cost/sample clean → adv</th></tr></thead><tbody>"
        + compact
        + "</tbody></table></div></div>"
    )
    intro = (
        f'<p class="sub">From the rows: per true class, clean accuracy and robust accuracy (correct clean and under '
        f"attack; an upper bound) with {INTERVAL_METHOD} intervals, which cover test-set sampling, not the "
        f"attack's weakness. Calibration: ECE with {summaries[0]['ece_method']}, the mean confidence of wrong "
        "answers, and accuracy when the model abstains on its least confident samples. Cost: the mean of "
        "C[true, predicted] of the run's cost matrix.</p>"
    )
    return intro + "".join(parts), plots
