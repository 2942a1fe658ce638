"""Clinical figures from rows (advonnx/clinical.py) and costly attack directions (--target-map).

References: hand counts and hand computations on small fixtures, statsmodels' Wilson interval,
and the ONNX files' own label outputs (onnxruntime on the unmodified graph) for the targeted run.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from advonnx.clinical import (
    clinical_summaries,
    confusion,
    cost_matrix_for,
    ece,
    flip_rates,
    positive_class,
    read_costs,
    risk_coverage,
)
from advonnx.errors import AdvonnxError
from advonnx.results import rows_to_table
from advonnx.target_map import NOT_ATTACKED, directions_for, parse_target_map

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "advonnx" / "suites"
NAMES = ["malignant", "benign"]


def wilson(k, n):
    from statsmodels.stats.proportion import proportion_confint

    return proportion_confint(k, n, alpha=0.05, method="wilson")


# ------------------------------------------------------------------------------------ calibration


def test_ece_equal_mass_by_hand():
    conf = [0.95, 0.6, 0.2, 0.9, 0.4, 0.7, 0.55]
    correct = [1, 0, 0, 1, 1, 1, 0]
    # sorted by confidence: 0.2(0) 0.4(1) 0.55(0) | 0.6(0) 0.7(1) | 0.9(1) 0.95(1)  (array_split: 3, 2, 2)
    b1 = 3 * abs((0 + 1 + 0) / 3 - (0.2 + 0.4 + 0.55) / 3)
    b2 = 2 * abs((0 + 1) / 2 - (0.6 + 0.7) / 2)
    b3 = 2 * abs((1 + 1) / 2 - (0.9 + 0.95) / 2)
    assert ece(conf, correct, bins=3) == pytest.approx((b1 + b2 + b3) / 7, abs=1e-12)
    # one bin: |accuracy - mean confidence|; one sample per bin: mean |correct - confidence|
    assert ece(conf, correct, bins=1) == pytest.approx(abs(4 / 7 - sum(conf) / 7), abs=1e-12)
    assert ece(conf, correct, bins=15) == pytest.approx(np.mean(np.abs(np.array(correct) - np.array(conf))), abs=1e-12)
    assert math.isnan(ece([], []))


def test_risk_coverage_by_hand():
    conf = [0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [1, 0, 1, 1, 0]
    pts = {c: (a, k) for c, a, k in risk_coverage(conf, correct, (1.0, 0.6, 0.4, 0.2))}
    assert pts[1.0] == (pytest.approx(3 / 5), 5)
    assert pts[0.6] == (pytest.approx(2 / 3), 3)  # keeps 0.9, 0.8, 0.7
    assert pts[0.4] == (pytest.approx(1 / 2), 2)
    assert pts[0.2] == (pytest.approx(1.0), 1)


# -------------------------------------------------------------------------------- rows fixture


def _row(
    sid,
    label,
    clean,
    adv,
    *,
    cc=None,
    ac=None,
    status="ok",
    conf=(0.9, 0.8),
    kind="adversarial",
    error=None,
    target=None,
    targeted=False,
    settings="{}",
):
    return {
        "run_id": "r",
        "model": "m",
        "dataset": "d",
        "task": "classification",
        "sample_id": sid,
        "attack": "pgd",
        "kind": kind,
        "norm": "linf",
        "eps": 0.1,
        "eps_text": "0.1",
        "targeted": targeted,
        "settings": settings,
        "label": label,
        "clean_pred": clean,
        "adv_pred": adv,
        "target": target,
        "clean_confidence": conf[0],
        "adv_confidence": conf[1] if adv is not None else None,
        "clean_correct": clean == label if cc is None else cc,
        "adv_correct": None if adv is None else (adv == label if ac is None else ac),
        "robust": None,
        "status": status,
        "error": error,
        "label_source": "dataset",
        "framework": "x",
    }


def _fixture():
    """Binary task (0 malignant, 1 benign) with every kind of row the summaries must count."""
    rows = [
        _row("a", 0, 0, 0, conf=(0.9, 0.7)),  # malignant, robust
        _row("b", 0, 0, 1, conf=(0.8, 0.6)),  # malignant, flipped to benign
        _row("c", 0, 1, 1, conf=(0.7, 0.9)),  # malignant, wrong clean
        _row("d", 0, 0, None, status="skipped", error="broken by fgsm"),  # worst case: broken earlier
        _row("e", 1, 1, 1, conf=(0.95, 0.85)),  # benign, robust
        _row("f", 1, 1, 0, conf=(0.6, 0.55)),  # benign, flipped
        _row("g", 1, 1, 1, conf=(0.85, 0.8)),  # benign, robust
        _row("h", 1, 1, 1, status="invalid", conf=(0.5, 0.5), ac=False),  # NaN outputs: broken
    ]
    meta = {
        "specs": {"m": {"class_names": NAMES}},
        "costs": {"class_names": ["benign", "malignant"], "matrix": [[0, 1], [10, 0]]},
    }
    return rows, rows_to_table(rows, meta)


def test_per_class_confusion_sensitivity_by_hand():
    rows, table = _fixture()
    (s,) = clinical_summaries(table)
    assert s["n"] == 8 and s["n_adv"] == 6  # d (no adversarial prediction) and h (invalid) left out of the adv matrix
    mal, ben = s["per_class"]
    # malignant: a, b, c, d; clean correct a, b, d; robust a only (d broken earlier, c wrong clean)
    assert (mal["n"], mal["clean"]["k"], mal["robust"]["k"]) == (4, 3, 1)
    # benign: e, f, g, h; clean correct all 4; robust e, g (f flipped, h invalid)
    assert (ben["n"], ben["clean"]["k"], ben["robust"]["k"]) == (4, 4, 2)
    for p in (mal, ben):
        for key in ("clean", "robust"):
            np.testing.assert_allclose(p[key]["ci"], wilson(p[key]["k"], p[key]["n"]), atol=1e-9)
    assert s["worst_class"]["name"] == "malignant"
    assert s["confusion_clean"] == [[3, 1], [0, 4]]  # a b d -> 0, c -> 1; e f g h -> 1
    assert s["confusion_adv"] == [[1, 2], [1, 2]]  # a -> 0, b c -> 1; f -> 0, e g -> 1
    assert s["positive"] == "malignant"
    assert s["sensitivity"]["clean"]["value"] == pytest.approx(3 / 4)
    assert s["sensitivity"]["adv"]["value"] == pytest.approx(1 / 4)
    assert s["specificity"]["clean"]["value"] == pytest.approx(4 / 4)
    assert s["specificity"]["adv"]["value"] == pytest.approx(2 / 4)
    # costs in the CSV's order (benign, malignant): C[malignant→benign] = 10, C[benign→malignant] = 1
    assert s["cost_clean"] == pytest.approx((0 + 0 + 10 + 0 + 0 + 0 + 0 + 0) / 8)  # c
    assert s["cost_adv"] == pytest.approx((0 + 10 + 10 + 0 + 1 + 0) / 6)  # a b c e f g
    # calibration: the clean side over all 8 rows, the adversarial side over the 6 rows with a prediction
    clean_conf = [r["clean_confidence"] for r in rows]
    clean_ok = [r["clean_correct"] for r in rows]
    assert s["ece_clean"] == pytest.approx(ece(clean_conf, clean_ok))
    adv = [r for r in rows if r["status"] == "ok" and r["adv_pred"] is not None]
    assert s["ece_adv"] == pytest.approx(np.mean([abs(r["adv_correct"] - r["adv_confidence"]) for r in adv]))
    assert s["wrong_confidence_adv"] == pytest.approx(np.mean([0.6, 0.9, 0.55]))  # b, c, f
    assert s["wrong_confidence_clean"] == pytest.approx(0.7)  # c


def test_old_rows_without_metadata_or_map():
    """A run folder written before these figures: no class names in the metadata, no target map."""
    rows, _ = _fixture()
    (s,) = clinical_summaries(rows_to_table(rows))
    assert s["class_names"] == ["class 0", "class 1"] and "cost_clean" not in s
    assert s["confusion_clean"] == [[3, 1], [0, 4]]
    assert flip_rates(rows_to_table(rows)) == []


def test_confusion_and_positive_class():
    np.testing.assert_array_equal(confusion([0, 0, 1, 2, 2], [0, 2, 1, 2, -1], 3), [[1, 0, 1], [0, 1, 0], [0, 0, 1]])
    assert positive_class(["malignant", "benign"]) == 0
    assert positive_class(["no_tumor", "tumour"]) == 1
    assert positive_class(["Normal", "Pneumonia"]) == 1
    assert positive_class(["a", "b"]) == 1


def test_flip_rates_by_hand():
    tm = json.dumps({"target_map": "malignant:benign"})
    rows = [
        _row(s, 0, c, a, target=1, targeted=True, settings=tm)
        for s, c, a in (("a", 0, 1), ("b", 0, 0), ("c", 0, 1), ("d", 1, 1), ("e", 0, 0))
    ]
    rows += [
        _row(
            s,
            1,
            1,
            None,
            status="skipped",
            targeted=True,
            settings=tm,
            error=f"{NOT_ATTACKED} benign is no source of the target map malignant:benign",
        )
        for s in "xyz"
    ]
    table = rows_to_table(rows, {"specs": {"m": {"class_names": NAMES}}})
    (f,) = flip_rates(table)
    assert f["direction"] == "malignant → benign" and f["not_attacked"] == 3
    assert (f["flip"]["k"], f["flip"]["n"]) == (2, 4)  # a, c flipped of a, b, c, e (d wrong clean)
    np.testing.assert_allclose(f["flip"]["ci"], wilson(2, 4), atol=1e-9)
    assert (f["into_clean"]["k"], f["into_adv"]["k"], f["into_adv"]["n"]) == (1, 3, 5)
    # the leaderboard counts only the attacked (source) samples; unattacked ones are neither robust nor broken
    from advonnx.leaderboard import summarize

    (s,) = summarize(table)
    assert s["n"] == 5 and s["robust"] == pytest.approx(2 / 5)


# ---------------------------------------------------------------------------- parsers and costs


def test_parse_target_map():
    assert parse_target_map("malignant:benign", NAMES) == [(0, 1)]
    assert parse_target_map(" Benign : MALIGNANT ", NAMES) == [(1, 0)]
    assert parse_target_map("1:0", NAMES) == [(1, 0)]
    assert parse_target_map("0:2,1:2", None, 3) == [(0, 2), (1, 2)]
    for text, words in (
        ("malignant:benin", ("'malignant:benin'", "'benin'", "malignant, benign")),
        ("malignant", ("SOURCE:TARGET",)),
        ("malignant:malignant", ("same class",)),
        ("0:1,0:1", ("already a source",)),
        ("0:5", ("'5'", "0..1")),
        ("", ("no direction",)),
    ):
        with pytest.raises(AdvonnxError) as err:
            parse_target_map(text, NAMES)
        msg = str(err.value)
        assert "\n" not in msg and all(w in msg for w in words), msg
    # a suite-wide map: each model takes the entries naming its classes
    assert directions_for("malignant:benign,tumour:notumor", NAMES) == ([(0, 1)], ["tumour:notumor"])


def test_read_costs(tmp_path):
    p = tmp_path / "costs.csv"
    p.write_text("true\\predicted,benign,malignant\nbenign,0,1\nmalignant,10,0\n", encoding="utf-8")
    c = read_costs(p)
    assert c["class_names"] == ["benign", "malignant"] and c["matrix"] == [[0, 1], [10, 0]]
    np.testing.assert_array_equal(cost_matrix_for(c, NAMES), [[0, 10], [1, 0]])  # reordered to the model's
    assert cost_matrix_for(c, ["a", "b"]) is None
    for text, word in (
        ("x,benign,malignant\nmalignant,0,1\nbenign,1,0\n", "same order"),
        ("x,benign,malignant\nbenign,0,a\nmalignant,1,0\n", "numbers"),
        ("x,benign,malignant\nbenign,0,-1\nmalignant,1,0\n", ">= 0"),
        ("x,benign,malignant\nbenign,0\nmalignant,1,0\n", "expected 2"),
    ):
        p.write_text(text, encoding="utf-8")
        with pytest.raises(AdvonnxError, match=word):
            read_costs(p)
    with pytest.raises(AdvonnxError, match="no such"):
        read_costs(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------------ CLI


def advonnx(*args, cwd=None):
    from cli_inprocess import run_cli  # the CLI in this process

    return run_cli(*args, cwd=cwd, columns=140)


BC = ["--model", SUITE / "models" / "bc_mlp.onnx", "--data", SUITE / "data" / "breast_cancer_test.npz"]


@pytest.mark.parametrize(
    "args,word",
    [
        (("--target-map", "malignant"), "SOURCE:TARGET"),
        (("--target-map", "malignant:benin"), "known classes: benign, malignant"),
        (("--attack", "square(target_map=x)"), "SOURCE:TARGET"),
        (("--costs", "missing.csv"), "no such cost-matrix file"),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, args, word, capsys, monkeypatch):
    from advonnx.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "run",
                *map(str, BC),
                "--attack",
                "square(max_queries=5)",
                "--eps",
                "0.05",
                "--limit",
                "4",
                "--no-masking-checks",
                "--out",
                str(tmp_path / "out"),
                "-q",
                *args,
            ]
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.fixture(scope="module")
def bc_targeted_run(tmp_path_factory):
    """One `advonnx run --target-map malignant:benign --costs ...` on the suite's bc_mlp and bc_lightgbm."""
    tmp_path = tmp_path_factory.mktemp("bc_targeted")
    costs = tmp_path / "costs.csv"
    costs.write_text("true\\predicted,malignant,benign\nmalignant,0,10\nbenign,1,0\n", encoding="utf-8")
    models = [SUITE / "models" / "bc_mlp.onnx", SUITE / "models" / "bc_lightgbm.onnx"]
    r = advonnx(
        "run",
        "--model",
        models[0],
        "--model",
        models[1],
        "--data",
        SUITE / "data" / "breast_cancer_test.npz",
        "--attack",
        "square(max_queries=100)",
        "--eps",
        "0.1",
        "--target-map",
        "malignant:benign",
        "--costs",
        costs,
        "--no-masking-checks",
        "--chunk-size",
        "200",
        "--save-examples",
        "200",
        "--out",
        tmp_path / "out",
        "-q",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp_path / "out", models, r.stdout


def test_targeted_run_on_breast_cancer_models(bc_targeted_run):
    """--target-map malignant:benign on the suite's bc_mlp and bc_lightgbm: only malignant samples are
    attacked, toward benign; every adversarial prediction is the ONNX file's own label output on the
    saved x_adv, and the flip rates with Wilson intervals equal the hand count."""
    import onnxruntime as ort
    import pyarrow.parquet as pq

    from advonnx.results import example_files, read_results

    out, models, stdout = bc_targeted_run
    table = read_results(out)
    df = table.to_pandas()
    assert df.targeted.all() and (df.settings.map(lambda s: json.loads(s)["target_map"]) == "malignant:benign").all()
    src = df[df.label == 0]
    other = df[df.label == 1]
    assert (src.status == "ok").all() and (src.target == 1).all()
    assert (other.status == "skipped").all() and other.error.str.startswith(NOT_ATTACKED).all()
    folder = next(p for p in out.iterdir() if p.is_dir())
    checked = 0
    for ex_file, chunk in example_files(folder):
        ex = np.load(ex_file)
        model = pq.read_table(chunk, columns=["model"]).column("model")[0].as_py()
        rows = df[df.model == model].set_index("sample_id").loc[[str(s) for s in ex["sample_id"]]]
        sess = ort.InferenceSession(
            str(models[[m.stem for m in models].index(model)]), providers=["CPUExecutionProvider"]
        )
        own = np.asarray(sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: ex["x_adv"]})[0])
        np.testing.assert_array_equal(own, rows.adv_pred.to_numpy())
        checked += len(own)
    assert checked == len(src)  # every attacked sample of both models
    flips = {f["model"]: f for f in flip_rates(table)}
    assert set(flips) == {"bc_mlp", "bc_lightgbm"}
    for model, f in flips.items():
        rows = src[src.model == model]
        correct = rows[rows.clean_correct]
        k, n = int((correct.adv_pred == 1).sum()), len(correct)
        assert (f["flip"]["k"], f["flip"]["n"]) == (k, n) and k > 0
        np.testing.assert_allclose(f["flip"]["ci"], wilson(k, n), atol=1e-9)
        assert f["not_attacked"] == int((other.model == model).sum())
        assert f"{model} square targeted linf 0.1: malignant → benign flip rate {100 * k / n:.1f}" in " ".join(
            stdout.split()
        )
    (s,) = [s for s in clinical_summaries(table) if s["model"] == "bc_mlp"]
    rows = src[src.model == "bc_mlp"]
    assert s["cost_adv"] == pytest.approx(10 * (rows.adv_pred == 1).mean())  # malignant called benign costs 10


