"""Gradient-masking checks (advonnx/masking.py) and the statistics under them (advonnx/stats.py):
intervals and tests against statsmodels, each check firing and staying quiet on rows built with a
known answer, the suite runner adding the checks' attacks, and the checks on real models: firing
on a Round input quantizer in front of brain_cnn and on a Softmax(T=200) wrapper of
brain_mobilenet, quiet on brain_cnn and brain_mobilenet (issue 15)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from advonnx.masking import (
    CHECK_QUERIES,
    CHECK_SAMPLES,
    MASKING_FILE,
    NO_SIGN,
    SUSPECTED,
    check_attacks,
    masking_checks,
    verdict_lines,
)
from advonnx.results import empty_row, rows_to_table
from advonnx.stats import mcnemar_exact, wilson_interval

# ------------------------------------------------------------------------------------ statistics


def test_wilson_interval_equals_statsmodels_on_a_grid():
    from statsmodels.stats.proportion import proportion_confint

    for n in (1, 2, 3, 5, 10, 17, 64, 100, 300, 1000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
            for conf in (0.95, 0.9, 0.99):
                lo, hi = wilson_interval(k, n, confidence=conf)
                ref = proportion_confint(k, n, alpha=1 - conf, method="wilson")
                assert abs(lo - ref[0]) < 1e-9 and abs(hi - ref[1]) < 1e-9, (k, n, conf)


def test_wilson_interval_never_empty_or_zero_width_at_the_edges():
    for n in (1, 5, 100, 10_000):
        for k in (0, n):
            lo, hi = wilson_interval(k, n)
            assert hi - lo > 0 and lo <= k / n <= hi
    lo, hi = wilson_interval(0, 100)
    assert lo == 0 and 0.03 < hi < 0.04  # "0 of 100" does not mean "0 %, certainly"
    assert all(np.isnan(wilson_interval(0, 0)))
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_mcnemar_exact_equals_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar

    for b in (0, 1, 2, 5, 9, 30, 120):
        for c in (0, 1, 3, 8, 31, 200):
            ref = mcnemar(np.array([[7, b], [c, 11]]), exact=True).pvalue
            assert abs(mcnemar_exact(b, c) - ref) < 1e-9, (b, c)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 6) == mcnemar_exact(6, 0) == pytest.approx(2 * 0.5**6)


# ------------------------------------------------------------------------- checks on known rows


def _rows(
    attack,
    broken,
    *,
    gradient="exact",
    steps=10,
    eps=0.1,
    n=100,
    kind="adversarial",
    max_queries=None,
    model="m",
    clean_wrong=(),
    skipped=(),
):
    """One row per sample ``0..n-1``; ``broken``: the set of samples the attack broke."""
    out = []
    settings = {"eps": eps, "steps": steps} if max_queries is None else {"eps": eps, "max_queries": max_queries}
    for i in range(n):
        r = {
            **empty_row(),
            "model": model,
            "dataset": "d",
            "task": "classification",
            "kind": kind,
            "attack": attack,
            "norm": "linf",
            "eps": eps,
            "gradient": gradient,
            "steps": steps,
            "restarts": 1,
            "max_queries": max_queries,
            "settings": json.dumps(settings),
            "sample_id": f"s{i}",
            "status": "ok",
            "clean_correct": i not in clean_wrong,
            "adv_correct": i not in broken and i not in clean_wrong,
            "success": i in broken,
        }
        if i in skipped:  # a worst-case row: an earlier attack broke it, this one did not run
            r.update(status="skipped", error="broken by fgsm", adv_correct=None, success=None, gradient=None)
        out.append(r)
    return out


def _check(result, name, model="m"):
    (m,) = [m for m in result["models"] if m["model"] == model]
    found = [c for c in m["checks"] if c["check"] == name]
    assert len(found) == 1, (name, m["checks"])
    return m, found[0]


def _statsmodels_p(a_broken: set, b_broken: set, n: int) -> float:
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.array([i in a_broken for i in range(n)])
    b = np.array([i in b_broken for i in range(n)])
    return mcnemar(np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]), exact=True).pvalue


def test_blackbox_beating_gradient_attack_fires_paired_per_sample():
    pgd, square = set(range(10)), set(range(3, 40))  # square breaks 30 samples pgd did not, pgd 3 square did not
    rows = _rows("pgd", pgd) + _rows("square", square, gradient="none", steps=1, max_queries=1000)
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "blackbox_beats_gradient")
    assert (c["n"], c["only_weak"], c["only_strong"]) == (100, 30, 3)
    assert c["strong_robust"] == 0.9 and c["weak_robust"] == pytest.approx(0.63)
    assert c["p_value"] == pytest.approx(_statsmodels_p(pgd, square, 100), abs=1e-12) and c["fired"]
    assert m["verdict"].startswith(SUSPECTED) and m["suspected"] == ["blackbox_beats_gradient"]
    assert "30" in c["text"] and "McNemar" in c["text"]
    # the same marginals, no evidence: 12 vs 8 discordant samples is not significant
    rows = _rows("pgd", set(range(8)) | set(range(20, 28))) + _rows(
        "square", set(range(12)) | set(range(20, 24)), gradient="none", steps=1, max_queries=1000
    )
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "blackbox_beats_gradient")
    assert (c["only_weak"], c["only_strong"]) == (4, 4) and not c["fired"] and m["verdict"] == NO_SIGN
    # a weaker black-box attack is no warning sign, however significant
    rows = _rows("pgd", set(range(60))) + _rows("square", set(range(10)), gradient="none", steps=1, max_queries=1000)
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "blackbox_beats_gradient")
    assert c["p_value"] < 1e-9 and not c["fired"] and m["verdict"] == NO_SIGN


def test_estimated_gradients_beating_exact_ones_fire():
    rows = _rows("pgd", set(range(5))) + _rows("pgd", set(range(50)), gradient="estimated")
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "estimated_beats_exact")
    assert (c["only_weak"], c["only_strong"]) == (45, 0) and c["fired"] and "estimated" in m["verdict"]


def test_single_step_beating_iterative_fires_and_misclassified_samples_are_broken_for_both():
    fgsm, pgd = set(range(40)), set(range(20))
    wrong = {90, 91}  # misclassified unattacked: broken under every attack (concordant)
    rows = _rows("fgsm", fgsm, steps=1, clean_wrong=wrong) + _rows("pgd", pgd, clean_wrong=wrong)
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "single_step_beats_iterative")
    assert (c["only_weak"], c["only_strong"], c["n"]) == (20, 0, 100) and c["fired"]
    assert c["weak_robust"] == pytest.approx(0.58) and c["strong_robust"] == pytest.approx(0.78)
    rows = _rows("fgsm", pgd, steps=1) + _rows("pgd", fgsm)
    _, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "single_step_beats_iterative")
    assert not c["fired"]


def test_a_cascade_is_not_a_single_step():
    """autoattack rows record steps = 1 (it has no steps setting): it must not count as the single
    step that beats PGD (the quick suite's MobileNet was flagged that way)."""
    rows = (
        _rows("fgsm", set(range(20)), steps=1)
        + _rows("autoattack", set(range(60)), steps=1)
        + _rows("pgd", set(range(25)))
    )
    _, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "single_step_beats_iterative")
    assert c["only_weak"] == 0 and not c["fired"]


