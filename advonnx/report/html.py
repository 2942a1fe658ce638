"""The report's HTML pieces: the leaderboard per model, every setting, the per-finding and
cascade tables, the contrast callouts, the masking verdicts and the model cards, all rendered
from a :class:`~advonnx.summary.RunSummary`; the page's CSS and script are package files
(``style.css``, ``report.js``) read with ``importlib.resources``."""

from __future__ import annotations

import html
import math
from collections import defaultdict
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..summary import ModelSummary, RunSummary, SettingSummary, headline_for, percent


def _asset(name: str) -> str:
    return files("advonnx.report").joinpath(name).read_text(encoding="utf-8")


CSS = _asset("style.css")
JS = _asset("report.js")

NORM_NAMES = {"linf": "L∞", "l2": "L2", "l0": "L0", "none": ""}


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v) -> str:
    """Sort key for a table cell (empty sorts last)."""
    return "" if _nan(v) else f"{float(v):.10g}"


def _setting_name(s: SettingSummary | dict[str, Any]) -> str:
    """A setting (summary or example-panel dict) as the report names it: ``pgd · L∞ · ε=2/255``."""
    if isinstance(s, SettingSummary):
        s = {"kind": s.kind, "attack": s.attack, "eps_text": s.eps_text, "label": s.label, "norm": s.norm}
    if s.get("kind") == "corruption":
        return f"{s['attack']} · severity {s['eps_text']}"
    return f"{s.get('label') or s['attack']} · {NORM_NAMES.get(s['norm'], s['norm'])} · ε={s['eps_text']}"


def _setting_text(h: dict) -> str:
    """A headline setting as text: ``pgd L∞ ε=2/255``."""
    return f"{h.get('attack', '')} {NORM_NAMES.get(h.get('norm', ''), h.get('norm', ''))} ε={h.get('eps', '')}"


