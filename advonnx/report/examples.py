"""The report's example panels: the adversarial examples a run saved (``_examples/part-<key>.npz``
beside the chunks) as clean, perturbed and amplified-perturbation images with the predictions
and confidences; label-map overlays for segmentation; the central slice of 3-D images."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..summary import headline_for
from .figures import _png_uri
from .html import _class_label, _e, _nan, _setting_name, percent

CLASS_COLORS = (
    (0.90, 0.10, 0.29),
    (0.24, 0.71, 0.29),
    (1.00, 0.88, 0.10),
    (0.26, 0.39, 0.85),
    (0.96, 0.51, 0.19),
    (0.57, 0.12, 0.71),
    (0.27, 0.94, 0.94),
    (0.94, 0.20, 0.90),
    (0.74, 0.96, 0.05),
    (0.98, 0.75, 0.83),
)


MAX_IMAGE_SIDE = 256


MAX_EXAMPLE_BYTES = 3_000_000  # of example images; keeps any report well under 5 MB


def _layout_of(meta: dict, model: str, arr: np.ndarray) -> str:
    layout = ((meta.get("specs") or {}).get(model) or {}).get("layout")
    if layout:
        return layout
    nd = arr.ndim - 1
    if nd == 3:
        return "NCHW" if arr.shape[1] <= 4 else "NHWC"
    if nd == 4:
        return "NCDHW" if arr.shape[1] <= 4 else "NDHWC"
    return "NF"


def _plane(a: np.ndarray, layout: str) -> np.ndarray | None:
    """One sample (no batch axis) as an (H, W) or (H, W, 3) image; 3-D: the central slice."""
    if layout in ("NF", "NC") or a.ndim < 2:
        return None
    if layout.startswith("NC") and a.ndim >= 3:
        a = np.moveaxis(a, 0, -1)
    elif a.ndim == 2:
        a = a[..., None]
    if a.ndim == 4:  # D, H, W, C
        a = a[a.shape[0] // 2]
    if a.ndim != 3:
        return None
    if a.shape[-1] >= 3:
        return a[..., :3]
    return a[..., 0]


def _label_plane(lbl: np.ndarray) -> np.ndarray | None:
    lbl = np.asarray(lbl)
    if lbl.ndim == 3:
        lbl = lbl[lbl.shape[0] // 2]
    return lbl if lbl.ndim == 2 else None


def _shrink(a: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(a.shape[:2]) / MAX_IMAGE_SIDE))
    return a[::step, ::step]


def _gray01(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (a.astype(np.float64) - lo) / ((hi - lo) or 1.0)


def _delta_rgb(d: np.ndarray, m: float) -> np.ndarray:
    from matplotlib import colormaps

    if d.ndim == 3:
        d = d.mean(axis=-1)
    v = 0.5 + 0.5 * (d / m if m > 0 else np.zeros_like(d))
    return colormaps["RdBu_r"](np.clip(v, 0, 1))[..., :3]


def _overlay(gray: np.ndarray, lbl: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    g = np.clip(gray if gray.ndim == 2 else gray.mean(axis=-1), 0, 1)
    rgb = np.repeat(g[..., None], 3, axis=-1)
    if lbl.shape != g.shape:
        return rgb
    for k in np.unique(lbl):
        if k <= 0:
            continue
        c = np.array(CLASS_COLORS[(int(k) - 1) % len(CLASS_COLORS)])
        mask = lbl == k
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * c
    return rgb


def example_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(examples .npz, its chunk .parquet) pairs of a run folder: ``_examples/part-<key>.npz``
    (and the older ``part-<key>.examples.npz`` beside the chunk)."""
    folder = Path(folder)
    pairs = [
        (f, folder / f.name.replace(".npz", ".parquet")) for f in sorted((folder / "_examples").glob("part-*.npz"))
    ]
    pairs += [
        (f, folder / f.name.replace(".examples.npz", ".parquet")) for f in sorted(folder.glob("part-*.examples.npz"))
    ]
    return pairs


def _chunk_rows(part: Path) -> list[dict]:
    if not part.is_file():
        return []
    cols = [
        "model",
        "dataset",
        "attack",
        "kind",
        "norm",
        "eps",
        "eps_text",
        "task",
        "sample_id",
        "clean_confidence",
        "adv_confidence",
        "dice_clean",
        "dice_adv",
        "status",
    ]
    try:
        t = pq.read_table(part, columns=cols)
    except (pa.ArrowInvalid, OSError, KeyError):
        return []
    return t.to_pylist()


