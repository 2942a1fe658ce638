"""Worst case over attacks (AutoAttack-style per-sample robust flags) and robustness curves.

Per (model, dataset, norm) every sample gets its *breaking radius*: the smallest eps of that
norm at which some attack is known to break it. A budgeted attack that succeeds at eps breaks
the sample at eps (and at every larger eps of the same norm: its perturbation lies in those
balls too); a minimal-norm attack (DeepFool, C&W, JSMA, DAG) that found an adversarial of norm
``min_norm`` breaks it at every eps ≥ ``min_norm``. A sample the model gets wrong unattacked is
broken at 0. Robust accuracy at eps = fraction of samples whose breaking radius exceeds eps.
Everything is derived from result rows, so a worst case never needs its own stored figures.

:func:`still_robust` gives the flags an orchestrator uses to run later, costlier attacks only on
samples that earlier ones did not break.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

# Norms of float32 perturbations: x + eps, rounded to float32, can sit an ulp of x beyond eps, so
# a minimal norm of 0.0156863 means eps 4/255 (0.01568627). Radii within this relative margin of
# eps count as at eps.
NORM_RTOL = 1e-4


def within(radius: float, eps: float) -> bool:
    """``radius`` ≤ ``eps`` up to float32 rounding (see NORM_RTOL)."""
    return radius <= eps * (1 + NORM_RTOL)


def row_radius(r: dict[str, Any]) -> float | None:
    """The smallest eps (of the row's norm) at which this row shows its sample broken; None for
    rows that say nothing (not an ok or invalid classification attack row).

    Broken means the adversarial prediction is not the label: for a targeted row that is
    ``adv_correct`` false (missing the target while flipping the label still breaks the sample),
    not ``success``. An invalid row (NaN/Inf outputs on its adversarial) breaks the sample at its
    eps (a minimal-norm row: at the norm of its perturbation)."""
    if r.get("kind") != "adversarial" or r.get("task") != "classification" or r.get("status") not in ("ok", "invalid"):
        return None
    if r.get("clean_correct") is False:
        return 0.0
    if r["status"] == "invalid":
        size = r.get("eps") or r.get(r.get("norm") or "", None)
        return float(size) if size is not None and math.isfinite(size) else None
    if r.get("min_norm") is not None and math.isfinite(r["min_norm"]):
        return float(r["min_norm"])
    flipped = r.get("adv_correct") is False if r.get("targeted") else r.get("success")
    if flipped and r.get("min_norm") is None:
        return float(r["eps"])
    return math.inf


def breaking_radius(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, float]]:
    """{(model, dataset, norm): {sample_id: smallest breaking eps}} from classification rows."""
    out: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        radius = row_radius(r)
        if radius is None:
            continue
        key = (r["model"], r["dataset"], r["norm"])
        out[key][r["sample_id"]] = min(radius, out[key].get(r["sample_id"], math.inf))
    return dict(out)


def first_breaks(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, list[tuple[float, str]]]]:
    """{(model, dataset, norm): {sample_id: [(radius, attack), ...]}}, one entry per attack in
    the order the rows list them (the attack's smallest radius)."""
    out: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        radius = row_radius(r)
        if radius is None or not math.isfinite(radius):
            continue
        per = out[(r["model"], r["dataset"], r["norm"])][r["sample_id"]]
        per[r["attack"]] = min(radius, per.get(r["attack"], math.inf))
    return {k: {sid: [(r, a) for a, r in v.items()] for sid, v in d.items()} for k, d in out.items()}


def skip_reason(breaks: list[tuple[float, str]] | None, eps: float) -> str | None:
    """Why a later attack need not run on a sample at ``eps`` (None: still robust, attack it):
    the first earlier attack that broke it at or below ``eps``."""
    for radius, attack in breaks or ():
        if radius == 0.0:
            return "misclassified unattacked"
        if within(radius, eps):
            return f"broken by {attack}"
    return None


def robust_accuracy(radii, eps_values) -> np.ndarray:
    """Accuracy at each eps from per-sample breaking radii (broken when radius ≤ eps)."""
    r = np.asarray(list(radii), dtype=np.float64)
    e = np.asarray(list(eps_values), dtype=np.float64)
    if r.size == 0:
        return np.full(e.shape, math.nan)
    return (r[None, :] > e[:, None] * (1 + NORM_RTOL)).mean(axis=1)


def robustness_curve(min_norms, clean_correct, eps_values) -> np.ndarray:
    """Accuracy vs eps from one minimal-norm attack's per-sample norms (inf = not broken)."""
    mn = np.asarray(min_norms, dtype=np.float64)
    radii = np.where(np.asarray(clean_correct, bool), np.where(np.isnan(mn), np.inf, mn), 0.0)
    return robust_accuracy(radii, eps_values)


def worst_case(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (model, dataset, norm, eps) at the budgets the rows used: the worst case,
    with its 95 % interval (``ci``: Wilson on the effective n of the samples' groups) and the
    number of groups."""
    from .results import attack_labels, setting_key
    from .summary_stats import proportion_interval

    radii = breaking_radius(rows)
    labels = attack_labels(r for r in rows if r.get("kind") == "adversarial")
    budgets: dict[tuple, set] = defaultdict(set)
    attacks: dict[tuple, set] = defaultdict(set)
    group_of: dict[tuple, dict[str, str]] = defaultdict(dict)
    for r in rows:
        if r.get("kind") == "adversarial" and r.get("task") == "classification":
            group_of[(r["model"], r["dataset"])][r["sample_id"]] = r.get("group") or r["sample_id"]
            key = (r["model"], r["dataset"], r["norm"])
            attacks[key].add(labels[setting_key(r)])
            if r.get("min_norm") is None and r.get("eps") and r.get("status") != "skipped":
                budgets[key].add(float(r["eps"]))
    out = []
    for key, per_sample in radii.items():
        eps_list = sorted(budgets[key])
        acc = robust_accuracy(per_sample.values(), eps_list)
        radius = np.asarray(list(per_sample.values()), dtype=np.float64)
        groups = [group_of[key[:2]].get(sid, sid) for sid in per_sample]
        for e, a in zip(eps_list, acc):
            out.append(
                {
                    "model": key[0],
                    "dataset": key[1],
                    "norm": key[2],
                    "eps": e,
                    "robust": float(a),
                    "ci": proportion_interval(radius > e * (1 + NORM_RTOL), groups),
                    "n": len(per_sample),
                    "groups": len(set(groups)),
                    "attacks": sorted(attacks[key]),
                }
            )
    return out


def still_robust(radius: np.ndarray, eps: float) -> np.ndarray:
    """Flags of the samples no earlier attack broke at ``eps`` (radius > eps)."""
    return np.asarray(radius, dtype=np.float64) > eps
