"""The machine-readable summary of a run (``advonnx show --json``) and the intervals of the
corruption figures (mean corruption accuracy, mCE), derived from result rows only.

A run folder written before the ``group`` column existed reads with every sample its own group;
every figure the rows allow is still given.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .summary.setting import setting_label
from .summary_stats import BOOTSTRAP, BOOTSTRAP_METHOD, CONFIDENCE, PROPORTION_METHOD, _resample_counts, group_codes

SCHEMA_VERSION = 1

if TYPE_CHECKING:
    from .summary import RunSummary, SettingSummary


def corruption_intervals(table: pa.Table, rows: list[dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` of ``leaderboard.corruption_summary`` with ``mean_corruption_ci`` and ``mce_ci``:
    percentile cluster-bootstrap intervals, resampling the groups of the samples that the model
    and its reference share in every corruption cell (model and reference resampled together, so
    mCE's ratio keeps its pairing). NaN where fewer than 2 groups are shared."""
    from .compare import sample_outcomes

    cells: dict[tuple[str, str], dict[tuple, dict]] = defaultdict(dict)
    for key, o in sample_outcomes(table).items():
        if o["kind"] == "corruption":
            cells[(key[0], key[1])][(key[2], key[4])] = o["samples"]
    tail = 100 * (1 - CONFIDENCE) / 2
    out = []
    for r in rows:
        mine, ref = cells.get((r["model"], r["dataset"]), {}), cells.get((r["reference"], r["dataset"]), {})
        shared = sorted(set(mine) & set(ref))
        common = sorted(set.intersection(*(set(mine[c]) & set(ref[c]) for c in shared))) if shared else []
        ci = {"mean_corruption_ci": (math.nan, math.nan), "mce_ci": (math.nan, math.nan)}
        if common:
            codes = group_codes([mine[shared[0]][s][2] for s in common])
            g = int(codes.max()) + 1
            if g >= 2:
                err_m = np.array([[1.0 - mine[c][s][1] for s in common] for c in shared])  # (cells, n)
                err_r = np.array([[1.0 - ref[c][s][1] for s in common] for c in shared])
                sums_m = np.stack([np.bincount(codes, weights=e, minlength=g) for e in err_m])  # (cells, g)
                sums_r = np.stack([np.bincount(codes, weights=e, minlength=g) for e in err_r])
                sizes = np.bincount(codes, minlength=g).astype(np.float64)
                w = _resample_counts(g, seed, BOOTSTRAP)  # (B, g)
                bm, br = sums_m @ w.T, sums_r @ w.T  # (cells, B) error sums per resample
                mean_acc = 1.0 - (bm / (sizes @ w.T)).mean(axis=0)
                corruptions = sorted({c[0] for c in shared})
                with np.errstate(divide="ignore", invalid="ignore"):
                    ce = np.stack(
                        [
                            bm[[i for i, c in enumerate(shared) if c[0] == k]].sum(axis=0)
                            / br[[i for i, c in enumerate(shared) if c[0] == k]].sum(axis=0)
                            for k in corruptions
                        ]
                    )
                ce[~np.isfinite(ce)] = np.nan
                ok = ~np.all(np.isnan(ce), axis=0)
                mce = np.nanmean(ce[:, ok], axis=0) if ok.any() else np.array([])
                ci["mean_corruption_ci"] = (
                    float(np.percentile(mean_acc, tail)),
                    float(np.percentile(mean_acc, 100 - tail)),
                )
                if mce.size >= BOOTSTRAP // 2:
                    ci["mce_ci"] = (float(np.percentile(mce, tail)), float(np.percentile(mce, 100 - tail)))
        out.append({**r, **ci, "groups": len(set(mine[shared[0]][s][2] for s in common)) if common else 0})
    return out


def _plain(v: Any) -> Any:
    """JSON-safe: NaN and infinities as null, tuples as lists, numpy scalars as Python numbers."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _bounds(ci) -> dict[str, Any]:
    return {"low": ci[0], "high": ci[1]}


def _setting_json(s: SettingSummary, headline: bool) -> dict[str, Any]:
    return {
        "model": s.model,
        "dataset": s.dataset,
        "setting": setting_label(s),
        "attack": s.attack,
        "label": s.label,
        "kind": s.kind,
        "norm": s.norm,
        "eps": s.eps,
        "eps_text": s.eps_text,
        "targeted": s.targeted,
        "task": s.task,
        "metric": s.metric,
        "gradient": s.gradient,
        "n": s.n,
        "groups": s.groups,
        "clean": s.clean,
        "clean_ci": _bounds(s.clean_ci),
        "robust": s.robust,
        "robust_ci": _bounds(s.robust_ci),
        "robust_is_upper_bound": s.kind == "adversarial" and s.metric == "accuracy",
        "interval_method": s.ci_method,
        "headline": headline,
        "asr": s.asr,
        "median_norm": s.median_norm,
        "median_queries": s.queries,
        "invalid": s.invalid,
        "errored": s.errored,
        "skipped": s.skipped,
        "time_s": s.time_s,
    }


def _passing(run: RunSummary) -> list[dict[str, Any]]:
    """The contrast pairs that pass both tests, in the order of the settings' first appearance."""
    where = {(s.model, s.dataset, s.label, s.norm, s.eps): i for i, s in enumerate(run.settings)}

    def pos(c: dict[str, Any]) -> tuple[int, int]:
        i, j = (where[(d["model"], d["dataset"], d["label"], d["norm"], d["eps"])] for d in (c["lo"], c["hi"]))
        return (min(i, j), max(i, j))

    return sorted((c for c in run.contrasts if c["equivalent_clean"] and c["different_robust"]), key=pos)