def test_more_steps_gain_fires_beyond_the_margin_only_when_significant():
    rows = _rows("pgd", set(range(20))) + _rows("pgd", set(range(35)), steps=50, kind="check")
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "more_steps_gain")
    assert c["gain"] == pytest.approx(0.15) and c["fired"] and "(a check's attack, first 100 samples)" in c["text"]
    # 3 points on 100 samples: above the margin, but 3 discordant samples prove nothing
    rows = _rows("pgd", set(range(20))) + _rows("pgd", set(range(23)), steps=50)
    _, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "more_steps_gain")
    assert c["gain"] == pytest.approx(0.03) and c["p_value"] == pytest.approx(0.25) and not c["fired"]
    # 4x the steps is not "more steps" by the check's rule: no comparison
    rows = _rows("pgd", set(range(20))) + _rows("pgd", set(range(60)), steps=40)
    m = masking_checks(rows_to_table(rows), value_ranges={})["models"][0]
    assert not [c for c in m["checks"] if c["check"] == "more_steps_gain"]


def test_large_eps_must_reach_zero_robust_accuracy():
    rows = _rows("pgd", set(range(97)), eps=0.5, kind="check")
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={"m": (0.0, 1.0)}), "large_eps_not_zero")
    assert (c["robust"], c["n"]) == (3, 100) and c["fired"] and m["suspected"] == ["large_eps_not_zero"]
    assert c["robust_ci"] == pytest.approx(wilson_interval(3, 100))
    rows = _rows("pgd", set(range(100)), eps=0.5)
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={"m": (0.0, 1.0)}), "large_eps_not_zero")
    assert not c["fired"] and m["verdict"] == NO_SIGN
    # 0.5 is not large for a model in [0, 255]
    m = masking_checks(rows_to_table(_rows("pgd", set(), eps=0.5)), value_ranges={"m": (0.0, 255.0)})["models"][0]
    assert not [c for c in m["checks"] if c["check"] == "large_eps_not_zero"]


