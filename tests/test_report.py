"""The HTML report: rendered from a real small run, checked as text and in headless Chromium."""

import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from browser import Chromium, chromium_path  # noqa: E402
from cli_inprocess import run_cli  # noqa: E402

from advonnx.errors import AdvonnxError  # noqa: E402
from advonnx.report import _plane, example_pairs, write_report  # noqa: E402
from advonnx.results import find_run_folders, read_results, rows_to_table, run_metadata  # noqa: E402
from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps  # noqa: E402

SUITES = Path(__file__).resolve().parents[1] / "advonnx" / "suites"
SAVE = 2


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """Two real runs in one output folder: two classifiers (gradient, query-based attacks and a
    corruption) and the segmenter (an attack and a corruption), a few samples each (~10 s)."""
    out = tmp_path_factory.mktemp("results")
    cls = Suite(
        name="tiny",
        seed=0,
        save_examples=SAVE,
        chunk_size=64,
        masking_checks=False,  # their attacks were a third of this fixture; test_masking.py runs them
        models=[
            ModelEntry("brain_cnn", str(SUITES / "models/brain_cnn.onnx"), "patch"),
            ModelEntry("brain_mobilenet", str(SUITES / "models/brain_mobilenet.onnx"), "patch"),
        ],
        datasets=[DatasetEntry("patch", str(SUITES / "data/brain_patches_test.npz"), limit=16)],
        attacks=[
            AttackEntry("fgsm", "linf", parse_eps("1/255,4/255")),
            AttackEntry("pgd", "linf", parse_eps("2/255"), {"steps": 3}),
            AttackEntry("square", "linf", parse_eps("4/255"), {"max_queries": 40}),
        ],
        corruptions=["gaussian_noise"],
        severities=[1, 3],
        headline={"attack": "pgd", "norm": "linf", "eps": "2/255"},
    )
    Runner(cls, out=out).run()
    time.sleep(0.01)  # distinct mtimes: the segmentation run is the latest
    seg = Suite(
        name="tinyseg",
        seed=0,
        save_examples=SAVE,
        chunk_size=64,
        models=[ModelEntry("brain_unet", str(SUITES / "models/brain_unet.onnx"), "slices")],
        datasets=[DatasetEntry("slices", str(SUITES / "data/brain_slices_test.npz"), limit=3)],
        attacks=[AttackEntry("fgsm", "linf", parse_eps("2/255,8/255"))],
        corruptions=["gaussian_noise"],
        severities=[3],
        headline={"attack": "fgsm", "norm": "linf", "eps": "8/255"},
    )
    Runner(seg, out=out).run()
    return out


def expected_example_images(folders, k: int = SAVE) -> int:
    """From the saved files alone: 3 images per classification sample, 6 per segmentation one."""
    n = 0
    for folder in folders:
        for npz, _ in example_pairs(folder):
            with np.load(npz) as z:
                n += min(k, len(z["x"])) * (6 if z["clean_pred"].ndim > 1 else 3)
    return n


