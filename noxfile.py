"""Sessions: tests (the whole suite, slow checks included), fast, lint, bench, models, and
deps_min / deps_newest (the command line on the lowest and on the newest runtime dependencies)."""

import re
from pathlib import Path

import nox
import tomllib

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session):
    """Everything CI runs: unit tests and the slow checks (fresh-venv install, cross-library)."""
    session.install(".[test]")
    _reference_libraries(session)
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


def _reference_libraries(session):
    # torchattacks' dependencies pull a CUDA torchvision that breaks the CPU torch pin: no deps.
    session.install("scipy", "requests")
    session.install("--no-deps", "torchattacks==3.5.1")
    # foolbox 3.3.4 (DeepFool, C&W references) and ART 1.20 (JSMA) pull no torch: plain installs.
    session.install("foolbox==3.3.4", "adversarial-robustness-toolbox==1.20.1")
    # ART for the black-box comparisons (HopSkipJump, Square); no deps so torch stays the CPU pin
    session.install("scikit-learn", "six", "tqdm")
    session.install("--no-deps", "adversarial-robustness-toolbox==1.20.1")
    # MONAI (sliding-window reference, tests/test_sliding.py): no deps, so torch stays the CPU pin
    session.install("--no-deps", "monai==1.6.1")


def _torchio(session):
    # TorchIO (corruption benchmark reference) requires torch: no deps, so the CPU torch pin stays;
    # its light dependencies are installed explicitly.
    session.install("nibabel", "deprecated", "humanize", "einops", "jaxtyping", "typer", "rich", "tqdm", "scipy")
    session.install("--no-deps", "torchio==1.2.1")


@nox.session
def fast(session):
    """The default developer loop: every test not marked slow (about 2 minutes on 2 cores)."""
    session.install(".[test]")
    session.run("pytest", "-q", "-m", "not slow", *session.posargs)


def _runtime_requirements() -> list[str]:
    """pyproject's runtime dependencies and the report extra (the CLI tests write an HTML page)."""
    project = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"] + project["optional-dependencies"]["report"]


def _lowest(requirement: str) -> str:
    """``name>=X`` -> ``name==X``: the lower bound pyproject promises, pinned."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", requirement)
    if m is None:
        raise ValueError(f"pyproject requirement {requirement!r} has no plain '>=' lower bound")
    return f"{m[1]}=={m[2]}"


def _cli_checks(session):
    """The CLI tests (not slow) against the installed package, then a short `advonnx run` of the
    quick suite from an empty folder whose rows must all be ok."""
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    session.run("pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "tests/test_cli.py", *session.posargs)
    out = Path(session.create_tmp()) / "smoke"
    session.run("advonnx", "run", "--limit", "4", "--quiet", "--out", str(out))
    session.run(
        "python",
        "-c",
        "import sys; from advonnx.results import read_results; t = read_results(sys.argv[1]); "
        "s = set(t.column('status').to_pylist()); assert t.num_rows > 0 and s == {'ok'}, s; "
        "print(t.num_rows, 'rows, all ok')",
        str(out),
    )


@nox.session
def deps_min(session):
    """Every runtime dependency at its pyproject lower bound (one pip call, so nothing drifts up)."""
    session.install(*map(_lowest, _runtime_requirements()), "pytest")
    session.install("--no-deps", ".")
    _cli_checks(session)


@nox.session
def deps_newest(session):
    """Every runtime dependency at its newest release."""
    names = [re.split(r"[<>=!~;\s]", r, maxsplit=1)[0] for r in _runtime_requirements()]
    session.install("--upgrade", *names, "pytest")
    session.install("--no-deps", ".")
    _cli_checks(session)


LINTED = ("advonnx", "tests", "benchmarks", "models", "noxfile.py")
# mypy reads the typed dependencies' annotations: pin the versions the package was made clean
# against, so a new release cannot turn CI red overnight (raise the pins on purpose).
TYPED_DEPENDENCIES = (
    "numpy==2.4.6",
    "onnx==1.23.2",
    "typer==0.29.2",
    "rich==15.0.0",
    "matplotlib==3.11.2",
    "array-api-compat==1.16.0",
)


@nox.session
def lint(session):
    """ruff format --check and ruff check on everything, mypy on the package (all pinned)."""
    session.install("ruff==0.17.6")
    session.run("ruff", "format", "--check", *LINTED)
    session.run("ruff", "check", *LINTED)
    session.install(".[report]", "mypy==2.4.1", *TYPED_DEPENDENCIES)
    session.run("mypy")


@nox.session
def bench(session):
    """Performance benchmarks; results land in benchmarks/results/."""
    session.install(".[test]")
    _reference_libraries(session)
    session.run("python", "benchmarks/bench_predict.py", *session.posargs)
    session.run("python", "benchmarks/bench_autodiff.py")
    session.run("python", "benchmarks/bench_attacks.py")
    session.run("python", "benchmarks/bench_throughput.py")
    session.run("python", "benchmarks/bench_paper_attacks.py")
    session.run("python", "benchmarks/bench_blackbox.py")
    _torchio(session)
    session.run("python", "benchmarks/bench_corruptions.py")
    session.run("python", "benchmarks/bench_cluster.py")
    session.run("python", "benchmarks/bench_gradcache.py")
    session.run("python", "benchmarks/bench_apgd.py")
    session.run("python", "benchmarks/bench_autoattack.py")
    session.run("python", "benchmarks/bench_certify.py")
    session.run("python", "benchmarks/bench_memory.py")


@nox.session
def models(session):
    """Rebuild the suite's data and models from the MNI template in nilearn's wheel (not in CI)."""
    session.install(".[export]")
    before = session.create_tmp() + "/metrics_before.json"
    session.run("cp", "models/metrics.json", before, external=True)
    session.run("python", "models/build_brain_data.py")
    session.run("python", "models/train_brain_classifiers.py")
    session.run("python", "models/train_brain_segmenters.py")
    session.run("python", "models/train_brain_jax.py")
    session.run("python", "models/train_tabular.py")
    # every rebuilt model's clean metric within 1 point of the committed one
    session.run("python", "models/compare_metrics.py", before, "models/metrics.json")