def collect_examples(folders: list[Path], meta: dict, names: dict[str, list[str]], per_setting: int = 4) -> list[dict]:
    """Example panels from every ``_examples/*.npz`` of the run folders, one per model × setting."""
    out = []
    for folder in folders:
        for f, part in example_pairs(folder):
            rows = _chunk_rows(part)
            if not rows:
                continue
            try:
                with np.load(f, allow_pickle=False) as z:
                    ex = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                continue
            if "x" not in ex or "x_adv" not in ex:
                continue
            first = rows[0]
            model = first["model"]
            spec = (meta.get("specs") or {}).get(model) or {}
            vr = spec.get("value_range") or [float(np.nanmin(ex["x"])), float(np.nanmax(ex["x"]))]
            lo, hi = float(vr[0]), float(vr[1])
            layout = _layout_of(meta, model, ex["x"])
            by_id = {r["sample_id"]: r for r in rows if r.get("kind") != "transfer"}
            seg = first["task"] == "segmentation"
            samples = []
            n = min(per_setting, len(ex["x"]))
            for i in range(n):
                x, xa = ex["x"][i], ex["x_adv"][i]
                px, pa_ = _plane(x, layout), _plane(xa, layout)
                if px is None or pa_ is None:
                    continue
                px, pa_ = _shrink(px), _shrink(pa_)
                d = pa_.astype(np.float64) - px.astype(np.float64)
                m = float(np.abs(d).max()) if d.size else 0.0
                gx, ga = _gray01(px, lo, hi), _gray01(pa_, lo, hi)
                sid = str(ex["sample_id"][i]) if "sample_id" in ex else str(i)
                r = by_id.get(sid, {})
                label = ex["label"][i] if "label" in ex else None
                cp = ex["clean_pred"][i] if "clean_pred" in ex else None
                ap = ex["adv_pred"][i] if "adv_pred" in ex else None
                sample: dict[str, Any] = {
                    "sample_id": sid,
                    "delta_max": m,
                    "amp": ((hi - lo) / (2 * m)) if m > 0 else 0.0,
                    "images": [
                        ("clean", _png_uri(gx)),
                        ("perturbed", _png_uri(ga)),
                        ("perturbation", _png_uri(_delta_rgb(_shrink(d), m))),
                    ],
                }
                if seg:
                    for title, lbl in (("reference", label), ("clean pred.", cp), ("perturbed pred.", ap)):
                        lp = None if lbl is None else _label_plane(lbl)
                        if lp is not None:
                            lp = _shrink(lp)
                            sample["images"].append(
                                (title, _png_uri(_overlay(gx if title != "perturbed pred." else ga, lp)))
                            )
                    sample["dice_clean"], sample["dice_adv"] = r.get("dice_clean"), r.get("dice_adv")
                else:
                    sample.update(
                        {
                            "label": _class_label(names, model, label),
                            "clean_pred": _class_label(names, model, cp),
                            "adv_pred": _class_label(names, model, ap),
                            "clean_ok": cp is not None and label is not None and bool(np.array_equal(cp, label)),
                            "adv_ok": ap is not None and label is not None and bool(np.array_equal(ap, label)),
                            "clean_conf": r.get("clean_confidence"),
                            "adv_conf": r.get("adv_confidence"),
                        }
                    )
                samples.append(sample)
            if samples:
                three_d = layout in ("NCDHW", "NDHWC")
                out.append(
                    {
                        "model": model,
                        "dataset": first["dataset"],
                        "attack": first["attack"],
                        "kind": first.get("kind") or "adversarial",
                        "norm": first["norm"],
                        "eps": first["eps"],
                        "eps_text": first.get("eps_text") or f"{first['eps']:g}",
                        "task": first["task"],
                        "three_d": three_d,
                        "samples": samples,
                    }
                )
    out.sort(key=lambda e: (e["model"], e["dataset"], e["kind"] == "corruption", e["attack"], e["norm"], e["eps"]))
    return out


def _is_headline(e: dict, headline: dict) -> bool:
    headline = headline_for(headline, e.get("dataset", ""))
    return (
        bool(headline)
        and e["kind"] != "corruption"
        and e["attack"] == headline.get("attack")
        and e["norm"] == headline.get("norm")
        and str(headline.get("eps")) in (e["eps_text"], f"{e['eps']:g}")
    )


