"""Summaries derived from result rows, and the rich leaderboard.

Per (model, dataset, attack, norm, eps): clean and robust accuracy with 95 % bootstrap
intervals (1000 resamples of the samples, fixed seed), attack success rate over the samples the
model classified correctly before the attack, median perturbation norm over successful samples,
median queries, and attack time. Segmentation rows give mean Dice instead of accuracy.
Only rows with status ``ok`` enter the figures; invalid/errored/skipped rows are counted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

BOOTSTRAP = 1000
EQUAL_CLEAN_POINTS = 2.0
DIFFERENT_ROBUST_POINTS = 15.0


def bootstrap_ci(values: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean (NaN for fewer than 2 values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(BOOTSTRAP, values.size))
    means = values[idx].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def _median(values) -> float:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else math.nan


def summarize(table: pa.Table) -> list[dict[str, Any]]:
    """One summary dict per (model, dataset, attack, norm, eps) setting."""
    rows = table.to_pylist()
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("kind") == "skipped":
            continue
        groups[(r["model"], r["dataset"], r["attack"], r["norm"], r["eps"], r.get("eps_text") or "")].append(r)
    skipped = defaultdict(int)
    for r in rows:
        if r.get("kind") == "skipped":
            skipped[(r["model"], r["dataset"])] += 1
    out = []
    for (model, dataset, attack, norm, eps, eps_text), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        first = rs[0]
        seg = first["task"] == "segmentation"
        s: dict[str, Any] = {
            "model": model, "dataset": dataset, "attack": attack, "norm": norm, "eps": eps,
            "eps_text": eps_text or f"{eps:g}", "framework": first["framework"], "task": first["task"],
            "gradient": next((r["gradient"] for r in ok if r["gradient"]), first["gradient"] or ""),
            "label_source": first["label_source"], "n": len(ok), "kind": first.get("kind") or "adversarial",
            "invalid": sum(r["status"] == "invalid" for r in rs),
            "errored": sum(r["status"] == "errored" for r in rs),
            "skipped": skipped[(model, dataset)],
            "time_s": float(sum(r["time_s"] or 0.0 for r in rs)),
            "queries": _median(r["queries"] for r in ok),
        }
        if seg:
            clean = np.array([r["dice_clean"] for r in ok], dtype=np.float64)
            robust = np.array([r["dice_adv"] for r in ok], dtype=np.float64)
            broken = [r for r in ok if r["success"]]
            s["asr"] = (len(broken) / len(ok)) if ok else math.nan
        else:
            clean = np.array([bool(r["clean_correct"]) for r in ok], dtype=np.float64)
            robust = np.array([bool(r["adv_correct"]) for r in ok], dtype=np.float64)
            correct = [r for r in ok if r["clean_correct"]]
            broken = [r for r in correct if r["success"]]
            s["asr"] = (len(broken) / len(correct)) if correct else math.nan
        s["clean"] = float(clean.mean()) if clean.size else math.nan
        s["robust"] = float(robust.mean()) if robust.size else math.nan
        s["clean_ci"] = bootstrap_ci(clean)
        s["robust_ci"] = bootstrap_ci(robust)
        norm_col = norm if norm in ("linf", "l2", "l0") else "l2"
        s["median_norm"] = _median(r[norm_col] for r in broken)
        budget = next((r.get("max_queries") for r in ok if r.get("max_queries")), None)
        s["max_queries"] = budget
        s["curve"] = [] if seg else query_curve(ok, budget)
        s["metric"] = "Dice" if seg else "accuracy"
        out.append(s)
    return out


QUERY_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def query_curve(rows: list[dict], budget: float | None = None, fractions=QUERY_FRACTIONS) -> list[tuple[float, float]]:
    """Success rate vs queries: ``(q, ASR over clean-correct samples broken within q queries)``.

    Query-based attacks stop a sample at its first success, so a broken sample's ``queries`` is its
    count at first success; the curve at any budget below the run's follows from the rows.
    """
    correct = [r for r in rows if r.get("clean_correct") and r.get("status") == "ok"]
    if not correct:
        return []
    budget = budget or max((r["queries"] or 0) for r in correct)
    if not budget:
        return []
    q = np.array([r["queries"] or 0 for r in correct], dtype=np.float64)
    hit = np.array([bool(r["success"]) for r in correct])
    return [(f * budget, float(np.mean(hit & (q <= f * budget)))) for f in fractions]


def gradient_masking(table: pa.Table) -> dict[str, Any]:
    """Gradient-masking check (Athalye et al. 2018) per (model, dataset, norm, eps).

    White-box = attacks run on exact gradients; black-box = query-only or estimated-gradient
    attacks. A sample is flagged when a black-box attack broke it but no white-box attack did; a
    model is flagged when its black-box robust accuracy (worst case over black-box attacks) is
    below the white-box one by more than 2 standard errors of the difference.
    """
    rows = [r for r in table.to_pylist() if r.get("kind") == "adversarial" and r["status"] == "ok"
            and r["task"] == "classification"]
    groups: dict[tuple, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: {"wb": [], "bb": []}))
    for r in rows:
        side = "wb" if r["gradient"] == "exact" else "bb"
        groups[(r["model"], r["dataset"], r["norm"], r["eps"])][r["sample_id"]][side].append(bool(r["adv_correct"]))
    out = []
    for (model, dataset, norm, eps), samples in groups.items():
        both = {sid: v for sid, v in samples.items() if v["wb"] and v["bb"]}
        if not both:
            continue
        wb = np.array([all(v["wb"]) for v in both.values()], dtype=np.float64)
        bb = np.array([all(v["bb"]) for v in both.values()], dtype=np.float64)
        flagged = sorted(sid for sid, v in both.items() if all(v["wb"]) and not all(v["bb"]))
        n = len(both)
        se = math.sqrt(wb.mean() * (1 - wb.mean()) / n + bb.mean() * (1 - bb.mean()) / n)
        gap = float(wb.mean() - bb.mean())
        out.append({"model": model, "dataset": dataset, "norm": norm, "eps": eps, "n": n,
                    "whitebox_robust": float(wb.mean()), "blackbox_robust": float(bb.mean()),
                    "se": se, "flagged": bool(gap > 2 * se and gap > 0), "flagged_samples": flagged})
    return {"settings": out, "flagged_models": sorted({s["model"] for s in out if s["flagged"]})}


def headline_key(summaries: list[dict], headline: dict[str, Any]) -> dict[str, float]:
    """Robust figure per model at the headline setting (for sorting)."""
    want_attack = headline.get("attack")
    want_norm = headline.get("norm")
    want_eps = headline.get("eps")
    scores: dict[str, float] = {}
    for s in summaries:
        if want_attack and s["attack"] != want_attack or want_norm and s["norm"] != want_norm:
            continue
        if want_eps is not None and str(want_eps) not in (s["eps_text"], f"{s['eps']:g}"):
            try:
                from .spec import _fraction

                if not math.isclose(float(_fraction(want_eps)), s["eps"], rel_tol=1e-9):
                    continue
            except ValueError:
                continue
        scores[s["model"]] = s["robust"]
    return scores


def contrast_pairs(summaries: list[dict], headline: dict[str, Any]) -> list[tuple[str, str, dict, dict]]:
    """Model pairs on one dataset with clean figures within 2 points but robust ≥ 15 apart."""
    keys = headline_key(summaries, headline)
    at = [s for s in summaries if s["model"] in keys and s["robust"] == keys[s["model"]]]
    pairs = []
    for i, a in enumerate(at):
        for b in at[i + 1:]:
            if a["dataset"] != b["dataset"] or a["attack"] != b["attack"] or a["eps"] != b["eps"]:
                continue
            if abs(a["clean"] - b["clean"]) * 100 <= EQUAL_CLEAN_POINTS and abs(a["robust"] - b["robust"]) * 100 >= DIFFERENT_ROBUST_POINTS:
                pairs.append((a["model"], b["model"], a, b))
    return pairs


def setting_label(s: dict) -> str:
    if s.get("kind") == "corruption":
        return f"{s['attack']} sev {s['eps_text']}"
    return f"{s['attack']} {s['norm']} {s['eps_text']}"


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _ci(v: float, ci: tuple[float, float]) -> str:
    if math.isnan(v):
        return "–"
    if math.isnan(ci[0]):
        return _pct(v)
    return f"{_pct(v)} [dim]({_pct(ci[0])}–{_pct(ci[1])})[/dim]"


def render(table: pa.Table, console, *, headline: dict[str, Any] | None = None, title: str = "advonnx leaderboard"):
    """Print the leaderboard of a result table to a rich console."""
    from rich.table import Table

    summaries = summarize(table)
    if not summaries:
        console.print("[yellow]no result rows to show[/yellow]")
        return summaries
    headline = headline or {}
    order = headline_key(summaries, headline)
    summaries.sort(key=lambda s: (-(order.get(s["model"], -1.0)), s["model"], s["dataset"],
                                  s.get("kind") == "corruption", s["attack"], s["norm"], s["eps"]))
    from rich import box

    console.print(f"[bold underline]{title}[/bold underline]")
    rank = 0
    last = None
    t = None
    for s in summaries:
        key = (s["model"], s["dataset"])
        if key != last:
            if t is not None:
                console.print(t)
            last = key
            rank += 1
            head = (f"[bold]{rank}. {s['model']}[/bold] on {s['dataset']} · {s['framework']} · "
                    f"{s['gradient']} gradients · clean {s['metric']} {_ci(s['clean'], s['clean_ci'])} % · n={s['n']}")
            flags = [f"{s[k]} {k}" for k in ("invalid", "errored", "skipped") if s[k]]
            if flags:
                head += " [red](" + ", ".join(flags) + ")[/red]"
            t = Table(title=head, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      pad_edge=False, padding=(0, 1))
            t.add_column("Attack", no_wrap=True)
            t.add_column("Robust %", justify="right", no_wrap=True)
            t.add_column("95% CI", justify="right", no_wrap=True)
            t.add_column("ASR %", justify="right")
            t.add_column("Med ‖δ‖", justify="right", no_wrap=True, min_width=7)
            t.add_column("Queries", justify="right", no_wrap=True)
            t.add_column("ASR % at ⅒·¼·½·1 of Q", justify="right", no_wrap=True)
            t.add_column("Time s", justify="right")
        is_head = bool(order) and s["model"] in order and s["robust"] == order[s["model"]] and s["attack"] == headline.get("attack")
        lo, hi = s["robust_ci"]
        ci = "–" if math.isnan(lo) else f"{_pct(lo)}–{_pct(hi)}"
        t.add_row(
            setting_label(s), _pct(s["robust"]), ci, _pct(s["asr"]),
            "–" if math.isnan(s["median_norm"]) else f"{s['median_norm']:.3g}",
            "–" if math.isnan(s["queries"]) else f"{s['queries']:.0f}",
            "·".join(f"{100 * a:.0f}" for _, a in s["curve"]) if s["curve"] and s["gradient"] != "exact" else "–",
            f"{s['time_s']:.1f}",
            style="bold" if is_head else None,
        )
    if t is not None:
        console.print(t)
    notes = []
    if any(s["label_source"] == "clean_prediction" for s in summaries):
        notes.append("no labels given for some data: the model's clean predictions are the reference, so clean accuracy is 100 % by construction")
    notes.append("ASR = attack success rate over the samples classified correctly before the attack; "
                 "median ‖δ‖ over successful samples (L2 for corruptions)")
    if headline:
        notes.append(f"sorted by robust {summaries[0]['metric']} at the headline setting: "
                     f"{headline.get('attack', '?')} {headline.get('norm', '')} eps={headline.get('eps', '?')} (bold)")
    for a, b, sa, sb in contrast_pairs(summaries, headline):
        notes.append(f"[bold magenta]equal clean, different robust:[/bold magenta] {a} vs {b}: clean "
                     f"{_pct(sa['clean'])} vs {_pct(sb['clean'])}, robust {_pct(sa['robust'])} vs {_pct(sb['robust'])}")
    for g in gradient_masking(table)["settings"]:
        if g["flagged"] or g["flagged_samples"]:
            notes.append(
                f"[bold red]gradient masking?[/bold red] {g['model']} {g['norm']} eps={g['eps']:g}: black-box robust "
                f"{_pct(g['blackbox_robust'])} vs white-box {_pct(g['whitebox_robust'])} (2·SE = {_pct(2 * g['se'])}); "
                f"{len(g['flagged_samples'])} samples broken only by black-box attacks"
                + (" — model flagged" if g["flagged"] else ""))
    if any(s["curve"] for s in summaries):
        notes.append("ASR at ⅒·¼·½·1 of Q: success within that share of the query budget Q (queries at first success)")
    for n in notes:
        console.print(f"[dim]•[/dim] {n}")
    return summaries
