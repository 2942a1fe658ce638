"""Self-contained HTML report of a result set: leaderboard, robustness curves, example panels.

``write_report(path, output)`` reads the rows (``results.read_results``), the run metadata and
the adversarial examples the run saved (``_examples/part-<key>.npz`` beside the chunks) and writes
one HTML file that opens offline: CSS and the small sorting/selection script are inline, plots
are matplotlib SVGs and example images tiny PNGs, all as ``data:`` URIs.

Sections: run facts; the leaderboard per model (sortable) and every setting (sortable, filter);
the "equal clean, different robust" contrast at the headline setting (callout + paired bars);
robustness curves (metric vs eps per attack, vs severity per corruption, vs queries for
query-based attacks); example panels (clean, adversarial, amplified perturbation, predictions and
confidences; label-map overlays for segmentation; the central slice of 3-D images).

matplotlib comes with the ``report`` extra and is imported only here, lazily.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .compare import UPPER_BOUND_HTML, model_pairs, pairs_html
from .errors import AdvonnxError
from .leaderboard import headline_for, percent
from .results import find_run_folders, read_results, run_metadata

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d",
           "#9333ea", "#475569")
CLASS_COLORS = ((0.90, 0.10, 0.29), (0.24, 0.71, 0.29), (1.00, 0.88, 0.10), (0.26, 0.39, 0.85),
                (0.96, 0.51, 0.19), (0.57, 0.12, 0.71), (0.27, 0.94, 0.94), (0.94, 0.20, 0.90),
                (0.74, 0.96, 0.05), (0.98, 0.75, 0.83))
MAX_IMAGE_SIDE = 256
MAX_EXAMPLE_BYTES = 3_000_000  # of example images; keeps any report well under 5 MB
NORM_NAMES = {"linf": "L∞", "l2": "L2", "l0": "L0", "none": ""}


# --------------------------------------------------------------------------------------- helpers

def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise AdvonnxError("advonnx report needs matplotlib: pip install 'advonnx[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none", "svg.hashsalt": "advonnx",
        "font.family": "sans-serif",
        "font.sans-serif": ["Inter", "Segoe UI", "Helvetica Neue", "Arial", "DejaVu Sans"],
        "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
        "axes.spines.top": False, "axes.spines.right": False, "axes.edgecolor": "#94a3b8",
        "axes.grid": True, "grid.color": "#e2e8f0", "grid.linewidth": 0.8, "axes.axisbelow": True,
        "xtick.color": "#475569", "ytick.color": "#475569", "axes.labelcolor": "#334155",
        "legend.frameon": False, "figure.dpi": 100, "savefig.bbox": "tight",
    })
    return plt


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v) -> str:
    """Sort key for a table cell (empty sorts last)."""
    return "" if _nan(v) else f"{float(v):.10g}"


def _svg_uri(fig) -> str:
    plt = _mpl()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def _png_uri(rgb: np.ndarray) -> str:
    """PNG data URI of an (H, W) gray or (H, W, 3|4) float image in [0, 1]."""
    from matplotlib.image import imsave

    buf = io.BytesIO()
    arr = np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0)
    if arr.ndim == 2:
        imsave(buf, arr, cmap="gray", vmin=0.0, vmax=1.0, format="png")
    else:
        imsave(buf, arr, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _setting_name(s: dict) -> str:
    if s.get("kind") == "corruption":
        return f"{s['attack']} · severity {s['eps_text']}"
    return f"{s.get('label') or s['attack']} · {NORM_NAMES.get(s['norm'], s['norm'])} · ε={s['eps_text']}"


def _setting_text(h: dict) -> str:
    """A headline setting as text: ``pgd L∞ ε=2/255``."""
    return f"{h.get('attack', '')} {NORM_NAMES.get(h.get('norm', ''), h.get('norm', ''))} ε={h.get('eps', '')}"


def _headline(summaries: list[dict], meta: dict) -> dict:
    h = dict(meta.get("headline") or (meta.get("config") or {}).get("headline") or {})
    if h:
        return h
    adv = [s for s in summaries if s.get("kind") != "corruption"]
    if not adv:
        return {}
    counts: dict[tuple, set] = defaultdict(set)
    for s in adv:
        counts[(s["attack"], s["norm"], s["eps"], s["eps_text"])].add(s["model"])
    best = max(counts, key=lambda k: (len(counts[k]), k[2]))
    return {"attack": best[0], "norm": best[1], "eps": best[3]}


def _at_headline(summaries: list[dict], headline: dict) -> dict[tuple[str, str], dict]:
    from .leaderboard import headline_key

    keys = headline_key(summaries, headline) if headline else {}
    out = {}
    for s in summaries:
        h = headline_for(headline, s["dataset"])
        if s["model"] in keys and s.get("kind") != "corruption" and s["attack"] == h.get("attack") \
                and s["norm"] == h.get("norm") and s["robust"] == keys[s["model"]] \
                or (s["model"] in keys and _nan(keys[s["model"]]) and _nan(s["robust"])
                    and s["attack"] == h.get("attack")):
            out.setdefault((s["model"], s["dataset"]), s)
    return out


def _class_names(meta: dict) -> dict[str, list[str]]:
    """Class names per model: run metadata specs, else the model file's advonnx.class_names."""
    out: dict[str, list[str]] = {}
    specs = meta.get("specs") or {}
    for name, spec in specs.items():
        names = spec.get("class_names") or spec.get("classes")
        if names:
            out[name] = [str(n) for n in names]
    for m in (meta.get("config") or {}).get("models", []):
        name, path = m.get("name"), m.get("path")
        if not name or name in out or not path or not Path(path).is_file():
            continue
        try:
            import onnx

            model = onnx.load(path, load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            raw = props.get("advonnx.class_names")
            if raw:
                out[name] = [n.strip() for n in raw.split(",")]
        except Exception:  # a moved or unreadable model only costs the class names
            continue
    return out


def _class_label(names: dict[str, list[str]], model: str, k) -> str:
    if k is None:
        return "?"
    ns = names.get(model) or []
    if np.ndim(k) == 1:  # a multi-label decision vector: the findings present
        on = [_class_label(names, model, i).removeprefix("class ") for i in np.flatnonzero(np.asarray(k) == 1)]
        return "+".join(on) or "no finding"
    k = int(k)
    return ns[k] if 0 <= k < len(ns) else f"class {k}"


# ------------------------------------------------------------------------------- masking flags

def _masking(table: pa.Table, folders: list[Path] = ()) -> tuple[dict[str, Any], set[str], dict[tuple, str]]:
    """The gradient-masking checks (``masking.py``; from the rows, else a run's ``_masking.json``),
    the models where they fired, and a note per (model, dataset, norm, eps) of a fired check."""
    from .masking import CHECK_TITLES, masking_checks, read_masking

    try:
        result = masking_checks(table)
    except Exception:  # a report of odd rows still renders: fall back to what the run stored
        stored = [read_masking(f) for f in folders]
        result = {"models": [m for r in stored if r for m in r.get("models", [])]}
    masked = {m["model"] for m in result["models"] if m["suspected"]}
    notes: dict[tuple, str] = {}
    for m in result["models"]:
        for c in m["checks"]:
            if c["fired"]:
                key = (m["model"], m["dataset"], c["norm"], c["eps"])
                notes[key] = "; ".join(filter(None, [notes.get(key), f"{CHECK_TITLES[c['check']]}: {c['text']}"]))
    return result, masked, notes


def _masking_html(result: dict[str, Any]) -> str:
    """One row per model: the verdict and every check with its evidence."""
    from .masking import CHECK_TITLES, NOT_CHECKED

    models = [m for m in result["models"] if m["verdict"] != NOT_CHECKED]
    if not models:
        return '<p class="sub">No model had a gradient attack to check.</p>'
    out = ['<div class="scroll"><table class="lb"><thead><tr><th>Model</th><th>Dataset</th><th>Verdict</th>'
           "<th>Checks and evidence</th></tr></thead><tbody>"]
    for m in models:
        tag = "bad" if m["suspected"] else "ok"
        items = "".join(f'<li><span class="tag {"bad" if c["fired"] else "ok"}">{"fired" if c["fired"] else "passed"}'
                        f"</span> {_e(CHECK_TITLES[c['check']])}: {_e(c['text'])}</li>" for c in m["checks"])
        out.append(f"<tr><td><b>{_e(m['model'])}</b></td><td>{_e(m['dataset'])}</td>"
                   f'<td><span class="tag {tag}">{_e(m["verdict"])}</span></td><td><ul>{items}</ul></td></tr>')
    out.append("</tbody></table></div>")
    return "".join(out)


# ----------------------------------------------------------------------------------------- plots

def _grid(plt, n: int, *, ncols: int = 3, h: float = 3.0, w: float = 3.6):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _percent_axis(ax, metric: str):
    ax.set_ylim(-3, 103)
    ax.set_ylabel(f"{'robust ' if metric == 'accuracy' else ''}{metric} %")


def _legend(fig, axes, models, colors):
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=colors[m], marker="o", lw=2, ms=5, label=m) for m in models]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(models), 5), bbox_to_anchor=(0.5, -0.02),
               fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if len(axes) <= 3 else 0.04, 1, 1))