def test_worst_case_skips_are_left_out_of_the_pairs():
    """In a worst-case run pgd skipped the samples fgsm broke: they say nothing about pgd, so a
    later square that breaks them must not look stronger than pgd."""
    fgsm = set(range(30))
    rows = (
        _rows("fgsm", fgsm, steps=1)
        + _rows("pgd", set(), skipped=fgsm)
        + _rows("square", set(range(30)), gradient="none", steps=1, max_queries=500)
    )
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "blackbox_beats_gradient")
    # gradient side = fgsm ∪ pgd: fgsm broke 0-29 itself, so nothing is unknown there
    assert (c["only_weak"], c["only_strong"], c["excluded"]) == (0, 0, 0) and not c["fired"]
    rows = _rows("pgd", set(), skipped=fgsm) + _rows(
        "square", set(range(30)), gradient="none", steps=1, max_queries=500
    )
    m, c = _check(masking_checks(rows_to_table(rows), value_ranges={}), "blackbox_beats_gradient")
    assert (c["n"], c["excluded"], c["only_weak"]) == (70, 30, 0) and not c["fired"]
    assert "left out" in c["text"]


def test_verdicts_per_model_and_leaderboard_lines():
    rows = (
        _rows("pgd", set(range(10)), model="a")
        + _rows("square", set(range(40)), gradient="none", steps=1, max_queries=1000, model="a")
        + _rows("pgd", set(range(40)), model="b")
        + _rows("square", set(range(10)), gradient="none", steps=1, max_queries=1000, model="b")
        + _rows("square", set(range(10)), gradient="none", steps=1, max_queries=1000, model="c")
    )
    result = masking_checks(rows_to_table(rows), value_ranges={})
    verdicts = {m["model"]: m["verdict"] for m in result["models"]}
    assert verdicts == {"a": f"{SUSPECTED}: query-only attacks beat gradient attacks", "b": NO_SIGN}
    lines = verdict_lines(result, markup=False)
    assert len(lines) == 2 and "p = " in lines[0]
    assert lines[1].endswith(
        "(1 checks passed: query-only attacks beat gradient attacks at linf 0.1? 0 vs 30 discordant of 100, p=1.9e-09)"
    )


# --------------------------------------------------------------------------- the runner's checks


def _quick_attacks():
    return [
        {"name": "fgsm", "norm": "linf", "eps": [1 / 255, 2 / 255, 4 / 255], "settings": {}, "needs": "gradient"},
        {
            "name": "pgd",
            "norm": "linf",
            "eps": [1 / 255, 2 / 255, 4 / 255],
            "settings": {"steps": 10},
            "needs": "gradient",
        },
    ]


def test_check_attacks_adds_what_the_suite_lacks():
    plan = check_attacks(_quick_attacks(), value_range=(0.0, 1.0), headline_eps=2 / 255)
    got = sorted((c["name"], c["eps"], json.dumps(c["settings"], sort_keys=True)) for c in plan)
    assert got == [
        ("pgd", 2 / 255, '{"steps": 50}'),
        ("pgd", 0.5, '{"steps": 10}'),
        ("square", 2 / 255, json.dumps({"max_queries": CHECK_QUERIES})),
    ]
    # without a headline: the largest linf eps; a [0, 255] model sweeps at 127.5
    plan = check_attacks(_quick_attacks(), value_range=(0.0, 255.0))
    assert {c["eps"] for c in plan} == {4 / 255, 127.5}
    # a strong enough Square already in the suite, and a large eps already swept: only the long PGD
    have = _quick_attacks() + [
        {"name": "square", "norm": "linf", "eps": [2 / 255], "settings": {"max_queries": 5000}, "needs": "scores"},
        {"name": "pgd", "norm": "linf", "eps": [0.5], "settings": {}, "needs": "gradient"},
    ]
    assert [c["name"] for c in check_attacks(have, value_range=(0, 1), headline_eps=2 / 255)] == ["pgd"]
    # query-only suites (trees, vendors' models) get nothing
    assert (
        check_attacks(
            [{"name": "square", "norm": "linf", "eps": [0.05], "settings": {}, "needs": "scores"}], value_range=(0, 1)
        )
        == []
    )