def _within_budget(examples: list[dict], headline: dict, budget: int) -> tuple[list[dict], int]:
    """Example settings whose images fit ``budget`` bytes: the headline setting first, then
    attacks by decreasing budget, then corruptions by decreasing severity."""
    order = sorted(
        range(len(examples)),
        key=lambda i: (
            not _is_headline(examples[i], headline),
            examples[i]["kind"] == "corruption",
            -examples[i]["eps"],
            i,
        ),
    )
    keep: set[int] = set()
    used = 0
    for i in order:
        size = sum(len(uri) for smp in examples[i]["samples"] for _, uri in smp["images"])
        if keep and used + size > budget:
            continue
        keep.add(i)
        used += size
    return [e for i, e in enumerate(examples) if i in keep], len(examples) - len(keep)


def _examples_html(
    examples: list[dict], colors: dict[str, str], names: dict[str, list[str]], headline: dict
) -> tuple[str, int]:
    if not examples:
        return (
            '<p class="sub">This run saved no adversarial examples (run with <code>--save-examples K</code>, '
            "K &gt; 0, to see them here).</p>"
        ), 0
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in examples:
        groups[(e["model"], e["dataset"])].append(e)
    out = []
    n_img = 0
    for gi, ((model, dataset), exs) in enumerate(sorted(groups.items())):
        gid = f"g{gi}"

        default = next(
            (i for i, e in enumerate(exs) if _is_headline(e, headline)),
            next((i for i, e in enumerate(exs) if e["kind"] != "corruption"), 0),
        )
        out.append(
            f'<div class="card" style="margin-bottom:16px"><h3 style="margin-top:0">'
            f'<span class="dot" style="background:{colors[model]}"></span>{_e(model)} '
            f'<span class="ci">on {_e(dataset)}</span></h3>'
        )
        out.append(
            f'<div class="tools"><label>Setting <select class="ex" data-group="{gid}" aria-label="example setting for {_e(model)}">'
        )
        for i, e in enumerate(exs):
            sel = " selected" if i == default else ""
            out.append(f'<option value="{i}"{sel}>{_e(_setting_name(e))}</option>')
        out.append("</select></label>")
        if exs[0]["three_d"]:
            out.append('<span class="ci">3-D volumes: central axial slice shown</span>')
        out.append("</div>")
        seg = exs[0]["task"] == "segmentation"
        if seg and names.get(model):
            leg = "".join(
                f'<span style="background:rgb({",".join(str(int(255 * c)) for c in CLASS_COLORS[(k - 1) % len(CLASS_COLORS)])})"></span>{_e(n)}'
                for k, n in enumerate(names[model])
                if k > 0
            )
            out.append(f'<div class="legend">Label maps: {leg} (class 0, {_e(names[model][0])}, not coloured)</div>')
        for i, e in enumerate(exs):
            on = " on" if i == default else ""
            out.append(
                f'<div class="exset{on}" data-group="{gid}" data-key="{i}"><div class="samples{" seg" if seg else ""}">'
            )
            for s in e["samples"]:
                out.append(
                    f'<div class="sample"><div class="sid" title="{_e(s["sample_id"])}">{_e(s["sample_id"])}'
                    '</div><div class="imgs">'
                )
                for title, uri in s["images"]:
                    cap = title
                    tip = title
                    if title == "perturbation":
                        cap = f"δ ×{s['amp']:.0f}" if s["delta_max"] > 0 else "δ = 0"
                        tip = f"perturbation, max |δ| = {s['delta_max']:.3g}, amplified ×{s['amp']:.0f}"
                    out.append(
                        f'<figure title="{_e(tip)}"><img class="example" alt="{_e(title)}" src="{uri}">'
                        f"<figcaption>{_e(cap)}</figcaption></figure>"
                    )
                    n_img += 1
                out.append("</div>")
                if seg:
                    out.append(
                        f'<div class="pred">max |δ| {s["delta_max"]:.3g} · Dice clean <b>{percent(s.get("dice_clean"))} %</b> → perturbed '
                        f'<b class="{"wrong" if (s.get("dice_adv") or 0) < (s.get("dice_clean") or 0) - 0.05 else "right"}">'
                        f"{percent(s.get('dice_adv'))} %</b></div>"
                    )
                else:

                    def conf(v):
                        return "" if _nan(v) else f" ({100 * v:.0f} %)"

                    out.append(
                        f'<div class="pred">true <b>{_e(s["label"])}</b> <span class="ci">· max |δ| {s["delta_max"]:.3g}</span><br>clean → <span class="{"right" if s["clean_ok"] else "wrong"}">'
                        f"{_e(s['clean_pred'])}{conf(s.get('clean_conf'))}</span><br>perturbed → "
                        f'<span class="{"right" if s["adv_ok"] else "wrong"}">{_e(s["adv_pred"])}{conf(s.get("adv_conf"))}</span></div>'
                    )
                out.append("</div>")
            out.append("</div></div>")
        out.append("</div>")
    return "".join(out), n_img
