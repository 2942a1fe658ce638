"""Parquet rows of one work unit: one row builder (``row``) for every kind of row, the columns
of a setting, and per sample the measured columns of classification, multi-label and
segmentation models, skipped and errored samples, and certificates.

A row is every column of ``results.SCHEMA`` (None unless set), then the setting's columns
(``setting_columns``: run, model, dataset, attack, norm, eps, ...), then the sample's own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import confidence, confusion_overlap, pixel_accuracy, psnr, ssim
from .model import ModelRunError
from .results import empty_row
from .seg_metrics import hd95, mean_hd95
from .xp import Random, to_numpy

if TYPE_CHECKING:
    from .suite import AttackEntry
    from .work import WorkUnit

Row = dict[str, Any]


def row(common: dict[str, Any], sample_id: str, **columns: Any) -> Row:
    """One row: every schema column (None unless set), the setting's columns, the sample's id
    and its own columns (which win)."""
    return {**empty_row(), **common, "sample_id": sample_id, **columns}


def setting_columns(unit: WorkUnit, model: Any, attack: Any, shape: str) -> dict[str, Any]:
    """The columns every row of a unit shares: the run's (``unit.base``) and the setting's
    (attack or corruption, norm, eps, the attack's recorded settings), and the samples' shape."""
    aentry, corruption = unit.attack, unit.corruption
    params = attack.params() if attack else {}
    return {
        **unit.base,
        "sample_shape": shape,
        "attack": corruption or (aentry.name if aentry else None),
        "kind": "corruption" if corruption else "check" if unit.check else "adversarial",
        "norm": "none" if corruption else (aentry.norm if aentry else None),
        "eps": unit.eps,
        "eps_text": unit.eps_text,
        "targeted": bool(aentry and aentry.targeted),
        "steps": params.get("steps", 1 if attack else 0),
        "restarts": params.get("restarts", 1 if attack else 0),
        "max_queries": params.get("max_queries"),
        "settings": _settings_json(params, model, aentry),
        "attacked_inputs": model.spec.input_name,
    }


def errored_rows(common: dict[str, Any], ids: Sequence[str], error: str, elapsed: float) -> list[Row]:
    """The rows of a block the model failed on (onnxruntime error): not counted."""
    return [row(common, sid, status="errored", error=error, time_s=elapsed / len(ids)) for sid in ids]


def shape_text(x: Any) -> str:
    """A block's per-sample shape as rows record it, e.g. ``1x32x32`` (a block holds one size)."""
    return "x".join(str(int(v)) for v in x.shape[1:])


def recorded(params: dict, model: Any) -> dict:
    """An attack's settings as rows record them: with the votes per decision and gradient draws
    (EOT) when the model is randomized or they were declared."""
    if model.votes > 1 or model.eot > 1:
        return {**params, "votes": model.votes, **({"eot": model.eot} if params else {})}
    return params


def _settings_json(params: dict, model: Any, entry: AttackEntry | None) -> str:
    """The ``settings`` column: the attack's recorded settings, and a targeted entry's target map."""
    rec = recorded(params, model)
    if entry is not None and entry.targeted and entry.target_map:
        rec = {**rec, "target_map": entry.target_map}
    return json.dumps(rec, sort_keys=True, default=str)


@dataclass
class Outcome:
    """What one setting did to a block, on the host: inputs before and after, the model's scores
    and decisions on both, the reference labels, and the attack's result (None for corruptions
    and the identity)."""

    x: Any
    res_x: np.ndarray
    labels: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    clean_scores: np.ndarray
    adv_scores: np.ndarray
    success: np.ndarray
    queries: np.ndarray
    gradient: str
    elapsed: float
    res: Any = None  # the AttackResult
    targets: np.ndarray | None = None


def measured_rows(
    common: dict[str, Any], ids: Sequence[str], out: Outcome, model: Any, spacing: list | None
) -> list[Row]:
    """Per sample: the perturbation (L0, L2, Linf, PSNR, SSIM), what the attack reported, and the
    task's columns (classification, multi-label, or segmentation with HD95 in mm from
    ``spacing``); a sample whose scores are NaN or Inf is "invalid"."""
    spec, x, res_x, res = model.spec, out.x, out.res_x, out.res
    n = len(x)
    delta = (res_x - x).reshape(n, -1).astype(np.float64)
    p = to_numpy(psnr(x.astype(np.float64), res_x.astype(np.float64), spec.value_range))
    s = to_numpy(ssim(x, res_x, spec.value_range, spec.layout))
    finite_clean = np.isfinite(out.clean_scores.reshape(n, -1)).all(1)
    finite_adv = np.isfinite(out.adv_scores.reshape(n, -1)).all(1)
    finite = finite_clean & finite_adv
    straight = ",".join(model.straight_through_ops()) if out.gradient.startswith("exact") else None
    min_norm = None if res is None or res.min_norm is None else to_numpy(res.min_norm).astype(np.float64)
    l0_pixels = None if res is None or res.l0_pixels is None else to_numpy(res.l0_pixels)
    zero_grad = None if res is None else res.zero_gradient

    def measured(i: int) -> dict[str, Any]:
        ok = bool(finite[i])
        return {
            "gradient": out.gradient,
            "success": bool(out.success[i]),
            "queries": int(out.queries[i]),
            "l0": float(np.count_nonzero(delta[i])),
            "l2": float(np.linalg.norm(delta[i])),
            "linf": float(np.abs(delta[i]).max(initial=0.0)),
            "min_norm": None if min_norm is None else float(min_norm[i]),
            "psnr": float(p[i]),
            "ssim": float(s[i]),
            "l0_pixels": None if l0_pixels is None else int(l0_pixels[i]),
            "straight_through": straight,
            "zero_gradient": None if zero_grad is None or zero_grad[i] is None else bool(zero_grad[i]),
            "status": "ok" if ok else "invalid",
            "error": None if ok else "model output is NaN or Inf",
            "time_s": out.elapsed / len(ids),
        }

    if spec.output_kind == "multilabel":
        task = _multilabel_columns(out, finite_clean, finite_adv)
    elif spec.task == "classification":
        task = _classification_columns(out, model, finite_clean, finite_adv)
    else:
        task = _segmentation_columns(out, model, spacing)
    return [row(common, sid, **measured(i), **task(i)) for i, sid in enumerate(ids)]


def _rho(out: Outcome) -> np.ndarray | None:
    res = out.res
    return None if res is None or res.rho is None else to_numpy(res.rho).astype(np.float64)


def _classification_columns(out: Outcome, model: Any, finite_clean: np.ndarray, finite_adv: np.ndarray):
    """Labels, decisions and confidences; NaN/Inf scores are never a correct answer; robust =
    clean AND adversarially correct (AutoAttack's count)."""
    spec, labels, clean_pred, adv_pred = model.spec, out.labels, out.clean_pred, out.adv_pred
    saturated = _saturated(spec, out.clean_scores, labels)
    probs = spec.scores == "probabilities"
    cconf = to_numpy(confidence(out.clean_scores, clean_pred, probabilities=probs))
    aconf = to_numpy(confidence(out.adv_scores, adv_pred, probabilities=probs))
    rho, targets = _rho(out), out.targets
    broken_by = None if out.res is None else out.res.broken_by

    def columns(i: int) -> dict[str, Any]:
        return {
            "label": int(labels[i]),
            "clean_pred": int(clean_pred[i]),
            "adv_pred": int(adv_pred[i]),
            "target": None if targets is None else int(targets[i]),
            "clean_confidence": float(cconf[i]),
            "adv_confidence": float(aconf[i]),
            "clean_correct": bool(clean_pred[i] == labels[i] and finite_clean[i]),
            "adv_correct": bool(adv_pred[i] == labels[i] and finite_adv[i]),
            "robust": bool(
                clean_pred[i] == labels[i] and adv_pred[i] == labels[i] and finite_clean[i] and finite_adv[i]
            ),
            "rho": None if rho is None else float(rho[i]),
            "saturated": None if saturated is None else bool(saturated[i]),
            "broken_by": None if broken_by is None else str(broken_by[i]),
        }

    return columns


def _multilabel_columns(out: Outcome, finite_clean: np.ndarray, finite_adv: np.ndarray):
    """Decision vectors, flipped findings, Hamming distances; exact match clean / adversarial as
    clean_correct / adv_correct, robust = both (AutoAttack's count)."""
    labels = np.asarray(out.labels, dtype=np.int64)
    clean_pred, adv_pred, targets = out.clean_pred, out.adv_pred, out.targets

    def columns(i: int) -> dict[str, Any]:
        ok = bool(finite_clean[i] and finite_adv[i])
        clean_ok = bool(np.array_equal(clean_pred[i], labels[i]) and finite_clean[i])
        adv_ok = bool(np.array_equal(adv_pred[i], labels[i]) and finite_adv[i])
        return {
            "label_vector": labels[i].tolist(),
            "clean_vector": clean_pred[i].tolist(),
            "adv_vector": adv_pred[i].tolist(),
            "flipped": np.flatnonzero(adv_pred[i] != clean_pred[i]).tolist(),
            "hamming_clean": int(np.sum(clean_pred[i] != labels[i])),
            "hamming_adv": int(np.sum(adv_pred[i] != labels[i])),
            "target_vector": None if targets is None else targets[i].tolist(),
            "clean_correct": clean_ok,
            "adv_correct": adv_ok,
            "robust": bool(clean_ok and adv_ok and ok),
        }

    return columns


def _segmentation_columns(out: Outcome, model: Any, spacing: list | None):
    """Pixel accuracy, mean Dice and IoU, and HD95 (mm from ``spacing``, else 1 mm per pixel) of
    the clean and adversarial maps against the reference (host-only, after the attack)."""
    spec, ref, clean_pred, adv_pred = model.spec, out.labels, out.clean_pred, out.adv_pred
    dice_c, iou_c = confusion_overlap(clean_pred, ref, spec.num_classes)
    dice_a, iou_a = confusion_overlap(adv_pred, ref, spec.num_classes)
    pa_c, pa_a = pixel_accuracy(clean_pred, ref), pixel_accuracy(adv_pred, ref)
    if spacing is not None and any(sp is None or len(sp) != ref.ndim - 1 for sp in spacing):
        spacing = None
    hd_c = mean_hd95(hd95(clean_pred, ref, spec.num_classes, spacing))
    hd_a = mean_hd95(hd95(adv_pred, ref, spec.num_classes, spacing))
    rho = _rho(out)

    def columns(i: int) -> dict[str, Any]:
        return {
            "clean_correct": None,
            "adv_correct": None,
            "pixel_acc_clean": float(pa_c[i]),
            "pixel_acc_adv": float(pa_a[i]),
            "dice_clean": float(dice_c[i].mean()),
            "dice_adv": float(dice_a[i].mean()),
            "iou_clean": float(iou_c[i].mean()),
            "iou_adv": float(iou_a[i].mean()),
            "hd95_clean": float(hd_c[i]),
            "hd95_adv": float(hd_a[i]),
            "rho": None if rho is None else float(rho[i]),
            "dice_per_class": [float(v) for v in dice_a[i]],
        }

    return columns


def _saturated(spec: Any, clean_scores: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Per sample: the attacked scores are probabilities and the clean float32 scores saturate
    (p_y == 1 or max p == 1 exactly: no loss on them has a gradient). None when logits are attacked."""
    if spec.attacked_scores != "probabilities" or clean_scores.ndim != 2:
        return None
    p = clean_scores.astype(np.float32)
    lab = np.asarray(labels, dtype=np.int64)
    p_y = np.take_along_axis(p, np.clip(lab, 0, p.shape[1] - 1)[:, None], axis=1)[:, 0]
    return (p_y == 1.0) | (p.max(axis=1) == 1.0)


def skipped_rows(
    common: dict[str, Any],
    ids: Sequence[str],
    labels: Any,
    pred: Any,
    conf: Any,
    reasons: Sequence[str],
    multilabel: bool,
) -> list[Row]:
    """Samples a setting does not attack (broken by an earlier attack, outside the target map):
    their clean columns, status "skipped" and the reason."""
    return [
        row(
            common,
            sid,
            **{
                "label": None if multilabel else int(labels[j]),
                "clean_pred": None if multilabel else int(pred[j]),
                "clean_confidence": None if multilabel else float(conf[j]),
                "clean_correct": bool(np.array_equal(pred[j], labels[j])),
                "queries": 0,
                "status": "skipped",
                "error": reasons[j],
                "time_s": 0.0,
                **(
                    {
                        "label_vector": np.asarray(labels[j]).tolist(),
                        "clean_vector": pred[j].tolist(),
                        "hamming_clean": int(np.sum(pred[j] != labels[j])),
                    }
                    if multilabel
                    else {}
                ),
            },
        )
        for j, sid in enumerate(ids)
    ]


def certificate_rows(unit: WorkUnit, model: Any, data: Any, attack: Any) -> tuple[list[Row], None]:
    """Rows of a ``certify`` setting: per sample the smoothed classifier's prediction (clean_pred and
    adv_pred; -1 abstains) and its certified L2 radius; robust = certified correct (smoothed
    prediction right, not abstained), the certified accuracy as the radius goes to 0."""
    x = data.x[unit.start : unit.stop]
    ids = data.sample_ids[unit.start : unit.stop]
    common = {
        **unit.base,
        "sample_shape": shape_text(x),
        "attack": "certify",
        "kind": "certificate",
        "norm": "l2",
        "eps": unit.eps,
        "eps_text": unit.eps_text,
    }
    rng = Random(unit.seed).spawn(unit.key)
    t0 = time.perf_counter()
    try:
        if model.spec.extra_inputs:
            raise ModelRunError(
                f"certify does not support models with several inputs (this one also takes "
                f"{', '.join(n for n, _, _ in model.spec.extra_inputs)}); use attacks"
            )
        if model.spec.task == "segmentation":
            return _dense_certificate_rows(unit, model, data, attack, x, ids, common["sample_shape"], rng, t0), None
        cert = attack.certify(model, x, rng)
    except ModelRunError as err:
        return [row(common, sid, status="errored", error=str(err)) for sid in ids], None
    elapsed = time.perf_counter() - t0
    labels = to_numpy(model.classify(x)) if data.y is None else np.asarray(data.y[unit.start : unit.stop])
    common.update(
        targeted=False,
        steps=0,
        restarts=0,
        gradient="none",
        settings=json.dumps(recorded(attack.params(), model), sort_keys=True, default=str),
    )
    rows = []
    for i, sid in enumerate(ids):
        correct = bool(cert.prediction[i] == labels[i])
        rows.append(
            row(
                common,
                sid,
                # the certified classifier is the smoothed one: its prediction at x is both columns
                label=int(labels[i]),
                clean_pred=int(cert.prediction[i]),
                adv_pred=int(cert.prediction[i]),
                clean_correct=correct,
                adv_correct=correct,
                robust=correct,
                success=not correct,
                queries=int(cert.queries[i]),
                certified_radius=float(cert.radius[i]) if correct else 0.0,
                status="ok",
                time_s=elapsed / len(ids),
            )
        )
    return rows, None


def _dense_certificate_rows(
    unit: WorkUnit, model: Any, data: Any, attack: Any, x: Any, ids: Sequence[str], shape: str, rng: Random, t0: float
) -> list[Row]:
    """Rows of a ``certify`` setting on a segmentation model (SEGCERTIFY): per sample the certified
    pixel accuracy and Dice of the smoothed map against the reference (abstained pixels count as
    wrong) in the ``*_adv`` and ``*_clean`` columns, and the radius σ·Φ⁻¹(τ) every certified pixel
    holds within."""
    spec = model.spec
    cert = attack.certify_dense(model, x, rng)
    elapsed = time.perf_counter() - t0
    ref = to_numpy(model.classify(x)) if data.y is None else np.asarray(data.y[unit.start : unit.stop])
    dice, iou = confusion_overlap(cert.prediction, ref, spec.num_classes)
    acc = pixel_accuracy(cert.prediction, ref)  # ABSTAIN (-1) matches no class: a wrong pixel
    common = {
        **unit.base,
        "sample_shape": shape,
        "attack": "certify",
        "kind": "certificate",
        "norm": "l2",
        "eps": unit.eps,
        "eps_text": unit.eps_text,
        "targeted": False,
        "steps": 0,
        "restarts": 0,
        "settings": json.dumps(recorded(attack.params(), model), sort_keys=True, default=str),
        "gradient": "none",
    }
    return [
        row(
            common,
            sid,
            pixel_acc_clean=float(acc[i]),
            pixel_acc_adv=float(acc[i]),
            dice_clean=float(dice[i].mean()),
            dice_adv=float(dice[i].mean()),
            iou_clean=float(iou[i].mean()),
            iou_adv=float(iou[i].mean()),
            dice_per_class=[float(v) for v in dice[i]],
            queries=int(cert.queries[i]),
            certified_radius=float(cert.radius),
            status="ok",
            time_s=elapsed / len(ids),
        )
        for i, sid in enumerate(ids)
    ]