def _tiny_suite(tmp_path, **extra):
    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Suite
    from models import small_cnn

    onnx.save(small_cnn(), tmp_path / "cnn.onnx")
    n = CHECK_SAMPLES + 16
    x = np.random.default_rng(0).random((n, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(n) % 3)
    return Suite(
        name="t",
        models=[ModelEntry("cnn", str(tmp_path / "cnn.onnx"))],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[
            AttackEntry("fgsm", eps=[(2 / 255, "2/255")]),
            AttackEntry("pgd", eps=[(2 / 255, "2/255")], settings={"steps": 10}),
        ],
        headline={"attack": "pgd", "norm": "linf", "eps": "2/255"},
        chunk_size=CHECK_SAMPLES // 2,
        **extra,
    )


def test_runner_plans_the_check_attacks_on_the_first_samples(tmp_path):
    from advonnx.suite import Runner, cached_model

    for worst in (False, True):
        suite = _tiny_suite(tmp_path, worst_case=worst)
        models = {"cnn": cached_model(suite.models[0], "cpu", 64)}
        units, _ = Runner(suite, out=tmp_path / "o").plan("r", models)
        checks = [u for u in units if u.check]
        assert {
            (u.attack.name, u.eps, u.attack.settings.get("steps"), u.attack.settings.get("max_queries")) for u in checks
        } == {("square", 2 / 255, None, CHECK_QUERIES), ("pgd", 2 / 255, 50, None), ("pgd", 0.5, 10, None)}
        assert all(u.stage == 0 and not u.skip and u.save_examples == 0 for u in checks)
        half = CHECK_SAMPLES // 2
        assert sorted({(u.start, u.stop) for u in checks}) == [(0, half), (half, CHECK_SAMPLES)]  # first ones, chunked
        assert len({u.key for u in units}) == len(units)
    suite = _tiny_suite(tmp_path, masking_checks=False)
    units, _ = Runner(suite, out=tmp_path / "o").plan("r", models)
    assert not [u for u in units if u.check] and suite.config()["masking_checks"] is False
    assert "masking_checks" not in _tiny_suite(tmp_path).config()  # on by default: run configs unchanged


def test_check_rows_stay_out_of_the_leaderboard_and_the_verdict_is_stored(tmp_path):
    from rich.console import Console

    from advonnx.leaderboard import render, summarize
    from advonnx.masking import read_masking
    from advonnx.suite import Runner

    suite = _tiny_suite(tmp_path)
    suite.attacks[1].settings["steps"] = 2
    suite.datasets[0].limit = 12
    import advonnx.masking as masking

    old = masking.CHECK_QUERIES
    masking.CHECK_QUERIES = 20  # a tiny Square: this test is about plumbing, not power
    try:
        folder, table = Runner(suite, out=tmp_path / "o").run()
    finally:
        masking.CHECK_QUERIES = old
    kinds = table.column("kind").to_pylist()
    checks = [r for r in table.to_pylist() if r["kind"] == "check"]
    assert {r["attack"] for r in checks} == {"square", "pgd"} and len(checks) == 3 * 12
    assert {s["attack"] for s in summarize(table)} == {"fgsm", "pgd"}
    assert all(s["n"] == 12 for s in summarize(table)) and kinds.count("adversarial") == 24
    stored = read_masking(folder)
    assert (folder / MASKING_FILE).is_file() and stored == json.loads(json.dumps(masking_checks(table)))
    (m,) = stored["models"]
    assert {c["check"] for c in m["checks"]} >= {
        "blackbox_beats_gradient",
        "single_step_beats_iterative",
        "more_steps_gain",
        "large_eps_not_zero",
    }
    console = Console(record=True, width=200)
    render(table, console)
    assert f"gradient-masking checks, cnn on d: {m['verdict']}" in console.export_text()


# ------------------------------------------------------------------------------------ real models


def _threshold_front(src: str, dst, levels: int = 16) -> None:
    """brain_cnn behind an input quantizer that rounds to ``levels`` grey levels with comparisons,
    sum_k [x > (k − 1/2)/levels] / levels (the function Round(x·levels)/levels, built so that no
    straight-through rule applies: Greater has no derivative and cuts the path): a model whose
    exact gradient is zero everywhere, the masking the checks must catch."""
    m = onnx.load(src)
    g = m.graph
    name = g.input[0].name
    for node in g.node:
        node.input[:] = ["q_x" if s == name else s for s in node.input]
    thresholds = (np.arange(1, levels + 1, dtype=np.float32) - 0.5) / levels
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(float(levels), np.float32), "q_levels"),
            numpy_helper.from_array(thresholds, "q_thr"),
            numpy_helper.from_array(np.array([-1], np.int64), "q_axis"),
        ]
    )
    front = [
        helper.make_node("Unsqueeze", [name, "q_axis"], ["q_u"]),
        helper.make_node("Greater", ["q_u", "q_thr"], ["q_g"]),
        helper.make_node("Cast", ["q_g"], ["q_c"], to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["q_c", "q_axis"], ["q_s"], keepdims=0),
        helper.make_node("Div", ["q_s", "q_levels"], ["q_x"]),
    ]
    nodes = front + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, dst)