def test_show_applies_costs_to_any_run(bc_targeted_run, tmp_path, capsys, monkeypatch):
    """`advonnx show --costs` prices a run folder written without (or with other) costs."""
    from advonnx.cli import main
    from advonnx.results import read_results

    out, _, _ = bc_targeted_run
    costs = tmp_path / "other.csv"
    costs.write_text("x,benign,malignant\nbenign,0,2\nmalignant,5,0\n", encoding="utf-8")
    monkeypatch.setenv("COLUMNS", "160")
    main(["show", str(out), "--costs", str(costs)])
    text = capsys.readouterr().out
    for s in clinical_summaries(read_results(out), costs=read_costs(costs)):
        rows = read_results(out).to_pandas()
        rows = rows[(rows.model == s["model"]) & (rows.status == "ok")]
        assert s["cost_adv"] == pytest.approx(5 * (rows.adv_pred == 1).mean())
        assert f"{s['cost_clean']:.3g}→{s['cost_adv']:.3g}" in text


@pytest.mark.slow
def test_report_shows_clinical_section(bc_targeted_run, tmp_path):
    from advonnx.report import write_report
    from advonnx.results import read_results

    out, _, _ = bc_targeted_run
    df = read_results(out).to_pandas()
    rows = df[(df.model == "bc_mlp") & (df.label == 0)]
    write_report(out, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="clinical"' in page and "malignant → benign" in page
    k = int((rows.adv_pred == 1).sum())
    # bc_mlp's malignant row of the confusion matrix under attack
    assert f'<td class="n" style="font-weight:bold">{len(rows) - k}</td><td class="n">{k}</td>' in page


def _suite_toml(tmp_path, extra="", targeted_entry=""):
    (tmp_path / "costs.csv").write_text(
        "true\\predicted,malignant,benign\nmalignant,0,10\nbenign,1,0\n", encoding="utf-8"
    )
    text = f'''name = "tm"
worst_case = true
masking_checks = false
costs = "costs.csv"
{extra}
[[datasets]]
name = "bc"
path = "{SUITE / "data" / "breast_cancer_test.npz"}"
limit = 40
[[models]]
name = "bc_mlp"
path = "{SUITE / "models" / "bc_mlp.onnx"}"
[[attacks]]
name = "square"
eps = "0.1"
max_queries = 20
[[attacks]]
name = "square"
eps = "0.1"
max_queries = 40
targeted = true
{targeted_entry}
'''
    path = tmp_path / "tm.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_suite_toml_target_map_costs_worst_case(tmp_path):
    """Suite keys ``target_map`` (suite-wide, for targeted attacks) and ``costs``; in a worst-case run
    the classes outside the map are 'not attacked' even where the earlier attack broke them."""
    from advonnx.leaderboard import summarize
    from advonnx.results import run_metadata
    from advonnx.suite import load_suite, run_suite

    suite = load_suite(_suite_toml(tmp_path, 'target_map = "malignant:benign"'))
    assert [a.target_map for a in suite.attacks] == ["", "malignant:benign"]
    table = run_suite(suite, out=tmp_path / "out")
    assert run_metadata(table)["costs"]["matrix"] == [[0, 10], [1, 0]]
    df = table.to_pandas()
    tgt = df[df.targeted]
    assert tgt[tgt.label == 1].error.str.startswith(NOT_ATTACKED).all()
    mal = tgt[tgt.label == 0]
    assert (
        (mal.status == "ok") & (mal.target == 1) | mal.error.isin(["broken by square", "misclassified unattacked"])
    ).all()
    (s,) = [s for s in summarize(table) if s["targeted"]]
    assert s["n"] == len(mal) and s["carried"] == int((mal.status == "skipped").sum())
    (c,) = [c for c in clinical_summaries(table) if c["targeted"]]
    assert c["not_attacked"] == int((tgt.label == 1).sum()) and c["per_class"][1]["n"] == 0


@pytest.mark.parametrize(
    "extra,entry,word",
    [
        (
            'target_map = "malignant:benign,tumour:notumor"',
            "",
            "'tumour:notumor': no model of the suite has both classes; known classes: benign, malignant",
        ),
        ("", 'target_map = "malignant"', "SOURCE:TARGET"),
    ],
)
def test_suite_target_map_errors(tmp_path, extra, entry, word):
    from advonnx.suite import Runner, cached_model, load_suite

    with pytest.raises(AdvonnxError) as err:
        suite = load_suite(_suite_toml(tmp_path, extra, entry))
        Runner(suite, out=tmp_path / "out").plan("x", {m.name: cached_model(m, "cpu", 64) for m in suite.models})
    assert word in str(err.value) and "\n" not in str(err.value)
    if entry:  # a map on an untargeted attack
        text = (
            (tmp_path / "tm.toml")
            .read_text(encoding="utf-8")
            .replace("targeted = true", "")
            .replace(entry, 'target_map = "0:1"')
        )
        (tmp_path / "tm.toml").write_text(text, encoding="utf-8")
        with pytest.raises(AdvonnxError, match="not targeted"):
            load_suite(tmp_path / "tm.toml")
