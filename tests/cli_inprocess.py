"""The ``advonnx`` command line run in this process: what ``python -m advonnx.cli ARGS`` gives
(exit code, stdout, stderr) without starting an interpreter and importing the package again.

Tests that need a real process (a fresh interpreter with click hidden, SIGKILL, a traceback
printed by Python itself, several processes sharing a cache) keep ``subprocess``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
import warnings

from rich.console import Console

from advonnx.cli import main

# Python's own warning filters (a new interpreter's, without -W or PYTHONWARNINGS)
_PYTHON_DEFAULT_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, None),
    ("ignore", PendingDeprecationWarning, None),
    ("ignore", ImportWarning, None),
    ("ignore", ResourceWarning, None),
)


def _show_on_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _environment(env: dict[str, str], cwd):
    old_env, old_cwd = {k: os.environ.get(k) for k in env}, os.getcwd()
    # rich consoles of the package read COLUMNS when they measure, unless built with a width
    consoles = [
        c
        for name, mod in list(sys.modules.items())
        if name == "advonnx" or name.startswith("advonnx.")
        for c in vars(mod).values()
        if isinstance(c, Console)
    ]
    widths = [c._width for c in consoles]
    try:
        os.environ.update(env)
        for c in consoles:
            c._width = None
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for c, w in zip(consoles, widths):
            c._width = w


def run_cli(*args, cwd=None, env: dict[str, str] | None = None, columns: int = 120) -> subprocess.CompletedProcess:
    """``advonnx ARGS`` in this process: a CompletedProcess with returncode, stdout and stderr (str).
    ``env`` adds to the environment and ``cwd`` is the working directory for the call only;
    COLUMNS is ``columns`` unless ``env`` sets it. Python warnings reach stderr as in a new process."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        _environment({"COLUMNS": str(columns), **(env or {})}, cwd),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        warnings.resetwarnings()
        for action, category, module in reversed(_PYTHON_DEFAULT_FILTERS):
            warnings.filterwarnings(action, category=category, module=module or "")
        warnings.showwarning = _show_on_stderr
        try:
            main(argv)
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:  # sys.exit("message"): Python prints it and exits 1
                print(e.code, file=sys.stderr)
                code = 1
        except Exception:  # what the interpreter does with an uncaught exception
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["advonnx", *argv], code, out.getvalue(), err.getvalue())