def _softmax_wrapper(src: str, dst, temperature: float = 200.0) -> None:
    """brain_mobilenet's logits times T through a Softmax (its metadata still says logits)."""
    m = onnx.load(src)
    g = m.graph
    out = g.output[0].name
    g.initializer.append(numpy_helper.from_array(np.array(temperature, np.float32), "sm_t"))
    g.node.extend(
        [helper.make_node("Mul", [out, "sm_t"], ["sm_z"]), helper.make_node("Softmax", ["sm_z"], ["sm_p"], axis=-1)]
    )
    g.output[0].name = "sm_p"
    onnx.checker.check_model(m)
    onnx.save(m, dst)


def _without_logits_rule() -> dict:
    """Load overrides that keep a Softmax wrapper's outputs as they are: where advonnx has a
    rule that undoes such a wrapper (``logits_rule``), switch it off, or there is nothing to test."""
    from advonnx import load_model
    from advonnx.spec import DECLARABLE

    known = "logits_rule" in DECLARABLE or "logits_rule" in inspect.signature(load_model).parameters
    return {"logits_rule": False} if known else {}


@pytest.mark.slow
def test_checks_fire_on_masked_models_and_stay_quiet_on_the_suite_models(
    tmp_path, brain_cnn_path, brain_mobilenet_path
):
    """Suite-runner end to end at the quick suite's headline (PGD linf 2/255, 10 steps; FGSM) on
    the first CHECK_SAMPLES patches, with the checks' own attacks added by the runner."""
    from advonnx.leaderboard import summarize
    from advonnx.report import render_report
    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite

    # the suite folder (not `from conftest import`: tests/data has a conftest module of its own)
    SUITES = Path(brain_cnn_path).resolve().parents[1]  # noqa: N806
    _threshold_front(brain_cnn_path, tmp_path / "cnn_round.onnx")
    _softmax_wrapper(brain_mobilenet_path, tmp_path / "mobilenet_t200.onnx")
    suite = Suite(
        name="masking",
        seed=0,
        save_examples=0,
        models=[
            ModelEntry("brain_cnn", brain_cnn_path),
            ModelEntry("brain_mobilenet", brain_mobilenet_path),
            ModelEntry("cnn_round", str(tmp_path / "cnn_round.onnx")),
            ModelEntry("mobilenet_t200", str(tmp_path / "mobilenet_t200.onnx"), overrides=_without_logits_rule()),
        ],
        datasets=[DatasetEntry("patch", str(SUITES / "data" / "brain_patches_test.npz"), limit=CHECK_SAMPLES)],
        attacks=[
            AttackEntry("fgsm", eps=[(2 / 255, "2/255")]),
            AttackEntry("pgd", eps=[(2 / 255, "2/255")], settings={"steps": 10}),
        ],
        headline={"attack": "pgd", "norm": "linf", "eps": "2/255"},
    )
    folder, table = Runner(suite, out=tmp_path / "out").run()
    checks = masking_checks(table)
    print("\n".join(verdict_lines(checks, markup=False)))
    result = {m["model"]: m for m in checks["models"]}
    for name in ("brain_cnn", "brain_mobilenet"):
        assert result[name]["verdict"] == NO_SIGN, result[name]
        assert len(result[name]["checks"]) == 4  # square vs gradient, fgsm vs pgd, 50 vs 10 steps, eps 0.5
    for name in ("cnn_round", "mobilenet_t200"):
        assert result[name]["verdict"].startswith(SUSPECTED), result[name]
        assert "large_eps_not_zero" in result[name]["suspected"]
    # the masked models look robust at the headline: exactly what the checks are for
    robust = {s["model"]: s["robust"] for s in summarize(table) if s["attack"] == "pgd"}
    assert robust["brain_mobilenet"] < 0.6 < robust["mobilenet_t200"]
    page, _ = render_report(table, [folder])
    assert "Gradient masking suspected" in page and "cnn_round" in page and NO_SIGN in page