def curve_figures(summaries: list[dict], rows: list[dict], colors: dict[str, str]) -> list[dict]:
    """Robustness curves: one figure per dataset and family (eps, severity, queries)."""
    plt = _mpl()
    figs = []
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        by_ds[s["dataset"]].append(s)
    for dataset, ss in by_ds.items():
        metric = ss[0]["metric"]
        models = sorted({s["model"] for s in ss})
        clean = {m: np.nanmean([s["clean"] for s in ss if s["model"] == m]) for m in models}
        # metric vs eps, one panel per attack × norm
        panels: dict[tuple, list[dict]] = defaultdict(list)
        for s in ss:
            if s.get("kind") != "corruption":
                panels[(s.get("label") or s["attack"], s["norm"])].append(s)
        if panels:
            fig, axes = _grid(plt, len(panels))
            for ax, ((attack, norm), ps) in zip(axes, sorted(panels.items()), strict=False):
                ticks = {}
                for m in models:
                    pts = sorted((s["eps"], s["robust"], s["robust_ci"], s["eps_text"]) for s in ps if s["model"] == m)
                    if not pts:
                        continue
                    x = [0.0] + [p[0] for p in pts]
                    y = [100 * clean[m]] + [100 * p[1] for p in pts]
                    ax.plot(x, y, "-o", color=colors[m], lw=2, ms=4.5)
                    lo = [100 * clean[m]] + [100 * p[2][0] for p in pts]
                    hi = [100 * clean[m]] + [100 * p[2][1] for p in pts]
                    if not any(math.isnan(v) for v in lo + hi):
                        ax.fill_between(x, lo, hi, color=colors[m], alpha=0.12, lw=0)
                    ticks.update({p[0]: p[3] for p in pts})
                ticks[0.0] = "0"
                xs = sorted(ticks)
                ax.set_xticks(xs, [ticks[v] for v in xs], rotation=30 if len(xs) > 5 else 0)
                ax.set_title(f"{attack} · {NORM_NAMES.get(norm, norm)}")
                ax.set_xlabel(f"ε ({NORM_NAMES.get(norm, norm)})")
                _percent_axis(ax, metric)
            _legend(fig, axes, models, colors)
            figs.append({"dataset": dataset, "kind": "eps", "title": f"{metric.capitalize()} vs perturbation budget",
                         "caption": f"{dataset}: {metric} under attack as the budget ε grows (ε = 0: clean); "
                                    "bands are 95 % intervals (Wilson; Dice: cluster bootstrap).",
                         "uri": _svg_uri(fig)})
        # metric vs severity, one panel per corruption
        cpanels: dict[str, list[dict]] = defaultdict(list)
        for s in ss:
            if s.get("kind") == "corruption":
                cpanels[s["attack"]].append(s)
        if cpanels:
            fig, axes = _grid(plt, len(cpanels), h=2.8)
            for ax, (name, ps) in zip(axes, sorted(cpanels.items()), strict=False):
                for m in models:
                    pts = sorted((s["eps"], s["robust"]) for s in ps if s["model"] == m)
                    if pts:
                        ax.plot([0] + [p[0] for p in pts], [100 * clean[m]] + [100 * p[1] for p in pts], "-o",
                                color=colors[m], lw=2, ms=4.5)
                sev = sorted({0.0} | {s["eps"] for s in ps})
                ax.set_xticks(sev, [f"{v:g}" for v in sev])
                ax.set_title(name.replace("_", " "))
                ax.set_xlabel("severity")
                _percent_axis(ax, metric)
            for i, ax in enumerate(axes):
                if i % 3:
                    ax.set_ylabel("")
            _legend(fig, axes, models, colors)
            figs.append({"dataset": dataset, "kind": "severity", "title": f"{metric.capitalize()} vs corruption severity",
                         "caption": f"{dataset}: natural corruptions, severity 1-5 (0: clean).", "uri": _svg_uri(fig)})
        # accuracy vs queries for query-based attacks
        qfig = _query_figure(plt, [r for r in rows if r["dataset"] == dataset], models, colors)
        if qfig is not None:
            figs.append({"dataset": dataset, "kind": "queries", "title": "Accuracy vs query budget",
                         "caption": f"{dataset}: robust accuracy if the attack had stopped after q queries "
                                    "(a sample counts as broken from its first successful query).",
                         "uri": qfig})
    return figs


def _query_figure(plt, rows: list[dict], models: list[str], colors: dict[str, str]) -> str | None:
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("kind") == "adversarial" and r["status"] == "ok" and r.get("max_queries") \
                and r["task"] == "classification":
            groups[(r.get("label") or r["attack"], r["norm"], r["eps"], r.get("eps_text") or f"{r['eps']:g}")][r["model"]].append(r)
    groups = {k: v for k, v in groups.items() if any((r["queries"] or 0) > 1 for rs in v.values() for r in rs)}
    if not groups:
        return None
    fig, axes = _grid(plt, len(groups))
    for ax, ((attack, norm, _eps, eps_text), per_model) in zip(axes, sorted(groups.items()), strict=False):
        qmax = max(int(r["max_queries"]) for rs in per_model.values() for r in rs)
        seen = [r["queries"] or 0 for rs in per_model.values() for r in rs]
        grid = np.unique(np.concatenate([[0], np.linspace(1, max(qmax, 1), 200).round(), seen, [qmax]]))
        for m in models:
            rs = per_model.get(m)
            if not rs:
                continue
            correct = np.array([bool(r["clean_correct"]) for r in rs])
            broken = np.array([bool(r["success"]) for r in rs])
            q = np.array([r["queries"] or 0 for r in rs], dtype=np.float64)
            acc = [100 * np.mean(correct & ~(broken & (q <= g))) if g > 0 else 100 * correct.mean() for g in grid]
            ax.step(grid, acc, where="post", color=colors[m], lw=2)
        if qmax > 2000:
            ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, qmax * 1.02)
        ax.set_title(f"{attack} · {NORM_NAMES.get(norm, norm)} · ε={eps_text}")
        ax.set_xlabel("queries per sample")
        _percent_axis(ax, "accuracy")
    _legend(fig, axes, models, colors)
    return _svg_uri(fig)


