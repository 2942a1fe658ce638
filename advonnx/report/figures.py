"""The report's plots: robustness curves (metric vs eps per attack, vs severity per corruption,
vs queries for query-based attacks) and the clean-vs-robust bars at the headline setting, as
matplotlib SVG data URIs. matplotlib comes with the ``report`` extra and is imported lazily."""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import AdvonnxError
from ..summary import SettingSummary, headline_for
from .html import NORM_NAMES, _nan, _setting_text

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#9333ea", "#475569")


def _mpl():
    try:
        import matplotlib
    except ImportError:
        raise AdvonnxError("advonnx report needs matplotlib: pip install 'advonnx[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "svg.hashsalt": "advonnx",
            "font.family": "sans-serif",
            "font.sans-serif": ["Inter", "Segoe UI", "Helvetica Neue", "Arial", "DejaVu Sans"],
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.titleweight": "bold",
            "axes.labelsize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.edgecolor": "#94a3b8",
            "axes.grid": True,
            "grid.color": "#e2e8f0",
            "grid.linewidth": 0.8,
            "axes.axisbelow": True,
            "xtick.color": "#475569",
            "ytick.color": "#475569",
            "axes.labelcolor": "#334155",
            "legend.frameon": False,
            "figure.dpi": 100,
            "savefig.bbox": "tight",
        }
    )
    return plt


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
    fig.legend(handles=handles, loc="lower center", ncol=min(len(models), 5), bbox_to_anchor=(0.5, -0.02), fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if len(axes) <= 3 else 0.04, 1, 1))


def _eps_figure(
    plt, ss: list[SettingSummary], models: list[str], clean: dict[str, float], colors: dict[str, str], metric: str
) -> Any | None:
    """Metric vs eps, one panel per attack × norm (``None`` without attacks)."""
    panels: dict[tuple, list[SettingSummary]] = defaultdict(list)
    for s in ss:
        if not s.is_corruption:
            panels[(s.label or s.attack, s.norm)].append(s)
    if not panels:
        return None
    fig, axes = _grid(plt, len(panels))
    for ax, ((attack, norm), ps) in zip(axes, sorted(panels.items()), strict=False):
        ticks = {}
        for m in models:
            pts = sorted((s.eps, s.robust, s.robust_ci, s.eps_text) for s in ps if s.model == m)
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
    return fig


def _severity_figure(
    plt, ss: list[SettingSummary], models: list[str], clean: dict[str, float], colors: dict[str, str], metric: str
) -> Any | None:
    """Metric vs severity, one panel per corruption (``None`` without corruptions)."""
    cpanels: dict[str, list[SettingSummary]] = defaultdict(list)
    for s in ss:
        if s.is_corruption:
            cpanels[s.attack].append(s)
    if not cpanels:
        return None
    fig, axes = _grid(plt, len(cpanels), h=2.8)
    for ax, (name, ps) in zip(axes, sorted(cpanels.items()), strict=False):
        for m in models:
            pts = sorted((s.eps, s.robust) for s in ps if s.model == m)
            if pts:
                ax.plot(
                    [0] + [p[0] for p in pts],
                    [100 * clean[m]] + [100 * p[1] for p in pts],
                    "-o",
                    color=colors[m],
                    lw=2,
                    ms=4.5,
                )
        sev = sorted({0.0} | {s.eps for s in ps})
        ax.set_xticks(sev, [f"{v:g}" for v in sev])
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("severity")
        _percent_axis(ax, metric)
    for i, ax in enumerate(axes):
        if i % 3:
            ax.set_ylabel("")
    _legend(fig, axes, models, colors)
    return fig


