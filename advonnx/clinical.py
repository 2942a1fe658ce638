"""Clinical figures from result rows: per class, costly directions, costs and calibration under attack.

Everything here is derived from the Parquet rows (columns ``label``, ``clean_pred``,
``adv_pred``, ``clean_confidence``, ``adv_confidence``, ``clean_correct``, ``adv_correct``,
``target``, ``status``, ``settings``) and the run metadata (class names, a cost matrix), so a run
folder written before these figures existed shows them too. Classification rows only; per
(model, dataset, attack setting, norm, eps), settings named as the leaderboard names them.

- **Per class** (true class k): clean accuracy (recall) and robust accuracy (clean AND
  adversarially correct, as AutoAttack counts; a worst-case row that an earlier attack broke and
  an invalid row count as broken), each with a 95 % Wilson interval (``stats.wilson_interval``).
  Binary tasks: sensitivity = the positive class's figure, specificity = the other's
  (:func:`positive_class` says which is positive). Confusion matrices (rows: true class, columns:
  prediction) clean and under attack; the adversarial one counts the rows with an adversarial
  prediction (status ok).
- **Costly directions** (:func:`flip_rates`): for targeted settings with a target map
  (``target_map.py``), per direction source → target: the flip rate = share of the source
  samples classified correctly clean whose adversarial prediction is the target (Wilson), and
  the share of all source samples predicted as the target clean and under attack.
- **Costs** (:func:`read_costs`): the expected cost per sample, mean of ``C[label, prediction]``,
  clean and under attack.
- **Calibration**: expected calibration error (ECE) of the decision's confidence (the max
  probability: the model's probability of its predicted class, softmax of the scores when it
  outputs logits) with ``ECE_BINS`` equal-mass bins (:func:`ece`); the mean confidence of wrong
  answers; a risk–coverage curve (:func:`risk_coverage`: accuracy on the most confident share
  of the samples, the model abstaining on the rest), clean and under attack. These judge the
  decision itself (``clean_correct`` / ``adv_correct``), not the ``robust`` flag, over the rows
  that have a confidence (a worst-case row skipped by this attack has no adversarial one).

Intervals cover test-set sampling only, not the attack's weakness: robust figures remain upper
bounds.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import AdvonnxError
from .stats import wilson_interval
from .target_map import not_attacked

__all__ = [
    "ECE_BINS",
    "COVERAGES",
    "ece",
    "risk_coverage",
    "confusion",
    "positive_class",
    "read_costs",
    "cost_matrix_for",
    "clinical_summaries",
    "flip_rates",
    "headline_summaries",
]

ECE_BINS = 15
COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
INTERVAL_METHOD = "Wilson 95 %"
# class names read as the healthy / negative class of a binary task (lower case, no separators)
NEGATIVE_NAMES = frozenset(
    {
        "benign",
        "normal",
        "negative",
        "healthy",
        "notumor",
        "notumour",
        "nofinding",
        "absent",
        "control",
        "background",
        "none",
        "nodisease",
    }
)


# ----------------------------------------------------------------------------------- primitives


def ece(confidence, correct, bins: int = ECE_BINS) -> float:
    """Expected calibration error with equal-mass bins (Nixon et al. 2019, "adaptive" ECE).

    The samples, sorted by confidence (stable: ties keep their order), are cut into
    ``min(bins, n)`` consecutive bins of equal size (``numpy.array_split``: sizes differ by at
    most one); ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b|. In [0, 1]; NaN for n = 0.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return math.nan
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for idx in np.array_split(order, min(bins, conf.size)):
        total += idx.size * abs(ok[idx].mean() - conf[idx].mean())
    return float(total / conf.size)