def contrast_figure(heads: dict[tuple[str, str], dict], colors: dict[str, str], headline: dict) -> str | None:
    """Paired bars: clean vs robust at the headline setting, per model, per dataset."""
    if not heads:
        return None
    plt = _mpl()
    datasets = sorted({d for _, d in heads})
    fig, axes = _grid(plt, len(datasets), ncols=2, h=3.6, w=1.2 + 1.6 * max(2, len(heads) // len(datasets)))
    for ax, ds in zip(axes, datasets, strict=False):
        ss = sorted((s for (m, d), s in heads.items() if d == ds), key=lambda s: -s["clean"] if not _nan(s["clean"]) else 0)
        x = np.arange(len(ss))
        w = 0.38
        for i, s in enumerate(ss):
            c = colors[s["model"]]
            for dx, v, ci, alpha, hatch in ((-w / 2, s["clean"], s["clean_ci"], 0.35, None),
                                            (w / 2, s["robust"], s["robust_ci"], 1.0, None)):
                if _nan(v):
                    continue
                err = None if _nan(ci[0]) else [[100 * (v - ci[0])], [100 * (ci[1] - v)]]
                ax.bar(i + dx, 100 * v, w * 0.95, color=c, alpha=alpha, yerr=err, capsize=3,
                       error_kw={"ecolor": "#334155", "lw": 1}, hatch=hatch)
                ax.text(i + dx, 100 * v + 2 + (0 if err is None else err[1][0]), f"{100 * v:.1f}", ha="center",
                        va="bottom", fontsize=9, color="#0f172a")
        ax.set_xticks(x, [s["model"] for s in ss])
        ax.set_ylim(0, 115)
        ax.set_yticks([0, 20, 40, 60, 80, 100])
        metric = ss[0]["metric"]
        ax.set_ylabel(f"{metric} %")
        ax.set_title(f"{ds}\nunder {_setting_text(headline_for(headline, ds))}", fontsize=10)
        ax.grid(axis="x", visible=False)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color="#64748b", alpha=0.35, label="clean"),
                        Patch(color="#64748b", label="under the dataset's headline attack")],
               loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _svg_uri(fig)


# -------------------------------------------------------------------------------------- examples

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
    pairs = [(f, folder / f.name.replace(".npz", ".parquet")) for f in sorted((folder / "_examples").glob("part-*.npz"))]
    pairs += [(f, folder / f.name.replace(".examples.npz", ".parquet")) for f in sorted(folder.glob("part-*.examples.npz"))]
    return pairs


def _chunk_rows(part: Path) -> list[dict]:
    if not part.is_file():
        return []
    cols = ["model", "dataset", "attack", "kind", "norm", "eps", "eps_text", "task", "sample_id",
            "clean_confidence", "adv_confidence", "dice_clean", "dice_adv", "status"]
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
                sample = {"sample_id": sid, "delta_max": m,
                          "amp": ((hi - lo) / (2 * m)) if m > 0 else 0.0,
                          "images": [("clean", _png_uri(gx)), ("perturbed", _png_uri(ga)),
                                     ("perturbation", _png_uri(_delta_rgb(_shrink(d), m)))]}
                if seg:
                    for title, lbl in (("reference", label), ("clean pred.", cp), ("perturbed pred.", ap)):
                        lp = None if lbl is None else _label_plane(lbl)
                        if lp is not None:
                            lp = _shrink(lp)
                            sample["images"].append((title, _png_uri(_overlay(gx if title != "perturbed pred." else ga, lp))))
                    sample["dice_clean"], sample["dice_adv"] = r.get("dice_clean"), r.get("dice_adv")
                else:
                    sample.update({
                        "label": _class_label(names, model, label), "clean_pred": _class_label(names, model, cp),
                        "adv_pred": _class_label(names, model, ap),
                        "clean_ok": cp is not None and label is not None and bool(np.array_equal(cp, label)),
                        "adv_ok": ap is not None and label is not None and bool(np.array_equal(ap, label)),
                        "clean_conf": r.get("clean_confidence"), "adv_conf": r.get("adv_confidence"),
                    })
                samples.append(sample)
            if samples:
                three_d = layout in ("NCDHW", "NDHWC")
                out.append({"model": model, "dataset": first["dataset"], "attack": first["attack"],
                            "kind": first.get("kind") or "adversarial", "norm": first["norm"], "eps": first["eps"],
                            "eps_text": first.get("eps_text") or f"{first['eps']:g}", "task": first["task"],
                            "three_d": three_d, "samples": samples})
    out.sort(key=lambda e: (e["model"], e["dataset"], e["kind"] == "corruption", e["attack"], e["norm"], e["eps"]))
    return out


# ------------------------------------------------------------------------------------------ html

CSS = """
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--card:#fff;--accent:#2563eb;--bad:#dc2626;--good:#059669;--warn:#b45309}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.55 Inter,"Segoe UI",system-ui,-apple-system,"Helvetica Neue",Arial,sans-serif}
header.top{background:linear-gradient(135deg,#0f172a,#1e3a8a);color:#fff;padding:28px 0 24px}
.wrap{max-width:1280px;margin:0 auto;padding:0 24px}
header.top h1{margin:0 0 4px;font-size:26px;letter-spacing:-.01em}
header.top p{margin:0;color:#cbd5e1}
.facts{display:flex;flex-wrap:wrap;gap:8px 22px;margin-top:14px;font-size:13px;color:#cbd5e1}
.facts b{color:#fff;font-weight:600}
nav.toc{position:sticky;top:0;z-index:5;background:rgba(248,250,252,.94);backdrop-filter:blur(6px);border-bottom:1px solid var(--line)}
nav.toc a{display:inline-block;padding:10px 12px;color:var(--muted);text-decoration:none;font-size:14px;font-weight:500}
nav.toc a:hover{color:var(--accent)}
section{margin:28px 0}
h2{font-size:20px;margin:0 0 4px;letter-spacing:-.01em}
h3{font-size:16px;margin:18px 0 6px}
.sub{color:var(--muted);margin:0 0 14px;font-size:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:18px 20px;box-shadow:0 1px 2px rgba(15,23,42,.04)}
.callout{border-left:5px solid #c026d3;background:#fdf4ff;border-radius:10px;padding:14px 18px;margin:0 0 14px}
.callout.warn{border-color:#d97706;background:#fffbeb}
.callout b.big{font-size:17px}
table.lb{width:100%;border-collapse:collapse;font-size:13.5px;font-variant-numeric:tabular-nums}
table.lb th,table.lb td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle;white-space:nowrap}
table.lb th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);cursor:pointer;user-select:none;background:#fff}
table.lb th:hover{color:var(--accent)}
table.lb th[aria-sort=ascending]::after{content:" ▲";font-size:10px}
table.lb th[aria-sort=descending]::after{content:" ▼";font-size:10px}
table.lb td.n{text-align:right}
table.lb tbody tr:hover{background:#f1f5f9}
table.lb tr.head td{font-weight:600}
.ci{color:var(--muted);font-size:12px}
.bar{display:inline-block;width:56px;height:7px;background:#e2e8f0;border-radius:4px;margin-left:8px;vertical-align:middle;position:relative;overflow:hidden}
.bar i{position:absolute;left:0;top:0;bottom:0;border-radius:4px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:7px;vertical-align:baseline}
.tag{display:inline-block;font-size:11.5px;font-weight:600;padding:1px 8px;border-radius:999px;margin:1px 4px 1px 0;background:#eef2ff;color:#3730a3}
.tag.bad{background:#fee2e2;color:#991b1b}.tag.warn{background:#fef3c7;color:#92400e}.tag.ok{background:#dcfce7;color:#166534}
.tag.grey{background:#f1f5f9;color:#475569}
.scroll{overflow-x:auto}
.tools{display:flex;gap:10px;align-items:center;margin:0 0 10px;flex-wrap:wrap}
.tools input,.tools select,select.ex{font:inherit;font-size:14px;padding:6px 10px;border:1px solid #cbd5e1;border-radius:8px;background:#fff}
figure.plot{margin:0 0 18px}
figure.plot img{max-width:100%;height:auto;display:block;margin:0 auto}
figure.plot figcaption{color:var(--muted);font-size:13px;margin-top:4px}
.exset{display:none}.exset.on{display:block}
.samples{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px;margin-top:12px}
.samples.seg{grid-template-columns:1fr}
.sample{border:1px solid var(--line);border-radius:10px;padding:10px 12px;background:#fff}
.sample .sid{font-size:12px;color:var(--muted);margin-bottom:6px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.imgs{display:flex;gap:8px;flex-wrap:wrap}
.imgs figure{margin:0;width:80px;text-align:center;font-size:11.5px;line-height:1.3;color:var(--muted)}
.imgs img{width:80px;height:80px;object-fit:contain;image-rendering:pixelated;border-radius:6px;background:#000;display:block}
.samples.seg .imgs figure{width:120px}.samples.seg .imgs img{width:120px;height:120px}
.pred{font-size:13px;margin-top:8px;line-height:1.5}
.pred .wrong{color:var(--bad);font-weight:600}.pred .right{color:var(--good);font-weight:600}
.legend{font-size:13px;color:var(--muted);margin-top:6px}
.legend span{display:inline-block;width:12px;height:12px;border-radius:3px;margin:0 4px -2px 10px}
dl.spec{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13.5px;margin:0}
dl.spec dt{color:var(--muted)}dl.spec dd{margin:0}
.models{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:14px}
footer{color:var(--muted);font-size:12.5px;padding:20px 0 40px}
@media print{nav.toc{display:none}.exset{display:block}}
"""

