"""Transfer matrix of a suite (``advonnx run SUITE --transfer-matrix``, suite key
``transfer_matrix = true``): how often one model's adversarial examples also fool another model
of the same dataset, the cross-framework comparison of the suite (Papernot et al. 2016,
"Transferability in machine learning"; for medical imaging Paschali et al., MICCAI 2018).

The runner does the work while the models are in memory: for every chunk of an untargeted
adversarial setting on a single-label classifier (the *source*), it feeds the chunk's
adversarial examples to every other model of the dataset that reads the same inputs (the
*targets*: same input array, value range and classes; others are left out with a note) and writes
one row of kind ``transfer`` per sample and target, in the source's chunk, so the matrix comes
from Parquet rows alone and resumes like every chunk. Columns: ``model`` (source), attack
setting columns (the source's), ``transfer_target``, ``label``, the target's ``clean_pred`` /
``adv_pred`` / ``clean_correct``, ``fooled_source`` (the source classified the sample correctly
clean and wrongly on its own adversarial example) and ``fooled_target`` (the target classifies
that example wrongly).

Transfer rate of (source, target, setting) = among the samples both models classify correctly
clean and the source's attack broke, the fraction whose example the target also gets wrong;
with a 95 % Wilson interval (:func:`advonnx.stats.wilson_interval`). Labels are the dataset's,
else the source's clean predictions.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .stats import wilson_interval
from .xp import to_numpy


def _mismatch(sa, xa, sb, xb) -> str | None:
    """Why two models (specs ``sa``, ``sb``) cannot judge each other's examples of their inputs
    ``xa``, ``xb`` as read; None when they can."""
    if xa.shape != xb.shape or xa.dtype != xb.dtype:
        return f"inputs {xa.shape[1:]} {xa.dtype} vs {xb.shape[1:]} {xb.dtype}"
    if tuple(sa.value_range) != tuple(sb.value_range):
        return f"value ranges {list(sa.value_range)} vs {list(sb.value_range)}"
    if sa.num_classes != sb.num_classes:
        return f"{sa.num_classes} vs {sb.num_classes} classes"
    if not np.array_equal(xa, xb):
        return "the dataset is read differently for each (resizing or intensity rule)"
    return None


def transfer_peers(pairs, models, data_of) -> tuple[dict[tuple[str, str], list], list[str]]:
    """Per (model name, dataset name): the suite's model entries its adversarial examples are fed
    to, and notes on the models or pairs left out. ``pairs``: (ModelEntry, DatasetEntry) of the
    suite; ``models``: name -> OnnxModel; ``data_of(entry, dentry)``: the dataset as that model reads it."""
    by_dataset: dict[str, list] = defaultdict(list)
    for entry, dentry in pairs:
        by_dataset[dentry.name].append((entry, dentry))
    peers: dict[tuple[str, str], list] = {}
    notes: list[str] = []
    for dname, members in by_dataset.items():
        if len(members) < 2:
            continue
        fit, out = [], []
        for entry, dentry in members:
            s = models[entry.name].spec
            if s.task != "classification" or s.output_kind == "multilabel":
                out.append(f"{entry.name} ({s.task if s.task != 'classification' else 'multi-label'})")
            elif s.extra_inputs:
                out.append(f"{entry.name} (several inputs)")
            else:
                fit.append((entry, dentry))
        if out:
            notes.append(
                f"transfer matrix on {dname}: {', '.join(out)} left out (single-label classifiers with one input only)"
            )
        for a, da in fit:
            sa, xa = models[a.name].spec, data_of(a, da).x
            for b, db in fit:
                if a is b:
                    continue
                why = _mismatch(sa, xa, models[b.name].spec, data_of(b, db).x)
                if why is None:
                    peers.setdefault((a.name, dname), []).append(b)
                elif a.name < b.name:
                    notes.append(f"transfer matrix on {dname}: {a.name} and {b.name} not compared ({why})")
    return peers, notes


def transfer_rows(targets: list[tuple[str, Any]], rows: list[dict], x, x_adv, labels, common: dict) -> list[dict]:
    """Rows of kind ``transfer``: the source's adversarial examples ``x_adv`` of one chunk (its
    rows ``rows``, one per sample of ``x``) judged by each target model (``(name, model)``)."""
    from .model import ModelRunError
    from .results import empty_row

    labels = np.asarray(labels)
    fooled_source = [
        bool(r.get("status") == "ok" and r.get("clean_correct") and r.get("adv_correct") is False) for r in rows
    ]
    out = []
    for name, target in targets:
        t0 = time.perf_counter()
        try:
            clean = to_numpy(target.classify(x))
            adv = to_numpy(target.classify(x_adv))
        except ModelRunError as err:  # the target failed on these inputs: errored rows, not counted
            out += [
                {
                    **empty_row(),
                    **common,
                    "sample_id": r["sample_id"],
                    "kind": "transfer",
                    "transfer_target": name,
                    "status": "errored",
                    "error": str(err),
                }
                for r in rows
            ]
            continue
        each = (time.perf_counter() - t0) / max(1, len(rows))
        for i, r in enumerate(rows):
            out.append(
                {
                    **empty_row(),
                    **common,
                    "sample_id": r["sample_id"],
                    "kind": "transfer",
                    "transfer_target": name,
                    "label": int(labels[i]),
                    "clean_pred": int(clean[i]),
                    "adv_pred": int(adv[i]),
                    "clean_correct": bool(clean[i] == labels[i]),
                    "adv_correct": bool(adv[i] == labels[i]),
                    "fooled_source": fooled_source[i],
                    "fooled_target": bool(adv[i] != labels[i]),
                    "queries": 2,
                    "status": "ok",
                    "time_s": each,
                }
            )
    return out


def transfer_matrix(table: pa.Table) -> list[dict[str, Any]]:
    """One cell per (dataset, source setting, source model, target model) of the ``transfer`` rows:
    ``k`` of ``n`` samples (both models correct clean, the source's attack broke them) whose
    example also fools the target, ``rate`` = k / n and its 95 % Wilson interval ``ci``."""
    from .results import attack_labels, setting_key

    if "kind" not in table.column_names:
        return []
    rows = [r for r in table.filter(pc.equal(table["kind"], "transfer")).to_pylist() if r["status"] == "ok"]
    labels = attack_labels(rows)
    cells: dict[tuple, list[int]] = {}
    for r in rows:
        key = (
            r["dataset"],
            labels.get(setting_key(r), r["attack"]),
            r["norm"],
            r["eps"],
            r.get("eps_text") or "",
            r["model"],
            r["transfer_target"],
        )
        kn = cells.setdefault(key, [0, 0])
        if r["clean_correct"] and r["fooled_source"]:
            kn[1] += 1
            kn[0] += bool(r["fooled_target"])
    out = []
    for (dataset, label, norm, eps, eps_text, source, target), (k, n) in sorted(cells.items()):
        out.append(
            {
                "dataset": dataset,
                "attack": label,
                "norm": norm,
                "eps": eps,
                "eps_text": eps_text or f"{eps:g}",
                "source": source,
                "target": target,
                "k": k,
                "n": n,
                "rate": k / n if n else math.nan,
                "ci": wilson_interval(k, n),
            }
        )
    return out


def _settings(cells: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["dataset"], c["attack"], c["norm"], c["eps"], c["eps_text"]), []).append(c)
    return groups


def _is_headline(setting: tuple, headline: dict) -> bool:
    from .summary.headline import headline_for

    dataset, label, norm, _, eps_text = setting
    h = headline_for(headline or {}, dataset)
    return bool(h) and label == h.get("attack") and norm == h.get("norm") and eps_text == str(h.get("eps"))


def _cell_text(c: dict | None) -> str:
    if c is None:
        return "–"
    if not c["n"]:
        return "– (n=0)"
    lo, hi = c["ci"]
    return f"{100 * c['rate']:.0f} % ({100 * lo:.0f}–{100 * hi:.0f}) n={c['n']}"


def render_transfer(table: pa.Table, console, headline: dict | None = None) -> None:
    """Print the transfer matrices after the leaderboard: the headline setting of each dataset
    (every setting where a dataset has no headline among them)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    cells = transfer_matrix(table)
    if not cells:
        return
    groups = _settings(cells)
    shown = 0
    for dataset in sorted({g[0] for g in groups}):
        mine = [g for g in groups if g[0] == dataset]
        pick = [g for g in mine if _is_headline(g, headline or {})] or mine
        for g in pick:
            cs = groups[g]
            models = sorted({c["source"] for c in cs} | {c["target"] for c in cs})
            at = {(c["source"], c["target"]): c for c in cs}
            t = Table(
                title=escape(f"Transfer matrix · {dataset} · {g[1]} {g[2]} eps={g[4]} (rows: source, columns: target)"),
                title_justify="left",
                header_style="bold",
                box=box.SIMPLE_HEAD,
                pad_edge=False,
                padding=(0, 1),
            )
            t.add_column("source \\ target", no_wrap=True)
            for m in models:
                t.add_column(escape(m), justify="right", no_wrap=True)
            for s in models:
                t.add_row(escape(s), *("white-box" if s == m else _cell_text(at.get((s, m))) for m in models))
            console.print(t)
            shown += 1
    console.print(
        "[dim]•[/dim] transfer rate: share of the source's adversarial examples (samples both models "
        "classify correctly clean, broken by the source's attack) that the target also gets wrong; 95 % "
        "Wilson interval, n = those samples"
        + (f"; {len(groups) - shown} more settings in the HTML report" if len(groups) > shown else "")
    )


def transfer_html(table: pa.Table, esc) -> str:
    """The report's transfer section body: one matrix per dataset and source setting ('' when none)."""
    cells = transfer_matrix(table)
    if not cells:
        return ""
    parts = []
    for g, cs in _settings(cells).items():
        models = sorted({c["source"] for c in cs} | {c["target"] for c in cs})
        at = {(c["source"], c["target"]): c for c in cs}
        head = "".join(f"<th>{esc(m)}</th>" for m in models)
        body = "".join(
            f"<tr><td>{esc(s)}</td>"
            + "".join(
                '<td class="num">white-box</td>'
                if s == m
                else f'<td class="num">{esc(_cell_text(at.get((s, m))))}</td>'
                for m in models
            )
            + "</tr>"
            for s in models
        )
        parts.append(
            f'<div class="card" style="margin-bottom:16px"><h3 style="margin-top:0">{esc(g[0])} · {esc(g[1])} '
            f"{esc(g[2])} eps={esc(g[4])}</h3><table><thead><tr><th>source \\ target</th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
        )
    return "".join(parts)