def risk_coverage(confidence, correct, coverages=COVERAGES) -> list[tuple[float, float, int]]:
    """Selective prediction: ``(coverage, accuracy, kept)`` per coverage, where the model keeps its
    ``kept = ceil(coverage · n)`` most confident samples (ties by sample order) and abstains on
    the rest. Risk is 1 − accuracy. [] for n = 0."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if conf.size == 0:
        return []
    order = np.argsort(-conf, kind="stable")
    cum = np.cumsum(ok[order])
    out = []
    for c in coverages:
        k = max(1, min(conf.size, math.ceil(c * conf.size - 1e-9)))
        out.append((float(c), float(cum[k - 1] / k), int(k)))
    return out


def confusion(labels, preds, num_classes: int) -> np.ndarray:
    """Counts ``M[true, predicted]`` (int64, K × K); predictions outside 0..K-1 are left out."""
    lab = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(preds, dtype=np.int64)
    keep = (pred >= 0) & (pred < num_classes) & (lab >= 0) & (lab < num_classes)
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (lab[keep], pred[keep]), 1)
    return m


def positive_class(class_names) -> int:
    """The positive class of a binary task: the class other than the one whose name reads as
    negative (benign, normal, negative, healthy, notumor, absent, control, ...), else class 1."""
    folded = ["".join(ch for ch in str(n).lower() if ch.isalnum()) for n in class_names or []]
    neg = [i for i, n in enumerate(folded) if n in NEGATIVE_NAMES]
    if len(folded) == 2 and len(neg) == 1:
        return 1 - neg[0]
    return 1


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n) if n else (math.nan, math.nan)
    return {"value": k / n if n else math.nan, "ci": (lo, hi), "k": int(k), "n": int(n)}


# ---------------------------------------------------------------------------------------- costs


def read_costs(path: str | Path) -> dict[str, Any]:
    """A K × K cost matrix from a CSV: the header row names the predicted classes, the first
    column the true classes (the corner cell is free text), the cells are costs ≥ 0, e.g.::

        true\\predicted,malignant,benign
        malignant,0,10
        benign,1,0

    Returns ``{"path", "class_names", "matrix"}`` (rows and columns in header order), as stored
    in the run metadata (key ``costs``)."""
    p = Path(path)
    if not p.is_file():
        raise AdvonnxError(f"{p}: no such cost-matrix file; give a CSV with class names as header and first column")
    try:
        rows = [r for r in csv.reader(p.read_text(encoding="utf-8-sig").splitlines()) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise AdvonnxError(f"{p}: not a readable CSV ({err})") from None
    if len(rows) < 3:
        raise AdvonnxError(f"{p}: a cost matrix needs a header row and one row per class (at least 2 classes)")
    names = [c.strip() for c in rows[0][1:]]
    if len(set(names)) != len(names) or not all(names):
        raise AdvonnxError(f"{p}: header {rows[0]!r}: give each class name once after the corner cell")
    if [r[0].strip() for r in rows[1:]] != names:
        raise AdvonnxError(
            f"{p}: the first column must list the header's classes in the same order "
            f"({', '.join(names)}), found {', '.join(r[0].strip() for r in rows[1:])}"
        )
    matrix = []
    for r in rows[1:]:
        if len(r) != len(names) + 1:
            raise AdvonnxError(f"{p}: row {r[0].strip()!r} has {len(r) - 1} costs, expected {len(names)}")
        try:
            vals = [float(c) for c in r[1:]]
        except ValueError:
            raise AdvonnxError(f"{p}: row {r[0].strip()!r}: costs must be numbers, got {r[1:]!r}") from None
        if not all(math.isfinite(v) and v >= 0 for v in vals):
            raise AdvonnxError(f"{p}: row {r[0].strip()!r}: costs must be finite and >= 0")
        matrix.append(vals)
    return {"path": str(p), "class_names": names, "matrix": matrix}


def cost_matrix_for(costs: dict[str, Any] | None, class_names) -> np.ndarray | None:
    """The cost matrix in a model's class order (None when its classes are not the CSV's)."""
    if not costs or not class_names:
        return None
    names = list(costs["class_names"])
    if sorted(names) != sorted(str(c) for c in class_names):
        return None
    idx = [names.index(str(c)) for c in class_names]
    return np.asarray(costs["matrix"], dtype=np.float64)[np.ix_(idx, idx)]


# ------------------------------------------------------------------------------------ summaries


def _meta_classes(meta: dict[str, Any]) -> dict[str, list[str]]:
    return {m: list(s.get("class_names") or []) for m, s in (meta.get("specs") or {}).items()}


def _target_map_of(r: dict[str, Any]) -> str:
    try:
        params = json.loads(r.get("settings") or "{}")
    except (TypeError, ValueError):
        return ""
    return str(params.get("target_map") or "") if isinstance(params, dict) else ""


def _groups(rows: list[dict], kinds=("adversarial", "corruption")) -> dict[tuple, list[dict]]:
    from .results import attack_labels, setting_key

    # single-label rows only (multi-label rows have their per-finding table), and a universal
    # perturbation's held-out samples only (its fit samples are not a test)
    rows = [
        r
        for r in rows
        if r.get("task") == "classification"
        and r.get("kind") in kinds
        and r.get("label_vector") is None
        and r.get("uap_split") != "fit"
    ]
    labels = attack_labels(rows)
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[
            (
                r["model"],
                r["dataset"],
                labels.get(setting_key(r), r["attack"]),
                r["norm"],
                r["eps"],
                r.get("eps_text") or "",
            )
        ].append(r)
    return out


def clinical_summaries(
    table: pa.Table, *, costs: dict[str, Any] | None = None, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """One dict per classification (model, dataset, setting, norm, eps): per-class figures,
    sensitivity/specificity (binary), confusion matrices, calibration and expected cost (module
    docstring). ``costs``: :func:`read_costs`' dict, else the run metadata's ``costs``."""
    from .results import run_metadata

    meta = run_metadata(table)
    costs = costs if costs is not None else meta.get("costs")
    classes = _meta_classes(meta)
    rows = table.to_pylist()
    out = []
    for (model, dataset, label, norm, eps, eps_text), rs in sorted(_groups(rows).items(), key=lambda kv: str(kv[0])):
        counted = [
            r
            for r in rs
            if r["status"] in ("ok", "invalid")
            or (r["status"] == "skipped" and not not_attacked(r) and r.get("clean_pred") is not None)
        ]
        if not counted:
            continue
        names = classes.get(model) or []
        k = max(len(names), 1 + max(max(r["label"], r["clean_pred"], r.get("adv_pred") or 0) for r in counted))
        names = names + [f"class {i}" for i in range(len(names), k)]
        lab = np.array([r["label"] for r in counted], dtype=np.int64)
        clean_ok = np.array([bool(r["clean_correct"]) for r in counted])
        robust = np.array(
            [r["status"] == "ok" and bool(r["clean_correct"]) and bool(r["adv_correct"]) for r in counted]
        )
        per_class: list[dict[str, Any]] = []
        for c in range(k):
            sel = lab == c
            per_class.append(
                {
                    "class": c,
                    "name": names[c],
                    "n": int(sel.sum()),
                    "clean": _rate(int(clean_ok[sel].sum()), int(sel.sum())),
                    "robust": _rate(int(robust[sel].sum()), int(sel.sum())),
                }
            )
        present = [p for p in per_class if p["n"]]
        worst = min(present, key=lambda p: (p["robust"]["value"], p["class"])) if present else None
        adv_rows = [r for r in counted if r["status"] == "ok" and r.get("adv_pred") is not None]
        s: dict[str, Any] = {
            "model": model,
            "dataset": dataset,
            "label": label,
            "attack": rs[0]["attack"],
            "norm": norm,
            "eps": eps,
            "eps_text": eps_text or f"{eps:g}",
            "kind": rs[0].get("kind"),
            "targeted": bool(rs[0].get("targeted")),
            "target_map": _target_map_of(rs[0]),
            "class_names": names,
            "n": len(counted),
            "not_attacked": sum(not_attacked(r) for r in rs),
            "n_adv": len(adv_rows),
            "per_class": per_class,
            "worst_class": worst,
            "confusion_clean": confusion(lab, [r["clean_pred"] for r in counted], k).tolist(),
            "confusion_adv": confusion([r["label"] for r in adv_rows], [r["adv_pred"] for r in adv_rows], k).tolist(),
            "interval": INTERVAL_METHOD,
        }
        if k == 2:
            pos = positive_class(names)
            s["positive"] = names[pos]
            s["sensitivity"] = {"clean": per_class[pos]["clean"], "adv": per_class[pos]["robust"]}
            s["specificity"] = {"clean": per_class[1 - pos]["clean"], "adv": per_class[1 - pos]["robust"]}
        s.update(_calibration(counted, adv_rows, bins))
        cm = cost_matrix_for(costs, classes.get(model))
        if cm is not None:
            s["cost_clean"] = float(
                np.mean([cm[r["label"], r["clean_pred"]] for r in counted if 0 <= r["clean_pred"] < len(cm)])
            )
            s["cost_adv"] = (
                float(np.mean([cm[r["label"], r["adv_pred"]] for r in adv_rows if 0 <= r["adv_pred"] < len(cm)]))
                if adv_rows
                else math.nan
            )
            s["cost_max"] = float(cm.max())
        out.append(s)
    return out


def _calibration(counted: list[dict], adv_rows: list[dict], bins: int) -> dict[str, Any]:
    def finite(rows, col, ok_col):
        pairs = [(r[col], bool(r[ok_col])) for r in rows if r.get(col) is not None and math.isfinite(r[col])]
        return np.array([p[0] for p in pairs], dtype=np.float64), np.array([p[1] for p in pairs], dtype=bool)

    out: dict[str, Any] = {"ece_method": f"equal-mass bins ({bins}), top-label confidence (max probability)"}
    for side, rows, col, ok_col in (
        ("clean", counted, "clean_confidence", "clean_correct"),
        ("adv", adv_rows, "adv_confidence", "adv_correct"),
    ):
        conf, ok = finite(rows, col, ok_col)
        out[f"ece_{side}"] = ece(conf, ok, bins)
        out[f"wrong_confidence_{side}"] = float(conf[~ok].mean()) if (~ok).any() else math.nan
        out[f"wrong_{side}"] = int((~ok).sum())
        out[f"risk_coverage_{side}"] = risk_coverage(conf, ok)
    return out


def flip_rates(table: pa.Table) -> list[dict[str, Any]]:
    """Per targeted setting with a target map and per direction source → target: ``flip`` =
    share of the source samples classified correctly clean whose adversarial prediction is the
    target (Wilson interval), ``into_clean`` / ``into_adv`` = share of all source samples
    predicted as the target clean / under attack (status ok rows)."""
    from .results import run_metadata

    classes = _meta_classes(run_metadata(table))
    out = []
    for (model, dataset, label, norm, eps, eps_text), rs in sorted(
        _groups(table.to_pylist(), ("adversarial",)).items(), key=lambda kv: str(kv[0])
    ):
        tmap = _target_map_of(rs[0])
        if not tmap or not rs[0].get("targeted"):
            continue
        names = classes.get(model) or []
        by_dir: dict[tuple[int, int], list[dict]] = defaultdict(list)
        for r in rs:
            if r["status"] == "ok" and r.get("target") is not None:
                by_dir[(r["label"], r["target"])].append(r)
        for (src, dst), d in sorted(by_dir.items()):
            correct = [r for r in d if r["clean_correct"]]
            out.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "label": label,
                    "norm": norm,
                    "eps": eps,
                    "eps_text": eps_text or f"{eps:g}",
                    "target_map": tmap,
                    "source": src,
                    "target": dst,
                    "direction": f"{names[src] if src < len(names) else src} → {names[dst] if dst < len(names) else dst}",
                    "flip": _rate(sum(r["adv_pred"] == dst for r in correct), len(correct)),
                    "into_clean": _rate(sum(r["clean_pred"] == dst for r in d), len(d)),
                    "into_adv": _rate(sum(r["adv_pred"] == dst for r in d), len(d)),
                    "not_attacked": sum(not_attacked(r) for r in rs),
                }
            )
    return out


# ------------------------------------------------------------------------------------ rendering


def headline_summaries(summaries: list[dict[str, Any]], headline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per model × dataset, the adversarial summary at the headline setting (attack, norm, eps of
    ``leaderboard.headline_for``; among several, untargeted and then the lowest robust accuracy),
    else the one with the lowest overall robust accuracy."""
    from .spec import _fraction
    from .summary.headline import headline_for

    def eps_matches(s, want) -> bool:
        if want is None or str(want) in (s["eps_text"], f"{s['eps']:g}"):
            return True
        try:
            return math.isclose(float(_fraction(str(want))), s["eps"], rel_tol=1e-9)
        except (ValueError, ZeroDivisionError):
            return False

    def overall(s) -> float:
        n = sum(p["n"] for p in s["per_class"])
        return sum(p["robust"]["k"] for p in s["per_class"]) / n if n else math.inf

    by: dict[tuple, list[dict]] = defaultdict(list)
    for s in summaries:
        if s["kind"] == "adversarial":
            by[(s["model"], s["dataset"])].append(s)
    out = []
    for key in sorted(by):
        ss = by[key]
        h = headline_for(headline, key[1])
        hit = [
            s
            for s in ss
            if s["attack"] == h.get("attack")
            and (not h.get("norm") or s["norm"] == h["norm"])
            and eps_matches(s, h.get("eps"))
        ]
        out.append(min(hit or ss, key=lambda s: (s["targeted"], overall(s))))
    return out
