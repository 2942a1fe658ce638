"""The typed summary layer (advonnx/summary/): figures computed once, from the rows, and rendered
alike by the terminal leaderboard and the HTML report."""

import dataclasses
import functools
import html
import io
import math
import re
from statistics import NormalDist

import numpy as np
import pytest
from rich.console import Console

from advonnx.leaderboard import render, summarize
from advonnx.results import empty_row, rows_to_table
from advonnx.summary import SettingSummary, summarize_run, summarize_settings

HEADLINE = {"attack": "pgd", "norm": "linf", "eps": "0.03"}
# per model: clean correct of 40, then robust (clean AND adversarially correct) per setting
PLAN = {
    "m_a": (34, {("fgsm", 0.01): 30, ("fgsm", 0.03): 25, ("pgd", 0.03): 21}),
    "m_b": (33, {("fgsm", 0.01): 31, ("fgsm", 0.03): 29, ("pgd", 0.03): 27}),
}
N = 40


def _pred(i: int, right: bool) -> int:
    return int(i % 3) if right else int(i % 3 + 1) % 3


@functools.cache
def _rows() -> tuple:
    rng = np.random.default_rng(3)
    rows = []
    for model, (clean, settings) in PLAN.items():
        order = rng.permutation(N)  # which samples are right: shuffled, so no figure follows from the ids
        for (attack, eps), robust in settings.items():
            for rank, i in enumerate(order):
                ok, rob = bool(rank < clean), bool(rank < robust)
                rows.append(
                    {
                        **empty_row(),
                        "model": model,
                        "dataset": "d",
                        "attack": attack,
                        "kind": "adversarial",
                        "norm": "linf",
                        "eps": eps,
                        "eps_text": f"{eps:g}",
                        "sample_id": f"s{i}",
                        "status": "ok",
                        "settings": "{}",
                        "framework": "onnx",
                        "label_source": "dataset",
                        "targeted": False,
                        "label": int(i % 3),
                        "task": "classification",
                        "gradient": "exact",
                        "queries": 10,
                        "clean_correct": ok,
                        "adv_correct": rob,
                        "robust": rob,
                        "success": ok and not rob,
                        "linf": eps if ok and not rob else 0.0,
                        "time_s": 0.01,
                        "clean_pred": _pred(i, ok),
                        "adv_pred": _pred(i, rob),
                    }
                )
        for i in range(N):  # a corruption: severity 2, every third sample broken
            ok = bool(order[i] < clean)
            rows.append(
                {
                    **empty_row(),
                    "model": model,
                    "dataset": "d",
                    "attack": "gaussian_noise",
                    "kind": "corruption",
                    "norm": "none",
                    "eps": 2.0,
                    "eps_text": "2",
                    "sample_id": f"s{i}",
                    "status": "ok",
                    "settings": "{}",
                    "framework": "onnx",
                    "label_source": "dataset",
                    "targeted": False,
                    "label": int(i % 3),
                    "task": "classification",
                    "gradient": "none",
                    "queries": 0,
                    "clean_correct": ok,
                    "adv_correct": ok and i % 3 != 0,
                    "robust": ok and i % 3 != 0,
                    "success": ok and i % 3 == 0,
                    "l2": 1.0,
                    "time_s": 0.01,
                    "clean_pred": _pred(i, ok),
                    "adv_pred": _pred(i, ok and i % 3 != 0),
                }
            )
    return tuple(rows)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _wilson(k: int, n: int) -> str:
    """Wilson's score interval, written out (Wilson 1927; statsmodels' ``proportion_confint``
    method "wilson" agrees, tests/test_stats.py)."""
    z = NormalDist().inv_cdf(0.975)
    p, z2 = k / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return f"{_pct(centre - half)}–{_pct(centre + half)}"


def _terminal(table) -> str:
    out = io.StringIO()
    render(table, Console(file=out, width=220, color_system=None), headline=HEADLINE)
    return out.getvalue()


def terminal_settings(text: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(model, setting) -> (robust %, 95 % CI, ASR %) as the terminal tables print them: the rows
    between a model table's column header and the blank line that ends it."""
    out, model, in_rows = {}, None, False
    for line in text.splitlines():
        head = re.match(r"^\d+\. (\S+) on ", line)
        if head:
            model, in_rows = head.group(1), False
        elif model and re.match(r"^\s*Attack\s", line):
            in_rows = True
        elif in_rows and not line.strip():
            model, in_rows = None, False
        elif in_rows:
            row = re.match(r"^\s*(\S.*?)\s+(?:[≤≥] )?([\d.]+|–)\s+([\d.]+–[\d.]+|–)\s+([\d.]+|–)\s", line)
            if row:
                out[(model, row.group(1))] = row.group(2, 3, 4)
    return out


NORMS = {"L∞": "linf", "L2": "l2", "L0": "l0"}


def html_settings(page: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(model, setting) -> (robust %, 95 % CI, ASR %) as the report's every-setting table shows them."""
    body = page.split('id="lb-all"', 1)[1].split("</tbody>", 1)[0]
    out = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)[1:]:
        cells = [
            html.unescape(re.sub(r"<[^>]+>", " ", c)).split()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)
        ]
        cells = cells[:1] + cells[2:] if len(cells) > 13 else cells  # several datasets: a dataset column
        model, attack, norm, eps = cells[0][0], " ".join(cells[1]), cells[2][0], cells[3][0]
        setting = f"{attack} sev {eps}" if norm == "–" else f"{attack} {NORMS.get(norm, norm)} {eps}"
        out[(model, setting)] = (cells[7][0], cells[7][1] if len(cells[7]) > 1 else "–", cells[8][0])
    return out