JS = """
(function(){
  function key(td){var v=td.getAttribute('data-v');if(v===null)v=td.textContent.trim();var f=parseFloat(v);
    return (v!==''&&!isNaN(f)&&isFinite(v))?{n:f}:{s:v.toLowerCase(),e:v===''};}
  function cmp(a,b){if(a.e&&!b.e)return 1;if(b.e&&!a.e)return -1;
    if('n' in a&&'n' in b)return a.n-b.n;var x=('s' in a)?a.s:String(a.n),y=('s' in b)?b.s:String(b.n);return x<y?-1:x>y?1:0;}
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('thead th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var desc=th.getAttribute('aria-sort')==='ascending';
        t.querySelectorAll('thead th').forEach(function(o){o.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',desc?'descending':'ascending');
        var tb=t.tBodies[0],rows=Array.prototype.slice.call(tb.rows);
        rows.sort(function(r1,r2){var a=key(r1.cells[i]),b=key(r2.cells[i]);
          if(a.e||b.e)return cmp(a,b);var c=cmp(a,b);return desc?-c:c;});
        rows.forEach(function(r){tb.appendChild(r);});
      });
    });
  });
  document.querySelectorAll('input[data-filter]').forEach(function(inp){
    var t=document.getElementById(inp.getAttribute('data-filter'));
    inp.addEventListener('input',function(){var q=inp.value.toLowerCase().split(/\\s+/).filter(Boolean);
      Array.prototype.forEach.call(t.tBodies[0].rows,function(r){var s=r.textContent.toLowerCase();
        r.style.display=q.every(function(w){return s.indexOf(w)>=0;})?'':'none';});});
  });
  document.querySelectorAll('select.ex').forEach(function(sel){
    function show(){var g=sel.getAttribute('data-group');
      document.querySelectorAll('.exset[data-group="'+g+'"]').forEach(function(d){
        d.classList.toggle('on',d.getAttribute('data-key')===sel.value);});}
    sel.addEventListener('change',show);show();
  });
})();
"""


def _bar(v, color: str) -> str:
    if _nan(v):
        return ""
    return f'<span class="bar"><i style="width:{max(0.0, min(100.0, 100 * v)):.1f}%;background:{color}"></i></span>'


def _cell_ci(v, ci, color: str | None = None) -> str:
    if _nan(v):
        return '<td class="n" data-v="">–</td>'
    ci_txt = "" if _nan(ci[0]) else f' <span class="ci">{percent(ci[0])}–{percent(ci[1])}</span>'
    return f'<td class="n" data-v="{_num(v)}">{percent(v)}{ci_txt}{_bar(v, color) if color else ""}</td>'


def _flags(s: dict, masking_note: str | None) -> list[str]:
    tags = []
    for k, cls in (("invalid", "bad"), ("errored", "bad"), ("skipped", "warn")):
        if s.get(k):
            tags.append(f'<span class="tag {cls}" title="rows with status {k}">{s[k]} {k}</span>')
    if masking_note:
        tags.append(f'<span class="tag bad" title="{_e(masking_note)}">gradient masking?</span>')
    if s.get("label_source") == "clean_prediction":
        tags.append('<span class="tag grey" title="no labels: the clean predictions are the reference">no labels</span>')
    return tags


