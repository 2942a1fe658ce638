"""The test suite without its optional references: modules that need torch or statsmodels are
skipped, none fails to import (a module-level ``import torch`` is a collection error)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# pytest as if the named packages were not installed: importing them raises ModuleNotFoundError
# (nothing is put in sys.modules: sys.modules["torch"] = None trips libraries that probe it)
ABSENT = """\
import importlib.abc, sys
import pytest
BLOCKED = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
sys.exit(pytest.main(sys.argv[2:]))
"""


@pytest.mark.slow  # one collection of the whole suite in a new interpreter (~10 s)
def test_collection_without_torch_and_statsmodels():
    blocked = "torch,torchattacks,foolbox,art,monai,statsmodels"
    r = subprocess.run(
        [sys.executable, "-c", ABSENT, blocked, "-q", "--co", "-rs", "-p", "no:cacheprovider", str(TESTS)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
        cwd=TESTS.parent,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "error" not in r.stdout.splitlines()[-1], r.stdout[-3000:]
    skipped = {line.split()[2].split(":")[0] for line in r.stdout.splitlines() if line.startswith("SKIPPED")}
    for module in (
        "tests/autodiff/test_models.py",
        "tests/autodiff/test_recurrent.py",
        "tests/test_apgd.py",
        "tests/test_logits_rule.py",
        "tests/test_stats.py",
        "tests/test_compare_gate.py",
    ):
        assert module in skipped, (module, sorted(skipped))
