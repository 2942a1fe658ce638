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


def breaking_radius(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, float]]:
    """{(model, dataset, norm): {sample_id: smallest breaking eps}} from classification rows."""
    out: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.get("kind") != "adversarial" or r.get("status") != "ok" or r.get("task") != "classification":
            continue
        key = (r["model"], r["dataset"], r["norm"])
        sid = r["sample_id"]
        radius = out[key].get(sid, math.inf)
        if r.get("clean_correct") is False:
            radius = 0.0
        elif r.get("min_norm") is not None and math.isfinite(r["min_norm"]):
            radius = min(radius, float(r["min_norm"]))
        elif r.get("success") and r.get("min_norm") is None:
            radius = min(radius, float(r["eps"]))
        out[key][sid] = radius
    return dict(out)


def robust_accuracy(radii, eps_values) -> np.ndarray:
    """Accuracy at each eps from per-sample breaking radii (broken when radius ≤ eps)."""
    r = np.asarray(list(radii), dtype=np.float64)
    e = np.asarray(list(eps_values), dtype=np.float64)
    if r.size == 0:
        return np.full(e.shape, math.nan)
    return (r[None, :] > e[:, None]).mean(axis=1)


def robustness_curve(min_norms, clean_correct, eps_values) -> np.ndarray:
    """Accuracy vs eps from one minimal-norm attack's per-sample norms (inf = not broken)."""
    mn = np.asarray(min_norms, dtype=np.float64)
    radii = np.where(np.asarray(clean_correct, bool), np.where(np.isnan(mn), np.inf, mn), 0.0)
    return robust_accuracy(radii, eps_values)


def worst_case(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (model, dataset, norm, eps) at the budgets the rows used: the worst case."""
    radii = breaking_radius(rows)
    budgets: dict[tuple, set] = defaultdict(set)
    attacks: dict[tuple, set] = defaultdict(set)
    for r in rows:
        if r.get("kind") == "adversarial" and r.get("task") == "classification":
            key = (r["model"], r["dataset"], r["norm"])
            attacks[key].add(r["attack"])
            if r.get("min_norm") is None and r.get("eps"):
                budgets[key].add(float(r["eps"]))
    out = []
    for key, per_sample in radii.items():
        eps_list = sorted(budgets[key])
        acc = robust_accuracy(per_sample.values(), eps_list)
        for e, a in zip(eps_list, acc):
            out.append({"model": key[0], "dataset": key[1], "norm": key[2], "eps": e, "robust": float(a),
                        "n": len(per_sample), "attacks": sorted(attacks[key])})
    return out


def still_robust(radius: np.ndarray, eps: float) -> np.ndarray:
    """Flags of the samples no earlier attack broke at ``eps`` (radius > eps)."""
    return np.asarray(radius, dtype=np.float64) > eps