def _class_names(meta: dict) -> dict[str, list[str]]:
    """Class names per model: run metadata specs, else the model file's advonnx.class_names."""
    out: dict[str, list[str]] = {}
    specs = meta.get("specs") or {}
    for name, spec in specs.items():
        names = spec.get("class_names") or spec.get("classes")
        if names:
            out[name] = [str(n) for n in names]
    for m in (meta.get("config") or {}).get("models", []):
        name, path = m.get("name"), m.get("path")
        if not name or name in out or not path or not Path(path).is_file():
            continue
        try:
            import onnx

            model = onnx.load(path, load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            raw = props.get("advonnx.class_names")
            if raw:
                out[name] = [n.strip() for n in raw.split(",")]
        except Exception:  # a moved or unreadable model only costs the class names
            continue
    return out


def _class_label(names: dict[str, list[str]], model: str, k) -> str:
    if k is None:
        return "?"
    ns = names.get(model) or []
    if np.ndim(k) == 1:  # a multi-label decision vector: the findings present
        on = [_class_label(names, model, i).removeprefix("class ") for i in np.flatnonzero(np.asarray(k) == 1)]
        return "+".join(on) or "no finding"
    k = int(k)
    return ns[k] if 0 <= k < len(ns) else f"class {k}"


def _masking_html(result: dict[str, Any]) -> str:
    """One row per model: the verdict and every check with its evidence."""
    from ..masking import CHECK_TITLES, NOT_CHECKED

    models = [m for m in result["models"] if m["verdict"] != NOT_CHECKED]
    if not models:
        return '<p class="sub">No model had a gradient attack to check.</p>'
    out = [
        '<div class="scroll"><table class="lb"><thead><tr><th>Model</th><th>Dataset</th><th>Verdict</th>'
        "<th>Checks and evidence</th></tr></thead><tbody>"
    ]
    for m in models:
        tag = "bad" if m["suspected"] else "ok"
        items = "".join(
            f'<li><span class="tag {"bad" if c["fired"] else "ok"}">{"fired" if c["fired"] else "passed"}'
            f"</span> {_e(CHECK_TITLES[c['check']])}: {_e(c['text'])}</li>"
            for c in m["checks"]
        )
        out.append(
            f"<tr><td><b>{_e(m['model'])}</b></td><td>{_e(m['dataset'])}</td>"
            f'<td><span class="tag {tag}">{_e(m["verdict"])}</span></td><td><ul>{items}</ul></td></tr>'
        )
    out.append("</tbody></table></div>")
    return "".join(out)


def masking_flags(result: dict[str, Any]) -> tuple[set[str], dict[tuple, str]]:
    """The models where the masking checks fired, and a note per (model, dataset, norm, eps) of a
    fired check."""
    from ..masking import CHECK_TITLES

    masked = {m["model"] for m in result["models"] if m["suspected"]}
    notes: dict[tuple, str] = {}
    for m in result["models"]:
        for c in m["checks"]:
            if c["fired"]:
                key = (m["model"], m["dataset"], c["norm"], c["eps"])
                notes[key] = "; ".join(filter(None, [notes.get(key), f"{CHECK_TITLES[c['check']]}: {c['text']}"]))
    return masked, notes


def _bar(v, color: str) -> str:
    if _nan(v):
        return ""
    return f'<span class="bar"><i style="width:{max(0.0, min(100.0, 100 * v)):.1f}%;background:{color}"></i></span>'


def _cell_ci(v, ci, color: str | None = None) -> str:
    if _nan(v):
        return '<td class="n" data-v="">–</td>'
    ci_txt = "" if _nan(ci[0]) else f' <span class="ci">{percent(ci[0])}–{percent(ci[1])}</span>'
    return f'<td class="n" data-v="{_num(v)}">{percent(v)}{ci_txt}{_bar(v, color) if color else ""}</td>'


def _flags(s: dict, masking_note: str | None) -> list[str]:
    tags = []
    for k, cls in (("invalid", "bad"), ("errored", "bad"), ("skipped", "warn")):
        if s.get(k):
            tags.append(f'<span class="tag {cls}" title="rows with status {k}">{s[k]} {k}</span>')
    if masking_note:
        tags.append(f'<span class="tag bad" title="{_e(masking_note)}">gradient masking?</span>')
    if s.get("label_source") == "clean_prediction":
        tags.append(
            '<span class="tag grey" title="no labels: the clean predictions are the reference">no labels</span>'
        )
    return tags


def _model_row(rank: int, m: ModelSummary, color: str, tags: list[str], mname: str, multi_ds: bool) -> str:
    """One row of the report's leaderboard."""
    h = m.headline
    out = ["<tr>", f'<td class="n" data-v="{rank}">{rank}</td>']
    mtag = f' <span class="ci">{_e(m.metric)}</span>' if not mname else ""
    out.append(
        f'<td data-v="{_e(m.model)}"><span class="dot" style="background:{color}"></span><b>{_e(m.model)}</b>{mtag}</td>'
    )
    if multi_ds:
        out.append(f"<td>{_e(m.dataset)}</td>")
    out.append(f"<td>{_e(m.reference.framework or '?')}</td>")
    out.append(f"<td>{''.join(f'<span class=tag>{_e(g)}</span>' for g in m.gradients)}</td>")
    out.append(_cell_ci(m.clean, m.clean_ci, "#94a3b8"))
    out.append(_cell_ci(h.robust, h.robust_ci, color) if h else '<td class="n" data-v="">–</td>')
    drop = m.drop
    out.append(f'<td class="n" data-v="{_num(drop)}">{"–" if _nan(drop) else f"{100 * drop:.1f}"}</td>')
    for w in (m.worst_attack, m.worst_corruption):
        if w is None:
            out.append('<td class="n" data-v="">–</td>')
        else:
            out.append(
                f'<td data-v="{_num(w.robust)}">{percent(w.robust)}'
                f'<br><span class="ci">{_e(_setting_name(w))}</span></td>'
            )
    none = '<span class="tag ok">none</span>'
    out.append(f"<td>{''.join(tags) or none}</td></tr>")
    return "".join(out)


def _leaderboard(
    run: RunSummary, colors: dict[str, str], masked_models: set[str], value_range_assumed: set[str]
) -> str:
    """The report's leaderboard: one row per model × dataset, ranked by the headline robust figure."""
    multi_ds = len({s.dataset for s in run.settings}) > 1
    metrics = {s.metric for s in run.settings}
    mname = {"accuracy": "acc.", "Dice": "Dice"}.get(next(iter(metrics)), "") if len(metrics) == 1 else ""
    ds_th = "<th>Dataset</th>" if multi_ds else ""
    order = sorted(
        run.models,
        key=lambda m: (
            -(m.headline.robust if m.headline and not _nan(m.headline.robust) else -1),
            (m.model, m.dataset),
        ),
    )
    out = [
        '<div class="scroll"><table class="lb sortable" id="lb-models"><thead><tr>',
        f"<th>#</th><th>Model</th>{ds_th}<th>Framework</th><th>Gradient</th>",
        f"<th>Clean {mname} %</th><th>Robust {mname} % ≤ (headline)</th><th>Drop pts</th><th>Worst attack %</th>",
        "<th>Worst corruption %</th><th>Flags</th></tr></thead><tbody>",
    ]
    for rank, m in enumerate(order, 1):
        agg = {
            "invalid": m.invalid,
            "errored": m.errored,
            "skipped": m.skipped,
            "label_source": m.reference.label_source,
        }
        tags = _flags(
            agg, "flagged by the gradient-masking checks (see Gradient masking)" if m.model in masked_models else None
        )
        if m.model in value_range_assumed:
            tags.append(
                '<span class="tag warn" title="the model declares no input value range; [0, 1] or the '
                'CLI flag was assumed, so eps units may be wrong">value range assumed</span>'
            )
        out.append(_model_row(rank, m, colors[m.model], tags, mname, multi_ds))
    out.append("</tbody></table></div>")
    return "".join(out)


def _findings_html(
    settings: tuple[SettingSummary, ...], colors: dict[str, str], names: dict[str, list[str]]
) -> tuple[str, int]:
    """Multi-label models: robust accuracy of each finding alone per attack setting (clean and
    under attack as the reference, AutoAttack's count), beside the exact-match robust accuracy."""
    rows = [s for s in settings if s.per_finding and not s.is_corruption]
    if not rows:
        return "", 0
    out = [
        '<h3>Per finding (multi-label models)</h3><p class="sub">Robust % of each finding alone: decided as the '
        "reference both clean and under attack. Exact match: every finding right (the leaderboard's robust %); "
        "Hamming: findings decided unlike the reference under attack, mean per sample.</p>"
    ]
    by_model: dict[tuple[str, str], list[SettingSummary]] = defaultdict(list)
    for s in rows:
        by_model[(s.model, s.dataset)].append(s)
    for (model, dataset), ss in sorted(by_model.items()):
        k = max(len(s.per_finding) for s in ss)
        heads = "".join(f"<th>{_e(_class_label(names, model, i))}</th>" for i in range(k))
        out.append(
            f'<div class="scroll"><table class="lb"><thead><tr><th><span class="dot" '
            f'style="background:{colors[model]}"></span>{_e(model)} · {_e(dataset)}</th>'
            f"<th>Exact match % ≤</th><th>Hamming</th>{heads}</tr></thead><tbody>"
        )
        for s in sorted(ss, key=lambda s: (s.attack, s.norm, s.eps)):
            cells = "".join(f'<td class="n">{percent(v)}</td>' for v in s.per_finding)
            ham = math.nan if s.hamming_adv is None else s.hamming_adv
            out.append(
                f'<tr><td>{_e(_setting_name(s))}</td><td class="n">{percent(s.robust)}</td>'
                f'<td class="n">{"–" if _nan(ham) else f"{ham:.2f}"}</td>{cells}</tr>'
            )
        out.append("</tbody></table></div>")
    return "".join(out), len(by_model)


def _cascade_html(rows) -> str:
    """What each stage of a cascade (autoattack) added per model (``summary.tables.cascade_stages``)."""
    if not rows:
        return ""
    out = [
        '<h3>Cascade stages</h3><p class="sub">Per model, robust accuracy after each stage of the cascade '
        "(each stage attacks only the samples earlier ones left robust; an upper bound) and the points the stage "
        'removed.</p><div class="card"><div class="scroll"><table class="lb"><thead><tr><th>Model</th>'
        "<th>Dataset</th><th>Setting</th><th>Clean %</th><th>Stages</th></tr></thead><tbody>"
    ]
    for c in rows:
        stages = " → ".join(f"{_e(label)} ≤ {percent(r)} (−{d:.1f})" for label, r, d in c["stages"])
        out.append(
            f"<tr><td>{_e(c['model'])}</td><td>{_e(c['dataset'])}</td>"
            f"<td>{_e(c['attack'])} {_e(NORM_NAMES.get(c['norm'], c['norm']))} ε={_e(c['eps_text'])}</td>"
            f'<td class="n">{percent(c["clean"])}</td><td>{stages}</td></tr>'
        )
    out.append("</tbody></table></div></div>")
    return "".join(out)


def _setting_row(s: SettingSummary, head: bool, color: str, note: str | None, multi_ds: bool) -> str:
    """One row of the report's every-setting table."""
    tags = _flags({"invalid": s.invalid, "errored": s.errored}, note)
    cls = ' class="head"' if head else ""
    out = [f"<tr{cls}>"]
    out.append(f'<td data-v="{_e(s.model)}"><span class="dot" style="background:{color}"></span>{_e(s.model)}</td>')
    if multi_ds:
        out.append(f"<td>{_e(s.dataset)}</td>")
    out.append(f"<td>{_e(s.label or s.attack)}</td><td>{_e(NORM_NAMES.get(s.norm, s.norm) or '–')}</td>")
    out.append(f'<td class="n" data-v="{_num(s.eps)}">{_e(s.eps_text)}</td>')
    out.append(f"<td>{_e(s.gradient or '–')}</td><td class='n' title='{s.groups} groups'>{s.n} ({s.groups})</td>")
    out.append(_cell_ci(s.clean, (math.nan, math.nan)))  # the same per model: its interval is in the leaderboard
    out.append(_cell_ci(s.robust, s.robust_ci, color))
    out.append(f'<td class="n" data-v="{_num(s.asr)}">{percent(s.asr)}</td>')
    mn = s.median_norm
    out.append(f'<td class="n" data-v="{_num(mn)}">{"–" if _nan(mn) else f"{mn:.3g}"}</td>')
    q, mq = s.queries, s.max_queries
    qtxt = "–" if _nan(q) else f"{q:.0f}" + (f" / {mq}" if mq else "")
    out.append(f'<td class="n" data-v="{_num(q)}">{qtxt}</td>')
    out.append(f'<td class="n" data-v="{_num(s.time_s)}">{s.time_s:.1f}</td>')
    out.append(f"<td>{''.join(tags)}</td></tr>")
    return "".join(out)


def _all_settings(run: RunSummary, colors: dict[str, str], masking_notes: dict[tuple, str]) -> str:
    """Every model × setting, sortable and filterable; the headline ones bold."""
    head_ids = {id(m.headline) for m in run.models if m.headline is not None}
    multi_ds = len({s.dataset for s in run.settings}) > 1
    ds_th = "<th>Dataset</th>" if multi_ds else ""
    out = [
        '<div class="tools"><input type="search" placeholder="Filter rows, e.g. pgd linf or brain_cnn" '
        'data-filter="lb-all" size="40" aria-label="filter settings"></div>',
        '<div class="scroll"><table class="lb sortable" id="lb-all"><thead><tr>',
        f"<th>Model</th>{ds_th}<th>Attack / corruption</th><th>Norm</th><th>ε / severity</th>",
        "<th>Gradient</th><th>n (groups)</th><th>Clean %</th><th>Robust %</th><th>ASR %</th><th>Median ‖δ‖</th>",
        "<th>Queries</th><th>Time s</th><th>Flags</th></tr></thead><tbody>",
    ]
    for s in sorted(
        run.settings, key=lambda s: (s.model, s.dataset, s.is_corruption, s.attack, s.norm, s.eps, s.label or "")
    ):
        note = masking_notes.get((s.model, s.dataset, s.norm, s.eps)) if not s.is_corruption else None
        out.append(_setting_row(s, id(s) in head_ids, colors[s.model], note, multi_ds))
    out.append("</tbody></table></div>")
    return "".join(out)


def contrast_html(contrasts, n_heads: int, headline: dict, colors: dict[str, str]) -> tuple[str, int]:
    """The "equal clean, different robust" callouts of a run's contrast pairs
    (``RunSummary.contrasts``), and the number of such pairs."""
    from ..compare import contrast_text, unproven_text

    pairs = [c for c in contrasts if c["equivalent_clean"] and c["different_robust"]]
    parts = []
    setting = _setting_text(headline)
    for c in pairs:
        lo, hi = c["lo"], c["hi"]
        metric, setting = lo["metric"], _setting_text(headline_for(headline, lo["dataset"]))
        parts.append(
            f'<div class="callout"><b class="big">Equal clean, different robust.</b> '
            f'<b style="color:{colors[hi["model"]]}">{_e(hi["model"])}</b> and '
            f'<b style="color:{colors[lo["model"]]}">{_e(lo["model"])}</b> score the same on clean {_e(lo["dataset"])} data '
            f"({percent(hi['clean'])} % vs {percent(lo['clean'])} % {metric}), but under {_e(setting)} "
            f"{_e(hi['model'])} keeps <b>{percent(hi['robust'])} %</b> while {_e(lo['model'])} falls to "
            f"<b>{percent(lo['robust'])} %</b>: a gap of <b>{100 * (hi['robust'] - lo['robust']):.1f} points</b> "
            f'that the test set alone does not show. <span class="sub">Paired test on the same samples: '
            f"{_e(contrast_text(c))}.</span></div>"
        )
    for c in contrasts:
        if c["different_robust"] and not c["equivalent_clean"]:
            parts.append(
                f'<p class="sub"><b>{_e(c["hi"]["model"])}</b> vs <b>{_e(c["lo"]["model"])}</b> under '
                f"{_e(_setting_text(headline_for(headline, c['lo']['dataset'])))}: {_e(unproven_text(c))}.</p>"
            )
    if not pairs and n_heads > 1:
        parts.append(
            f'<p class="sub">No pair of models on one dataset has clean figures equivalent within ±2 points '
            f"(TOST, p &lt; 0.05) and robust figures that differ (exact McNemar, p &lt; 0.05) under "
            f'{_e(setting)}; the paired figures are in <a href="#paired">Paired comparisons</a>.</p>'
        )
    return "".join(parts), len(pairs)


def _contrast_html(
    summaries: list[dict], heads: dict, headline: dict, colors: dict[str, str], table: pa.Table
) -> tuple[str, int]:
    """:func:`contrast_html` of the pairs ``compare.contrast_tests`` finds among ``summaries``
    (``leaderboard.summarize`` dicts)."""
    from ..compare import contrast_tests

    tested = contrast_tests(table, summaries, headline, all_pairs=True) if headline else []
    return contrast_html(tested, len(heads), headline, colors)


def _model_cards(meta: dict, run: RunSummary, colors: dict[str, str], names: dict[str, list[str]]) -> str:
    specs = meta.get("specs") or {}
    eps = meta.get("execution_providers") or {}
    out = ['<div class="models">']
    for model in sorted({s.model for s in run.settings}):
        sp = specs.get(model) or {}
        first = next(s for s in run.settings if s.model == model)
        vr = sp.get("value_range")
        items = [
            (
                "framework",
                f"{sp.get('framework') or first.framework}" + (f" ({sp['exporter']})" if sp.get("exporter") else ""),
            ),
            ("task", sp.get("task") or first.task),
            ("layout", sp.get("layout")),
            ("scores", sp.get("scores")),
            ("classes", ", ".join(names.get(model, [])) or sp.get("num_classes")),
            ("value range", f"[{vr[0]:g}, {vr[1]:g}] ({sp.get('value_range_source', '?')})" if vr else None),
            ("gradient", sp.get("gradient")),
            ("runtime", eps.get(model)),
            ("training", sp.get("training")),
        ]
        dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v not in (None, ""))
        out.append(
            f'<div class="card"><h3 style="margin-top:0"><span class="dot" style="background:{colors[model]}"></span>'
            f'{_e(model)}</h3><dl class="spec">{dl}</dl></div>'
        )
    out.append("</div>")
    return "".join(out)
