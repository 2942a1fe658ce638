"""The report page: ``render_report`` lays out the sections of a run's summary, ``write_report``
writes it, ``write_compare_report`` writes the page of ``advonnx compare --html``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..compare import UPPER_BOUND_HTML, model_pairs, pairs_html
from ..errors import AdvonnxError
from ..results import find_run_folders, read_results, run_metadata
from ..summary import RunSummary, guess_headline, headline_for, percent, summarize_run, summarize_settings
from .examples import MAX_EXAMPLE_BYTES, _examples_html, _within_budget, collect_examples
from .figures import PALETTE, _mpl, _svg_uri, contrast_figure, curve_figures
from .html import (
    CSS,
    JS,
    _all_settings,
    _cascade_html,
    _class_names,
    _e,
    _findings_html,
    _leaderboard,
    _masking_html,
    _model_cards,
    _nan,
    _setting_text,
    contrast_html,
    masking_flags,
)


def merged_metadata(table: pa.Table, folders: list[Path]) -> dict[str, Any]:
    """The table's run metadata, with the specs and models of every run folder (``--all``)."""
    meta = run_metadata(table)
    if len(folders) < 2:
        return meta
    meta = json.loads(json.dumps(meta))
    for folder in folders:
        try:
            other = json.loads((folder / "_run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in ("specs", "execution_providers"):
            meta.setdefault(key, {})
            for k, v in (other.get(key) or {}).items():
                meta[key].setdefault(k, v)
        cfg = meta.setdefault("config", {})
        known = {m.get("name") for m in cfg.get("models", [])}
        cfg.setdefault("models", []).extend(
            m for m in (other.get("config") or {}).get("models", []) if m.get("name") not in known
        )
    return meta


def _facts_html(
    meta: dict[str, Any], run: RunSummary, table: pa.Table, folders: list[Path], title: str | None
) -> tuple[str, str]:
    """The page title and the run facts under it."""
    headline = run.headline
    run_id = meta.get("run_id") or (folders[0].name if folders else "results")
    title = title or f"advonnx robustness report · {meta.get('suite') or run_id}"
    n_samples = {(m.model, m.dataset): m.reference.n for m in run.models}
    versions = meta.get("versions") or {}
    facts = [
        ("run", run_id),
        ("started", meta.get("started")),
        ("host", meta.get("host")),
        ("models", len({s.model for s in run.settings})),
        ("settings", len(run.settings)),
        ("rows", table.num_rows),
        ("samples per model", "/".join(str(v) for v in sorted(set(n_samples.values())))),
        (
            "headline",
            "; ".join(
                [_setting_text(headline)]
                + [
                    f"{name}: {_setting_text(headline_for(headline, name))}"
                    for name in sorted(headline.get("datasets") or {})
                ]
            )
            if headline
            else None,
        ),
        ("advonnx", versions.get("advonnx")),
        ("onnxruntime", versions.get("onnxruntime")),
    ]
    return title, "".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in facts if v not in (None, ""))


def _top(meta: dict[str, Any], title: str, facts_html: str) -> list[str]:
    description = (meta.get("config") or {}).get("description") or ""
    return [
        f'<header class="top"><div class="wrap"><h1>{_e(title)}</h1>',
        f"<p>{_e(description)}</p>"
        if description
        else "<p>How far each model's performance falls between clean and perturbed inputs.</p>",
        f'<div class="facts">{facts_html}</div></div></header>',
        '<nav class="toc"><div class="wrap"><a href="#leaderboard">Leaderboard</a><a href="#masking">Gradient masking</a><a href="#contrast">Clean vs robust</a><a href="#paired">Paired</a>'
        '<a href="#curves">Robustness curves</a><a href="#clinical">Per class</a><a href="#examples">Examples</a><a href="#settings">All settings</a>'
        '<a href="#models">Models</a></div></nav><main class="wrap">',
    ]


def _leaderboard_section(
    run: RunSummary,
    colors: dict[str, str],
    masked: set[str],
    value_range_assumed: set[str],
    names: dict[str, list[str]],
) -> tuple[list[str], int]:
    """The leaderboard section (warnings, models, cascade stages, per finding) and its number of
    finding tables."""
    warn = []
    if masked:
        warn.append(
            f"<b>Gradient masking suspected</b> for {_e(', '.join(sorted(masked)))}: the checks in "
            '<a href="#masking">Gradient masking</a> fired, so the white-box robust figures are likely '
            "optimistic."
        )
    bad = sum(s.invalid + s.errored for s in run.settings)
    if bad:
        warn.append(f"<b>{bad} rows</b> are invalid (NaN/Inf outputs) or errored and are left out of every figure.")
    body = [
        '<section id="leaderboard"><h2>Leaderboard</h2><p class="sub">One row per model, ranked by robust '
        f"{_e(' / '.join(sorted({s.metric for s in run.settings})))} at the headline setting; click a column "
        "header to sort. Only rows with status ok enter the figures.</p>"
        f'<div class="callout">{UPPER_BOUND_HTML}</div>'
    ]
    body.extend(f'<div class="callout warn">{w}</div>' for w in warn)
    body.append(f'<div class="card">{_leaderboard(run, colors, masked, value_range_assumed)}</div>')
    body.append(_cascade_html(run.cascades))
    findings_html, n_findings = _findings_html(run.settings, colors, names)
    if findings_html:
        body.append(f'<div class="card">{findings_html}</div>')
    body.append("</section>")
    return body, n_findings


def _masking_section(masking: dict[str, Any]) -> str:
    return (
        '<section id="masking"><h2>Gradient masking</h2><p class="sub">Checks after Athalye et al. (2018), '
        "paired per sample (exact McNemar tests, p &lt; 0.05): query-only attacks must not beat gradient "
        "attacks, single steps must not beat iterations, 5× the steps must not gain more than 2 points, and "
        "half the value range (linf) must leave no sample robust. Extra attacks the checks add run on the "
        f'first samples of each dataset (noted in the evidence).</p><div class="card">{_masking_html(masking)}'
        "</div></section>"
    )


def _contrast_section(contrast: str, contrast_uri: str | None) -> list[str]:
    body = [
        '<section id="contrast"><h2>Equal clean, different robust?</h2><p class="sub">Clean versus robust '
        "performance at the headline setting (Paschali et al., MICCAI 2018: models that generalize equally "
        "well can differ widely in robustness).</p>",
        contrast,
    ]
    if contrast_uri:
        body.append(
            f'<div class="card"><figure class="plot"><img alt="clean vs robust at the headline setting" '
            f'src="{contrast_uri}"><figcaption>Pale bars: clean; solid bars: under attack at the headline '
            f"setting; whiskers: 95 % intervals (Wilson; Dice: cluster bootstrap).</figcaption></figure></div>"
        )
    body.append("</section>")
    return body


def _paired_sections(table: pa.Table) -> list[str]:
    """Paired comparisons, the transfer matrix and universal perturbations."""
    from ..transfer_matrix import transfer_html
    from ..universal_summary import uap_html

    body = [
        '<section id="paired"><h2>Paired comparisons</h2><p class="sub">Every two models on the same '
        "samples (same dataset and setting): robust difference (second − first) with a paired cluster-"
        "bootstrap interval and an exact McNemar p-value (Dice: paired t on group means); clean difference "
        "and the TOST p-value of clean equivalence within ±2 points.</p>"
        f'<div class="card">{pairs_html(model_pairs(table))}</div></section>'
    ]
    transfer_body, uap_body = transfer_html(table, _e), uap_html(table, _e)
    if transfer_body:
        body.append(
            '<section id="transfer"><h2>Transfer matrix</h2><p class="sub">Rows: the model whose adversarial '
            "examples are fed (source); columns: the model judging them (target). Transfer rate = share of the "
            "source's examples, among samples both classify correctly clean and the source's attack broke, that "
            f"the target also gets wrong; 95 % Wilson interval, n = those samples.</p>{transfer_body}</section>"
        )
    if uap_body:
        body.append(
            '<section id="universal"><h2>Universal perturbations</h2><p class="sub">One perturbation per model '
            "and setting (SGD variant), fitted on a share of the samples; fooling rate = share of the held-out "
            "samples whose prediction it changes (Moosavi-Dezfooli et al., CVPR 2017), 95 % Wilson interval."
            f'</p><div class="card">{uap_body}</div></section>'
        )
    return body


def _curve_section(curves: list[dict]) -> list[str]:
    body = [
        '<section id="curves"><h2>Robustness curves</h2><p class="sub">Per model and attack, how performance '
        "falls as the perturbation grows.</p>"
    ]
    if not curves:
        body.append('<p class="sub">No settings to plot.</p>')
    for f in curves:
        body.append(
            f'<div class="card" style="margin-bottom:16px"><h3 style="margin-top:0">{_e(f["title"])}</h3>'
            f'<figure class="plot"><img alt="{_e(f["title"])}" src="{f["uri"]}">'
            f"<figcaption>{_e(f['caption'])}</figcaption></figure></div>"
        )
    body.append("</section>")
    return body


def _examples_section(
    folders: list[Path],
    meta: dict[str, Any],
    names: dict[str, list[str]],
    colors: dict[str, str],
    headline: dict[str, Any],
    per_setting: int,
    max_bytes: int,
) -> tuple[str, dict[str, int]]:
    examples = collect_examples(folders, meta, names, per_setting)
    examples, omitted = _within_budget(examples, headline, max_bytes)
    examples_html, n_img = _examples_html(examples, colors, names, headline)
    if omitted:
        examples_html = (
            f'<div class="callout warn">The examples of {omitted} more settings are left out to keep this '
            f"file under {max_bytes / 1e6:.0f} MB of images (headline and strongest settings "
            "first); <code>advonnx report --examples N</code> shows fewer samples per setting.</div>" + examples_html
        )
    body = (
        '<section id="examples"><h2>Examples</h2><p class="sub">Samples the run saved: clean input, perturbed '
        "input, and the perturbation δ amplified to full contrast (red: brighter, blue: darker), with the "
        "predicted labels and confidences. Pick a setting per model.</p>" + examples_html + "</section>"
    )
    return body, {"example_images": n_img, "example_settings": len(examples), "examples_omitted": omitted}


def _report_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The row columns the plots and flags read, each row with its setting's label."""
    from ..results import attack_labels, setting_key

    rows = table.select(
        [
            c
            for c in (
                "model",
                "dataset",
                "attack",
                "kind",
                "norm",
                "eps",
                "eps_text",
                "task",
                "status",
                "max_queries",
                "queries",
                "clean_correct",
                "success",
                "value_range_declared",
                "settings",
                "targeted",
            )
            if c in table.column_names
        ]
    ).to_pylist()
    labels = attack_labels(r for r in rows if r.get("kind") != "skipped")
    return [{**r, "label": labels.get(setting_key(r))} for r in rows]


def render_report(
    table: pa.Table,
    folders: list[Path],
    *,
    title: str | None = None,
    examples_per_setting: int = 4,
    meta: dict[str, Any] | None = None,
    max_example_bytes: int = MAX_EXAMPLE_BYTES,
    costs: dict[str, Any] | None = None,
) -> tuple[str, dict[str, int]]:
    """The report's HTML and counts of what it holds (plots, example images, contrast pairs)."""
    from ..clinical_view import clinical_html

    _mpl()
    meta = merged_metadata(table, folders) if meta is None else meta
    settings = summarize_settings(table)
    if not settings:
        raise AdvonnxError("no result rows to report (every row was skipped?); check the run's data")
    run = summarize_run(table, guess_headline(settings, meta), folders=folders, settings=settings)
    headline = run.headline
    rows = _report_rows(table)
    models = sorted({s.model for s in run.settings})
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    first = {id(s): i for i, s in enumerate(run.settings)}  # the bars of equal clean figures: first-appearance order
    heads = {
        (m.model, m.dataset): m.headline
        for m in sorted(run.models, key=lambda m: first[id(m.headline)] if m.headline else -1)
        if m.headline
    }
    names = _class_names(meta)
    masked, masking_notes = masking_flags(run.masking)
    value_range_assumed = {r["model"] for r in rows if r.get("value_range_declared") is False}

    curves = curve_figures(run.settings, rows, colors)
    clinical, n_clinical_plots = clinical_html(
        table, headline=headline, costs=costs if costs is not None else meta.get("costs")
    )
    contrast_uri = contrast_figure(heads, colors, headline)
    contrast, n_pairs = contrast_html(run.contrasts, len(heads), headline, colors)
    examples_html, example_stats = _examples_section(
        folders, meta, names, colors, headline, examples_per_setting, max_example_bytes
    )
    title, facts_html = _facts_html(meta, run, table, folders, title)
    run_id = meta.get("run_id") or (folders[0].name if folders else "results")
    versions = meta.get("versions") or {}

    body = _top(meta, title, facts_html)
    leaderboard, n_findings = _leaderboard_section(run, colors, masked, value_range_assumed, names)
    body += leaderboard
    body.append(_masking_section(run.masking))
    body += _contrast_section(contrast, contrast_uri)
    body += _paired_sections(table)
    body += _curve_section(curves)
    if clinical:
        body.append(f'<section id="clinical"><h2>Per class, costly directions and calibration</h2>{clinical}</section>')
    body.append(examples_html)
    body.append(
        '<section id="settings"><h2>All settings</h2><p class="sub">Every model × attack setting; ASR is the '
        "share of the samples classified correctly before the attack that it broke; robust = classified "
        "correctly clean and under attack (NaN/Inf outputs count as broken); median ‖δ‖ over broken "
        "samples (L2 for corruptions). Bold rows: the headline setting.</p>"
    )
    body.append(f'<div class="card">{_all_settings(run, colors, masking_notes)}</div></section>')
    body.append(f'<section id="models"><h2>Models</h2>{_model_cards(meta, run, colors, names)}</section>')
    vers = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    body.append(
        f'</main><footer><div class="wrap">Generated by advonnx from {_e(run_id)}'
        f"{' · ' + _e(vers) if vers else ''}{' · ' + _e(meta.get('platform')) if meta.get('platform') else ''}."
        "</div></footer>"
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{''.join(body)}"
        f"<script>{JS}</script></body></html>"
    )
    stats = {
        "plots": len(curves) + bool(contrast_uri) + n_clinical_plots,
        **example_stats,
        "contrast_pairs": n_pairs,
        "settings": len(run.settings),
        "models": len(models),
        "finding_tables": n_findings,
    }
    return page, stats


def _folders_for(path: Path, all_runs: bool) -> list[Path]:
    if path.is_file():
        return [path.parent]
    runs = find_run_folders(path)
    if runs:
        return runs if all_runs else runs[-1:]
    return [path]


def write_report(
    path: str | Path,
    output: str | Path = "report.html",
    *,
    all_runs: bool = False,
    title: str | None = None,
    examples_per_setting: int = 4,
    costs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the HTML report of the results at ``path``; returns what it holds and its size."""
    _mpl()
    path = Path(path)
    table = read_results(path, all_runs=all_runs)
    page, stats = render_report(
        table, _folders_for(path, all_runs), title=title, examples_per_setting=examples_per_setting, costs=costs
    )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    data = page.encode("utf-8")
    output.write_bytes(data)
    return {**stats, "bytes": len(data), "path": str(output)}


def write_compare_report(
    rows: list[dict], output: str | Path, *, a_name: str, b_name: str, pairs: list[dict] | None = None
) -> dict[str, Any]:
    """A self-contained HTML page of ``leaderboard.compare_rows`` (sortable table and Δ chart) and
    of the paired comparisons ``compare.model_pairs`` (``pairs``)."""
    plt = _mpl()
    models = sorted({r["model"] for r in rows})
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    both = [r for r in rows if not _nan(r["delta_robust"])]
    chart = ""
    if both:
        fig, ax = plt.subplots(figsize=(8, max(2.0, 0.28 * len(both) + 1)))
        labels = [f"{r['model']} · {r['setting']}" for r in both]
        ax.barh(range(len(both)), [100 * r["delta_robust"] for r in both], color=[colors[r["model"]] for r in both])
        ax.set_yticks(range(len(both)), labels, fontsize=7)
        ax.axvline(0, color="#444", lw=0.8)
        ax.set_xlabel("Δ robust (points, B − A)")
        ax.invert_yaxis()
        fig.tight_layout()
        chart = f'<figure><img alt="robust difference per setting" src="{_svg_uri(fig)}"></figure>'
    head = (
        "<tr><th>Model</th><th>Dataset</th><th>Setting</th><th>Clean A</th><th>Clean B</th><th>Δ clean</th>"
        "<th>Robust A</th><th>Robust B</th><th>Δ robust</th></tr>"
    )

    def d(v):
        if _nan(v):
            return '<td data-v="">–</td>'
        cls = "pos" if v > 0 else "neg" if v < 0 else ""
        return f'<td data-v="{100 * v:.3f}" class="{cls}">{100 * v:+.1f}</td>'

    body = "".join(
        f"<tr><td>{_e(r['model'])}</td><td>{_e(r['dataset'])}</td><td>{_e(r['setting'])}</td>"
        f"<td>{percent(r['clean_a'])}</td><td>{percent(r['clean_b'])}</td>{d(r['delta_clean'])}"
        f"<td>{percent(r['robust_a'])}</td><td>{percent(r['robust_b'])}</td>{d(r['delta_robust'])}</tr>"
        for r in rows
    )
    extra = "td.pos{color:#059669;font-weight:600}td.neg{color:#dc2626;font-weight:600}"
    page = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>advonnx compare</title>"
        f"<style>{CSS}{extra}</style></head><body><header class=top><div class=wrap><h1>advonnx compare</h1>"
        f"<p>A = {_e(a_name)} · B = {_e(b_name)} · differences are B − A in points</p></div></header>"
        f"<main class=wrap>"
        + (
            f"<section><h2>Paired on the same samples</h2><p>Δ robust (second − first) with a paired cluster-bootstrap "
            f"95 % interval and an exact McNemar p-value; TOST p &lt; 0.05: clean figures equivalent within ±2 points. "
            f"{UPPER_BOUND_HTML}</p>{pairs_html(pairs)}</section>"
            if pairs is not None
            else ""
        )
        + (
            f"<section><h2>Robust difference per setting</h2>{chart}</section>"
            f"<section><h2>All settings</h2><table class=sortable><thead>{head}</thead><tbody>{body}</tbody></table>"
            f"</section>"
            if rows
            else ""
        )
        + "</main>"
        f"<script>{JS}</script></body></html>"
    )
    data = page.encode("utf-8")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    return {"bytes": len(data), "rows": len(rows), "path": str(output)}
