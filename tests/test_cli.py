"""The command line as a user meets it: exit codes, one-line errors, end-to-end runs."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_inprocess import run_cli

from advonnx.results import read_results
from models import save, small_cnn

ROOT = Path(__file__).resolve().parents[1]


def advonnx(*args, cwd=None, env=None):
    """The CLI in this process (a new interpreter per call made this file slow)."""
    return run_cli(*args, cwd=cwd, env=env, columns=120)


USAGE_ERRORS = [
    ("run", "--foo"),
    ("inspect",),
    ("run", "--limit", "abc"),
    ("nosuchcommand",),
    ("show", "--nosuchflag"),
    ("run", "--eps"),
    ("compare",),
    ("gate",),
    ("attacks", "extra"),
    ("run", "--device"),
    ("corruptions", "--severities"),
]

# typer >= 0.2x vendors click as typer._click and does not install click: hide click to prove that
# the CLI does not need it. Older typer (>= 0.12, our lower bound) imports click itself: keep it.
_TYPER_VENDORS_CLICK = importlib.util.find_spec("typer._click") is not None
# One new interpreter, click hidden before advonnx is imported, runs every usage error above in
# turn (one process per error made this the slowest part of the file): exit code and stderr each.
BLOCK_CLICK = (
    ("import sys; sys.modules['click'] = None\n" if _TYPER_VENDORS_CLICK else "import sys\n")
    + """\
import contextlib, io, json, traceback
from advonnx.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except Exception:
            traceback.print_exc()
            code = 1
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""
)


@pytest.fixture(scope="module")
def usage_errors_without_click():
    r = subprocess.run(
        [sys.executable, "-c", BLOCK_CLICK, json.dumps(USAGE_ERRORS)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0 and not r.stderr, r.stderr
    return {tuple(args): result for args, result in zip(USAGE_ERRORS, json.loads(r.stdout))}


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_one_line_exit_2_without_click(args, usage_errors_without_click):
    """typer >= 0.2x vendors click and no longer installs it: usage errors must not need it (older
    typer, which depends on click, runs the same errors with click present)."""
    returncode, stderr = usage_errors_without_click[args]
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "--help" in lines[0]


def test_attacks_lists_registry():
    r = advonnx("attacks")
    assert r.returncode == 0
    for name in ("fgsm", "bim", "pgd"):
        assert name in r.stdout


def test_help_on_every_command():
    for cmd in ("run", "show", "compare", "gate", "inspect", "attacks", "doctor"):
        r = advonnx(cmd, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout, cmd


def test_inspect_shows_guesses(tmp_path):
    path = save(small_cnn(nhwc=True, head="softmax"), tmp_path / "v.onnx")
    r = advonnx("inspect", path)
    assert r.returncode == 0, r.stderr
    assert "NHWC" in r.stdout and "probabilities" in r.stdout and "assumed" in r.stdout


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "no such model file"),
        (b"", "empty file"),
        (b"\x08\x07garbage not onnx at all" * 10, "not a readable ONNX model"),
    ],
)
def test_bad_model_one_line_exit_2(tmp_path, content, needle):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    r = advonnx("inspect", path)
    assert r.returncode == 2
    assert needle in r.stderr and str(path.name) in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_truncated_model(tmp_path):
    good = save(small_cnn(), tmp_path / "good.onnx")
    data = Path(good).read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    r = advonnx("inspect", tmp_path / "cut.onnx")
    assert r.returncode == 2 and "cut.onnx" in r.stderr and "Traceback" not in r.stderr


