"""Run-level figures derived from the setting summaries and the rows: mean corruption robustness,
mCE and rBE, certified accuracy of randomized smoothing, the stages of a cascade, robustness
curves from minimal-norm attacks, and the per-setting difference of two result sets."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from .headline import headline_key
from .setting import setting_label, summarize

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
    by: dict[str, dict[str, dict[tuple, dict]]] = defaultdict(
        lambda: defaultdict(dict)
    )  # (dataset) -> model -> (corruption, sev) -> s
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
            rows.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "reference": ref,
                    "mean_corruption": float(np.mean([v["robust"] for v in cells.values()])),
                    "mean_balanced_error": float(np.mean([1 - v["balanced_robust"] for v in cells.values()])),
                    "mce": float(np.mean(ce)) if ce else math.nan,
                    "rbe": float(np.mean(be)) if be else math.nan,
                    "adversarial": adv.get(model, math.nan),
                    "metric": next(iter(cells.values()))["metric"],
                }
            )
    per_dataset = {}
    for dataset in by:
        paired = [
            (r["adversarial"], r["mean_corruption"])
            for r in rows
            if r["dataset"] == dataset and not math.isnan(r["adversarial"])
        ]
        per_dataset[dataset] = (spearman([p[0] for p in paired], [p[1] for p in paired]), len(paired))
    return {"rows": rows, "spearman": per_dataset}


CERTIFIED_RADII = (0.0, 0.125, 0.25, 0.5, 1.0)


def certified_curves(table: pa.Table, summaries: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per model × dataset × sigma of ``certify`` rows: certified accuracy (smoothed prediction
    right, not abstained, radius above r) at ``CERTIFIED_RADII``, and where L2 attacks ran on the
    same model, per attack eps: the smoothed classifier's certified accuracy at eps (a lower bound
    for the smoothed classifier) beside the base model's robust accuracy under the attack (an
    upper bound for the base model). They bound different classifiers; the report says so.
    ``summaries``: the table's :func:`summarize` (computed here when not given)."""
    rows = [r for r in table.to_pylist() if r.get("kind") == "certificate" and r.get("status") == "ok"]
    out = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["dataset"], r["eps"])].append(r)
    attacks = [
        s
        for s in (summarize(table) if summaries is None else summaries)
        if s.get("kind") == "adversarial" and s["norm"] == "l2" and s["metric"] == "accuracy"
    ]
    for (model, dataset, sigma), rs in sorted(groups.items()):
        radius = np.array([r["certified_radius"] or 0.0 for r in rs])
        if rs and rs[0].get("task") == "segmentation":  # SEGCERTIFY: certified pixel accuracy (abstain = wrong)
            correct = np.array([r["pixel_acc_adv"] or 0.0 for r in rs])
        else:
            correct = np.array([float(bool(r["robust"])) for r in rs])

        def at(rad: float) -> float:
            return float(np.mean(correct * (radius > rad))) if len(rs) else math.nan

        sandwich = [
            (s["eps"], at(s["eps"]), s["robust"], setting_label(s))
            for s in attacks
            if s["model"] == model and s["dataset"] == dataset
        ]
        out.append(
            {
                "model": model,
                "dataset": dataset,
                "sigma": sigma,
                "n": len(rs),
                "task": rs[0].get("task"),
                "curve": [(r, at(r)) for r in CERTIFIED_RADII],
                "sandwich": sorted(sandwich),
            }
        )
    return out


def cascade_stages(table: pa.Table) -> list[dict[str, Any]]:
    """Per model × dataset × cascade setting (rows with ``broken_by``, e.g. autoattack): clean
    accuracy and, stage by stage in the cascade's order, the robust accuracy after it and the
    points it removed (``stages``: [(stage, robust after, points removed), ...])."""
    import json

    from ..attacks.autoattack import VERSIONS, _stage

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
        out.append(
            {
                "model": model,
                "dataset": dataset,
                "attack": attack,
                "norm": norm,
                "eps": eps,
                "eps_text": eps_text or f"{eps:g}",
                "n": n,
                "clean": sum(bool(r["clean_correct"]) for r in rs) / n,
                "stages": stages,
            }
        )
    return sorted(out, key=lambda c: (c["dataset"], c["model"], c["attack"], c["norm"], c["eps"]))


def minimal_norm_curves(table: pa.Table, summaries: list[dict]) -> list[str]:
    """Robustness curves (accuracy vs eps) derived from minimal-norm attacks' per-sample norms.

    The eps grid is the budgets other attacks of the same norm used on that model, else the
    quartiles of the minimal norms found. Samples misclassified clean count as broken at 0.
    Classification only: a segmentation sample has no single "correct" (DAG's minimal norm is
    where it reached its pixel target, and its Dice under attack is in the table instead).
    """
    from ..results import attack_labels, setting_key
    from ..worst_case import robustness_curve

    rows = [
        r
        for r in table.to_pylist()
        if r.get("kind") == "adversarial" and r.get("status") == "ok" and r.get("task") == "classification"
    ]
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
        lines.append(
            f"robustness curve of {model} from {attack} minimal {norm} norms (accuracy at ‖δ‖ ≤ eps): {points}"
        )
    return lines


def compare_rows(a: pa.Table, b: pa.Table) -> list[dict[str, Any]]:
    """Per (model, dataset, attack setting, norm, eps): A's and B's clean and robust figures and
    B − A. Settings are matched by their full settings and targeting, labelled alike in A and B."""
    from ..results import attack_labels

    labels = attack_labels(r for t in (a, b) for r in t.to_pylist() if r.get("kind") != "skipped")
    key = lambda s: (s["model"], s["dataset"], s["label"], s["norm"], s["eps"])  # noqa: E731
    sa = {key(s): s for s in summarize(a, labels=labels)}
    sb = {key(s): s for s in summarize(b, labels=labels)}
    out = []
    for k in sorted(set(sa) | set(sb), key=str):
        x, y = sa.get(k), sb.get(k)
        first = x or y or {}  # k is in one of them
        row = {
            "model": k[0],
            "dataset": k[1],
            "attack": first["attack"],
            "label": k[2],
            "norm": k[3],
            "eps": k[4],
            "setting": setting_label(first),
            "metric": first["metric"],
        }
        for f in ("clean", "robust"):
            row[f"{f}_a"] = x[f] if x else math.nan
            row[f"{f}_b"] = y[f] if y else math.nan
            row[f"delta_{f}"] = (y[f] - x[f]) if x and y else math.nan
        out.append(row)
    return out