def _leaderboard(summaries, heads, colors, masked_models, masking_notes, value_range_assumed) -> str:
    multi_ds = len({s["dataset"] for s in summaries}) > 1
    metrics = {s["metric"] for s in summaries}
    mname = {"accuracy": "acc.", "Dice": "Dice"}.get(next(iter(metrics)), "") if len(metrics) == 1 else ""
    ds_th = "<th>Dataset</th>" if multi_ds else ""
    per_model: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in summaries:
        per_model[(s["model"], s["dataset"])].append(s)
    order = sorted(per_model, key=lambda k: (-(heads[k]["robust"] if k in heads and not _nan(heads[k]["robust"]) else -1), k))
    out = ['<div class="scroll"><table class="lb sortable" id="lb-models"><thead><tr>',
           f"<th>#</th><th>Model</th>{ds_th}<th>Framework</th><th>Gradient</th>",
           f"<th>Clean {mname} %</th><th>Robust {mname} % ≤ (headline)</th><th>Drop pts</th><th>Worst attack %</th>",
           "<th>Worst corruption %</th><th>Flags</th></tr></thead><tbody>"]
    for rank, key in enumerate(order, 1):
        ss = per_model[key]
        model, dataset = key
        c = colors[model]
        first = ss[0]
        clean = float(np.nanmean([s["clean"] for s in ss])) if any(not _nan(s["clean"]) for s in ss) else math.nan
        clean_ci = next((s["clean_ci"] for s in ss if not _nan(s["clean_ci"][0])), (math.nan, math.nan))
        h = heads.get(key)
        adv = [s for s in ss if s.get("kind") != "corruption" and not _nan(s["robust"])]
        cor = [s for s in ss if s.get("kind") == "corruption" and not _nan(s["robust"])]
        worst_a = min(adv, key=lambda s: s["robust"]) if adv else None
        worst_c = min(cor, key=lambda s: s["robust"]) if cor else None
        grads = sorted({s["gradient"] for s in ss if s["gradient"] and s["gradient"] != "none"}) or ["none"]
        agg = {k: sum(s.get(k) or 0 for s in ss) for k in ("invalid", "errored")}
        agg["skipped"] = max((s.get("skipped") or 0) for s in ss)
        agg["label_source"] = first.get("label_source")
        tags = _flags(agg, "flagged by the gradient-masking checks (see Gradient masking)" if model in masked_models
                      else None)
        if model in value_range_assumed:
            tags.append('<span class="tag warn" title="the model declares no input value range; [0, 1] or the '
                        'CLI flag was assumed, so eps units may be wrong">value range assumed</span>')
        drop = (clean - h["robust"]) if h and not _nan(h["robust"]) and not _nan(clean) else math.nan
        out.append("<tr>")
        out.append(f'<td class="n" data-v="{rank}">{rank}</td>')
        mtag = f' <span class="ci">{_e(first["metric"])}</span>' if not mname else ""
        out.append(f'<td data-v="{_e(model)}"><span class="dot" style="background:{c}"></span><b>{_e(model)}</b>{mtag}</td>')
        if multi_ds:
            out.append(f"<td>{_e(dataset)}</td>")
        out.append(f"<td>{_e(first['framework'] or '?')}</td>")
        out.append(f"<td>{''.join(f'<span class=tag>{_e(g)}</span>' for g in grads)}</td>")
        out.append(_cell_ci(clean, clean_ci, "#94a3b8"))
        out.append(_cell_ci(h["robust"], h["robust_ci"], c) if h else '<td class="n" data-v="">–</td>')
        out.append(f'<td class="n" data-v="{_num(drop)}">{"–" if _nan(drop) else f"{100 * drop:.1f}"}</td>')
        for w in (worst_a, worst_c):
            if w is None:
                out.append('<td class="n" data-v="">–</td>')
            else:
                out.append(f'<td data-v="{_num(w["robust"])}">{percent(w["robust"])}'
                           f'<br><span class="ci">{_e(_setting_name(w))}</span></td>')
        none = '<span class="tag ok">none</span>'
        out.append(f"<td>{''.join(tags) or none}</td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _findings_html(summaries: list[dict], colors: dict[str, str], names: dict[str, list[str]]) -> tuple[str, int]:
    """Multi-label models: robust accuracy of each finding alone per attack setting (clean and
    under attack as the reference, AutoAttack's count), beside the exact-match robust accuracy."""
    rows = [s for s in summaries if s.get("per_finding") and s.get("kind") != "corruption"]
    if not rows:
        return "", 0
    out = ['<h3>Per finding (multi-label models)</h3><p class="sub">Robust % of each finding alone: decided as the '
           "reference both clean and under attack. Exact match: every finding right (the leaderboard's robust %); "
           "Hamming: findings decided unlike the reference under attack, mean per sample.</p>"]
    by_model: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in rows:
        by_model[(s["model"], s["dataset"])].append(s)
    for (model, dataset), ss in sorted(by_model.items()):
        k = max(len(s["per_finding"]) for s in ss)
        heads = "".join(f"<th>{_e(_class_label(names, model, i))}</th>" for i in range(k))
        out.append(f'<div class="scroll"><table class="lb"><thead><tr><th><span class="dot" '
                   f'style="background:{colors[model]}"></span>{_e(model)} · {_e(dataset)}</th>'
                   f"<th>Exact match % ≤</th><th>Hamming</th>{heads}</tr></thead><tbody>")
        for s in sorted(ss, key=lambda s: (s["attack"], s["norm"], s["eps"])):
            cells = "".join(f'<td class="n">{percent(v)}</td>' for v in s["per_finding"])
            ham = s.get("hamming_adv", math.nan)
            out.append(f"<tr><td>{_e(_setting_name(s))}</td><td class=\"n\">{percent(s['robust'])}</td>"
                       f'<td class="n">{"–" if _nan(ham) else f"{ham:.2f}"}</td>{cells}</tr>')
        out.append("</tbody></table></div>")
    return "".join(out), len(by_model)


def _cascade_html(table: pa.Table) -> str:
    """What each stage of a cascade (autoattack) added per model (``leaderboard.cascade_stages``)."""
    from .leaderboard import cascade_stages

    rows = cascade_stages(table)
    if not rows:
        return ""
    out = ['<h3>Cascade stages</h3><p class="sub">Per model, robust accuracy after each stage of the cascade '
           "(each stage attacks only the samples earlier ones left robust; an upper bound) and the points the stage "
           'removed.</p><div class="card"><div class="scroll"><table class="lb"><thead><tr><th>Model</th>'
           "<th>Dataset</th><th>Setting</th><th>Clean %</th><th>Stages</th></tr></thead><tbody>"]
    for c in rows:
        stages = " → ".join(f"{_e(label)} ≤ {percent(r)} (−{d:.1f})" for label, r, d in c["stages"])
        out.append(f"<tr><td>{_e(c['model'])}</td><td>{_e(c['dataset'])}</td>"
                   f"<td>{_e(c['attack'])} {_e(NORM_NAMES.get(c['norm'], c['norm']))} ε={_e(c['eps_text'])}</td>"
                   f'<td class="n">{percent(c["clean"])}</td><td>{stages}</td></tr>')
    out.append("</tbody></table></div></div>")
    return "".join(out)


def _all_settings(summaries, heads, colors, masking_notes) -> str:
    head_ids = {id(s) for s in heads.values()}
    multi_ds = len({s["dataset"] for s in summaries}) > 1
    ds_th = "<th>Dataset</th>" if multi_ds else ""
    out = ['<div class="tools"><input type="search" placeholder="Filter rows, e.g. pgd linf or brain_cnn" '
           'data-filter="lb-all" size="40" aria-label="filter settings"></div>',
           '<div class="scroll"><table class="lb sortable" id="lb-all"><thead><tr>',
           f"<th>Model</th>{ds_th}<th>Attack / corruption</th><th>Norm</th><th>ε / severity</th>",
           "<th>Gradient</th><th>n (groups)</th><th>Clean %</th><th>Robust %</th><th>ASR %</th><th>Median ‖δ‖</th>",
           "<th>Queries</th><th>Time s</th><th>Flags</th></tr></thead><tbody>"]
    for s in sorted(summaries, key=lambda s: (s["model"], s["dataset"], s.get("kind") == "corruption", s["attack"], s["norm"], s["eps"], s.get("label") or "")):
        note = masking_notes.get((s["model"], s["dataset"], s["norm"], s["eps"])) if s.get("kind") != "corruption" else None
        tags = _flags({k: s.get(k) for k in ("invalid", "errored")}, note)
        cls = ' class="head"' if id(s) in head_ids else ""
        out.append(f"<tr{cls}>")
        out.append(f'<td data-v="{_e(s["model"])}"><span class="dot" style="background:{colors[s["model"]]}"></span>{_e(s["model"])}</td>')
        if multi_ds:
            out.append(f"<td>{_e(s['dataset'])}</td>")
        out.append(f"<td>{_e(s.get('label') or s['attack'])}</td><td>{_e(NORM_NAMES.get(s['norm'], s['norm']) or '–')}</td>")
        out.append(f'<td class="n" data-v="{_num(s["eps"])}">{_e(s["eps_text"])}</td>')
        out.append(f"<td>{_e(s['gradient'] or '–')}</td><td class='n' title='{s.get('groups', s['n'])} groups'>{s['n']} ({s.get('groups', s['n'])})</td>")
        out.append(_cell_ci(s["clean"], (math.nan, math.nan)))  # the same per model: its interval is in the leaderboard
        out.append(_cell_ci(s["robust"], s["robust_ci"], colors[s["model"]]))
        out.append(f'<td class="n" data-v="{_num(s["asr"])}">{percent(s["asr"])}</td>')
        mn = s.get("median_norm")
        out.append(f'<td class="n" data-v="{_num(mn)}">{"–" if _nan(mn) else f"{mn:.3g}"}</td>')
        q = s.get("queries")
        mq = s.get("max_queries")
        qtxt = "–" if _nan(q) else f"{q:.0f}" + (f" / {mq}" if mq else "")
        out.append(f'<td class="n" data-v="{_num(q)}">{qtxt}</td>')
        out.append(f'<td class="n" data-v="{_num(s["time_s"])}">{s["time_s"]:.1f}</td>')
        out.append(f"<td>{''.join(tags)}</td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _contrast_html(summaries, heads, headline, colors, table) -> tuple[str, int]:
    from .compare import contrast_text, unproven_text
    from .leaderboard import contrast_pairs

    tested = contrast_pairs(summaries, headline, table, all_pairs=True)
    pairs = [c for c in tested if c["equivalent_clean"] and c["different_robust"]]
    parts = []
    setting = _setting_text(headline)
    for c in pairs:
        lo, hi = c["lo"], c["hi"]
        metric, setting = lo["metric"], _setting_text(headline_for(headline, lo["dataset"]))
        parts.append(
            f'<div class="callout"><b class="big">Equal clean, different robust.</b> '
            f'<b style="color:{colors[hi["model"]]}">{_e(hi["model"])}</b> and '
            f'<b style="color:{colors[lo["model"]]}">{_e(lo["model"])}</b> score the same on clean {_e(lo["dataset"])} data '
            f'({percent(hi["clean"])} % vs {percent(lo["clean"])} % {metric}), but under {_e(setting)} '
            f'{_e(hi["model"])} keeps <b>{percent(hi["robust"])} %</b> while {_e(lo["model"])} falls to '
            f'<b>{percent(lo["robust"])} %</b>: a gap of <b>{100 * (hi["robust"] - lo["robust"]):.1f} points</b> '
            f'that the test set alone does not show. <span class="sub">Paired test on the same samples: '
            f'{_e(contrast_text(c))}.</span></div>')
    for c in tested:
        if c["different_robust"] and not c["equivalent_clean"]:
            parts.append(f'<p class="sub"><b>{_e(c["hi"]["model"])}</b> vs <b>{_e(c["lo"]["model"])}</b> under '
                         f'{_e(_setting_text(headline_for(headline, c["lo"]["dataset"])))}: {_e(unproven_text(c))}.</p>')
    if not pairs and len(heads) > 1:
        parts.append(f'<p class="sub">No pair of models on one dataset has clean figures equivalent within ±2 points '
                     f'(TOST, p &lt; 0.05) and robust figures that differ (exact McNemar, p &lt; 0.05) under '
                     f'{_e(setting)}; the paired figures are in <a href="#paired">Paired comparisons</a>.</p>')
    return "".join(parts), len(pairs)


def _examples_html(examples: list[dict], colors: dict[str, str], names: dict[str, list[str]], headline: dict) -> tuple[str, int]:
    if not examples:
        return ('<p class="sub">This run saved no adversarial examples (run with <code>--save-examples K</code>, '
                'K &gt; 0, to see them here).</p>'), 0
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in examples:
        groups[(e["model"], e["dataset"])].append(e)
    out = []
    n_img = 0
    for gi, ((model, dataset), exs) in enumerate(sorted(groups.items())):
        gid = f"g{gi}"

        default = next((i for i, e in enumerate(exs) if _is_headline(e, headline)), next((i for i, e in enumerate(exs) if e["kind"] != "corruption"), 0))
        out.append(f'<div class="card" style="margin-bottom:16px"><h3 style="margin-top:0">'
                   f'<span class="dot" style="background:{colors[model]}"></span>{_e(model)} '
                   f'<span class="ci">on {_e(dataset)}</span></h3>')
        out.append(f'<div class="tools"><label>Setting <select class="ex" data-group="{gid}" aria-label="example setting for {_e(model)}">')
        for i, e in enumerate(exs):
            sel = " selected" if i == default else ""
            out.append(f'<option value="{i}"{sel}>{_e(_setting_name(e))}</option>')
        out.append("</select></label>")
        if exs[0]["three_d"]:
            out.append('<span class="ci">3-D volumes: central axial slice shown</span>')
        out.append("</div>")
        seg = exs[0]["task"] == "segmentation"
        if seg and names.get(model):
            leg = "".join(f'<span style="background:rgb({",".join(str(int(255 * c)) for c in CLASS_COLORS[(k - 1) % len(CLASS_COLORS)])})"></span>{_e(n)}'
                          for k, n in enumerate(names[model]) if k > 0)
            out.append(f'<div class="legend">Label maps: {leg} (class 0, {_e(names[model][0])}, not coloured)</div>')
        for i, e in enumerate(exs):
            on = " on" if i == default else ""
            out.append(f'<div class="exset{on}" data-group="{gid}" data-key="{i}"><div class="samples{" seg" if seg else ""}">')
            for s in e["samples"]:
                out.append(f'<div class="sample"><div class="sid" title="{_e(s["sample_id"])}">{_e(s["sample_id"])}'
                           '</div><div class="imgs">')
                for title, uri in s["images"]:
                    cap = title
                    tip = title
                    if title == "perturbation":
                        cap = f"δ ×{s['amp']:.0f}" if s["delta_max"] > 0 else "δ = 0"
                        tip = f"perturbation, max |δ| = {s['delta_max']:.3g}, amplified ×{s['amp']:.0f}"
                    out.append(f'<figure title="{_e(tip)}"><img class="example" alt="{_e(title)}" src="{uri}">'
                               f'<figcaption>{_e(cap)}</figcaption></figure>')
                    n_img += 1
                out.append("</div>")
                if seg:
                    out.append(f'<div class="pred">max |δ| {s["delta_max"]:.3g} · Dice clean <b>{percent(s.get("dice_clean"))} %</b> → perturbed '
                               f'<b class="{"wrong" if (s.get("dice_adv") or 0) < (s.get("dice_clean") or 0) - 0.05 else "right"}">'
                               f'{percent(s.get("dice_adv"))} %</b></div>')
                else:
                    def conf(v):
                        return "" if _nan(v) else f" ({100 * v:.0f} %)"
                    out.append(
                        f'<div class="pred">true <b>{_e(s["label"])}</b> <span class="ci">· max |δ| {s["delta_max"]:.3g}</span><br>clean → <span class="{"right" if s["clean_ok"] else "wrong"}">'
                        f'{_e(s["clean_pred"])}{conf(s.get("clean_conf"))}</span><br>perturbed → '
                        f'<span class="{"right" if s["adv_ok"] else "wrong"}">{_e(s["adv_pred"])}{conf(s.get("adv_conf"))}</span></div>')
                out.append("</div>")
            out.append("</div></div>")
        out.append("</div>")
    return "".join(out), n_img


def _model_cards(meta: dict, summaries: list[dict], colors: dict[str, str], names: dict[str, list[str]]) -> str:
    specs = meta.get("specs") or {}
    eps = meta.get("execution_providers") or {}
    out = ['<div class="models">']
    for model in sorted({s["model"] for s in summaries}):
        sp = specs.get(model) or {}
        first = next(s for s in summaries if s["model"] == model)
        vr = sp.get("value_range")
        items = [("framework", f"{sp.get('framework') or first['framework']}" + (f" ({sp['exporter']})" if sp.get("exporter") else "")),
                 ("task", sp.get("task") or first["task"]),
                 ("layout", sp.get("layout")),
                 ("scores", sp.get("scores")),
                 ("classes", ", ".join(names.get(model, [])) or sp.get("num_classes")),
                 ("value range", f"[{vr[0]:g}, {vr[1]:g}] ({sp.get('value_range_source', '?')})" if vr else None),
                 ("gradient", sp.get("gradient")),
                 ("runtime", eps.get(model)),
                 ("training", sp.get("training"))]
        dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v not in (None, ""))
        out.append(f'<div class="card"><h3 style="margin-top:0"><span class="dot" style="background:{colors[model]}"></span>'
                   f'{_e(model)}</h3><dl class="spec">{dl}</dl></div>')
    out.append("</div>")
    return "".join(out)


def merged_metadata(table: pa.Table, folders: list[Path]) -> dict[str, Any]:
    """The table's run metadata, with the specs and models of every run folder (``--all``)."""
    meta = run_metadata(table)
    if len(folders) < 2:
        return meta
    meta = json.loads(json.dumps(meta))
    for folder in folders:
        try:
            other = json.loads((folder / "_run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in ("specs", "execution_providers"):
            meta.setdefault(key, {})
            for k, v in (other.get(key) or {}).items():
                meta[key].setdefault(k, v)
        cfg = meta.setdefault("config", {})
        known = {m.get("name") for m in cfg.get("models", [])}
        cfg.setdefault("models", []).extend(m for m in (other.get("config") or {}).get("models", [])
                                            if m.get("name") not in known)
    return meta


def _is_headline(e: dict, headline: dict) -> bool:
    headline = headline_for(headline, e.get("dataset", ""))
    return bool(headline) and e["kind"] != "corruption" and e["attack"] == headline.get("attack") \
        and e["norm"] == headline.get("norm") and str(headline.get("eps")) in (e["eps_text"], f"{e['eps']:g}")


def _within_budget(examples: list[dict], headline: dict, budget: int) -> tuple[list[dict], int]:
    """Example settings whose images fit ``budget`` bytes: the headline setting first, then
    attacks by decreasing budget, then corruptions by decreasing severity."""
    order = sorted(range(len(examples)), key=lambda i: (not _is_headline(examples[i], headline),
                                                         examples[i]["kind"] == "corruption", -examples[i]["eps"], i))
    keep, used = set(), 0
    for i in order:
        size = sum(len(uri) for smp in examples[i]["samples"] for _, uri in smp["images"])
        if keep and used + size > budget:
            continue
        keep.add(i)
        used += size
    return [e for i, e in enumerate(examples) if i in keep], len(examples) - len(keep)


def render_report(table: pa.Table, folders: list[Path], *, title: str | None = None,
                  examples_per_setting: int = 4, meta: dict[str, Any] | None = None,
                  max_example_bytes: int = MAX_EXAMPLE_BYTES, costs: dict[str, Any] | None = None
                  ) -> tuple[str, dict[str, int]]:
    """The report's HTML and counts of what it holds (plots, example images, contrast pairs)."""
    from .leaderboard import summarize
    from .results import attack_labels, setting_key

    _mpl()
    meta = merged_metadata(table, folders) if meta is None else meta
    summaries = summarize(table)
    if not summaries:
        raise AdvonnxError("no result rows to report (every row was skipped?); check the run's data")
    rows = table.select([c for c in ("model", "dataset", "attack", "kind", "norm", "eps", "eps_text", "task",
                                     "status", "max_queries", "queries", "clean_correct", "success",
                                     "value_range_declared", "settings", "targeted") if c in table.column_names]).to_pylist()
    labels = attack_labels(r for r in rows if r.get("kind") != "skipped")
    rows = [{**r, "label": labels.get(setting_key(r))} for r in rows]
    models = sorted({s["model"] for s in summaries})
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    headline = _headline(summaries, meta)
    heads = _at_headline(summaries, headline)
    names = _class_names(meta)
    masking, masked, masking_notes = _masking(table, folders)
    value_range_assumed = {r["model"] for r in rows if r.get("value_range_declared") is False}

    curves = curve_figures(summaries, rows, colors)
    from .clinical import clinical_html

    clinical, n_clinical_plots = clinical_html(table, headline=headline, costs=costs if costs is not None else meta.get("costs"))
    contrast_uri = contrast_figure(heads, colors, headline)
    contrast_html, n_pairs = _contrast_html(summaries, heads, headline, colors, table)
    examples = collect_examples(folders, meta, names, examples_per_setting)
    examples, omitted = _within_budget(examples, headline, max_example_bytes)
    examples_html, n_img = _examples_html(examples, colors, names, headline)
    if omitted:
        examples_html = (f'<div class="callout warn">The examples of {omitted} more settings are left out to keep this '
                         f"file under {max_example_bytes / 1e6:.0f} MB of images (headline and strongest settings "
                         "first); <code>advonnx report --examples N</code> shows fewer samples per setting.</div>"
                         + examples_html)

    run_id = meta.get("run_id") or (folders[0].name if folders else "results")
    title = title or f"advonnx robustness report · {meta.get('suite') or run_id}"
    description = (meta.get("config") or {}).get("description") or ""
    n_samples = {(s["model"], s["dataset"]): s["n"] for s in summaries}
    versions = meta.get("versions") or {}
    facts = [("run", run_id), ("started", meta.get("started")), ("host", meta.get("host")),
             ("models", len(models)), ("settings", len(summaries)), ("rows", table.num_rows),
             ("samples per model", "/".join(str(v) for v in sorted(set(n_samples.values())))),
             ("headline", "; ".join([_setting_text(headline)] + [
                 f"{name}: {_setting_text(headline_for(headline, name))}"
                 for name in sorted(headline.get("datasets") or {})]) if headline else None),
             ("advonnx", versions.get("advonnx")), ("onnxruntime", versions.get("onnxruntime"))]
    facts_html = "".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in facts if v not in (None, ""))

    plots = []
    if contrast_uri:
        plots.append(contrast_uri)
    body = [f'<header class="top"><div class="wrap"><h1>{_e(title)}</h1>',
            f"<p>{_e(description)}</p>" if description else
            "<p>How far each model's performance falls between clean and perturbed inputs.</p>",
            f'<div class="facts">{facts_html}</div></div></header>',
            '<nav class="toc"><div class="wrap"><a href="#leaderboard">Leaderboard</a><a href="#masking">Gradient masking</a><a href="#contrast">Clean vs robust</a><a href="#paired">Paired</a>'
            '<a href="#curves">Robustness curves</a><a href="#clinical">Per class</a><a href="#examples">Examples</a><a href="#settings">All settings</a>'
            '<a href="#models">Models</a></div></nav><main class="wrap">']
    warn = []
    if masked:
        warn.append(f"<b>Gradient masking suspected</b> for {_e(', '.join(sorted(masked)))}: the checks in "
                    "<a href=\"#masking\">Gradient masking</a> fired, so the white-box robust figures are likely "
                    "optimistic.")
    bad = sum((s.get("invalid") or 0) + (s.get("errored") or 0) for s in summaries)
    if bad:
        warn.append(f"<b>{bad} rows</b> are invalid (NaN/Inf outputs) or errored and are left out of every figure.")
    body.append('<section id="leaderboard"><h2>Leaderboard</h2><p class="sub">One row per model, ranked by robust '
                f"{_e(' / '.join(sorted({s['metric'] for s in summaries})))} at the headline setting; click a column "
                "header to sort. Only rows with status ok enter the figures.</p>"
                f'<div class="callout">{UPPER_BOUND_HTML}</div>')
    body.extend(f'<div class="callout warn">{w}</div>' for w in warn)
    body.append(f'<div class="card">{_leaderboard(summaries, heads, colors, masked, masking_notes, value_range_assumed)}</div>')
    body.append(_cascade_html(table))
    findings_html, n_findings = _findings_html(summaries, colors, names)
    if findings_html:
        body.append(f'<div class="card">{findings_html}</div>')
    body.append("</section>")
    body.append('<section id="masking"><h2>Gradient masking</h2><p class="sub">Checks after Athalye et al. (2018), '
                "paired per sample (exact McNemar tests, p &lt; 0.05): query-only attacks must not beat gradient "
                "attacks, single steps must not beat iterations, 5× the steps must not gain more than 2 points, and "
                "half the value range (linf) must leave no sample robust. Extra attacks the checks add run on the "
                f"first samples of each dataset (noted in the evidence).</p><div class=\"card\">{_masking_html(masking)}"
                "</div></section>")
    body.append('<section id="contrast"><h2>Equal clean, different robust?</h2><p class="sub">Clean versus robust '
                "performance at the headline setting (Paschali et al., MICCAI 2018: models that generalize equally "
                "well can differ widely in robustness).</p>")
    body.append(contrast_html)
    if contrast_uri:
        body.append(f'<div class="card"><figure class="plot"><img alt="clean vs robust at the headline setting" '
                    f'src="{contrast_uri}"><figcaption>Pale bars: clean; solid bars: under attack at the headline '
                    f"setting; whiskers: 95 % intervals (Wilson; Dice: cluster bootstrap).</figcaption></figure></div>")
    body.append("</section>")
    body.append('<section id="paired"><h2>Paired comparisons</h2><p class="sub">Every two models on the same '
                "samples (same dataset and setting): robust difference (second − first) with a paired cluster-"
                "bootstrap interval and an exact McNemar p-value (Dice: paired t on group means); clean difference "
                "and the TOST p-value of clean equivalence within ±2 points.</p>"
                f'<div class="card">{pairs_html(model_pairs(table))}</div></section>')
    from .transfer_matrix import transfer_html
    from .universal_summary import uap_html

    transfer_body, uap_body = transfer_html(table, _e), uap_html(table, _e)
    if transfer_body:
        body.append('<section id="transfer"><h2>Transfer matrix</h2><p class="sub">Rows: the model whose adversarial '
                    "examples are fed (source); columns: the model judging them (target). Transfer rate = share of the "
                    "source's examples, among samples both classify correctly clean and the source's attack broke, that "
                    f"the target also gets wrong; 95 % Wilson interval, n = those samples.</p>{transfer_body}</section>")
    if uap_body:
        body.append('<section id="universal"><h2>Universal perturbations</h2><p class="sub">One perturbation per model '
                    "and setting (SGD variant), fitted on a share of the samples; fooling rate = share of the held-out "
                    "samples whose prediction it changes (Moosavi-Dezfooli et al., CVPR 2017), 95 % Wilson interval."
                    f'</p><div class="card">{uap_body}</div></section>')
    body.append('<section id="curves"><h2>Robustness curves</h2><p class="sub">Per model and attack, how performance '
                "falls as the perturbation grows.</p>")
    if not curves:
        body.append('<p class="sub">No settings to plot.</p>')
    for f in curves:
        plots.append(f["uri"])
        body.append(f'<div class="card" style="margin-bottom:16px"><h3 style="margin-top:0">{_e(f["title"])}</h3>'
                    f'<figure class="plot"><img alt="{_e(f["title"])}" src="{f["uri"]}">'
                    f'<figcaption>{_e(f["caption"])}</figcaption></figure></div>')
    body.append("</section>")
    if clinical:
        body.append(f'<section id="clinical"><h2>Per class, costly directions and calibration</h2>{clinical}</section>')
    body.append('<section id="examples"><h2>Examples</h2><p class="sub">Samples the run saved: clean input, perturbed '
                "input, and the perturbation δ amplified to full contrast (red: brighter, blue: darker), with the "
                "predicted labels and confidences. Pick a setting per model.</p>")
    body.append(examples_html)
    body.append("</section>")
    body.append('<section id="settings"><h2>All settings</h2><p class="sub">Every model × attack setting; ASR is the '
                "share of the samples classified correctly before the attack that it broke; robust = classified "
                "correctly clean and under attack (NaN/Inf outputs count as broken); median ‖δ‖ over broken "
                "samples (L2 for corruptions). Bold rows: the headline setting.</p>")
    body.append(f'<div class="card">{_all_settings(summaries, heads, colors, masking_notes)}</div></section>')
    body.append(f'<section id="models"><h2>Models</h2>{_model_cards(meta, summaries, colors, names)}</section>')
    vers = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    body.append(f"</main><footer><div class=\"wrap\">Generated by advonnx from {_e(run_id)}"
                f"{' · ' + _e(vers) if vers else ''}{' · ' + _e(meta.get('platform')) if meta.get('platform') else ''}."
                "</div></footer>")
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{''.join(body)}"
            f"<script>{JS}</script></body></html>")
    stats = {"plots": len(plots) + n_clinical_plots, "example_images": n_img, "example_settings": len(examples),
             "examples_omitted": omitted, "contrast_pairs": n_pairs, "settings": len(summaries), "models": len(models),
             "finding_tables": n_findings}
    return page, stats


def _folders_for(path: Path, all_runs: bool) -> list[Path]:
    if path.is_file():
        return [path.parent]
    runs = find_run_folders(path)
    if runs:
        return runs if all_runs else runs[-1:]
    return [path]


def write_report(path: str | Path, output: str | Path = "report.html", *, all_runs: bool = False,
                 title: str | None = None, examples_per_setting: int = 4,
                 costs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the HTML report of the results at ``path``; returns what it holds and its size."""
    _mpl()
    path = Path(path)
    table = read_results(path, all_runs=all_runs)
    page, stats = render_report(table, _folders_for(path, all_runs), title=title,
                                examples_per_setting=examples_per_setting, costs=costs)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    data = page.encode("utf-8")
    output.write_bytes(data)
    return {**stats, "bytes": len(data), "path": str(output)}


def write_compare_report(rows: list[dict], output: str | Path, *, a_name: str, b_name: str,
                         pairs: list[dict] | None = None) -> dict[str, Any]:
    """A self-contained HTML page of ``leaderboard.compare_rows`` (sortable table and Δ chart) and
    of the paired comparisons ``compare.model_pairs`` (``pairs``)."""
    plt = _mpl()
    models = sorted({r["model"] for r in rows})
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    both = [r for r in rows if not _nan(r["delta_robust"])]
    chart = ""
    if both:
        fig, ax = plt.subplots(figsize=(8, max(2.0, 0.28 * len(both) + 1)))
        labels = [f"{r['model']} · {r['setting']}" for r in both]
        ax.barh(range(len(both)), [100 * r["delta_robust"] for r in both],
                color=[colors[r["model"]] for r in both])
        ax.set_yticks(range(len(both)), labels, fontsize=7)
        ax.axvline(0, color="#444", lw=0.8)
        ax.set_xlabel("Δ robust (points, B − A)")
        ax.invert_yaxis()
        fig.tight_layout()
        chart = f'<figure><img alt="robust difference per setting" src="{_svg_uri(fig)}"></figure>'
    head = ("<tr><th>Model</th><th>Dataset</th><th>Setting</th><th>Clean A</th><th>Clean B</th><th>Δ clean</th>"
            "<th>Robust A</th><th>Robust B</th><th>Δ robust</th></tr>")

    def d(v):
        if _nan(v):
            return '<td data-v="">–</td>'
        cls = "pos" if v > 0 else "neg" if v < 0 else ""
        return f'<td data-v="{100 * v:.3f}" class="{cls}">{100 * v:+.1f}</td>'

    body = "".join(
        f"<tr><td>{_e(r['model'])}</td><td>{_e(r['dataset'])}</td><td>{_e(r['setting'])}</td>"
        f"<td>{percent(r['clean_a'])}</td><td>{percent(r['clean_b'])}</td>{d(r['delta_clean'])}"
        f"<td>{percent(r['robust_a'])}</td><td>{percent(r['robust_b'])}</td>{d(r['delta_robust'])}</tr>" for r in rows)
    extra = "td.pos{color:#059669;font-weight:600}td.neg{color:#dc2626;font-weight:600}"
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>advonnx compare</title>"
            f"<style>{CSS}{extra}</style></head><body><header class=top><div class=wrap><h1>advonnx compare</h1>"
            f"<p>A = {_e(a_name)} · B = {_e(b_name)} · differences are B − A in points</p></div></header>"
            f"<main class=wrap>"
            + (f"<section><h2>Paired on the same samples</h2><p>Δ robust (second − first) with a paired cluster-bootstrap "
               f"95 % interval and an exact McNemar p-value; TOST p &lt; 0.05: clean figures equivalent within ±2 points. "
               f"{UPPER_BOUND_HTML}</p>{pairs_html(pairs)}</section>" if pairs is not None else "")
            + (f"<section><h2>Robust difference per setting</h2>{chart}</section>"
               f"<section><h2>All settings</h2><table class=sortable><thead>{head}</thead><tbody>{body}</tbody></table>"
               f"</section>" if rows else "")
            + "</main>"
            f"<script>{JS}</script></body></html>")
    data = page.encode("utf-8")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    return {"bytes": len(data), "rows": len(rows), "path": str(output)}


__all__ = ["render_report", "write_report", "write_compare_report", "collect_examples", "curve_figures", "contrast_figure"]