def test_run_needs_data_with_model(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    r = advonnx("run", "--model", path)
    assert r.returncode == 2 and "--data" in r.stderr


def test_bad_eps_is_usage_error(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    r = advonnx("run", "--model", path, "--data", tmp_path / "d.npz", "--eps", "eight")
    assert r.returncode == 2 and "eps" in r.stderr


def test_adhoc_run_show_compare(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    x = np.random.default_rng(0).uniform(0, 1, (12, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 3)
    out = tmp_path / "res"
    r = advonnx(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack",
        "fgsm,pgd",
        "--eps",
        "1/255,8/255",
        "--steps",
        "3",
        "--out",
        out,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert "Robust" in r.stdout
    table = read_results(out)
    kinds = table.column("kind").to_pylist()  # + the masking checks' Square, 15-step PGD and PGD at eps 0.5
    assert kinds.count("adversarial") == 12 * 2 * 2 and kinds.count("check") == 12 * 3
    assert set(table.column("eps_text").to_pylist()) == {"1/255", "8/255", "0.5"}
    shown = advonnx("show", out)
    assert shown.returncode == 0 and "fgsm linf 8/255" in shown.stdout
    cmp = advonnx("compare", out, out)
    assert cmp.returncode == 0 and "+0.0" in cmp.stdout
    assert "4 settings, 4 in both; robust figure moved in 0" in " ".join(cmp.stdout.split())


def test_unlabelled_data_uses_clean_predictions(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32))
    r = advonnx(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack",
        "fgsm",
        "--eps",
        "0.1",
        "--out",
        tmp_path / "o",
        "--quiet",
        "--no-masking-checks",
    )
    assert r.returncode == 0, r.stderr
    t = read_results(tmp_path / "o")
    assert set(t.column("label_source").to_pylist()) == {"clean_prediction"}
    assert "clean predictions are the reference" in r.stdout.replace("\n", " ")


@pytest.mark.slow
def test_fresh_venv_install_and_default_run(tmp_path):
    """The README's first command in a fresh venv, from an empty directory."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    inst = subprocess.run([str(pip), "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    assert inst.returncode == 0, inst.stderr[-3000:]
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["COLUMNS"] = "120"
    r = subprocess.run(
        [str(venv / "bin" / "advonnx"), "run"],
        cwd=work,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "brain_cnn" in r.stdout and "brain_mobilenet" in r.stdout
    runs = list((work / "advonnx-results").iterdir())
    assert len(runs) == 1
    table = read_results(runs[0])
    assert table.num_rows > 0 and set(table.column("status").to_pylist()) == {"ok"}
    # what a new user sees after a typo: one line, exit 2, in the environment a fresh install made
    for args in USAGE_ERRORS:
        r = subprocess.run(
            [str(venv / "bin" / "advonnx"), *args],
            cwd=work,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
            env=env,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (args, r.stderr)


def test_targeted_run_records_targets(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(
        tmp_path / "d.npz",
        x=np.random.default_rng(0).uniform(0, 1, (9, 1, 8, 8)).astype(np.float32),
        y=np.arange(9) % 3,
    )
    r = advonnx(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack",
        "pgd",
        "--eps",
        "0.3",
        "--steps",
        "5",
        "--targeted",
        "--out",
        tmp_path / "o",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    rows = read_results(tmp_path / "o").to_pylist()
    assert all(row["targeted"] and row["target"] != row["label"] for row in rows)
    assert all(row["success"] == (row["adv_pred"] == row["target"]) for row in rows)


def test_doctor_explains_devices():
    r = advonnx("doctor", "--seconds", "0.2")
    assert r.returncode == 0, r.stderr
    for needle in ("execution providers", "CUDA", "speed on cpu", "exact gradients"):
        assert needle in r.stdout


def test_compare_html(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(
        tmp_path / "d.npz",
        x=np.random.default_rng(0).uniform(0, 1, (8, 1, 8, 8)).astype(np.float32),
        y=np.arange(8) % 3,
    )
    for out, eps in (("a", "0.01"), ("b", "0.2")):
        r = advonnx(
            "run",
            "--model",
            path,
            "--data",
            tmp_path / "d.npz",
            "--attack",
            "fgsm",
            "--eps",
            eps,
            "--out",
            tmp_path / out,
            "--quiet",
            "--no-masking-checks",
        )
        assert r.returncode == 0, r.stderr
    r = advonnx("compare", tmp_path / "a", tmp_path / "b", "--html", tmp_path / "c.html")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "<table class=sortable>" in page and "fgsm linf 0.01" in page and "fgsm linf 0.2" in page
    assert "http://" not in page and "https://" not in page


def test_minimal_norm_robustness_curve_is_shown(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(
        tmp_path / "d.npz",
        x=np.random.default_rng(0).uniform(0, 1, (12, 1, 8, 8)).astype(np.float32),
        y=np.arange(12) % 3,
    )
    r = advonnx(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--attack",
        "deepfool,pgd",
        "--norm",
        "l2",
        "--eps",
        "0.1,0.3",
        "--out",
        tmp_path / "o",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "robustness curve of m from deepfool minimal l2 norms" in text and "0.1→" in text and "0.3→" in text


def test_attack_settings_in_parentheses(tmp_path):
    """Per-attack settings, norm and eps on the command line reach the rows; they win over --steps."""
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(
        tmp_path / "d.npz",
        x=np.random.default_rng(0).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32),
        y=np.arange(6) % 3,
    )
    r = advonnx(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "d.npz",
        "--steps",
        "3",
        "--eps",
        "8/255",
        "--attack",
        "pgd(steps=7, restarts=2, loss=margin, eps=[1/255, 0.1]),square(max_queries=40, norm=l2, eps=0.5)",
        "--attack",
        "bim",
        "--out",
        tmp_path / "o",
        "--quiet",
        "--no-masking-checks",
    )
    assert r.returncode == 0, r.stderr
    rows = read_results(tmp_path / "o").to_pylist()
    got = {(row["attack"], row["norm"], row["eps_text"]) for row in rows}
    assert got == {("pgd", "linf", "1/255"), ("pgd", "linf", "0.1"), ("square", "l2", "0.5"), ("bim", "linf", "8/255")}
    settings = {row["attack"]: __import__("json").loads(row["settings"]) for row in rows}
    assert settings["pgd"]["steps"] == 7 and settings["pgd"]["restarts"] == 2 and settings["pgd"]["loss"] == "margin"
    assert settings["square"]["max_queries"] == 40 and settings["bim"]["steps"] == 3
    assert all(row["queries"] <= 40 for row in rows if row["attack"] == "square")


def test_attack_setting_typo_is_one_line_listing_settings(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    r = advonnx(
        "run", "--model", path, "--data", tmp_path / "d.npz", "--attack", "fgsm,pgd(stepz=5)", "--out", tmp_path / "o"
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "pgd has no setting 'stepz'; its settings: norm, eps, steps, step_size" in r.stderr
    assert not (tmp_path / "o").exists()


def _png_folders(root, classes, per_class=2, lo=1000, hi=3000):
    """16-bit PNGs in one subfolder per class; returns {path: raw uint16 array}."""
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    raw = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(lo, hi + 1, (8, 8)).astype(np.uint16)
            path = root / c / f"{c}{i}.png"
            sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
            raw[path] = arr
    return raw


def test_intensity_and_class_names_flags_reach_rows_and_metadata(tmp_path):
    """--intensity window:LO,HI is applied as written (clean predictions equal the model's on
    the hand-mapped images), --class-names orders the labels, both recorded per dataset."""
    import json

    from advonnx.factory import load_model
    from advonnx.results import run_metadata

    path = save(small_cnn(), tmp_path / "m.onnx")
    names = ["zeta", "alpha", "mid"]  # not alphabetical: labels must follow this order
    raw = _png_folders(tmp_path / "scans", names)
    out = tmp_path / "o"
    r = advonnx(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "scans",
        "--attack",
        "fgsm",
        "--eps",
        "0.1",
        "--intensity",
        "window:1000,3000",
        "--class-names",
        ",".join(names),
        "--out",
        out,
        "--quiet",
        "--no-masking-checks",
    )
    assert r.returncode == 0, r.stderr
    table = read_results(out)
    m = load_model(path)
    by_name = {p.stem: a for p, a in raw.items()}
    for row in table.to_pylist():
        stem = Path(row["sample_id"]).stem
        x = ((by_name[stem].astype(np.float64) - 1000) / 2000)[None, None].astype(np.float32)
        assert row["clean_pred"] == int(np.argmax(m.predict(x)[0]))
        assert row["label"] == names.index(stem.rstrip("0123456789"))
    for meta in (
        run_metadata(table),
        json.loads(next(out.iterdir()).joinpath("_run.json").read_text(encoding="utf-8")),
    ):
        d = meta["datasets"]["scans"]
        assert d["intensity"] == "window:1000,3000" and d["intensity_rule"] == "window:1000,3000"
        assert d["label_source"].startswith("class subfolders") and d["class_names"] == names
        assert d["class_names_source"] != "none" and d["models"] == ["m"]
    # 'auto' on 16-bit images resolves to the percentile window, and says so
    r = advonnx(
        "run",
        "--model",
        path,
        "--data",
        tmp_path / "scans",
        "--attack",
        "fgsm",
        "--eps",
        "0.1",
        "--class-names",
        ",".join(names),
        "--out",
        tmp_path / "auto",
        "--quiet",
        "--no-masking-checks",
    )
    assert r.returncode == 0, r.stderr
    d = run_metadata(read_results(tmp_path / "auto"))["datasets"]["scans"]
    assert d["intensity"] == "auto" and d["intensity_rule"] == "auto: percentile:0.5-99.5 (6 images)"
    # without --class-names the model's classes are 0, 1, 2 and the folder names match none
    r = advonnx("run", "--model", path, "--data", tmp_path / "scans", "--out", tmp_path / "none")
    assert r.returncode == 2 and "pass class_names" in r.stderr and not (tmp_path / "none").exists()


def test_bad_intensity_and_class_names_are_one_line(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    for flag, value, needle in (
        ("--intensity", "windw:0,1", "window:LO,HI"),
        ("--class-names", "a,a,b", "give each class once"),
        ("--class-names", "a,b", "2 class names declared but the model outputs 3"),
    ):
        r = advonnx("run", "--model", path, "--data", tmp_path / "d.npz", flag, value, "--out", tmp_path / "o")
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "o").exists()


def test_assumed_value_range_warning_in_run_and_show(tmp_path):
    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32))
    warning = "m: value range [0, 1] assumed"
    for declared, out in ((False, "a"), (True, "b")):
        extra = ("--value-range", "0,1") if declared else ()
        r = advonnx(
            "run",
            "--model",
            path,
            "--data",
            tmp_path / "d.npz",
            "--attack",
            "fgsm",
            "--eps",
            "0.1",
            *extra,
            "--out",
            tmp_path / out,
            "--quiet",
            "--no-masking-checks",
        )
        assert r.returncode == 0, r.stderr
        shown = advonnx("show", tmp_path / out)
        assert shown.returncode == 0, shown.stderr
        for stream in (r.stderr, shown.stderr):
            assert (warning in " ".join(stream.split())) is not declared, stream


# waits 2 s for a new run id (seconds resolution)
@pytest.mark.slow
def test_run_failing_before_first_chunk_leaves_no_folder(tmp_path, monkeypatch):
    """A run that dies before its first chunk removes its folder (only .lock and _run.json were
    there) and the --out folder it created; earlier runs and resumable folders stay."""
    import time

    from advonnx import runner as suite_mod
    from advonnx.suite import AttackEntry, DatasetEntry, ModelEntry, Runner, Suite, parse_eps

    path = save(small_cnn(), tmp_path / "m.onnx")
    np.savez(
        tmp_path / "d.npz",
        x=np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32),
        y=np.arange(4) % 3,
    )

    def make():
        return Suite(
            name="t",
            models=[ModelEntry(name="m", path=str(path))],
            datasets=[DatasetEntry(name="d", path=str(tmp_path / "d.npz"))],
            attacks=[AttackEntry(name="fgsm", eps=parse_eps("0.1"))],
            chunk_size=2,
            masking_checks=False,
        )

    real = suite_mod.execute_unit
    calls = {"n": 0, "fail_at": 0}

    def flaky(unit):
        calls["n"] += 1
        if calls["n"] > calls["fail_at"]:
            raise KeyboardInterrupt  # what Ctrl-C does between chunks
        return real(unit)

    monkeypatch.setattr(suite_mod, "execute_unit", flaky)
    out = tmp_path / "new"
    with pytest.raises(KeyboardInterrupt):
        Runner(make(), out=out).run()
    assert not out.exists()
    # an existing --out with an earlier run: that run stays, no new folder
    monkeypatch.setattr(suite_mod, "execute_unit", real)
    first, _ = Runner(make(), out=out).run()
    monkeypatch.setattr(suite_mod, "execute_unit", flaky)
    calls["n"] = 0
    time.sleep(1.1)  # a new run id (second resolution)
    with pytest.raises(KeyboardInterrupt):
        Runner(make(), out=out).run()
    assert [p.name for p in out.iterdir()] == [first.name]
    # a run that wrote a chunk keeps its folder, and --resume finishes it
    calls.update(n=0, fail_at=1)
    time.sleep(1.1)
    with pytest.raises(KeyboardInterrupt):
        Runner(make(), out=out).run()
    kept = [p for p in out.iterdir() if p.name != first.name]
    assert len(kept) == 1 and len(list(kept[0].glob("part-*.parquet"))) == 1
    monkeypatch.setattr(suite_mod, "execute_unit", real)
    folder, table = Runner(make(), out=out, resume=True).run()
    assert table.num_rows == 4
