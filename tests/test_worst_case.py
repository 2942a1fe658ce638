"""Worst case over attacks: per-sample breaking radii, minimal-norm results as breaks at every
eps at or above their norm, robustness curves (issue 5)."""

from __future__ import annotations

import math

import numpy as np

from advonnx.worst_case import (
    breaking_radius,
    robust_accuracy,
    robustness_curve,
    still_robust,
    worst_case,
)


def row(sid, attack, eps, success, *, min_norm=None, correct=True, norm="l2", model="m"):
    return {"model": model, "dataset": "d", "norm": norm, "sample_id": sid, "attack": attack, "eps": eps,
            "success": success, "min_norm": min_norm, "clean_correct": correct, "kind": "adversarial",
            "status": "ok", "task": "classification"}


def test_minimal_norm_counts_at_every_eps_at_or_above_it():
    rows = [
        row("a", "pgd", 0.5, False), row("a", "pgd", 1.0, False),
        row("b", "pgd", 0.5, False), row("b", "pgd", 1.0, True),
        row("c", "pgd", 0.5, False), row("c", "pgd", 1.0, False),
        row("d", "pgd", 0.5, True), row("d", "pgd", 1.0, True),
        row("e", "pgd", 0.5, False, correct=False), row("e", "pgd", 1.0, False, correct=False),
        row("a", "deepfool", 0.0, True, min_norm=0.5),  # breaks a at 0.5 and 1.0
        row("c", "deepfool", 0.0, False, min_norm=math.inf),
        row("b", "deepfool", 0.0, True, min_norm=2.0),  # larger than pgd's break: pgd wins
    ]
    radii = breaking_radius(rows)[("m", "d", "l2")]
    assert radii == {"a": 0.5, "b": 1.0, "c": math.inf, "d": 0.5, "e": 0.0}
    wc = {r["eps"]: r["robust"] for r in worst_case(rows)}
    # eps 0.5: a (0.5 ≤ 0.5), d, e broken → b, c robust; eps 1.0: only c robust
    assert wc == {0.5: 2 / 5, 1.0: 1 / 5}


def test_norms_do_not_mix():
    rows = [row("a", "pgd", 0.1, True, norm="linf"), row("a", "deepfool", 0.0, False, min_norm=math.inf)]
    radii = breaking_radius(rows)
    assert radii[("m", "d", "linf")]["a"] == 0.1 and radii[("m", "d", "l2")]["a"] == math.inf


def test_robustness_curve_from_minimal_norms():
    acc = robustness_curve([0.1, 0.3, np.inf, 0.2], [True, True, True, False], [0.0, 0.1, 0.25, 1.0])
    np.testing.assert_allclose(acc, [0.75, 0.5, 0.5, 0.25])
    np.testing.assert_allclose(robust_accuracy([0.2, 0.4], [0.2, 0.3]), [0.5, 0.5])


def test_still_robust_flags_select_the_unbroken():
    np.testing.assert_array_equal(still_robust(np.array([0.0, 0.5, np.inf]), 0.5), [False, False, True])
