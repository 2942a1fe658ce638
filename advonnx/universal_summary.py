"""Universal perturbations in a suite: one δ per model × dataset × setting, fitted on a share of
the samples (``uap``'s ``fit_fraction``, interleaved over the dataset order: ``attacks.universal.
fit_mask``) and judged on the rest. Rows carry ``uap_split`` ("fit" | "held_out"); the
leaderboard's robust accuracy of a ``uap`` setting counts the held-out samples only, and this
module adds the paper's fooling rate on them: the share of held-out samples whose prediction δ
changes, f(x + δ) ≠ f(x) (Moosavi-Dezfooli et al., CVPR 2017), with a 95 % Wilson interval.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .stats import wilson_interval


def uap_rates(table: pa.Table) -> list[dict[str, Any]]:
    """Per (model, dataset, norm, eps, settings) of ``uap`` rows: ``fit`` and ``held_out`` sample
    counts, ``k`` held-out samples fooled (status ok, adversarial prediction ≠ clean prediction),
    ``fooling_rate`` = k / held_out with its Wilson interval ``ci``, ``fit_fooling_rate`` the same
    on the fitting samples (the gap shows how well δ generalizes), and ``robust`` = held-out
    samples correct clean and under δ."""
    if "uap_split" not in table.column_names:
        return []
    rows = table.filter(pc.is_valid(table["uap_split"])).to_pylist()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(
            (r["model"], r["dataset"], r["norm"], r["eps"], r.get("eps_text") or "", r["settings"]), []
        ).append(r)
    out = []
    for (model, dataset, norm, eps, eps_text, settings), rs in sorted(groups.items(), key=lambda kv: kv[0][:4]):
        held = [r for r in rs if r["uap_split"] == "held_out" and r["status"] == "ok"]
        fitted = [r for r in rs if r["uap_split"] == "fit" and r["status"] == "ok"]
        k = sum(r["adv_pred"] != r["clean_pred"] for r in held)
        out.append(
            {
                "model": model,
                "dataset": dataset,
                "norm": norm,
                "eps": eps,
                "eps_text": eps_text or f"{eps:g}",
                "settings": settings,
                "fit": sum(r["uap_split"] == "fit" for r in rs),
                "held_out": len(held),
                "k": k,
                "fooling_rate": k / len(held) if held else math.nan,
                "ci": wilson_interval(k, len(held)),
                "fit_fooling_rate": (
                    sum(r["adv_pred"] != r["clean_pred"] for r in fitted) / len(fitted) if fitted else math.nan
                ),
                "robust": (
                    sum(bool(r["clean_correct"] and r["adv_correct"]) for r in held) / len(held) if held else math.nan
                ),
            }
        )
    return out


def _pct(v: float) -> str:
    return "–" if math.isnan(v) else f"{100 * v:.1f}"


def uap_lines(table: pa.Table) -> list[str]:
    """Leaderboard notes: one line per universal perturbation."""
    lines = []
    for u in uap_rates(table):
        lo, hi = u["ci"]
        lines.append(
            f"universal perturbation (uap, SGD variant) {u['model']} on {u['dataset']} {u['norm']} "
            f"eps={u['eps_text']}: one δ fitted on {u['fit']} samples; on {u['held_out']} held-out samples "
            f"fooling rate (prediction changed) {_pct(u['fooling_rate'])} % ({_pct(lo)}–{_pct(hi)}), "
            f"robust {_pct(u['robust'])} %; on the fitting samples fooling rate {_pct(u['fit_fooling_rate'])} % (the "
            "leaderboard's uap rows count held-out samples only)"
        )
    return lines


def uap_html(table: pa.Table, esc) -> str:
    """The report's table of universal perturbations ('' when none)."""
    rates = uap_rates(table)
    if not rates:
        return ""
    body = "".join(
        f"<tr><td>{esc(u['model'])}</td><td>{esc(u['dataset'])}</td><td>{esc(u['norm'])} {esc(u['eps_text'])}</td>"
        f'<td class="num">{u["fit"]}</td><td class="num">{u["held_out"]}</td>'
        f'<td class="num">{_pct(u["fooling_rate"])} % ({_pct(u["ci"][0])}–{_pct(u["ci"][1])})</td>'
        f'<td class="num">{_pct(u["robust"])} %</td><td class="num">{_pct(u["fit_fooling_rate"])} %</td></tr>'
        for u in rates
    )
    return (
        "<table><thead><tr><th>Model</th><th>Dataset</th><th>Budget</th><th>Fit on</th><th>Held out</th>"
        "<th>Fooling rate (95 % Wilson)</th><th>Robust (held out)</th><th>Fooling rate on fit samples</th>"
        "</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )
