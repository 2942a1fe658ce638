"""Suite transfer matrix (rows of kind "transfer") and universal perturbations over a whole dataset,
checked against the saved adversarial examples evaluated by onnxruntime directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest

import advonnx
from advonnx.leaderboard import summarize
from advonnx.report import example_pairs
from advonnx.results import read_results
from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, load_suite, parse_eps
from advonnx.transfer_matrix import transfer_matrix
from advonnx.universal_summary import uap_rates
from models import save, small_cnn

# the reference: without statsmodels the module is skipped, not a collection error
proportion_confint = pytest.importorskip("statsmodels.stats.proportion").proportion_confint

SUITES = Path(advonnx.__file__).parent / "suites"


def _ort_pred(path, x) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.argmax(s.run(None, {s.get_inputs()[0].name: x})[0], axis=1)


def _jittered(seed: int, scale: float):
    """small_cnn(seed=0) with Gaussian noise of ``scale`` × each weight's std on every weight: models
    that mostly agree clean (so transfer has samples to count) but differ."""
    from onnx import numpy_helper

    m = small_cnn(seed=0)
    rng = np.random.default_rng(seed)
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        init.CopyFrom(
            numpy_helper.from_array((w + scale * w.std() * rng.normal(size=w.shape)).astype(w.dtype), init.name)
        )
    return m


def _inputs(n: int, seed: int) -> np.ndarray:
    """Patches of random brightness with texture: the tiny CNNs predict different classes on them."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, 1, 1, 1)) * rng.uniform(0.5, 1, (n, 1, 8, 8))).astype(np.float32)


def _hand_matrix(folder: Path, paths: dict[str, Path]) -> dict[tuple[str, ...], tuple[int, int, dict]]:
    """(attack, source, target, eps_text) -> (k, n, per-sample fooled_target) from the saved examples (every sample
    of the run is saved), predictions by onnxruntime directly."""
    out = {}
    for npz, part in example_pairs(folder):
        rows = pq.read_table(part, columns=["model", "kind", "eps_text", "attack"]).to_pylist()
        if rows[0]["kind"] != "adversarial" or rows[0]["model"] not in paths:
            continue
        source = rows[0]["model"]
        with np.load(npz) as z:
            x, xa, y, ids = z["x"], z["x_adv"], z["label"], z["sample_id"]
        ps, psa = _ort_pred(paths[source], x), _ort_pred(paths[source], xa)
        for target, path in paths.items():
            if target == source:
                continue
            pt, pta = _ort_pred(path, x), _ort_pred(path, xa)
            both = (ps == y) & (psa != y) & (pt == y)
            out[(rows[0]["attack"], source, target, rows[0]["eps_text"])] = (
                int((both & (pta != y)).sum()),
                int(both.sum()),
                {str(i): bool(f) for i, f in zip(ids, pta != y, strict=True)},
            )
    return out


def _check_against_hand(table, folder: Path, paths: dict[str, Path]) -> list[dict]:
    hand = _hand_matrix(folder, paths)
    cells = transfer_matrix(table)
    assert {(c["attack"], c["source"], c["target"], c["eps_text"]) for c in cells} == set(hand)
    rows = [r for r in table.to_pylist() if r["kind"] == "transfer"]
    for c in cells:
        k, n, fooled = hand[(c["attack"], c["source"], c["target"], c["eps_text"])]
        assert (c["k"], c["n"]) == (k, n)
        if n:
            lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
            np.testing.assert_allclose(c["ci"], (lo, hi), atol=1e-12)
            assert c["rate"] == k / n
        mine = {
            r["sample_id"]: r["fooled_target"]
            for r in rows
            if r["attack"] == c["attack"]
            and r["model"] == c["source"]
            and r["transfer_target"] == c["target"]
            and r["eps_text"] == c["eps_text"]
        }
        assert mine == fooled
    return cells


def test_transfer_matrix_on_tiny_models_matches_onnxruntime(tmp_path):
    """Three 3-class CNNs read the same inputs; a 4-class one is left out with a note. The
    matrix cells equal the counts from the saved x_adv run through onnxruntime; the rows are
    written once and a resumed run after losing a chunk rewrites the same transfer rows."""
    paths = {f"m{i}": save(_jittered(i, 0.3 * i), tmp_path / f"m{i}.onnx") for i in range(3)}
    big = save(small_cnn(classes=4, seed=5), tmp_path / "big.onnx")
    x = _inputs(24, 0)
    y = _ort_pred(paths["m0"], x)  # m0 is right on every sample, the others on some
    np.savez(tmp_path / "d.npz", x=x, y=y)
    suite = Suite(
        name="t",
        models=[ModelEntry(n, str(p), "d") for n, p in paths.items()] + [ModelEntry("big", str(big), "d")],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[AttackEntry("pgd", "linf", parse_eps("0.05,0.15"), {"steps": 5})],
        save_examples=24,
        masking_checks=False,
        transfer_matrix=True,
    )
    runner = Runner(suite, out=tmp_path / "res")
    folder, table = runner.run()
    assert any("big and m0 not compared (4 vs 3 classes)" in n for n in runner.transfer_notes), runner.transfer_notes
    assert not any(
        r["transfer_target"] == "big" or (r["kind"] == "transfer" and r["model"] == "big") for r in table.to_pylist()
    )
    kinds = table.column("kind").to_pylist()
    assert kinds.count("transfer") == 3 * 2 * 2 * 24  # 3 sources x 2 targets x 2 eps x 24 samples
    cells = _check_against_hand(table, folder, paths)
    assert len(cells) == 3 * 2 * 2 and sum(c["n"] for c in cells) > 0
    assert len({round(c["rate"], 6) for c in cells if c["n"]}) > 1  # the cells differ: not a constant
    # the leaderboard does not count transfer rows
    lb = [s for s in summarize(table) if s["model"] == "m0" and s["eps_text"] == "0.15"]
    assert len(lb) == 1 and lb[0]["n"] == 24
    # resumable: drop one chunk holding transfer rows, resume, get the same rows back
    before = sorted(
        (r["model"], r["transfer_target"], r["eps_text"], r["sample_id"], r["fooled_target"])
        for r in table.to_pylist()
        if r["kind"] == "transfer"
    )
    lost = next(
        p
        for p in folder.glob("part-*.parquet")
        if "transfer" in pq.read_table(p, columns=["kind"]).column(0).to_pylist()
    )
    lost.unlink()
    _, again = Runner(suite, out=tmp_path / "res", resume=True).run()
    after = sorted(
        (r["model"], r["transfer_target"], r["eps_text"], r["sample_id"], r["fooled_target"])
        for r in again.to_pylist()
        if r["kind"] == "transfer"
    )
    assert after == before and again.num_rows == table.num_rows


def test_transfer_matrix_cli_and_report(tmp_path):
    from test_cli import advonnx as cli

    for i in range(2):
        save(_jittered(i, 0.3 * i), tmp_path / f"m{i}.onnx")
    x = _inputs(10, 1)
    np.savez(tmp_path / "d.npz", x=x, y=_ort_pred(tmp_path / "m0.onnx", x))
    (tmp_path / "s.toml").write_text(
        'name = "s"\nmasking_checks = false\n[headline]\nattack = "pgd"\nnorm = "linf"\neps = "0.3"\n'
        '[[datasets]]\nname = "d"\npath = "d.npz"\n'
        '[[models]]\nname = "m0"\npath = "m0.onnx"\n[[models]]\nname = "m1"\npath = "m1.onnx"\n'
        '[[attacks]]\nname = "pgd"\neps = ["0.3"]\nsteps = 3\n'
    )
    r = cli("run", tmp_path / "s.toml", "--transfer-matrix", "--out", tmp_path / "res", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Transfer matrix · d · pgd linf eps=0.3" in r.stdout and "white-box" in r.stdout
    table = read_results(tmp_path / "res")
    cell = next(c for c in transfer_matrix(table) if c["source"] == "m0")
    assert f"n={cell['n']}" in r.stdout
    rep = cli("report", tmp_path / "res", "-o", tmp_path / "r.html")
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert 'id="transfer"' in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_transfer_matrix_on_quick_brain_models(tmp_path):
    """The quick suite's three brain-patch classifiers (PyTorch CNN, MobileNet, JAX CNN), 8 samples."""
    quick = load_suite("quick")
    brain = [m for m in quick.models if m.dataset == "brain-tissue-patch"]
    dset = next(d for d in quick.datasets if d.name == "brain-tissue-patch")
    dset.limit = 8
    suite = Suite(
        name="q",
        models=brain,
        datasets=[dset],
        attacks=[AttackEntry("pgd", "linf", parse_eps("4/255"), {"steps": 10})],
        save_examples=8,
        masking_checks=False,
        transfer_matrix=True,
    )
    folder, table = Runner(suite, out=tmp_path / "res").run()
    cells = _check_against_hand(table, folder, {m.name: Path(m.path) for m in brain})
    assert len(cells) == 6 and sum(c["n"] for c in cells) > 0


def test_uap_in_a_suite_is_one_perturbation_over_the_dataset(tmp_path):
    """chunk_size 4 over 20 samples: still one unit, one δ for every sample (up to clipping),
    rows marked fit / held_out, the held-out fooling rate equals onnxruntime's count, and a
    second run gives the same rows (deterministic)."""
    from advonnx.attacks.universal import fit_mask

    path = save(small_cnn(seed=2), tmp_path / "m.onnx")
    x = np.random.default_rng(3).uniform(0.2, 0.8, (20, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=_ort_pred(path, x))

    def run(out):
        suite = Suite(
            name="u",
            models=[ModelEntry("m", str(path), "d")],
            datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
            attacks=[AttackEntry("uap", "linf", parse_eps("0.15"), {"epochs": 5, "batch_size": 4})],
            save_examples=20,
            chunk_size=4,
            masking_checks=False,
        )
        return Runner(suite, out=tmp_path / out).run()

    folder, table = run("a")
    assert len(list(folder.glob("part-*.parquet"))) == 1
    rows = table.to_pylist()
    assert "transfer" not in {r["kind"] for r in rows}  # no transfer matrix unless asked
    fit = fit_mask(20, 0.5)
    assert [r["uap_split"] for r in rows] == ["fit" if f else "held_out" for f in fit]
    ((npz, _),) = example_pairs(folder)
    with np.load(npz) as z:
        xs, xa = z["x"], z["x_adv"]
    d = xa - xs
    inside = (xa > 1e-6) & (xa < 1 - 1e-6)
    ref = d[0]
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(np.where(inside, d, ref[None]), np.broadcast_to(ref, d.shape), atol=1e-6)
    pc, pa_ = _ort_pred(path, xs), _ort_pred(path, xa)
    held = ~fit
    (u,) = uap_rates(table)
    assert (u["fit"], u["held_out"], u["k"]) == (10, 10, int((pc[held] != pa_[held]).sum()))
    assert u["fit_fooling_rate"] == pytest.approx(np.mean(pc[fit] != pa_[fit]))
    lo, hi = proportion_confint(u["k"], 10, alpha=0.05, method="wilson")
    np.testing.assert_allclose(u["ci"], (lo, hi), atol=1e-12)
    from advonnx.report import render_report

    html, _ = render_report(table, [folder])
    assert 'id="universal"' in html and 'id="transfer"' not in html
    lb = [s for s in summarize(table) if s["attack"] == "uap"]
    assert lb[0]["n"] == 10 and lb[0]["robust"] == pytest.approx(
        np.mean((pc[held] == pa_[held]) & (pc[held] == np.load(tmp_path / "d.npz")["y"][held]))
    )
    _, again = run("b")
    key = ["sample_id", "adv_pred", "uap_split", "linf"]
    assert again.select(key).to_pylist() == table.select(key).to_pylist()


def test_transfer_rows_in_worst_case_runs_cover_the_attacked_samples_only(tmp_path):
    """--worst-case: a later attack skips samples an earlier one broke; only the samples it attacked
    have an adversarial example, so only they get transfer rows (and the matrix matches onnxruntime
    on the saved examples of both attacks)."""
    paths = {f"m{i}": save(_jittered(i, 0.3 * i), tmp_path / f"m{i}.onnx") for i in range(2)}
    x = _inputs(16, 0)
    np.savez(tmp_path / "d.npz", x=x, y=_ort_pred(paths["m0"], x))
    suite = Suite(
        name="w",
        models=[ModelEntry(n, str(p), "d") for n, p in paths.items()],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[
            AttackEntry("fgsm", "linf", parse_eps("0.1")),
            AttackEntry("pgd", "linf", parse_eps("0.1"), {"steps": 5}),
        ],
        save_examples=16,
        masking_checks=False,
        transfer_matrix=True,
        worst_case=True,
    )
    folder, table = Runner(suite, out=tmp_path / "res").run()
    rows = table.to_pylist()
    skipped = 0
    for model in paths:
        for attack in ("fgsm", "pgd"):
            adv = [r for r in rows if r["attack"] == attack and r["kind"] == "adversarial" and r["model"] == model]
            tr = [r for r in rows if r["attack"] == attack and r["kind"] == "transfer" and r["model"] == model]
            assert sorted(r["sample_id"] for r in tr) == sorted(r["sample_id"] for r in adv if r["status"] == "ok")
            skipped += sum(r["status"] == "skipped" for r in adv)
    assert skipped > 0
    _check_against_hand(table, folder, paths)


def test_a_failing_target_gives_errored_transfer_rows_left_out_of_the_matrix():
    from advonnx.model import ModelRunError
    from advonnx.results import rows_to_table
    from advonnx.transfer_matrix import transfer_rows

    class Broken:
        def classify(self, x):
            raise ModelRunError("onnxruntime failed: out of memory")

    src = [{"sample_id": str(i), "status": "ok", "clean_correct": True, "adv_correct": False} for i in range(3)]
    common = {
        "model": "s",
        "dataset": "d",
        "attack": "pgd",
        "norm": "linf",
        "eps": 0.1,
        "eps_text": "0.1",
        "settings": "{}",
        "targeted": False,
    }
    rows = transfer_rows([("t", Broken())], src, np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3, int), common)
    assert [r["status"] for r in rows] == ["errored"] * 3 and "out of memory" in rows[0]["error"]
    assert transfer_matrix(rows_to_table(rows)) == []