def curve_figures(summaries: Sequence[SettingSummary], rows: list[dict], colors: dict[str, str]) -> list[dict]:
    """Robustness curves: one figure per dataset and family (eps, severity, queries)."""
    plt = _mpl()
    figs = []
    by_ds: dict[str, list[SettingSummary]] = defaultdict(list)
    for s in summaries:
        by_ds[s.dataset].append(s)
    for dataset, ss in by_ds.items():
        metric = ss[0].metric
        models = sorted({s.model for s in ss})
        clean = {m: float(np.nanmean([s.clean for s in ss if s.model == m])) for m in models}
        fig = _eps_figure(plt, ss, models, clean, colors, metric)
        if fig is not None:
            figs.append(
                {
                    "dataset": dataset,
                    "kind": "eps",
                    "title": f"{metric.capitalize()} vs perturbation budget",
                    "caption": f"{dataset}: {metric} under attack as the budget ε grows (ε = 0: clean); "
                    "bands are 95 % intervals (Wilson; Dice: cluster bootstrap).",
                    "uri": _svg_uri(fig),
                }
            )
        fig = _severity_figure(plt, ss, models, clean, colors, metric)
        if fig is not None:
            figs.append(
                {
                    "dataset": dataset,
                    "kind": "severity",
                    "title": f"{metric.capitalize()} vs corruption severity",
                    "caption": f"{dataset}: natural corruptions, severity 1-5 (0: clean).",
                    "uri": _svg_uri(fig),
                }
            )
        # accuracy vs queries for query-based attacks
        qfig = _query_figure(plt, [r for r in rows if r["dataset"] == dataset], models, colors)
        if qfig is not None:
            figs.append(
                {
                    "dataset": dataset,
                    "kind": "queries",
                    "title": "Accuracy vs query budget",
                    "caption": f"{dataset}: robust accuracy if the attack had stopped after q queries "
                    "(a sample counts as broken from its first successful query).",
                    "uri": qfig,
                }
            )
    return figs


def _query_figure(plt, rows: list[dict], models: list[str], colors: dict[str, str]) -> str | None:
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (
            r.get("kind") == "adversarial"
            and r["status"] == "ok"
            and r.get("max_queries")
            and r["task"] == "classification"
        ):
            groups[(r.get("label") or r["attack"], r["norm"], r["eps"], r.get("eps_text") or f"{r['eps']:g}")][
                r["model"]
            ].append(r)
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


def contrast_figure(heads: dict[tuple[str, str], SettingSummary], colors: dict[str, str], headline: dict) -> str | None:
    """Paired bars: clean vs robust at the headline setting, per model, per dataset."""
    if not heads:
        return None
    plt = _mpl()
    datasets = sorted({d for _, d in heads})
    fig, axes = _grid(plt, len(datasets), ncols=2, h=3.6, w=1.2 + 1.6 * max(2, len(heads) // len(datasets)))
    for ax, ds in zip(axes, datasets, strict=False):
        ss = sorted((s for (m, d), s in heads.items() if d == ds), key=lambda s: -s.clean if not _nan(s.clean) else 0)
        x = np.arange(len(ss))
        w = 0.38
        for i, s in enumerate(ss):
            c = colors[s.model]
            for dx, v, ci, alpha, hatch in (
                (-w / 2, s.clean, s.clean_ci, 0.35, None),
                (w / 2, s.robust, s.robust_ci, 1.0, None),
            ):
                if _nan(v):
                    continue
                err = None if _nan(ci[0]) else [[100 * (v - ci[0])], [100 * (ci[1] - v)]]
                ax.bar(
                    i + dx,
                    100 * v,
                    w * 0.95,
                    color=c,
                    alpha=alpha,
                    yerr=err,
                    capsize=3,
                    error_kw={"ecolor": "#334155", "lw": 1},
                    hatch=hatch,
                )
                ax.text(
                    i + dx,
                    100 * v + 2 + (0 if err is None else err[1][0]),
                    f"{100 * v:.1f}",
                    ha="center",
                    va="bottom",
                    fontsize=9,
                    color="#0f172a",
                )
        ax.set_xticks(x, [s.model for s in ss])
        ax.set_ylim(0, 115)
        ax.set_yticks([0, 20, 40, 60, 80, 100])
        metric = ss[0].metric
        ax.set_ylabel(f"{metric} %")
        ax.set_title(f"{ds}\nunder {_setting_text(headline_for(headline, ds))}", fontsize=10)
        ax.grid(axis="x", visible=False)
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(color="#64748b", alpha=0.35, label="clean"),
            Patch(color="#64748b", label="under the dataset's headline attack"),
        ],
        loc="lower center",
        ncol=2,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _svg_uri(fig)
