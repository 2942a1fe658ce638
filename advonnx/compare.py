"""Paired comparisons of models on the same samples, the "equal clean, different robust" test,
and the gate a CI pipeline runs, all from result rows.

Two models are *paired* when they saw the same samples (same dataset, same attack setting,
matched by ``sample_id``): per pair and setting, the robust difference (second − first) with a
paired cluster-bootstrap interval and an exact McNemar p-value (Dice: a paired t-test on group
means), and the clean difference with the TOST equivalence test at ±2 points
(``summary_stats``). Outcomes are counted as the leaderboard counts them (``leaderboard.
_counted``: robust = clean correct AND adversarially correct; invalid and worst-case carried
rows are broken).
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from typing import Any

import pyarrow as pa

from .summary_stats import ALPHA, EQUIVALENCE_MARGIN, n_groups, paired_difference, tost_paired

_KINDS = ("adversarial", "corruption")


def sample_outcomes(table: pa.Table, labels: dict | None = None) -> dict[tuple, dict[str, Any]]:
    """{(model, dataset, label, norm, eps): {"metric", "setting", "kind", "samples": {sample_id:
    (clean, robust, group)}}}: per sample, clean / robust as 0/1 (Dice values for segmentation)."""
    from .results import attack_labels, setting_key
    from .summary.setting import _carried, _counted, setting_label

    rows = [r for r in table.to_pylist() if r.get("kind") in _KINDS]
    labels = labels or attack_labels(rows)
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        seg = r.get("task") == "segmentation"
        if not (r["status"] == "ok" or (not seg and (r["status"] == "invalid" or _carried(r)))):
            continue
        label = labels.get(setting_key(r), r["attack"])
        key = (r["model"], r["dataset"], label, r["norm"], r["eps"])
        if key not in out:
            s = {
                "attack": r["attack"],
                "label": label,
                "norm": r["norm"],
                "eps_text": r.get("eps_text") or f"{r['eps']:g}",
                "kind": r["kind"],
            }
            out[key] = {
                "metric": "Dice" if seg else "accuracy",
                "setting": setting_label(s),
                "kind": r["kind"],
                "samples": {},
            }
        if seg:
            clean, robust = r["dice_clean"], r["dice_adv"]
        else:
            c = _counted(r)
            clean, robust = float(bool(c["clean_correct"])), float(c["robust"])
        out[key]["samples"][r["sample_id"]] = (clean, robust, r.get("group") or r["sample_id"])
    return out


def paired(
    first: dict[str, Any], second: dict[str, Any], *, margin: float = EQUIVALENCE_MARGIN
) -> dict[str, Any] | None:
    """The paired statistics of two outcome records (:func:`sample_outcomes` values) on their
    common samples: robust and clean differences (second − first), intervals, p-values, TOST."""
    common = sorted(set(first["samples"]) & set(second["samples"]))
    if not common:
        return None
    binary = first["metric"] == "accuracy"
    a = first["samples"]
    b = second["samples"]
    groups = [a[s][2] for s in common]
    robust = paired_difference([b[s][1] for s in common], [a[s][1] for s in common], groups, binary=binary)
    clean = paired_difference([b[s][0] for s in common], [a[s][0] for s in common], groups, binary=binary)
    tost = tost_paired([b[s][0] for s in common], [a[s][0] for s in common], groups, margin=margin)
    return {
        "n": len(common),
        "groups": n_groups(groups),
        "metric": first["metric"],
        "setting": first["setting"],
        "robust_first": robust["b"],
        "robust_second": robust["a"],
        "delta_robust": robust["diff"],
        "delta_robust_ci": robust["ci"],
        "p_robust": robust["p"],
        "robust_test": robust["test"],
        "discordant": (robust.get("only_b"), robust.get("only_a")),
        "clean_first": clean["b"],
        "clean_second": clean["a"],
        "delta_clean": clean["diff"],
        "delta_clean_ci": clean["ci"],
        "p_clean": clean["p"],
        "p_equivalent_clean": tost["p"],
        "margin": margin,
    }


def model_pairs(table_a: pa.Table, table_b: pa.Table | None = None) -> list[dict[str, Any]]:
    """Paired statistics per model pair × dataset × setting.

    One table: every two models on the same dataset and setting (``first`` < ``second`` by name).
    Two tables (A, B): each model against itself (A's rows first, B's second: B − A); when A and
    B share no model, every A model against every B model on the same dataset and setting."""
    from .results import attack_labels

    tables = [table_a] if table_b is None else [table_a, table_b]
    labels = attack_labels(r for t in tables for r in t.to_pylist() if r.get("kind") in _KINDS)
    oa = sample_outcomes(table_a, labels)
    ob = oa if table_b is None else sample_outcomes(table_b, labels)
    by_setting: dict[tuple, tuple[dict, dict]] = defaultdict(lambda: ({}, {}))
    for key, o in oa.items():
        by_setting[key[1:]][0][key[0]] = o
    for key, o in ob.items():
        by_setting[key[1:]][1][key[0]] = o
    same_models = table_b is not None and bool({k[0] for k in oa} & {k[0] for k in ob})
    out = []
    for setting, (left, right) in sorted(by_setting.items(), key=lambda kv: str(kv[0])):
        if table_b is None:
            names = sorted(left)
            combos = [(m, n) for i, m in enumerate(names) for n in names[i + 1 :]]
        elif same_models:
            combos = [(m, m) for m in sorted(set(left) & set(right))]
        else:
            combos = [(m, n) for m in sorted(left) for n in sorted(right)]
        for m, n in combos:
            stats = paired(left[m], right[n])
            if stats is None:
                continue
            out.append(
                {
                    "first": m,
                    "second": n,
                    "dataset": setting[0],
                    "label": setting[1],
                    "norm": setting[2],
                    "eps": setting[3],
                    "kind": left[m]["kind"],
                    **stats,
                }
            )
    return out


def contrast_tests(
    table: pa.Table, summaries: list[dict], headline: dict[str, Any], *, all_pairs: bool = False
) -> list[dict[str, Any]]:
    """The "equal clean, different robust" test at each dataset's headline setting: pairs of models
    whose clean figures are equivalent within ±2 points (TOST p < 0.05) and whose robust figures
    differ (exact McNemar p < 0.05; Dice: paired t). Each entry: both summaries (``lo`` the less
    robust), the paired statistics, and ``equivalent_clean`` / ``different_robust``;
    ``all_pairs``: every headline pair, passing or not."""
    from .summary.headline import headline_key

    keys = headline_key(summaries, headline)
    at = [
        s for s in summaries if s["model"] in keys and s["robust"] == keys[s["model"]] and s.get("kind") != "corruption"
    ]
    outcomes = sample_outcomes(table)
    found = []
    for i, a in enumerate(at):
        for b in at[i + 1 :]:
            if a["dataset"] != b["dataset"] or a.get("label") != b.get("label") or a["eps"] != b["eps"]:
                continue
            oa = outcomes.get((a["model"], a["dataset"], a["label"], a["norm"], a["eps"]))
            ob = outcomes.get((b["model"], b["dataset"], b["label"], b["norm"], b["eps"]))
            if oa is None or ob is None:
                continue
            lo, hi = (a, b) if a["robust"] <= b["robust"] else (b, a)
            stats = paired(oa if lo is a else ob, ob if lo is a else oa)
            if stats is None:
                continue
            flags = {
                "equivalent_clean": stats["p_equivalent_clean"] < ALPHA,
                "different_robust": stats["p_robust"] < ALPHA,
            }
            if all_pairs or all(flags.values()):
                found.append({"lo": lo, "hi": hi, **stats, **flags})
    return found


def contrast_text(c: dict[str, Any]) -> str:
    """The numbers of one contrast test, in words (terminal and report)."""
    lo, hi = c["delta_robust_ci"]
    return (
        f"clean {100 * c['delta_clean']:+.1f} points (equivalent within ±{100 * c['margin']:.0f}: TOST "
        f"{_p_is(c['p_equivalent_clean'])}), robust {100 * c['delta_robust']:+.1f} points (95 % CI "
        f"{_pts(lo)} to {_pts(hi)}; {c['robust_test']} {_p_is(c['p_robust'])}), n = {c['n']} in {c['groups']} groups"
    )


def unproven_text(c: dict[str, Any]) -> str:
    """A headline pair whose robust figures differ but whose clean equivalence is not shown."""
    lo, hi = c["delta_robust_ci"]
    return (
        f"robust {100 * c['delta_robust']:+.1f} points (95 % CI {_pts(lo)} to {_pts(hi)}; {c['robust_test']} "
        f"{_p_is(c['p_robust'])}), but clean {100 * c['delta_clean']:+.1f} points is not shown equivalent within "
        f"±{100 * c['margin']:.0f} (TOST {_p_is(c['p_equivalent_clean'])}), n = {c['n']} in {c['groups']} groups"
    )


def _pts(v: float) -> str:
    return "–" if v is None or v != v else f"{100 * v:+.1f}"


def _p(p: float) -> str:
    """A p-value for a table cell: two significant digits, "<0.0001" below that, 0 when exactly 0."""
    if p is None or p != p:
        return "–"
    return f"{p:.2g}" if p >= 1e-4 or p == 0 else "<0.0001"


def _p_is(p: float) -> str:
    """``p = 0.012`` / ``p < 0.0001`` in a sentence."""
    text = _p(p)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


def gate(
    table: pa.Table,
    *,
    min_robust: float | None = None,
    baseline: pa.Table | None = None,
    headline: dict[str, Any] | None = None,
) -> list[str]:
    """The failing models of a run, one line each (empty: pass).

    ``min_robust``: a model fails when its robust figure at the headline setting (without a
    headline: its lowest robust figure over the adversarial settings) is below the threshold.
    ``baseline``: a model fails when, on some setting it shares with the baseline run, its
    robust figure is significantly lower (paired: the 95 % cluster-bootstrap interval of the
    difference lies below 0 and the exact McNemar p < 0.05; Dice: paired t)."""
    from .summary.headline import headline_for, headline_key
    from .summary.setting import percent, setting_label, summarize

    fails: dict[str, str] = {}
    summaries = [s for s in summarize(table) if s.get("kind") == "adversarial"]
    if min_robust is not None:
        head = headline_key(summaries, headline or {}) if headline else {}
        worst: dict[tuple, dict] = {}
        for s in summaries:
            if math.isnan(s["robust"]):
                continue
            if s["model"] in head and (
                s["robust"] != head[s["model"]] or s["attack"] != headline_for(headline, s["dataset"]).get("attack")
            ):
                continue
            k = (s["model"], s["dataset"])
            if k not in worst or s["robust"] < worst[k]["robust"]:
                worst[k] = s
        for (model, dataset), s in sorted(worst.items()):
            if s["robust"] < min_robust and model not in fails:
                lo, hi = s["robust_ci"]
                fails[model] = (
                    f"{model}: robust {s['metric']} {percent(s['robust'])} % (95 % CI {percent(lo)}–"
                    f"{percent(hi)}, n = {s['n']} in {s['groups']} groups) on {dataset} under "
                    f"{setting_label(s)} is below --min-robust {100 * min_robust:g} %"
                )
    if baseline is not None:
        worse = []
        for p in model_pairs(baseline, table):
            if p["kind"] != "adversarial" or p["first"] != p["second"]:
                continue
            hi = p["delta_robust_ci"][1]
            if p["delta_robust"] < 0 and hi == hi and hi < 0 and p["p_robust"] < ALPHA:
                worse.append(p)
        for p in sorted(worse, key=lambda p: p["delta_robust"]):
            if p["second"] in fails:
                continue
            lo, hi = p["delta_robust_ci"]
            fails[p["second"]] = (
                f"{p['second']}: robust {p['metric']} {percent(p['robust_second'])} % vs baseline "
                f"{percent(p['robust_first'])} % on {p['dataset']} under {p['setting']}: "
                f"{100 * p['delta_robust']:+.1f} points (95 % CI {_pts(lo)} to {_pts(hi)}; "
                f"{p['robust_test']} {_p_is(p['p_robust'])}, n = {p['n']} in {p['groups']} groups)"
            )
    return [fails[m] for m in sorted(fails)]


UPPER_BOUND_TEXT = (
    "Robust accuracy under attack is an upper bound: it counts the samples these attacks did not break, and a "
    "stronger attack can only lower it (≤). The 95 % intervals cover test-set sampling only (which samples, or "
    "patients, happened to be in the test set): Wilson score intervals for accuracies, on the effective sample "
    "size when samples come in groups, and a percentile cluster bootstrap over groups for Dice, mCE and paired "
    "differences. They do not cover the weakness of an attack: the interval of an upper bound is still an upper bound."
)
UPPER_BOUND_HTML = html.escape(UPPER_BOUND_TEXT)


def pairs_html(pairs: list[dict[str, Any]]) -> str:
    """A sortable HTML table of :func:`model_pairs` (the report's and ``compare --html``'s)."""
    from .summary.setting import percent

    if not pairs:
        return '<p class="sub">No two models share samples on a dataset and setting.</p>'
    e = html.escape

    def num(v, text):
        return f'<td class="n" data-v="{"" if v is None or v != v else f"{v:.6g}"}">{e(text)}</td>'

    head = (
        "<tr><th>Dataset</th><th>Setting</th><th>First</th><th>Second</th><th>n (groups)</th><th>Robust first %</th>"
        "<th>Robust second %</th><th>Δ robust pts</th><th>95% CI</th><th>p</th><th>Δ clean pts</th>"
        "<th>TOST p (±2)</th></tr>"
    )
    body = []
    for p in pairs:
        lo, hi = p["delta_robust_ci"]
        body.append(
            f"<tr><td>{e(p['dataset'])}</td><td>{e(p['setting'])}</td><td>{e(p['first'])}</td><td>{e(p['second'])}</td>"
            + num(p["n"], f"{p['n']} ({p['groups']})")
            + num(p["robust_first"], percent(p["robust_first"]))
            + num(p["robust_second"], percent(p["robust_second"]))
            + num(p["delta_robust"], _pts(p["delta_robust"]))
            + f"<td>{e(_pts(lo))} to {e(_pts(hi))}</td>"
            + num(p["p_robust"], _p(p["p_robust"]))
            + num(p["delta_clean"], _pts(p["delta_clean"]))
            + num(p["p_equivalent_clean"], _p(p["p_equivalent_clean"]))
            + "</tr>"
        )
    return f'<div class="scroll"><table class="lb sortable"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'


def print_pairs(console, pairs: list[dict[str, Any]], title: str) -> None:
    """The terminal table of :func:`model_pairs` (``advonnx compare``) on a rich console."""
    from rich.markup import escape
    from rich.table import Table

    from .summary.setting import percent
    from .summary_stats import BOOTSTRAP_METHOD

    if not pairs:
        console.print("no two models share samples on a dataset and setting: nothing to pair")
        return
    t = Table(title=escape(title))
    if not console.is_terminal and console.width < 140:
        console.width = 140
    for col in (
        "Dataset",
        "Setting",
        "First → second",
        "n (groups)",
        "Robust %",
        "Δ robust (95% CI)",
        "p",
        "Δ clean",
        "TOST p",
    ):
        t.add_column(col, justify="left" if col in ("Dataset", "Setting", "First → second") else "right")
    for p in pairs:
        lo, hi = p["delta_robust_ci"]
        t.add_row(
            escape(p["dataset"]),
            escape(p["setting"]),
            escape(f"{p['first']} → {p['second']}"),
            f"{p['n']} ({p['groups']})",
            f"{percent(p['robust_first'])} → {percent(p['robust_second'])}",
            f"{_pts(p['delta_robust'])} ({_pts(lo)} to {_pts(hi)})",
            _p(p["p_robust"]),
            _pts(p["delta_clean"]),
            _p(p["p_equivalent_clean"]),
        )
    console.print(t)
    console.print(
        escape(
            f"Δ in points (second − first); 95 % CI: {BOOTSTRAP_METHOD}, paired; p: exact McNemar on the "
            "discordant samples (Dice: paired t on group means); TOST p < 0.05: clean figures equivalent "
            f"within ±2 points. {UPPER_BOUND_TEXT}"
        ),
        style="dim",
    )


__all__ = [
    "sample_outcomes",
    "paired",
    "model_pairs",
    "contrast_tests",
    "contrast_text",
    "gate",
    "pairs_html",
    "print_pairs",
    "UPPER_BOUND_TEXT",
]
