"""Counting as AutoAttack does (issue 15): settings and targeting never merge, robust means clean
correct AND adversarially correct, NaN/Inf rows count as broken, targeted rows break by label
flips, DeepFool leaves already-misclassified samples at norm 0, and the per-sample ``robust``
column agrees with the leaderboard."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from advonnx.leaderboard import compare_rows, summarize
from advonnx.results import empty_row, rows_to_table
from advonnx.worst_case import breaking_radius, worst_case


def _row(
    sid,
    *,
    attack="pgd",
    settings=None,
    targeted=False,
    eps=0.1,
    clean=True,
    adv=True,
    success=None,
    status="ok",
    label=0,
    min_norm=None,
    target=None,
):
    params = {"norm": "linf", "eps": eps, "steps": 10, **(settings or {})}
    return {
        **empty_row(),
        "run_id": "r",
        "model": "m",
        "dataset": "d",
        "sample_id": sid,
        "attack": attack,
        "kind": "adversarial",
        "task": "classification",
        "framework": "pytorch",
        "norm": "linf",
        "eps": eps,
        "eps_text": f"{eps:g}",
        "targeted": targeted,
        "settings": json.dumps(params, sort_keys=True),
        "gradient": "exact",
        "label": label,
        "target": target,
        "label_source": "dataset",
        "clean_pred": label if clean else label + 1,
        "adv_pred": label if adv else label + 1,
        "clean_correct": clean,
        "adv_correct": adv,
        "success": (not adv) if success is None else success,
        "queries": 10,
        "linf": eps,
        "l2": eps,
        "l0": 1.0,
        "min_norm": min_norm,
        "status": status,
        "error": None if status == "ok" else "model output is NaN or Inf",
        "time_s": 0.01,
    }


def _hand_robust(rows):
    """AutoAttack's count from the rows: robust = ok, clean correct and adversarially correct."""
    return sum(r["status"] == "ok" and r["clean_correct"] and r["adv_correct"] for r in rows) / len(rows)


def test_settings_and_targeting_are_separate_rows_with_labels():
    rng = np.random.default_rng(0)
    rows = []
    variants = [({"steps": 10}, False), ({"steps": 50}, False), ({"steps": 10}, True)]
    per = {}
    for settings, targeted in variants:
        rs = [
            _row(f"s{i}", settings=settings, targeted=targeted, adv=bool(rng.random() < 0.3 + 0.2 * targeted))
            for i in range(60)
        ]
        per[(settings["steps"], targeted)] = _hand_robust(rs)
        rows += rs
    summaries = summarize(rows_to_table(rows))
    assert len(summaries) == 3 and all(s["n"] == 60 for s in summaries)
    got = {s["label"]: s["robust"] for s in summaries}
    assert got == pytest.approx(
        {
            "pgd(steps=10)": per[(10, False)],
            "pgd(steps=50)": per[(50, False)],
            "pgd(steps=10) targeted": per[(10, True)],
        }
    )
    # one setting per attack: the plain name; a lone targeted setting says so
    lone = summarize(rows_to_table([r for r in rows if r["settings"] == rows[0]["settings"] and not r["targeted"]]))
    assert [s["label"] for s in lone] == ["pgd"]
    assert [s["label"] for s in summarize(rows_to_table([r for r in rows if r["targeted"]]))] == ["pgd targeted"]
    # a setting derived from eps (PGD's default step size) is one setting across budgets
    sweep = [_row(f"s{i}", eps=e, settings={"step_size": e / 4}) for e in (0.1, 0.2) for i in range(5)]
    assert [s["label"] for s in summarize(rows_to_table(sweep))] == ["pgd", "pgd"]
    # compare matches setting by setting, and its labels are the same
    cmp = compare_rows(rows_to_table(rows), rows_to_table(rows))
    assert sorted(r["setting"] for r in cmp) == [
        "pgd(steps=10) linf 0.1",
        "pgd(steps=10) targeted linf 0.1",
        "pgd(steps=50) linf 0.1",
    ]
    assert all(r["delta_robust"] == 0 for r in cmp)
    # the worst case names the settings it combined
    (wc,) = worst_case(rows)
    assert wc["attacks"] == ["pgd(steps=10)", "pgd(steps=10) targeted", "pgd(steps=50)"]


def test_robust_needs_clean_correct():
    # 10 samples: 4 clean-wrong that the attack moves onto the label, 6 clean-right of which 3 survive
    rows = [_row(f"w{i}", clean=False, adv=True, success=False) for i in range(4)]
    rows += [_row(f"c{i}", adv=i < 3) for i in range(6)]
    (s,) = summarize(rows_to_table(rows))
    assert s["clean"] == pytest.approx(6 / 10)
    assert s["robust"] == pytest.approx(3 / 10) == pytest.approx(_hand_robust(rows))
    assert s["robust"] <= s["clean"]
    assert s["balanced_robust"] == pytest.approx(3 / 10)  # one class: balanced = plain
    assert s["asr"] == pytest.approx(3 / 6)


