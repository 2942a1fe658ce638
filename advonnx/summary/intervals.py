"""Intervals of the corruption figures (mean corruption accuracy, mCE): cluster bootstrap over
the groups of the samples a model and its reference share, derived from result rows only."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from ..summary_stats import BOOTSTRAP, CONFIDENCE, _resample_counts, group_codes


def corruption_intervals(table: pa.Table, rows: list[dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` of ``leaderboard.corruption_summary`` with ``mean_corruption_ci`` and ``mce_ci``:
    percentile cluster-bootstrap intervals, resampling the groups of the samples that the model
    and its reference share in every corruption cell (model and reference resampled together, so
    mCE's ratio keeps its pairing). NaN where fewer than 2 groups are shared."""
    from ..compare import sample_outcomes

    cells: dict[tuple[str, str], dict[tuple, dict]] = defaultdict(dict)
    for key, o in sample_outcomes(table).items():
        if o["kind"] == "corruption":
            cells[(key[0], key[1])][(key[2], key[4])] = o["samples"]
    tail = 100 * (1 - CONFIDENCE) / 2
    out = []
    for r in rows:
        mine, ref = cells.get((r["model"], r["dataset"]), {}), cells.get((r["reference"], r["dataset"]), {})
        shared = sorted(set(mine) & set(ref))
        common = sorted(set.intersection(*(set(mine[c]) & set(ref[c]) for c in shared))) if shared else []
        ci = {"mean_corruption_ci": (math.nan, math.nan), "mce_ci": (math.nan, math.nan)}
        if common:
            codes = group_codes([mine[shared[0]][s][2] for s in common])
            g = int(codes.max()) + 1
            if g >= 2:
                err_m = np.array([[1.0 - mine[c][s][1] for s in common] for c in shared])  # (cells, n)
                err_r = np.array([[1.0 - ref[c][s][1] for s in common] for c in shared])
                sums_m = np.stack([np.bincount(codes, weights=e, minlength=g) for e in err_m])  # (cells, g)
                sums_r = np.stack([np.bincount(codes, weights=e, minlength=g) for e in err_r])
                sizes = np.bincount(codes, minlength=g).astype(np.float64)
                w = _resample_counts(g, seed, BOOTSTRAP)  # (B, g)
                bm, br = sums_m @ w.T, sums_r @ w.T  # (cells, B) error sums per resample
                mean_acc = 1.0 - (bm / (sizes @ w.T)).mean(axis=0)
                corruptions = sorted({c[0] for c in shared})
                with np.errstate(divide="ignore", invalid="ignore"):
                    ce = np.stack(
                        [
                            bm[[i for i, c in enumerate(shared) if c[0] == k]].sum(axis=0)
                            / br[[i for i, c in enumerate(shared) if c[0] == k]].sum(axis=0)
                            for k in corruptions
                        ]
                    )
                ce[~np.isfinite(ce)] = np.nan
                ok = ~np.all(np.isnan(ce), axis=0)
                mce = np.nanmean(ce[:, ok], axis=0) if ok.any() else np.array([])
                ci["mean_corruption_ci"] = (
                    float(np.percentile(mean_acc, tail)),
                    float(np.percentile(mean_acc, 100 - tail)),
                )
                if mce.size >= BOOTSTRAP // 2:
                    ci["mce_ci"] = (float(np.percentile(mce, tail)), float(np.percentile(mce, 100 - tail)))
        out.append({**r, **ci, "groups": len(set(mine[shared[0]][s][2] for s in common)) if common else 0})
    return out
