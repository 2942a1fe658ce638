"""Groups, paired comparisons, ``show --json`` and ``gate`` on small runs of tiny linear models
(issue 20). Two models make the same clean decisions on the data (features 3-5 are exactly 0.5
in every sample, where the "fragile" model's large extra weights cancel) but differ under attack
(an L∞ step moves those features, and only the fragile model cares): equal clean, different robust,
known by construction."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper

from advonnx.cli import main
from advonnx.results import find_run_folders, read_results
from models import _model, save

# the references: without statsmodels the module is skipped, not a collection error
mcnemar = pytest.importorskip("statsmodels.stats.contingency_tables").mcnemar
ttost_paired = pytest.importorskip("statsmodels.stats.weightstats").ttost_paired

N, GROUPS = 60, 12


def linear(w: np.ndarray, b: np.ndarray):
    """scores = x W + b on (N, 6) features."""
    return _model(
        [helper.make_node("Gemm", ["x", "W", "b"], ["logits"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", w.shape[1]])],
        [numpy_helper.from_array(w.astype(np.float32), "W"), numpy_helper.from_array(b.astype(np.float32), "b")],
    )


def weights():
    rng = np.random.default_rng(7)
    w = np.zeros((6, 3))
    w[:3] = rng.normal(0, 4, (3, 3))
    b = -0.5 * w.sum(axis=0)
    fragile = w.copy()
    fragile[3:] = rng.choice([-30.0, 30.0], size=(3, 3))
    return (w, b), (fragile, b - 0.5 * fragile[3:].sum(axis=0))


def cli(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process (fast): exit code, stdout, stderr."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run of both models (named robust and fragile), and two runs of a model named m: robust in
    ``base``, fragile in ``new``. 60 samples in 12 groups of 5 (npz ``group``)."""
    root = tmp_path_factory.mktemp("runs")
    (w, b), (fw, fb) = weights()
    rng = np.random.default_rng(0)
    x = np.full((N, 6), 0.5, dtype=np.float32)
    x[:, :3] = rng.uniform(0, 1, (N, 3))
    y = np.argmax(x.astype(np.float64) @ w + b, axis=1)
    y[::10] = (y[::10] + 1) % 3  # a few wrong labels: clean accuracy 90 % for both
    np.savez(root / "d.npz", x=x, y=y, group=np.repeat([f"patient{i:02d}" for i in range(GROUPS)], N // GROUPS))
    for name, (ww, bb) in (("robust", (w, b)), ("fragile", (fw, fb))):
        save(linear(ww, bb), root / f"{name}.onnx")
        (root / name).mkdir()
        save(linear(ww, bb), root / name / "m.onnx")
    common = [
        "--data",
        root / "d.npz",
        "--attack",
        "pgd",
        "--eps",
        "0.05",
        "--steps",
        "5",
        "--quiet",
        "--no-masking-checks",
    ]
    from advonnx.cli import app

    for args in (
        ["--model", root / "robust.onnx", "--model", root / "fragile.onnx", "--out", root / "both"],
        ["--model", root / "robust" / "m.onnx", "--out", root / "base"],
        ["--model", root / "fragile" / "m.onnx", "--out", root / "new"],
    ):
        app(args=["run", *map(str, args), *map(str, common)], standalone_mode=False)
    return root


def test_rows_carry_the_npz_groups_and_the_leaderboard_counts_them(runs, capsys):
    t = read_results(runs / "both")
    rows = t.to_pylist()
    assert {r["group"] for r in rows} == {f"patient{i:02d}" for i in range(GROUPS)}
    by_sample = {r["sample_id"]: r["group"] for r in rows}
    assert by_sample["npz:0"] == "patient00" and by_sample["npz:59"] == "patient11"
    code, out, _ = cli(capsys, "show", runs / "both")
    assert code == 0 and f"n={N} in {GROUPS} groups" in " ".join(out.split())
    assert "Wilson score" in " ".join(out.split())


def _flags(table, model):
    rows = sorted(
        (r for r in table.to_pylist() if r["model"] == model and r["kind"] == "adversarial"),
        key=lambda r: r["sample_id"],
    )
    return (
        np.array([r["clean_correct"] for r in rows], float),
        np.array([r["robust"] for r in rows], float),
        [r["group"] for r in rows],
    )


def test_compare_one_run_pairs_models_with_mcnemar_and_tost(runs, capsys):
    from advonnx.compare import model_pairs

    t = read_results(runs / "both")
    (pair,) = model_pairs(t)
    assert (pair["first"], pair["second"]) == ("fragile", "robust")
    clean_f, rob_f, groups = _flags(t, "fragile")
    clean_r, rob_r, _ = _flags(t, "robust")
    assert np.array_equal(clean_f, clean_r) and rob_r.mean() - rob_f.mean() > 0.3  # as built
    only_f, only_r = int(np.sum((rob_f == 1) & (rob_r == 0))), int(np.sum((rob_f == 0) & (rob_r == 1)))
    want = mcnemar([[0, only_f], [only_r, 0]], exact=True).pvalue
    assert pair["p_robust"] == pytest.approx(want, rel=1e-12) and pair["discordant"] == (only_f, only_r)
    assert pair["delta_robust"] == pytest.approx(rob_r.mean() - rob_f.mean())
    lo, hi = pair["delta_robust_ci"]
    assert 0 < lo < pair["delta_robust"] < hi
    assert pair["n"] == N and pair["groups"] == GROUPS
    assert pair["p_equivalent_clean"] == 0.0  # identical clean decisions: equivalent, no variance
    code, out, _ = cli(capsys, "compare", runs / "both")
    text = " ".join(out.split())
    assert code == 0 and "fragile → robust" in text and f"{N} ({GROUPS})" in text
    assert f"+{100 * pair['delta_robust']:.1f} ({100 * lo:+.1f} to {100 * hi:+.1f})" in text
    # the leaderboard's contrast is now a stated test with its numbers
    code, out, _ = cli(capsys, "show", runs / "both")
    text = " ".join(out.split())
    assert "equal clean, different robust: robust vs fragile" in text and "TOST p = 0" in text
    assert "exact McNemar p < 0.0001" in text and f"n = {N} in {GROUPS} groups" in text


def test_tost_on_group_means_is_ttost_paired(runs):
    """The clean-equivalence test on a pair whose clean outcomes differ: per-group means of the
    rows against statsmodels' ttost_paired (hand-built pair: robust's clean vs its robust flags)."""
    from advonnx.summary_stats import tost_paired

    clean, rob, groups = _flags(read_results(runs / "both"), "robust")
    g = np.array(groups)
    ma = np.array([clean[g == k].mean() for k in sorted(set(groups))])
    mb = np.array([rob[g == k].mean() for k in sorted(set(groups))])
    assert tost_paired(clean, rob, groups, margin=0.2)["p"] == pytest.approx(
        ttost_paired(ma, mb, -0.2, 0.2)[0], rel=1e-9
    )


def test_compare_two_runs_and_gate_against_baseline(runs, capsys):
    code, out, _ = cli(capsys, "compare", runs / "base", runs / "new")
    text = " ".join(out.split())
    assert code == 0 and "m → m" in text and "Paired on the same samples (B − A)" in text
    code, _, _ = cli(capsys, "compare", runs / "both", "--html", runs / "pairs.html")
    page = (runs / "pairs.html").read_text(encoding="utf-8")
    assert code == 0 and "<td>fragile</td><td>robust</td>" in page and "upper bound" in page
    code, out, _ = cli(capsys, "gate", runs / "new", "--baseline", runs / "base")
    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("m: robust accuracy") and "vs baseline" in lines[0]
    code, out, _ = cli(capsys, "gate", runs / "base", "--baseline", runs / "base")
    assert code == 0 and out.startswith("gate passed")
    code, out, _ = cli(capsys, "gate", runs / "new", "--baseline", runs / "base", "--min-robust", "0.01")
    assert code == 1 and len(out.strip().splitlines()) == 1


def test_gate_min_robust_exit_codes(runs, capsys):
    t = read_results(runs / "both")
    robust = {m: np.mean([r["robust"] for r in t.to_pylist() if r["model"] == m]) for m in ("robust", "fragile")}
    threshold = (robust["robust"] + robust["fragile"]) / 2
    # one real process: the exit code and the one line a CI job sees
    r = subprocess.run(
        [sys.executable, "-m", "advonnx.cli", "gate", str(runs / "both"), "--min-robust", f"{threshold:.4f}"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    (line,) = r.stdout.strip().splitlines()
    assert line.startswith("fragile: robust accuracy 0.0 %") and "below --min-robust" in line
    code, out, _ = cli(capsys, "gate", runs / "both", "--min-robust", "0")
    assert code == 0 and out.startswith("gate passed: 2 models")
    for bad in ([], ["--min-robust", "80"]):
        code, out, err = cli(capsys, "gate", runs / "both", *bad)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0]


def test_show_json_holds_every_figure_with_bounds(runs, capsys):
    code, out, _ = cli(capsys, "show", runs / "both", "--json")
    assert code == 0
    summary = json.loads(out)
    assert "upper bound" in summary["note"] and "Wilson" in summary["methods"]["proportions"]
    t = read_results(runs / "both").to_pylist()
    for s in summary["settings"]:
        mine = [r for r in t if r["model"] == s["model"] and r["kind"] == "adversarial"]
        assert s["n"] == N and s["groups"] == GROUPS
        assert s["robust"] == pytest.approx(np.mean([r["robust"] for r in mine]))
        lo, hi = s["robust_ci"]["low"], s["robust_ci"]["high"]
        assert lo <= s["robust"] <= hi and hi - lo > 0.05 and s["interval_method"]  # 0 %: still not zero-width
    (pair,) = summary["paired"]
    assert pair["delta_robust_ci"]["low"] > 0 and pair["p_robust"] < 0.05
    (contrast,) = summary["contrasts"]
    assert contrast["more_robust"] == "robust" and contrast["p_equivalent_clean"] < 0.05


def test_run_folder_without_group_column_still_shows_everything(runs, tmp_path, capsys):
    """A run written before rows had ``group``: each sample is its own group."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(find_run_folders(runs / "both")[0], old)
    for part in old.glob("part-*.parquet"):
        t = pq.read_table(part)
        pq.write_table(t.drop_columns(["group"]), part)
    assert "group" not in read_results(old).column_names or all(
        g is None for g in read_results(old).column("group").to_pylist()
    )
    code, out, _ = cli(capsys, "show", old, "--json")
    summary = json.loads(out)
    assert code == 0 and all(s["groups"] == s["n"] == N for s in summary["settings"])
    assert summary["paired"][0]["groups"] == N
    code, out, _ = cli(capsys, "compare", old, runs / "both")
    assert code == 0
    code, out, _ = cli(capsys, "show", old)
    assert code == 0 and f"n={N} in {N} groups" in " ".join(out.split())