def test_invalid_rows_count_as_broken():
    rows = [_row(f"s{i}") for i in range(8)]
    rows += [_row(f"bad{i}", adv=True, status="invalid") for i in range(2)]  # NaN logits under attack
    (s,) = summarize(rows_to_table(rows))
    assert s["n"] == 10 and s["invalid"] == 2
    assert s["robust"] == pytest.approx(8 / 10) == pytest.approx(_hand_robust(rows))
    assert s["asr"] == pytest.approx(2 / 10)
    # and in the worst case over attacks: broken at the row's eps
    radii = breaking_radius(rows)[("m", "d", "linf")]
    assert radii["bad0"] == pytest.approx(0.1) and radii["s0"] == math.inf


def test_targeted_miss_that_flips_the_label_breaks_the_sample():
    rows = [
        _row("a", targeted=True, adv=False, success=False, target=2),  # missed the target, flipped
        _row("b", targeted=True, adv=True, success=False, target=2),
    ]  # still correct
    radii = breaking_radius(rows)[("m", "d", "linf")]
    assert radii == {"a": pytest.approx(0.1), "b": math.inf}
    (wc,) = worst_case(rows)
    assert wc["robust"] == pytest.approx(0.5)


def test_deepfool_leaves_already_misclassified_samples_at_zero():
    import advonnx
    from advonnx.model import OnnxModel, infer_spec
    from models import small_cnn

    proto = small_cnn(size=8, seed=1)
    model = OnnxModel(proto, infer_spec(proto, "m.onnx", {"value_range": (0, 1)}))
    x = np.random.default_rng(0).uniform(0, 1, (12, 1, 8, 8)).astype(np.float32)
    pred = np.argmax(model.predict(x), axis=1)
    y = pred.copy()
    wrong = np.arange(12) % 3 == 0
    y[wrong] = (pred[wrong] + 1) % 3  # labels the model already gets wrong
    res = advonnx.attack(model, x, y, "deepfool", norm="l2", steps=30)
    mn, rho = np.asarray(res.min_norm), np.asarray(res.rho)
    assert np.all(mn[wrong] == 0) and np.all(rho[wrong] == 0)
    np.testing.assert_array_equal(np.asarray(res.x_adv)[wrong], x[wrong])
    assert np.all(mn[~wrong & np.asarray(res.success)] > 0)


def test_robust_column_agrees_with_the_leaderboard(tmp_path):
    from advonnx.leaderboard import summarize as summ
    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps
    from models import save, small_cnn

    m = save(small_cnn(size=8, seed=4), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (24, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 3, 24))  # random labels: many clean-wrong
    suite = Suite(
        name="c",
        models=[ModelEntry("m", m, overrides={"value_range": [0, 1]})],
        datasets=[DatasetEntry("d", str(tmp_path / "d.npz"))],
        attacks=[AttackEntry("fgsm", "linf", parse_eps("0.2"))],
        seed=1,
    )
    _, table = Runner(suite, out=tmp_path / "o", batch_size=64).run()
    rows = table.to_pylist()
    assert any(not r["clean_correct"] for r in rows) and any(r["clean_correct"] and not r["adv_correct"] for r in rows)
    for r in rows:
        assert r["robust"] is (r["clean_correct"] and r["adv_correct"])
    # `success` is True for samples already wrong before the attack; `robust` is the count to use
    assert any(r["success"] and not r["clean_correct"] for r in rows)
    (s,) = summ(table)
    assert s["robust"] == pytest.approx(np.mean([r["robust"] for r in rows]))
    correct = [r for r in rows if r["clean_correct"]]
    assert s["asr"] == pytest.approx(np.mean([not r["robust"] for r in correct]))


def test_headline_prefers_the_worst_untargeted_setting():
    from advonnx.leaderboard import headline_key

    rows = [_row(f"s{i}", settings={"steps": 10}, adv=i < 6) for i in range(10)]
    rows += [_row(f"s{i}", settings={"steps": 50}, adv=i < 3) for i in range(10)]
    rows += [_row(f"s{i}", settings={"steps": 10}, targeted=True, adv=i < 1) for i in range(10)]
    summaries = summarize(rows_to_table(rows))
    assert headline_key(summaries, {"attack": "pgd", "norm": "linf", "eps": "0.1"}) == {"m": 0.3}
    assert headline_key(summaries, {"attack": "pgd", "eps": "0.1", "targeted": True}) == {"m": 0.1}
    only_targeted = summarize(rows_to_table(rows[20:]))
    assert headline_key(only_targeted, {"attack": "pgd", "eps": "0.1"}) == {"m": 0.1}
