"""The machine-readable summary of a run (``advonnx show --json``), derived from result rows only
(the corruption figures' intervals: ``summary/intervals.py``, re-exported here).

A run folder written before the ``group`` column existed reads with every sample its own group;
every figure the rows allow is still given.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .summary.intervals import corruption_intervals
from .summary.setting import setting_label
from .summary_stats import BOOTSTRAP, BOOTSTRAP_METHOD, CONFIDENCE, PROPORTION_METHOD

SCHEMA_VERSION = 1

if TYPE_CHECKING:
    from .summary import RunSummary, SettingSummary


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