@functools.cache
def _table():
    return rows_to_table(list(_rows()))


def _expected():
    """The figures counted from the rows alone: robust = clean AND adversarially correct (AutoAttack),
    ASR over the clean-correct samples, Wilson intervals (one sample per group)."""
    expected = {}
    for model, (clean, settings) in PLAN.items():
        for (attack, eps), robust in settings.items():
            expected[(model, f"{attack} linf {eps:g}")] = (
                _pct(robust / N),
                _wilson(robust, N),
                _pct((clean - robust) / clean),
            )
        kept = sum(1 for r in _rows() if r["model"] == model and r["kind"] == "corruption" and r["robust"])
        expected[(model, "gaussian_noise sev 2")] = (_pct(kept / N), _wilson(kept, N), _pct((clean - kept) / clean))
    return expected


def test_terminal_and_report_show_the_same_figures():
    """Every setting's robust %, its interval and ASR, and each model's clean figure, are the same
    numbers in the terminal leaderboard and in the report's tables (the functions ``render_report``
    lays out), and equal the figures counted from the rows independently. (The full page of a real
    run is checked the same way in test_report.py.)"""
    from advonnx.report.html import _all_settings, _leaderboard

    table = _table()
    text = _terminal(table)
    run = summarize_run(table, HEADLINE)
    colors = {m: "#000" for m in PLAN}
    page = _leaderboard(run, colors, set(), set()) + _all_settings(run, colors, {})
    assert terminal_settings(text) == _expected() == html_settings(page)
    for model, (clean, _) in PLAN.items():  # the clean figure: the terminal title, the report's leaderboard
        assert f"clean accuracy {_pct(clean / N)} ({_wilson(clean, N)}) %" in text
        assert re.search(
            rf'{re.escape(model)}</b></td>.*?<td class="n" data-v="{clean / N:.10g}">{_pct(clean / N)} '
            rf'<span class="ci">{_wilson(clean, N)}</span>',
            page,
            flags=re.S,
        )


def test_setting_summary_is_the_dict_summarize_returns():
    """``summarize`` (dicts, used across tests and the CLI) is the typed summary, field by field."""
    table = _table()
    typed = summarize_settings(table)
    assert [s.as_dict() for s in typed] == summarize(table)
    s = typed[0]
    assert isinstance(s, SettingSummary) and SettingSummary.from_dict(s.as_dict()) == s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.robust = 1.0  # type: ignore[misc]  # frozen: renderers cannot change a figure


def test_run_summary_models_and_headline():
    """Per model: its rank by the headline robust figure, its headline setting (pgd 0.03), worst
    attack and corruption; the bold rows are the headline ones."""
    run = summarize_run(_table(), HEADLINE)
    assert [m.model for m in run.models] == ["m_b", "m_a"]  # 27/40 beats 21/40 at the headline
    for m in run.models:
        clean, settings = PLAN[m.model]
        assert m.clean == clean / N and m.headline is not None and m.headline.attack == "pgd"
        assert m.headline_robust == settings[("pgd", 0.03)] / N == m.headline.robust
        assert m.worst_attack is not None and m.worst_attack.robust == min(settings.values()) / N
        assert m.worst_corruption is not None and m.worst_corruption.attack == "gaussian_noise"
        assert m.drop == pytest.approx((clean - settings[("pgd", 0.03)]) / N)
    assert {(s.model, s.attack, s.eps) for s in run.ranked if run.is_headline(s)} == {
        ("m_a", "pgd", 0.03),
        ("m_b", "pgd", 0.03),
    }
    assert any(n.startswith("sorted by robust accuracy at the headline setting") for n in run.notes)


def test_report_assets_are_package_files():
    """The page's CSS and script are files of the package (shipped as package data)."""
    from importlib.resources import files

    from advonnx.report import CSS, JS

    assert CSS == files("advonnx.report").joinpath("style.css").read_text(encoding="utf-8") and "table.lb" in CSS
    assert JS == files("advonnx.report").joinpath("report.js").read_text(encoding="utf-8") and "sortable" in JS
