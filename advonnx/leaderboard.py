"""Summaries derived from result rows, and the rich leaderboard.

Per (model, dataset, attack setting, norm, eps) (settings that differ, and targeted vs
untargeted, are separate settings with their own ``label``): clean and robust accuracy with 95 %
intervals (Wilson score on the effective sample size of the samples' groups; Dice: cluster
bootstrap over groups, see ``summary_stats.py``), attack success rate over the
samples the model classified correctly before the attack, median perturbation norm over broken
samples, median queries, and attack time. Segmentation rows give mean Dice instead of accuracy.
Robust accuracy counts like AutoAttack: a sample is robust when it is classified correctly both
clean and under attack. Rows with status ``ok`` enter the figures, and ``invalid`` ones (the
model gave NaN/Inf) count as broken; errored and skipped rows are counted apart. In a
worst-case run a later attack skips the samples earlier attacks already broke at or below its
eps (``worst_case.py``); its figures still cover every sample, counting those as broken, so each
attack's robust accuracy is the cumulative worst case up to it (AutoAttack's report).
Multi-label models: correct = exact match of the finding vector, so robust = every finding right
clean and under attack; ``per_finding`` gives the robust accuracy of each finding alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from .compare import contrast_text, unproven_text
from .masking import masking_checks, verdict_lines
from .summary_stats import BOOTSTRAP_METHOD, PROPORTION_METHOD, interval

BOOTSTRAP = 1000


def bootstrap_ci(values: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean (NaN for fewer than 2 values)."""
    values = np.sort(np.asarray(values, dtype=np.float64))  # independent of row order
    if values.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(BOOTSTRAP, values.size))
    means = values[idx].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def _median(values) -> float:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else math.nan




def _carried(r: dict[str, Any]) -> bool:
    """A worst-case row: the attack skipped a sample that an earlier attack broke (or that the
    model gets wrong unattacked)."""
    from .target_map import not_attacked  # a target map's unattacked classes are not broken

    return (r.get("status") == "skipped" and r.get("kind") == "adversarial" and r.get("task") == "classification"
            and not not_attacked(r))


def per_finding(rows: list[dict[str, Any]]) -> list[float]:
    """Multi-label rows: robust accuracy per finding k, counted like AutoAttack (finding k decided
    as the reference both clean and under attack; invalid rows broken), over the rows attacked
    here (ok and invalid); [] for other models."""
    rows = [r for r in rows if r.get("label_vector") is not None and r.get("adv_vector") is not None
            and r["status"] in ("ok", "invalid")]
    if not rows:
        return []
    ref = np.array([r["label_vector"] for r in rows])
    good = (np.array([r["clean_vector"] for r in rows]) == ref) & (np.array([r["adv_vector"] for r in rows]) == ref)
    good &= np.array([r["status"] == "ok" for r in rows])[:, None]
    return [float(v) for v in good.mean(axis=0)]


def _counted(r: dict[str, Any]) -> dict[str, Any]:
    """A classification row as AutoAttack counts it: ``robust`` = clean correct AND adversarially
    correct; an invalid row (NaN/Inf outputs) and a worst-case carried row are broken."""
    broken = r["status"] == "invalid" or _carried(r)
    return {**r, "robust": bool(not broken and r["clean_correct"] and r["adv_correct"])}