@pytest.fixture(scope="module")
def full_report(tiny_results, tmp_path_factory):
    """The report of both runs (all runs), written once: (path, what write_report returned)."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    return out, write_report(tiny_results, out, all_runs=True)


def test_report_contents(tiny_results, full_report):
    out, info = full_report
    page = out.read_text(encoding="utf-8")
    # plots: clean-vs-robust bars, eps curves ×2 datasets, severity curves ×2, queries (square) ×1,
    # risk-coverage at the headline setting ×2 classifiers (clinical.py)
    assert info["plots"] == 8
    assert page.count('<figure class="plot">') == 8
    folders = find_run_folders(tiny_results)
    assert info["example_images"] == expected_example_images(folders) == page.count('class="example"')
    assert info["models"] == 3
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)="(https?:|//)', page)
    assert "<script src" not in page and '<link rel="stylesheet"' not in page
    for needle in (
        "brain_cnn",
        "brain_mobilenet",
        "brain_unet",
        "Accuracy vs query budget",
        "Dice vs perturbation budget",
        "Accuracy vs corruption severity",
        "csf_other",
        "gray_matter",
        "pytorch",
        "exact",
        "clean pred.",
        "perturbed pred.",
    ):
        assert needle in page, needle
    # issue 20: the upper-bound and interval wording once, plainly; the paired comparisons section
    from advonnx.compare import UPPER_BOUND_HTML, model_pairs

    assert page.count(UPPER_BOUND_HTML) == 1 and "not cover the weakness of an attack" in page
    pairs = model_pairs(read_results(tiny_results, all_runs=True))
    assert '<section id="paired">' in page and "brain_cnn</td><td>brain_mobilenet" in page
    assert len(pairs) == page.split('<section id="paired">')[1].split("</section>")[0].count("<tr>") - 1
    # issue 19: the terminal leaderboard of the same rows shows every setting's figures as the page does
    import io

    from rich.console import Console
    from test_summary import html_settings, terminal_settings

    from advonnx.leaderboard import render

    text = io.StringIO()
    render(read_results(tiny_results, all_runs=True), Console(file=text, width=220, color_system=None))
    term, web = terminal_settings(text.getvalue()), html_settings(page)
    assert len(web) == info["settings"] and set(term) == set(web)
    assert {k: v[:2] for k, v in term.items()} == {k: v[:2] for k, v in web.items()}  # robust %, 95 % CI


def test_report_flags(tiny_results, tmp_path, monkeypatch):
    """Invalid/errored rows and the gradient-masking verdict show up as flags and a warning."""
    from advonnx import masking

    table = read_results(tiny_results)  # the segmentation run
    rows = table.to_pylist()
    rows[0]["status"] = "invalid"
    rows[1]["status"] = "errored"
    table = rows_to_table(rows, run_metadata(table))
    folder = find_run_folders(tiny_results)[-1]
    check = {
        "check": "large_eps_not_zero",
        "norm": "linf",
        "eps": 0.5,
        "n": 3,
        "robust": 2,
        "fired": True,
        "text": "linf eps=0.5: 2 of 3 samples robust",
    }
    flagged = {
        "models": [
            {
                "model": "brain_unet",
                "dataset": "slices",
                "verdict": "masking suspected: large eps",
                "suspected": ["large_eps_not_zero"],
                "checks": [check],
            }
        ]
    }
    monkeypatch.setattr(masking, "masking_checks", lambda t: flagged)
    from advonnx.report import render_report

    page, _ = render_report(table, [folder])
    assert "1 invalid" in page and "1 errored" in page
    assert "gradient masking?" in page and "Gradient masking suspected" in page
    assert "2 of 3 samples robust" in page and "masking suspected: large eps" in page


def test_cli_report_and_errors(tiny_results, tmp_path):
    out = tmp_path / "r.html"
    r = run_cli("report", tiny_results, "-o", out, "--all", columns=200)  # in this process
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "wrote" in r.stdout and "plots" in r.stdout
    r = run_cli("report", tmp_path / "nothing", "-o", out, columns=200)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_matplotlib_is_one_clear_error(tiny_results, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(AdvonnxError, match=r"pip install 'advonnx\[report\]'"):
        write_report(tiny_results, tmp_path / "x.html")


def test_example_planes():
    """What an example panel shows: 2-D as is, RGB kept, 3-D volumes by their central slice."""
    vol = np.zeros((1, 5, 6, 7), np.float32)
    vol[0, 2] = 1.0
    assert _plane(vol, "NCDHW").shape == (6, 7) and _plane(vol, "NCDHW").min() == 1.0
    assert _plane(np.moveaxis(vol, 0, -1), "NDHWC").shape == (6, 7)
    assert _plane(np.zeros((3, 8, 9)), "NCHW").shape == (8, 9, 3)
    assert _plane(np.zeros((8, 9, 1)), "NHWC").shape == (8, 9)
    assert _plane(np.zeros(10), "NF") is None


# a real browser: seconds of start-up; the contents are checked fast by test_report_contents
@pytest.mark.slow
def test_report_in_chromium(tiny_results, full_report, tmp_path):
    """Opens the report in Debian's headless Chromium: no console errors, every plot and image
    decodes, sorting and the example selector work; saves a full-page screenshot."""
    if chromium_path() is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    out, info = full_report
    shots = Path(os.environ.get("ADVONNX_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with Chromium(tmp_path / "profile") as browser:
        browser.open(out.resolve().as_uri())
        counts = browser.evaluate("""({
            plots: document.querySelectorAll('figure.plot img').length,
            examples: document.querySelectorAll('img.example').length,
            broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length,
            visibleExamples: Array.from(document.querySelectorAll('img.example')).filter(i => i.offsetParent !== null).length,
            tables: document.querySelectorAll('table.sortable').length,
            title: document.title})""")
        assert counts["plots"] == info["plots"] == 8  # 6 + risk-coverage ×2 classifiers (clinical.py)
        assert counts["examples"] == info["example_images"] == expected_example_images(find_run_folders(tiny_results))
        assert counts["broken"] == 0
        # one setting per model is shown at a time: 2 classifiers × SAVE × 3 + segmenter × SAVE × 6
        assert counts["visibleExamples"] == 2 * SAVE * 3 + SAVE * 6
        assert counts["tables"] == 3 and "advonnx" in counts["title"]  # leaderboard, all settings, paired
        # sorting: click "Robust %" of the all-settings table twice -> ascending then descending
        col = browser.evaluate("""(() => { const t = document.getElementById('lb-all');
            const ths = Array.from(t.tHead.rows[0].cells);
            const i = ths.findIndex(th => th.textContent.startsWith('Robust'));
            const vals = () => Array.from(t.tBodies[0].rows).map(r => r.cells[i].getAttribute('data-v'))
                                 .filter(v => v !== '').map(Number);
            ths[i].click(); const up = vals(); ths[i].click(); const down = vals();
            return {up, down}; })()""")
        assert col["up"] == sorted(col["up"]) and col["down"] == sorted(col["down"], reverse=True)
        assert len(col["up"]) >= 10
        # the example selector swaps the visible panel set
        switched = browser.evaluate("""(() => { const s = document.querySelector('select.ex');
            s.value = s.options[s.options.length - 1].value; s.dispatchEvent(new Event('change'));
            const on = document.querySelectorAll('.exset.on[data-group="' + s.dataset.group + '"]');
            return on.length === 1 && on[0].dataset.key === s.value; })()""")
        assert switched
        browser.evaluate(
            "document.querySelectorAll('select.ex').forEach(s => { s.selectedIndex = "
            "Array.from(s.options).findIndex(o => o.defaultSelected); s.dispatchEvent(new Event('change')); })"
        )
        shot = browser.screenshot(shots / "advonnx-report.png")
        errors = browser.console_errors()
    assert errors == []
    assert shot.stat().st_size > 50_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width >= 1300 and im.height > 2000


@pytest.mark.slow
def test_quick_suite_report_under_5mb(tmp_path):
    """The whole quick suite (about 1.5 minutes on 2 cores): its report stays under 5 MB."""
    from advonnx.suite import load_suite

    Runner(load_suite("quick"), out=tmp_path / "res").run()
    info = write_report(tmp_path / "res", tmp_path / "quick.html")
    assert info["bytes"] < 5_000_000, info
    # quick now holds 3 datasets (patches, slices, tabular): more plots, and beyond the image budget
    # some example settings are left out (headline first)
    assert info["plots"] >= 3
    # the contrast is a stated test (issue 20): on 300 patches the brain pair's robust gap is
    # significant, while clean equivalence within ±2 points is not shown (TOST p = 0.22 measured),
    # and the report says both with their numbers
    page = (tmp_path / "quick.html").read_text(encoding="utf-8")
    contrast = page.split('<section id="contrast">')[1].split("</section>")[0]
    assert "brain_cnn</b> vs <b>brain_mobilenet</b>" in contrast and "exact McNemar p &lt; 0.0001" in contrast
    assert "not shown equivalent within ±2 (TOST p = " in contrast
    saved = expected_example_images(find_run_folders(tmp_path / "res"), 4)
    if info["examples_omitted"]:
        assert 0 < info["example_images"] < saved
    else:
        assert info["example_images"] == saved


def test_example_budget_keeps_headline_first(tiny_results, full_report):
    """Big runs: example settings beyond the image budget are left out, headline first, with a note."""
    from advonnx.report import render_report

    folders = find_run_folders(tiny_results)
    table = read_results(tiny_results, all_runs=True)
    _, full = full_report  # render_report(table, folders) with the default budget, as write_report did
    page, small = render_report(table, folders, max_example_bytes=1)
    assert full["examples_omitted"] == 0
    assert small["example_settings"] == 1 and small["examples_omitted"] == full["example_settings"] - 1
    assert "are left out to keep this" in page
    assert re.search(r'<option value="0" selected>pgd · L∞ · ε=2/255</option>', page)


def test_contrast_text_names_each_datasets_headline_and_metric():
    # a mixed suite: images under PGD, a tabular pair under its own headline (Square); the callout
    # of each pair must name that pair's attack and metric, not the first dataset's, and give the
    # paired test's numbers (TOST on clean, McNemar / paired t on robust)
    from advonnx.leaderboard import summarize
    from advonnx.report import _contrast_html
    from advonnx.results import empty_row

    rng = np.random.default_rng(0)
    rows = []

    def add(model, dataset, attack, eps, n, clean, robust, seg=False):
        for i in range(n):
            r = {
                **empty_row(),
                "model": model,
                "dataset": dataset,
                "attack": attack,
                "kind": "adversarial",
                "norm": "linf",
                "eps": eps,
                "eps_text": str(eps),
                "sample_id": f"s{i}",
                "status": "ok",
                "settings": "{}",
                "framework": "t",
                "label_source": "dataset",
                "targeted": False,
                "label": 0,
                "task": "segmentation" if seg else "classification",
            }
            if seg:
                r.update(
                    dice_clean=clean + 0.01 * np.sin(i), dice_adv=robust + 0.02 * rng.standard_normal(), success=False
                )
            else:
                r.update(
                    clean_correct=i < clean * n,
                    adv_correct=i < robust * n,
                    robust=i < robust * n,
                    success=not i < robust * n,
                )
            rows.append(r)

    add("seg_a", "seg", "pgd", 0.01, 40, 0.86, 0.60, seg=True)
    add("seg_b", "seg", "pgd", 0.01, 40, 0.86, 0.84, seg=True)
    add("mlp", "tab", "square", 0.05, 100, 0.95, 0.59)
    add("gbm", "tab", "square", 0.05, 100, 0.95, 0.75)
    table = rows_to_table(rows)
    summaries = summarize(table)
    headline = {
        "attack": "pgd",
        "norm": "linf",
        "eps": "0.01",
        "datasets": {"tab": {"attack": "square", "norm": "linf", "eps": "0.05"}},
    }
    html, n = _contrast_html(summaries, {}, headline, {m: "#000" for m in ("seg_a", "seg_b", "mlp", "gbm")}, table)
    assert n == 2
    seg, tab = html.split('<div class="callout">')[1:]
    assert "% Dice), but under pgd L∞ ε=0.01" in seg and "paired t on group means p &lt; 0.0001" in seg
    assert "% accuracy), but under square L∞ ε=0.05" in tab
    assert "TOST p = 0" in tab and "robust +16.0 points" in tab and "exact McNemar p &lt; 0.0001" in tab
    # clean figures 2 points apart on 100 samples: equivalence within ±2 is not shown, so no callout,
    # but the robust difference is stated with the TOST result
    rows = [r for r in rows if r["model"] != "gbm"]
    add("gbm", "tab", "square", 0.05, 100, 0.93, 0.75)
    table = rows_to_table(rows)
    html, n = _contrast_html(
        summarize(table), {}, headline, {m: "#000" for m in ("seg_a", "seg_b", "mlp", "gbm")}, table
    )
    assert n == 1 and html.count('<div class="callout">') == 1
    assert "<b>gbm</b> vs <b>mlp</b> under square L∞ ε=0.05: robust +16.0 points" in html
    assert "clean -2.0 points is not shown equivalent within ±2 (TOST p = " in html
