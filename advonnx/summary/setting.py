"""One model × attack setting of a run, computed once from the result rows (:class:`SettingSummary`).

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

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..summary_stats import BOOTSTRAP_METHOD, PROPORTION_METHOD, interval

Kind = Literal["adversarial", "corruption", "certificate", "clean", "universal"]
Metric = Literal["accuracy", "Dice"]
Interval = tuple[float, float]

QUERY_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class SettingSummary:
    """The figures of one model × dataset × attack setting × norm × eps (one leaderboard row).

    Fractions in [0, 1] (``clean``, ``robust``, ``asr``, the ``balanced_*`` ones and the per-finding
    figures; mean Dice for segmentation), 95 % intervals as ``(low, high)`` (NaN when there are too
    few samples), norms in the model's input units, ``time_s`` in seconds. ``n`` counts the samples
    in the figures (worst-case carried and invalid rows included for classification), ``groups``
    their distinct groups. NaN where a figure does not apply."""

    model: str
    dataset: str
    attack: str
    norm: str
    eps: float
    label: str
    settings: str | None
    targeted: bool
    eps_text: str
    framework: str
    task: str
    gradient: str
    label_source: str
    carried: int
    n: int
    kind: str
    invalid: int
    errored: int
    skipped: int
    time_s: float
    queries: float
    asr: float
    clean: float
    robust: float
    balanced_robust: float
    balanced_clean: float
    groups: int
    clean_ci: Interval
    robust_ci: Interval
    ci_method: str
    median_norm: float
    median_min_norm: float
    mean_min_norm: float
    max_queries: int | None
    curve: tuple[tuple[float, float], ...]  # (queries, ASR within them), query-based attacks
    metric: str  # "accuracy" or "Dice"
    per_finding: tuple[float, ...]
    hamming_adv: float | None  # multi-label: findings decided unlike the reference under attack, per sample
    straight_through: str
    zero_gradient: int
    saturated: int

    @property
    def is_corruption(self) -> bool:
        return self.kind == "corruption"

    @property
    def segmentation(self) -> bool:
        return self.metric == "Dice"

    @classmethod
    def from_dict(cls, s: dict[str, Any]) -> SettingSummary:
        """From a summary dict (:meth:`as_dict`'s keys)."""
        return cls(
            **{
                **s,
                "curve": tuple(tuple(p) for p in s["curve"]),
                "per_finding": tuple(s["per_finding"]),
                "hamming_adv": s.get("hamming_adv"),
            }
        )

    def as_dict(self) -> dict[str, Any]:
        """The summary as the plain dict ``leaderboard.summarize`` has always returned (lists, and
        ``hamming_adv`` only for multi-label models)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["curve"] = list(self.curve)
        out["per_finding"] = list(self.per_finding)
        if not self.per_finding:
            del out["hamming_adv"]
        return out


def _median(values) -> float:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else math.nan


def _carried(r: dict[str, Any]) -> bool:
    """A worst-case row: the attack skipped a sample that an earlier attack broke (or that the
    model gets wrong unattacked)."""
    from ..target_map import not_attacked  # a target map's unattacked classes are not broken

    return (
        r.get("status") == "skipped"
        and r.get("kind") == "adversarial"
        and r.get("task") == "classification"
        and not not_attacked(r)
    )


def per_finding(rows: list[dict[str, Any]]) -> list[float]:
    """Multi-label rows: robust accuracy per finding k, counted like AutoAttack (finding k decided
    as the reference both clean and under attack; invalid rows broken), over the rows attacked
    here (ok and invalid); [] for other models."""
    rows = [
        r
        for r in rows
        if r.get("label_vector") is not None and r.get("adv_vector") is not None and r["status"] in ("ok", "invalid")
    ]
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


def _balanced(rows: list[dict], column: str) -> float:
    """Balanced accuracy: the mean over true classes of the per-class rate of ``column``."""
    by_class: dict[int, list[bool]] = defaultdict(list)
    for r in rows:
        by_class[r["label"]].append(bool(r[column]))
    return float(np.mean([np.mean(v) for v in by_class.values()])) if by_class else math.nan


def _masking_counts(rs: list[dict]) -> dict[str, Any]:
    """Self-inflicted masking facts of one setting: straight-through ops of its exact gradients,
    samples whose first gradient was exactly 0, samples with saturated float32 probabilities."""
    ok = [r for r in rs if r["status"] == "ok"]
    return {
        "straight_through": next((r["straight_through"] for r in ok if r.get("straight_through")), ""),
        "zero_gradient": sum(bool(r.get("zero_gradient")) for r in ok),
        "saturated": sum(bool(r.get("saturated")) for r in ok),
    }


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


def _grouped(rows: list[dict[str, Any]]) -> tuple[dict[tuple, list[dict]], dict[tuple[str, str], int]]:
    """The rows of each setting (checks, transfer and a universal perturbation's fit rows left
    out), and the skipped rows per model × dataset."""
    from ..results import setting_key

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("kind") in ("skipped", "check", "transfer"):  # check: extra attacks of masking.py, on a subset
            continue
        if r.get("uap_split") == "fit":  # a universal perturbation counts on its held-out samples only
            continue
        groups[
            (r["model"], r["dataset"], r["attack"], r["norm"], r["eps"], r.get("eps_text") or "", setting_key(r))
        ].append(r)
    skipped: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        if r.get("kind") == "skipped":
            skipped[(r["model"], r["dataset"])] += 1
    return groups, skipped


def _setting(key: tuple, rs: list[dict], label: str, skipped: int) -> SettingSummary:
    """The summary of one setting's rows."""
    model, dataset, attack, norm, eps, eps_text, skey = key
    ok = [r for r in rs if r["status"] == "ok"]
    carried = [r for r in rs if _carried(r)]
    invalid = [r for r in rs if r["status"] == "invalid"]
    first = rs[0]
    seg = first["task"] == "segmentation"
    s: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "attack": attack,
        "norm": norm,
        "eps": eps,
        "label": label,
        "settings": first.get("settings"),
        "targeted": skey[2],
        "eps_text": eps_text or f"{eps:g}",
        "framework": first["framework"],
        "task": first["task"],
        "gradient": next((r["gradient"] for r in ok if r["gradient"]), first["gradient"] or ""),
        "label_source": first["label_source"],
        "carried": len(carried),
        "n": len(ok) + (0 if seg else len(carried) + len(invalid)),
        "kind": first.get("kind") or "adversarial",
        "invalid": len(invalid),
        "errored": sum(r["status"] == "errored" for r in rs),
        "skipped": skipped,
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
    return SettingSummary.from_dict(s)


def summarize_settings(
    table: pa.Table | Iterable[dict[str, Any]], *, labels: dict | None = None
) -> list[SettingSummary]:
    """One :class:`SettingSummary` per (model, dataset, attack setting, norm, eps), in the order
    the settings first appear in the rows: settings that differ (``settings`` column) or
    targeting are separate summaries, named by ``label`` (``results.attack_labels``; pass
    ``labels`` to share them across tables)."""
    from ..results import attack_labels

    rows = table.to_pylist() if isinstance(table, pa.Table) else list(table)
    labels = labels or attack_labels(r for r in rows if r.get("kind") != "skipped")
    groups, skipped = _grouped(rows)
    return [_setting(key, rs, labels.get(key[6], key[2]), skipped[(key[0], key[1])]) for key, rs in groups.items()]


def setting_label(s: SettingSummary | dict) -> str:
    """A setting as the leaderboard names it: ``pgd linf 2/255``, ``gaussian_noise sev 3``."""
    if isinstance(s, SettingSummary):
        s = {"kind": s.kind, "attack": s.attack, "eps_text": s.eps_text, "label": s.label, "norm": s.norm}
    if s.get("kind") == "corruption":
        return f"{s['attack']} sev {s['eps_text']}"
    return f"{s.get('label') or s['attack']} {s['norm']} {s['eps_text']}"


def percent(v) -> str:
    """A fraction as a percentage with one decimal; "–" for a missing value or NaN."""
    return "–" if v is None or v != v else f"{100 * v:.1f}"


def summarize(table: pa.Table, *, labels: dict | None = None) -> list[dict[str, Any]]:
    """:func:`summarize_settings` as plain dicts (:meth:`SettingSummary.as_dict`), the form
    ``leaderboard.summarize`` has always returned."""
    return [s.as_dict() for s in summarize_settings(table, labels=labels)]
