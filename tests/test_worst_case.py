"""Worst case over attacks: per-sample breaking radii, minimal-norm results as breaks at every
eps at or above their norm, robustness curves (issue 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advonnx.worst_case import breaking_radius, robust_accuracy, robustness_curve, still_robust, worst_case


def row(sid, attack, eps, success, *, min_norm=None, correct=True, norm="l2", model="m"):
    return {
        "model": model,
        "dataset": "d",
        "norm": norm,
        "sample_id": sid,
        "attack": attack,
        "eps": eps,
        "success": success,
        "min_norm": min_norm,
        "clean_correct": correct,
        "kind": "adversarial",
        "status": "ok",
        "task": "classification",
    }


def test_minimal_norm_counts_at_every_eps_at_or_above_it():
    rows = [
        row("a", "pgd", 0.5, False),
        row("a", "pgd", 1.0, False),
        row("b", "pgd", 0.5, False),
        row("b", "pgd", 1.0, True),
        row("c", "pgd", 0.5, False),
        row("c", "pgd", 1.0, False),
        row("d", "pgd", 0.5, True),
        row("d", "pgd", 1.0, True),
        row("e", "pgd", 0.5, False, correct=False),
        row("e", "pgd", 1.0, False, correct=False),
        row("a", "deepfool", 0.0, True, min_norm=0.5),  # breaks a at 0.5 and 1.0
        row("c", "deepfool", 0.0, False, min_norm=math.inf),
        row("b", "deepfool", 0.0, True, min_norm=2.0),  # larger than pgd's break: pgd wins
    ]
    radii = breaking_radius(rows)[("m", "d", "l2")]
    assert radii == {"a": 0.5, "b": 1.0, "c": math.inf, "d": 0.5, "e": 0.0}
    wc = {r["eps"]: r["robust"] for r in worst_case(rows)}
    # eps 0.5: a (0.5 ≤ 0.5), d, e broken → b, c robust; eps 1.0: only c robust
    assert wc == {0.5: 2 / 5, 1.0: 1 / 5}


def test_norms_do_not_mix():
    rows = [row("a", "pgd", 0.1, True, norm="linf"), row("a", "deepfool", 0.0, False, min_norm=math.inf)]
    radii = breaking_radius(rows)
    assert radii[("m", "d", "linf")]["a"] == 0.1 and radii[("m", "d", "l2")]["a"] == math.inf


def test_robustness_curve_from_minimal_norms():
    acc = robustness_curve([0.1, 0.3, np.inf, 0.2], [True, True, True, False], [0.0, 0.1, 0.25, 1.0])
    np.testing.assert_allclose(acc, [0.75, 0.5, 0.5, 0.25])
    np.testing.assert_allclose(robust_accuracy([0.2, 0.4], [0.2, 0.3]), [0.5, 0.5])


def test_float32_norms_at_eps_count_as_at_eps():
    # a perturbation clipped to 4/255 measures 0.0156863 in float32 (0.01568627 in float64)
    x = np.float32(0.123)
    radius = float(np.float32(x + np.float32(4 / 255)) - x)
    assert radius > 4 / 255
    np.testing.assert_allclose(robust_accuracy([radius, 1.0], [4 / 255]), [0.5])
    assert robust_accuracy([4 / 255 * 1.01], [4 / 255])[0] == 1.0  # a real excess still counts


def test_leaderboard_curves_cover_classification_only():
    # hand-computed: deepfool radii 0.1, 0.3, inf (one sample wrong clean) on the pgd grid 0.2, 0.5;
    # DAG rows of a segmenter (no clean_correct, never at its pixel target) give no curve at all
    import pyarrow as pa

    from advonnx.leaderboard import minimal_norm_curves

    rows = [
        row("a", "deepfool", 0.0, True, min_norm=0.1),
        row("b", "deepfool", 0.0, True, min_norm=0.3),
        row("c", "deepfool", 0.0, False, min_norm=math.inf),
        row("d", "deepfool", 0.0, False, correct=False, min_norm=math.inf),
        row("a", "pgd", 0.2, True),
        row("a", "pgd", 0.5, True),
    ]
    seg = [
        {
            **row(s, "dag", 4 / 255, False, min_norm=math.inf, correct=None, norm="linf", model="unet"),
            "task": "segmentation",
        }
        for s in "ab"
    ]
    seg += [
        {**row(s, "pgd", 2 / 255, False, correct=None, norm="linf", model="unet"), "task": "segmentation"} for s in "ab"
    ]
    lines = minimal_norm_curves(pa.Table.from_pylist(rows + seg), [])
    assert lines == [
        "robustness curve of m from deepfool minimal l2 norms (accuracy at ‖δ‖ ≤ eps): 0.2→50.0%, 0.5→25.0%"
    ]


def test_still_robust_flags_select_the_unbroken():
    np.testing.assert_array_equal(still_robust(np.array([0.0, 0.5, np.inf]), 0.5), [False, False, True])


# -- end to end: the Runner's stages and the CLI (AutoAttack-style orchestration) -------------

KEY = ("model", "dataset", "sample_id", "attack", "norm", "eps")


def _suite(tmp_path, *, worst_case=True, n=40):
    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Suite, parse_eps
    from models import save, small_cnn

    m = save(small_cnn(size=8, seed=0), tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)  # labels: the clean predictions
    eps = parse_eps("0.4,0.7")
    return Suite(
        name="wc",
        models=[ModelEntry("m", m)],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[
            AttackEntry("fgsm", "linf", eps),
            AttackEntry("deepfool", "linf", eps, {"steps": 20}),
            AttackEntry("pgd", "linf", eps, {"steps": 5}),
        ],
        chunk_size=16,
        seed=5,
        worst_case=worst_case,
        masking_checks=False,
    )  # test_masking.py has those


def _rows(table):
    rows = table.drop(["time_s", "run_id"]).to_pylist()
    keys = [tuple(r[k] for k in KEY) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in KEY))


def test_runner_worst_case_attacks_only_still_robust_samples(tmp_path):
    from advonnx.suite import Runner

    _, full = Runner(_suite(tmp_path, worst_case=False), out=tmp_path / "full", batch_size=64).run()
    _, wc = Runner(_suite(tmp_path), out=tmp_path / "wc", batch_size=64).run()
    rows = _rows(wc)
    assert len(rows) == full.num_rows == 40 * 3 * 2  # every sample × attack × eps has its row
    by = {(r["attack"], r["eps"], r["sample_id"]): r for r in rows}
    # the first attack runs on everything and gives the same rows as a plain run
    assert [r for r in rows if r["attack"] == "fgsm"] == [r for r in _rows(full) if r["attack"] == "fgsm"]
    assert all(r["status"] == "ok" for r in rows if r["attack"] == "fgsm")
    n_skipped = 0
    for (attack, eps, sid), r in by.items():
        if attack == "fgsm":
            continue
        earlier = ["fgsm"] if attack == "deepfool" else ["fgsm", "deepfool"]
        reason = None
        for a in earlier:  # what the earlier attacks' written rows say, at any eps of the norm
            seen = [by[(a, e, sid)] for e in (0.4, 0.7) if by[(a, e, sid)]["status"] == "ok"]
            if any(s["clean_correct"] is False for s in seen):
                reason = reason or "misclassified unattacked"
            radius = min(
                [s["min_norm"] for s in seen if s["min_norm"] is not None]
                + [s["eps"] for s in seen if s["min_norm"] is None and s["success"]],
                default=math.inf,
            )
            if radius <= eps:
                reason = reason or f"broken by {a}"
        if reason is None:
            assert r["status"] == "ok", (attack, eps, sid)
        else:
            n_skipped += 1
            assert (r["status"], r["error"]) == ("skipped", reason), (attack, eps, sid)
            assert r["success"] is None and r["adv_pred"] is None and r["clean_correct"] is not None
    assert n_skipped > 0
    # every attack's summary covers all 40 samples: the skipped ones count as broken, so the
    # last attack's robust accuracy is the worst case over all three (hand-computed from rows)
    from advonnx.leaderboard import summarize

    summaries = {(s["attack"], s["eps"]): s for s in summarize(wc)}
    for eps in (0.4, 0.7):
        last = summaries[("pgd", eps)]
        assert last["n"] == 40 and last["clean"] == 1.0  # labels are the clean predictions
        # a sample is robust after pgd when pgd attacked it (nothing earlier broke it) and failed
        survivors = sum(
            r["status"] == "ok" and r["adv_correct"] for (a, e, _), r in by.items() if a == "pgd" and e == eps
        )
        assert last["robust"] == pytest.approx(survivors / 40)
        assert last["robust"] == pytest.approx(next(w for w in worst_case(rows) if w["eps"] == eps)["robust"])
    # DeepFool's ‖r‖₂/‖x‖₂ (ρ is its mean) and changed pixels are stored per row
    df = [r for r in rows if r["attack"] == "deepfool" and r["status"] == "ok"]
    assert all(r["rho"] is not None and (r["rho"] > 0 or math.isnan(r["rho"])) for r in df)
    assert all(r["l0_pixels"] == r["l0"] for r in df)  # one channel: pixels = elements
    # a minimal-norm result breaks at every eps at or above its norm: deepfool's min_norm
    # (even where its projected x_adv at a small eps is not adversarial) spares pgd the sample
    assert any(r["error"] == "broken by deepfool" for r in rows if r["attack"] == "pgd")
    assert any(r["status"] == "ok" for r in rows if r["attack"] == "pgd")
    # the combined worst case is never above any single attack's robust accuracy
    combined = {(w["norm"], w["eps"]): w["robust"] for w in worst_case(rows)}
    for eps in (0.4, 0.7):
        for a in ("fgsm", "deepfool", "pgd"):
            ok = [r for r in rows if r["attack"] == a and r["eps"] == eps and r["status"] == "ok"]
            assert combined[("linf", eps)] <= sum(bool(r["adv_correct"]) for r in ok) / 40 + 1e-12
    # deterministic across runs and batch sizes (per-chunk seeded streams, keys from the skip lists)
    _, again = Runner(_suite(tmp_path), out=tmp_path / "wc2", batch_size=3).run()
    assert _rows(again) == rows


def test_worst_case_resume_replans_the_same_units(tmp_path):
    from advonnx.suite import Runner

    folder, first = Runner(_suite(tmp_path), out=tmp_path / "wc").run()
    chunks = sorted(folder.glob("part-*.parquet"))
    for path in chunks[::3]:  # lose chunks of every stage, as a killed run would
        path.unlink()
    _, resumed = Runner(_suite(tmp_path), out=tmp_path / "wc", resume=True).run()
    assert _rows(resumed) == _rows(first)
    assert len(list(folder.glob("part-*.parquet"))) == len(chunks)


def test_cli_worst_case_flag_and_leaderboard(tmp_path):
    from cli_inprocess import run_cli

    from advonnx.results import read_results
    from advonnx.suite import load_suite

    s = _suite(tmp_path)
    r = run_cli(
        "run",
        "--model",
        s.models[0].path,
        "--data",
        s.datasets[0].path,
        "--attack",
        "fgsm,pgd",
        "--eps",
        "0.4,0.7",
        "--steps",
        "3",
        "--chunk-size",
        "16",
        "--quiet",
        "--out",
        tmp_path / "cli",
        "--worst-case",
        "--no-masking-checks",
        columns=160,
    )  # in this process; test_masking.py has the checks
    assert r.returncode == 0, r.stderr
    assert "Worst case over attacks" in r.stdout
    rows = read_results(tmp_path / "cli").to_pylist()
    pgd = [r for r in rows if r["attack"] == "pgd" and r["kind"] == "adversarial"]
    assert len(pgd) == 80 and any(r["error"] == "broken by fgsm" for r in pgd)
    toml = tmp_path / "wc.toml"
    toml.write_text(
        'worst_case = true\n[[models]]\npath = "m.onnx"\n[[datasets]]\npath = "d.npz"\n'
        '[[attacks]]\nname = "fgsm"\neps = "0.05"\n',
        encoding="utf-8",
    )
    assert load_suite(toml).worst_case and load_suite(toml).config()["worst_case"] is True


@pytest.mark.slow
def test_worst_case_on_dask_equals_local(tmp_path):
    pytest.importorskip("dask.distributed")
    from advonnx.suite import Runner

    _, local = Runner(_suite(tmp_path), out=tmp_path / "local").run()
    _, dist = Runner(_suite(tmp_path), out=tmp_path / "dask", cluster="local:2").run()
    assert _rows(dist) == _rows(local)