def run_summary(
    table: pa.Table, meta: dict[str, Any] | None = None, *, costs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every figure the leaderboard shows, with interval bounds, n, groups and method, as plain
    JSON-ready data (``advonnx show --json``); also the per-class, calibration and cost figures
    (``clinical``, with ``costs`` from :func:`advonnx.clinical.read_costs` or the run's own) and
    the flip rate per target-map direction."""
    from .clinical import clinical_summaries, flip_rates
    from .compare import UPPER_BOUND_TEXT, model_pairs
    from .masking import masking_checks
    from .summary import summarize_run

    meta = meta or {}
    headline = meta.get("headline") or {}
    run = summarize_run(table, headline)
    settings = [_setting_json(s, run.is_headline(s)) for s in run.settings]
    worst = [
        {
            **{k: w[k] for k in ("model", "dataset", "norm", "eps", "robust", "n", "groups", "attacks")},
            "robust_ci": _bounds(w["ci"]),
            "interval_method": PROPORTION_METHOD,
        }
        for w in run.worst_case
    ]
    datasets = list(dict.fromkeys(s.dataset for s in run.settings))  # first appearance, as the rows list them
    corruptions = [
        {
            **{
                k: r[k]
                for k in (
                    "model",
                    "dataset",
                    "reference",
                    "metric",
                    "mean_corruption",
                    "mce",
                    "rbe",
                    "mean_balanced_error",
                    "adversarial",
                    "groups",
                )
            },
            "mean_corruption_ci": _bounds(r["mean_corruption_ci"]),
            "mce_ci": _bounds(r["mce_ci"]),
            "interval_method": BOOTSTRAP_METHOD,
        }
        for r in sorted(run.corruptions, key=lambda r: datasets.index(r["dataset"]))
    ]
    pair_keys = (
        "first",
        "second",
        "dataset",
        "setting",
        "kind",
        "metric",
        "n",
        "groups",
        "robust_first",
        "robust_second",
        "delta_robust",
        "p_robust",
        "robust_test",
        "clean_first",
        "clean_second",
        "delta_clean",
        "p_equivalent_clean",
        "margin",
    )
    paired = [
        {
            **{k: p[k] for k in pair_keys},
            "delta_robust_ci": _bounds(p["delta_robust_ci"]),
            "delta_clean_ci": _bounds(p["delta_clean_ci"]),
        }
        for p in model_pairs(table)
    ]
    contrasts = [
        {
            "more_robust": c["hi"]["model"],
            "less_robust": c["lo"]["model"],
            "dataset": c["lo"]["dataset"],
            "setting": c["setting"],
            "n": c["n"],
            "groups": c["groups"],
            "delta_robust": c["delta_robust"],
            "delta_robust_ci": _bounds(c["delta_robust_ci"]),
            "p_robust": c["p_robust"],
            "delta_clean": c["delta_clean"],
            "p_equivalent_clean": c["p_equivalent_clean"],
            "margin": c["margin"],
        }
        for c in _passing(run)
    ]
    verdicts = run.masking if run.settings else masking_checks(table)
    return _plain(
        {
            "schema_version": SCHEMA_VERSION,
            "run_id": meta.get("run_id"),
            "suite": meta.get("suite"),
            "headline": headline,
            "methods": {
                "proportions": PROPORTION_METHOD,
                "bootstrap": BOOTSTRAP_METHOD,
                "confidence": CONFIDENCE,
                "bootstrap_resamples": BOOTSTRAP,
                "paired": "paired cluster bootstrap of the difference; exact McNemar (accuracy) or paired t on "
                "group means (Dice); TOST (paired t on group means) for clean equivalence within ±2 points",
            },
            "note": UPPER_BOUND_TEXT,
            "settings": settings,
            "worst_case": worst,
            "corruptions": corruptions,
            "paired": paired,
            "contrasts": contrasts,
            "masking": verdicts if isinstance(verdicts, dict | list) else None,
            "clinical": clinical_summaries(table, costs=costs),
            "flip_rates": flip_rates(table),
        }
    )


__all__ = ["run_summary", "corruption_intervals"]