def summarize(table: pa.Table, *, labels: dict | None = None) -> list[dict[str, Any]]:
    """One summary dict per (model, dataset, attack setting, norm, eps): settings that differ
    (``settings`` column) or targeting are separate summaries, named by ``label``
    (``results.attack_labels``; pass ``labels`` to share them across tables)."""
    from .results import attack_labels, setting_key

    rows = table.to_pylist()
    labels = labels or attack_labels(r for r in rows if r.get("kind") != "skipped")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("kind") in ("skipped", "check", "transfer"):  # check: extra attacks of masking.py, on a subset
            continue
        if r.get("uap_split") == "fit":  # a universal perturbation counts on its held-out samples only
            continue
        groups[(r["model"], r["dataset"], r["attack"], r["norm"], r["eps"], r.get("eps_text") or "",
                setting_key(r))].append(r)
    skipped = defaultdict(int)
    for r in rows:
        if r.get("kind") == "skipped":
            skipped[(r["model"], r["dataset"])] += 1
    out = []
    for (model, dataset, attack, norm, eps, eps_text, skey), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        carried = [r for r in rs if _carried(r)]
        invalid = [r for r in rs if r["status"] == "invalid"]
        first = rs[0]
        seg = first["task"] == "segmentation"
        s: dict[str, Any] = {
            "model": model, "dataset": dataset, "attack": attack, "norm": norm, "eps": eps,
            "label": labels.get(skey, attack), "settings": first.get("settings"), "targeted": skey[2],
            "eps_text": eps_text or f"{eps:g}", "framework": first["framework"], "task": first["task"],
            "gradient": next((r["gradient"] for r in ok if r["gradient"]), first["gradient"] or ""),
            "label_source": first["label_source"], "carried": len(carried),
            "n": len(ok) + (0 if seg else len(carried) + len(invalid)),
            "kind": first.get("kind") or "adversarial",
            "invalid": len(invalid),
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
            counted = []
        else:
            counted = [_counted(r) for r in ok + carried + invalid]
            clean = np.array([bool(r["clean_correct"]) for r in counted], dtype=np.float64)
            robust = np.array([r["robust"] for r in counted], dtype=np.float64)
            correct = [r for r in counted if r["clean_correct"]]
            # attacked here and broken: their norms are the medians below
            broken = [r for r in correct if r["status"] == "ok" and not r["robust"]]
            s["asr"] = (sum(not r["robust"] for r in correct) / len(correct)) if correct else math.nan
        s["clean"] = float(clean.mean()) if clean.size else math.nan
        s["robust"] = float(robust.mean()) if robust.size else math.nan
        s["balanced_robust"] = robust.mean() if seg or not counted else _balanced(counted, "robust")
        s["balanced_clean"] = clean.mean() if seg or not counted else _balanced(counted, "clean_correct")
        groups = [r.get("group") or r["sample_id"] for r in (ok if seg else counted)]
        s["groups"] = len(set(groups))
        s["clean_ci"] = interval(clean, groups, proportion=not seg)
        s["robust_ci"] = interval(robust, groups, proportion=not seg)
        s["ci_method"] = BOOTSTRAP_METHOD if seg else PROPORTION_METHOD
        norm_col = norm if norm in ("linf", "l2", "l0") else "l2"
        s["median_norm"] = _median(r[norm_col] for r in broken)
        minimal = [r["min_norm"] for r in ok if r.get("min_norm") is not None and math.isfinite(r["min_norm"])]
        s["median_min_norm"] = float(np.median(minimal)) if minimal else math.nan
        s["mean_min_norm"] = float(np.mean(minimal)) if minimal else math.nan
        budget = next((r.get("max_queries") for r in ok if r.get("max_queries")), None)
        s["max_queries"] = budget
        s["curve"] = [] if seg else query_curve(ok, budget)
        s["metric"] = "Dice" if seg else "accuracy"
        s["per_finding"] = [] if seg else per_finding(rs)
        if s["per_finding"]:
            s["hamming_adv"] = float(np.mean([r["hamming_adv"] for r in ok])) if ok else math.nan
        s.update(_masking_counts(rs))
        out.append(s)
    return out


QUERY_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def _masking_counts(rs: list[dict]) -> dict[str, Any]:
    """Self-inflicted masking facts of one setting: straight-through ops of its exact gradients,
    samples whose first gradient was exactly 0, samples with saturated float32 probabilities."""
    ok = [r for r in rs if r["status"] == "ok"]
    return {"straight_through": next((r["straight_through"] for r in ok if r.get("straight_through")), ""),
            "zero_gradient": sum(bool(r.get("zero_gradient")) for r in ok),
            "saturated": sum(bool(r.get("saturated")) for r in ok)}


def masking_notes(summaries: list[dict]) -> list[str]:
    """Leaderboard notes: straight-through gradients, zero first gradients, saturated probabilities."""
    notes = []
    straight = sorted({(s["model"], s["straight_through"]) for s in summaries if s.get("straight_through")})
    for model, ops in straight:
        notes.append(f"{model}: gradients exact + straight-through: {ops.replace(',', ', ')} "
                     "(piecewise-constant ops passed as the identity, BPDA)")
    for s in summaries:
        if s.get("zero_gradient") and s.get("kind") == "adversarial":
            notes.append(f"[bold red]zero gradient:[/bold red] {s['model']} · {setting_label(s)}: {s['zero_gradient']} of "
                         f"{s['n']} samples had an exactly zero input gradient at the first step (masked or flat)")
    sat: dict[str, int] = {}
    for s in summaries:
        if s.get("saturated"):
            sat[s["model"]] = max(sat.get(s["model"], 0), s["saturated"])
    for model, k in sorted(sat.items()):
        notes.append(f"[bold red]saturated probabilities:[/bold red] {model}: {k} samples score p = 1 exactly in float32 "
                     "(attacks see probabilities only: their losses give no gradient there)")
    return notes


def _balanced(rows: list[dict], column: str) -> float:
    """Balanced accuracy: the mean over true classes of the per-class rate of ``column``."""
    by_class: dict[int, list[bool]] = defaultdict(list)
    for r in rows:
        by_class[r["label"]].append(bool(r[column]))
    return float(np.mean([np.mean(v) for v in by_class.values()])) if by_class else math.nan


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 2 points."""
    if len(a) < 2:
        return math.nan

    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for val in np.unique(v):
            tie = v == val
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def corruption_summary(summaries: list[dict], headline: dict[str, Any], reference: str | None = None) -> dict[str, Any]:
    """Per model and dataset: mean corruption accuracy (or Dice), mCE and relative balanced error.

    mCE as in ImageNet-C (Hendrycks & Dietterich 2019): per corruption, the model's errors summed
    over severities divided by the reference model's, then averaged over corruptions. The balanced
    error (MedMNIST-C, Di Salvo et al. 2024) is 1 − balanced accuracy, normalized the same way
    (rBE). Error is 1 − accuracy (1 − Dice for segmentation). The reference model is ``reference``
    or the first model (by name) of each dataset. Also gives Spearman's rank correlation between
    adversarial robustness at the headline setting and mean corruption robustness across models.
    """
    corr = [s for s in summaries if s.get("kind") == "corruption"]
    if not corr:
        return {"rows": [], "spearman": {}}
    by = defaultdict(lambda: defaultdict(dict))  # (dataset) -> model -> (corruption, sev) -> s
    for s in corr:
        by[s["dataset"]][s["model"]][(s["attack"], s["eps"])] = s
    adv = headline_key(summaries, headline)
    rows = []
    for dataset, models in by.items():
        ref = reference if reference in models else sorted(models)[0]
        for model, cells in sorted(models.items()):
            ce, be = [], []
            for c in sorted({k[0] for k in cells}):
                sev = [k for k in cells if k[0] == c]
                mine = [1 - cells[k]["robust"] for k in sev]
                theirs = [1 - models[ref][k]["robust"] for k in sev if k in models[ref]]
                mine_b = [1 - cells[k]["balanced_robust"] for k in sev]
                theirs_b = [1 - models[ref][k]["balanced_robust"] for k in sev if k in models[ref]]
                if len(theirs) == len(mine) and sum(theirs) > 0:
                    ce.append(sum(mine) / sum(theirs))
                if len(theirs_b) == len(mine_b) and sum(theirs_b) > 0:
                    be.append(sum(mine_b) / sum(theirs_b))
            rows.append({
                "model": model, "dataset": dataset, "reference": ref,
                "mean_corruption": float(np.mean([v["robust"] for v in cells.values()])),
                "mean_balanced_error": float(np.mean([1 - v["balanced_robust"] for v in cells.values()])),
                "mce": float(np.mean(ce)) if ce else math.nan, "rbe": float(np.mean(be)) if be else math.nan,
                "adversarial": adv.get(model, math.nan), "metric": next(iter(cells.values()))["metric"],
            })
    per_dataset = {}
    for dataset in by:
        paired = [(r["adversarial"], r["mean_corruption"]) for r in rows
                  if r["dataset"] == dataset and not math.isnan(r["adversarial"])]
        per_dataset[dataset] = (spearman([p[0] for p in paired], [p[1] for p in paired]), len(paired))
    return {"rows": rows, "spearman": per_dataset}


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


def headline_for(headline: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    """The headline setting of one dataset: ``headline`` with its ``datasets.<name>`` override
    (a suite mixing images and tabular data needs a budget per dataset)."""
    headline = headline or {}
    base = {k: v for k, v in headline.items() if k != "datasets"}
    return {**base, **((headline.get("datasets") or {}).get(dataset) or {})}


def headline_key(summaries: list[dict], headline: dict[str, Any]) -> dict[str, float]:
    """Robust figure per model at the headline setting (for sorting)."""
    ranked: dict[str, tuple[int, float]] = {}
    for s in summaries:
        h = headline_for(headline, s["dataset"])
        want_attack, want_norm, want_eps = h.get("attack"), h.get("norm"), h.get("eps")
        if want_attack and s["attack"] != want_attack or want_norm and s["norm"] != want_norm:
            continue
        if want_eps is not None and str(want_eps) not in (s["eps_text"], f"{s['eps']:g}"):
            try:
                from .spec import _fraction

                if not math.isclose(float(_fraction(want_eps)), s["eps"], rel_tol=1e-9):
                    continue
            except ValueError:
                continue
        # several settings of the headline attack (e.g. steps): the worst of them; untargeted ones
        # unless the headline says targeted or the model has only targeted ones
        rank = int(bool(s.get("targeted")) != bool(h.get("targeted", False)))
        best = ranked.get(s["model"], (2, math.inf))
        if (rank, s["robust"]) < best:
            ranked[s["model"]] = (rank, s["robust"])
    return {model: robust for model, (_, robust) in ranked.items()}


def contrast_pairs(summaries: list[dict], headline: dict[str, Any], table: pa.Table, *,
                   all_pairs: bool = False) -> list[dict[str, Any]]:
    """Model pairs on one dataset, at the headline setting, with equivalent clean figures (TOST
    within ±2 points) and different robust ones (exact McNemar p < 0.05): ``compare.contrast_tests``."""
    from .compare import contrast_tests

    return contrast_tests(table, summaries, headline, all_pairs=all_pairs) if headline else []


def interval_note(summaries: list[dict]) -> str:
    """The footer line naming the interval methods and what they cover."""
    from .summary_stats import BOOTSTRAP_METHOD, PROPORTION_METHOD

    methods = [f"accuracies: {PROPORTION_METHOD}"] if any(s["metric"] == "accuracy" for s in summaries) else []
    methods += [f"Dice, mCE: {BOOTSTRAP_METHOD}"]
    return ("95 % intervals: " + "; ".join(methods) + "; n in G groups (patient/volume: rows' group); they cover "
            "test-set sampling, not attack strength")


def setting_label(s: dict) -> str:
    if s.get("kind") == "corruption":
        return f"{s['attack']} sev {s['eps_text']}"
    return f"{s.get('label') or s['attack']} {s['norm']} {s['eps_text']}"


def percent(v) -> str:
    """A fraction as a percentage with one decimal; "–" for a missing value or NaN."""
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def _ci(v: float, ci: tuple[float, float]) -> str:
    if math.isnan(v):
        return "–"
    if math.isnan(ci[0]):
        return percent(v)
    return f"{percent(v)} [dim]({percent(ci[0])}–{percent(ci[1])})[/dim]"


def render(table: pa.Table, console, *, headline: dict[str, Any] | None = None, title: str = "advonnx leaderboard",
           costs: dict[str, Any] | None = None):
    """Print the leaderboard of a result table to a rich console."""
    from rich.table import Table

    summaries = summarize(table)
    if not summaries:
        console.print("[yellow]no result rows to show[/yellow]")
        return summaries
    headline = headline or {}
    order = headline_key(summaries, headline)
    if not getattr(console, "is_terminal", True) and console.width < 110:
        console.width = 110  # logs and pipes: wide enough for every column, no truncated settings
    summaries.sort(key=lambda s: (s["dataset"], -(order.get(s["model"], -1.0)), s["model"],
                                  s.get("kind") == "corruption", s["attack"], s["norm"], s["eps"], s["label"]))
    from rich import box

    console.print(f"[bold underline]{title}[/bold underline]")
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        groups.setdefault((s["model"], s["dataset"]), []).append(s)
    for rank, group in enumerate(groups.values(), start=1):
        s0 = group[0]
        head = (f"[bold]{rank}. {s0['model']}[/bold] on {s0['dataset']} · {s0['framework']} · "
                f"{'queries only' if s0['gradient'] in ('none', '') else s0['gradient'] + ' gradients'} · clean {s0['metric']} {_ci(s0['clean'], s0['clean_ci'])} % · n={s0['n']} in {s0.get('groups', s0['n'])} groups")
        flags = [f"{s0[k]} {k}" for k in ("invalid", "errored", "skipped") if s0[k]]
        if flags:
            head += " [red](" + ", ".join(flags) + ")[/red]"
        seg = s0["metric"] == "Dice"
        show_curve = any(g["curve"] and g["gradient"] != "exact" for g in group)
        show_min = any(not math.isnan(g.get("median_min_norm", math.nan)) for g in group)
        columns = [("Attack", "left"), ("Robust Dice" if seg else "Robust %", "right"), ("95% CI", "right")]
        columns += [("Dice drop", "right")] if seg else [("ASR %", "right")]
        columns += [] if seg else [("Med ‖δ‖", "right")]  # segmentation: no sample is "broken", no median
        columns += [("Min ‖δ‖ med/mean", "right")] if show_min else []
        columns += [("Queries", "right")]
        columns += [("ASR % at ⅒·¼·½·1 Q", "right")] if show_curve else []
        findings = max((len(g.get("per_finding") or []) for g in group), default=0)
        columns += [("Robust % per finding " + "·".join(str(k) for k in range(findings)), "right")] if findings else []
        columns += [("Time s", "right")]
        t = Table(title=head, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1))
        for name, justify in columns:
            t.add_column(name, justify=justify, no_wrap=name in ("Attack", "Queries", "Time s"),
                         min_width=14 if name == "Attack" else 11 if name == "95% CI" else None)
        for s in group:
            is_head = bool(order) and s["model"] in order and s["robust"] == order[s["model"]] \
                and s["attack"] == headline_for(headline, s["dataset"]).get("attack")
            lo, hi = s["robust_ci"]
            bound = "" if s.get("kind") == "corruption" or seg or math.isnan(s["robust"]) else (
                "≥ " if s.get("kind") == "certificate" else "≤ ")
            cells = [setting_label(s), bound + percent(s["robust"]), "–" if math.isnan(lo) else f"{percent(lo)}–{percent(hi)}"]
            cells += [f"{100 * (s['clean'] - s['robust']):.1f}"] if seg else [percent(s["asr"])]
            cells += [] if seg else ["–" if math.isnan(s["median_norm"]) else f"{s['median_norm']:.3g}"]
            if show_min:
                med, mean = s.get("median_min_norm", math.nan), s.get("mean_min_norm", math.nan)
                cells += ["–" if math.isnan(med) else f"{med:.3g}/{mean:.3g}"]
            cells += ["–" if math.isnan(s["queries"]) else f"{s['queries']:.0f}"]
            if show_curve:
                cells += ["·".join(f"{100 * a:.0f}" for _, a in s["curve"]) if s["curve"] and s["gradient"] != "exact" else "–"]
            if findings:
                cells += ["·".join(f"{100 * v:.0f}" for v in s["per_finding"]) or "–"]
            cells += [f"{s['time_s']:.1f}"]
            t.add_row(*cells, style="bold" if is_head else None)
        console.print(t)
    worst_case_table(table, console)
    cascade_table(table, console)
    from .clinical import clinical_table

    clinical_table(table, console, headline=headline, costs=costs)  # per class, costly directions, calibration
    cs = corruption_summary(summaries, headline)
    if cs["rows"]:
        ct = Table(title="Natural corruptions vs adversarial robustness", title_justify="left", header_style="bold",
                   box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        from .run_summary import corruption_intervals

        for col in ("Model", "Mean corr. %", "mCE", "rBE", "Bal. err. %", "Adv. robust %"):
            ct.add_column(col, justify="left" if col == "Model" else "right")
        for r in corruption_intervals(table, cs["rows"]):
            mce = "–" if math.isnan(r["mce"]) else f"{r['mce']:.2f}" + (
                "" if math.isnan(r["mce_ci"][0]) else f" [dim]({r['mce_ci'][0]:.2f}–{r['mce_ci'][1]:.2f})[/dim]")
            ct.add_row(r["model"], _ci(r["mean_corruption"], r["mean_corruption_ci"]),
                       mce, "–" if math.isnan(r["rbe"]) else f"{r['rbe']:.2f}",
                       percent(r["mean_balanced_error"]), percent(r["adversarial"]))
        console.print(ct)
    notes = []
    if any(s["label_source"] == "clean_prediction" for s in summaries):
        notes.append("no labels given for some data: the model's clean predictions are the reference, so clean accuracy is 100 % by construction")
    if any(s.get("kind") != "corruption" and s["metric"] == "accuracy" for s in summaries):
        notes.append("≤: robust accuracy under attack is an upper bound (robust = correct clean and under the "
                     "attack; NaN/Inf outputs count as broken); a stronger attack can only lower it")
    notes.append("ASR = share of the samples classified correctly before the attack that it broke; "
                 "median ‖δ‖ over broken samples (L2 for corruptions)")
    if any(s.get("per_finding") for s in summaries):
        notes.append("multi-label: correct = every finding decided as the reference (exact match), an untargeted attack "
                     "succeeds when any finding flips; per finding: robust % of each finding alone (findings by output index)")
    if any(s.get("carried") for s in summaries):
        notes.append("worst case: each attack skipped the samples earlier attacks broke at or below its eps and counts "
                     "them as broken, so its robust % is the worst case up to it; ‖δ‖ and queries describe the samples "
                     "it attacked")
    if headline:
        notes.append(f"sorted by robust {' / '.join(sorted({s['metric'] for s in summaries}))} at the headline setting: "
                     f"{headline.get('attack', '?')} {headline.get('norm', '')} eps={headline.get('eps', '?')} (bold)"
                     + "".join(f"; on {d}: {h.get('attack', '?')} {h.get('norm', '')} eps={h.get('eps', '?')}"
                               for d, h in (headline.get("datasets") or {}).items()))
    for c in contrast_pairs(summaries, headline, table, all_pairs=True):
        if c["equivalent_clean"] and c["different_robust"]:
            notes.append(f"[bold magenta]equal clean, different robust:[/bold magenta] {c['hi']['model']} vs "
                         f"{c['lo']['model']} at {setting_label(c['lo'])}: {contrast_text(c)}")
        elif c["different_robust"]:
            notes.append(f"different robust: {c['hi']['model']} vs {c['lo']['model']} at {setting_label(c['lo'])}: "
                         f"{unproven_text(c)}")
    notes.append(interval_note(summaries))
    notes += verdict_lines(masking_checks(table))  # per-model verdict and the evidence of fired checks
    if cs["rows"]:
        refs = sorted({r["reference"] for r in cs["rows"]})
        rhos = "; ".join(f"{d}: {'–' if math.isnan(r) else f'{r:+.2f}'} over {n} models"
                         for d, (r, n) in cs["spearman"].items())
        notes.append(f"mCE and rBE (relative balanced error) are normalized to {', '.join(refs)} (= 1.00 per dataset); "
                     f"Adv. robust = robust % at the headline setting; Spearman ρ between it and mean corruption "
                     f"robustness, per dataset: {rhos}")
    for line in minimal_norm_curves(table, summaries):
        notes.append(line)
    notes.extend(certified_lines(table))
    from .universal_summary import uap_lines

    notes.extend(uap_lines(table))
    notes.extend(masking_notes(summaries))
    if any(s["curve"] and s["gradient"] != "exact" for s in summaries):
        notes.append("ASR at ⅒·¼·½·1 of Q: success within that share of the query budget Q (queries at first success)")
    for n in notes:
        console.print(f"[dim]•[/dim] {n}")
    from .transfer_matrix import render_transfer

    render_transfer(table, console, headline)
    return summaries


CERTIFIED_RADII = (0.0, 0.125, 0.25, 0.5, 1.0)


def certified_curves(table: pa.Table) -> list[dict[str, Any]]:
    """Per model × dataset × sigma of ``certify`` rows: certified accuracy (smoothed prediction
    right, not abstained, radius above r) at ``CERTIFIED_RADII``, and where L2 attacks ran on the
    same model, per attack eps: the smoothed classifier's certified accuracy at eps (a lower bound
    for the smoothed classifier) beside the base model's robust accuracy under the attack (an
    upper bound for the base model). They bound different classifiers; the report says so."""
    rows = [r for r in table.to_pylist() if r.get("kind") == "certificate" and r.get("status") == "ok"]
    out = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["dataset"], r["eps"])].append(r)
    attacks = [s for s in summarize(table) if s.get("kind") == "adversarial" and s["norm"] == "l2"
               and s["metric"] == "accuracy"]
    for (model, dataset, sigma), rs in sorted(groups.items()):
        radius = np.array([r["certified_radius"] or 0.0 for r in rs])
        if rs and rs[0].get("task") == "segmentation":  # SEGCERTIFY: certified pixel accuracy (abstain = wrong)
            correct = np.array([r["pixel_acc_adv"] or 0.0 for r in rs])
        else:
            correct = np.array([float(bool(r["robust"])) for r in rs])

        def at(rad: float) -> float:
            return float(np.mean(correct * (radius > rad))) if len(rs) else math.nan

        sandwich = [(s["eps"], at(s["eps"]), s["robust"], setting_label(s)) for s in attacks
                    if s["model"] == model and s["dataset"] == dataset]
        out.append({"model": model, "dataset": dataset, "sigma": sigma, "n": len(rs), "task": rs[0].get("task"),
                    "curve": [(r, at(r)) for r in CERTIFIED_RADII], "sandwich": sorted(sandwich)})
    return out


def certified_lines(table: pa.Table) -> list[str]:
    """The terminal lines of :func:`certified_curves`."""
    lines = []
    for c in certified_curves(table):
        curve = " · ".join(f"{percent(a)} at {r:g}" for r, a in c["curve"])
        what = "certified pixel accuracy, abstained pixels wrong" if c.get("task") == "segmentation" else "L2"
        lines.append(f"certified (randomized smoothing, σ={c['sigma']:g}, {what}, lower bound): {c['model']} on "
                     f"{c['dataset']}: {curve} (n={c['n']})")
        for eps, low, high, label in c["sandwich"]:
            lines.append(f"  {c['model']} L2 eps={eps:g}: the smoothed classifier is certified on {percent(low)} (a lower "
                         f"bound for it); the base model under {label} keeps ≤ {percent(high)} (an upper bound for the "
                         "base model; attacking the smoothed one needs EOT over the noise)")
    return lines


def compare_rows(a: pa.Table, b: pa.Table) -> list[dict[str, Any]]:
    """Per (model, dataset, attack setting, norm, eps): A's and B's clean and robust figures and
    B − A. Settings are matched by their full settings and targeting, labelled alike in A and B."""
    from .results import attack_labels

    labels = attack_labels(r for t in (a, b) for r in t.to_pylist() if r.get("kind") != "skipped")
    key = lambda s: (s["model"], s["dataset"], s["label"], s["norm"], s["eps"])  # noqa: E731
    sa = {key(s): s for s in summarize(a, labels=labels)}
    sb = {key(s): s for s in summarize(b, labels=labels)}
    out = []
    for k in sorted(set(sa) | set(sb), key=str):
        x, y = sa.get(k), sb.get(k)
        first = x or y
        row = {"model": k[0], "dataset": k[1], "attack": first["attack"], "label": k[2], "norm": k[3], "eps": k[4],
               "setting": setting_label(first), "metric": first["metric"]}
        for f in ("clean", "robust"):
            row[f"{f}_a"] = x[f] if x else math.nan
            row[f"{f}_b"] = y[f] if y else math.nan
            row[f"delta_{f}"] = (y[f] - x[f]) if x and y else math.nan
        out.append(row)
    return out


def worst_case_table(table: pa.Table, console) -> list[dict[str, Any]]:
    """The combined worst case over attacks per model × dataset × norm × eps (``worst_case.py``):
    a sample counts as broken at eps when any attack broke it at or below eps (a minimal-norm
    result at every eps at or above its norm). Printed where a norm has two attacks or more."""
    from rich import box
    from rich.table import Table

    from .worst_case import worst_case

    rows = [r for r in worst_case(table.to_pylist()) if len(r["attacks"]) >= 2]
    if not rows:
        return rows
    t = Table(title="Worst case over attacks (robust % = no attack broke the sample at or below eps)",
              title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for col in ("Model", "Dataset", "Norm", "Eps", "Robust %", "95% CI", "n (groups)", "Attacks"):
        t.add_column(col, justify="right" if col in ("Eps", "Robust %", "95% CI", "n (groups)") else "left")
    for r in sorted(rows, key=lambda r: (r["model"], r["dataset"], r["norm"], r["eps"])):
        t.add_row(r["model"], r["dataset"], r["norm"], f"{r['eps']:.4g}", "≤ " + percent(r["robust"]),
                  f"{percent(r['ci'][0])}–{percent(r['ci'][1])}", f"{r['n']} ({r['groups']})", ",".join(r["attacks"]))
    console.print(t)
    return rows


def cascade_stages(table: pa.Table) -> list[dict[str, Any]]:
    """Per model × dataset × cascade setting (rows with ``broken_by``, e.g. autoattack): clean
    accuracy and, stage by stage in the cascade's order, the robust accuracy after it and the
    points it removed (``stages``: [(stage, robust after, points removed), ...])."""
    import json

    from .attacks.autoattack import VERSIONS, _stage

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in table.to_pylist():
        if r.get("broken_by") is not None and r.get("status") == "ok" and r.get("task") == "classification":
            groups[(r["model"], r["dataset"], r["attack"], r["norm"], r["eps"], r.get("eps_text") or "")].append(r)
    out = []
    for (model, dataset, attack, norm, eps, eps_text), rs in groups.items():
        try:
            params = json.loads(rs[0].get("settings") or "{}")
            entries = params.get("stages") or VERSIONS[params.get("version", "standard")]
            order = [_stage(e)[0] for e in entries]
        except Exception:  # settings written by another version: order of appearance
            order = []
        seen = [b for b in dict.fromkeys(r["broken_by"] for r in rs) if b not in ("", "clean")]
        order += [b for b in seen if b not in order]
        n = len(rs)
        robust = sum(bool(r["clean_correct"]) for r in rs)
        stages = []
        for label in order:
            hit = sum(r["broken_by"] == label for r in rs)
            robust -= hit
            stages.append((label, robust / n, 100.0 * hit / n))
        out.append({"model": model, "dataset": dataset, "attack": attack, "norm": norm, "eps": eps,
                    "eps_text": eps_text or f"{eps:g}", "n": n,
                    "clean": sum(bool(r["clean_correct"]) for r in rs) / n, "stages": stages})
    return sorted(out, key=lambda c: (c["dataset"], c["model"], c["attack"], c["norm"], c["eps"]))


def cascade_table(table: pa.Table, console) -> list[dict[str, Any]]:
    """What each stage of a cascade (autoattack) added, per model: robust % after the stage and
    the points it removed (robust % is an upper bound)."""
    from rich import box
    from rich.table import Table

    rows = cascade_stages(table)
    if not rows:
        return rows
    t = Table(title="Cascade stages (robust % after each stage ≤; −points the stage removed)", title_justify="left",
              header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for col in ("Model", "Dataset", "Setting", "Clean %", "Stages"):
        t.add_column(col, justify="right" if col == "Clean %" else "left")
    for c in rows:
        t.add_row(c["model"], c["dataset"], f"{c['attack']} {c['norm']} {c['eps_text']}", percent(c["clean"]),
                  " → ".join(f"{label} ≤ {percent(r)} (−{d:.1f})" for label, r, d in c["stages"]))
    console.print(t)
    return rows


def minimal_norm_curves(table: pa.Table, summaries: list[dict]) -> list[str]:
    """Robustness curves (accuracy vs eps) derived from minimal-norm attacks' per-sample norms.

    The eps grid is the budgets other attacks of the same norm used on that model, else the
    quartiles of the minimal norms found. Samples misclassified clean count as broken at 0.
    Classification only: a segmentation sample has no single "correct" (DAG's minimal norm is
    where it reached its pixel target, and its Dice under attack is in the table instead).
    """
    from .results import attack_labels, setting_key
    from .worst_case import robustness_curve

    rows = [r for r in table.to_pylist() if r.get("kind") == "adversarial" and r.get("status") == "ok"
            and r.get("task") == "classification"]
    labels = attack_labels(rows)
    minimal = defaultdict(list)
    budgets = defaultdict(set)
    for r in rows:
        key = (r["model"], r["dataset"], r["norm"])
        if r.get("min_norm") is not None:
            minimal[key + (labels[setting_key(r)],)].append(r)
        elif r.get("eps"):
            budgets[key].add(float(r["eps"]))
    lines = []
    for (model, dataset, norm, attack), rs in sorted(minimal.items()):
        norms = np.array([r["min_norm"] if r["min_norm"] is not None else np.inf for r in rs], dtype=np.float64)
        grid = sorted(budgets.get((model, dataset, norm), set()))
        finite = norms[np.isfinite(norms)]
        if not grid and finite.size:
            grid = sorted({float(q) for q in np.quantile(finite, [0.25, 0.5, 0.75])})
        if not grid:
            continue
        acc = robustness_curve(norms, [bool(r["clean_correct"]) for r in rs], grid)
        points = ", ".join(f"{e:.3g}→{100 * a:.1f}%" for e, a in zip(grid, acc))
        lines.append(f"robustness curve of {model} from {attack} minimal {norm} norms (accuracy at ‖δ‖ ≤ eps): {points}")
    return lines

