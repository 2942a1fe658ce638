"""The ``advonnx`` command line (typer). Exit codes: 0 done, 1 internal error, 2 bad input."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .cli_info import doctor, inspect, list_attacks, list_corruptions
from .cli_run import run
from .errors import AdvonnxError

app = typer.Typer(
    name="advonnx",
    help="How far can a trained medical-imaging model be trusted? Attack any ONNX model through onnxruntime.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_DEBUG = {"on": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False):
    """advonnx: adversarial and corruption robustness of ONNX models, results in Parquet."""
    if debug:
        _DEBUG["on"] = True


app.command()(run)


@app.command()
def show(
    path: Annotated[
        Path, typer.Argument(help="A Parquet file, a run folder, or an output folder (latest run).")
    ] = Path("advonnx-results"),
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the folder, not just the latest.")] = False,
    costs: Annotated[
        Path | None,
        typer.Option(
            "--costs", help="Cost matrix CSV for the expected cost per sample (default: the run's own, if any)."
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the run summary as JSON instead: every figure with its interval bounds, n, groups and method.",
        ),
    ] = False,
):
    """Re-render the leaderboard from results.

    [bold]Examples[/bold]

      advonnx show                       # latest run in ./advonnx-results
      advonnx show advonnx-results/quick-20261125-101500-ab12cd
      advonnx show advonnx-results --json > summary.json
    """
    from .clinical import read_costs
    from .leaderboard import render
    from .results import read_results, run_metadata
    from .runner import value_range_warnings

    table = read_results(path, all_runs=all_runs)
    meta = run_metadata(table)
    cost_matrix = read_costs(costs) if costs is not None else None
    if as_json:
        import json

        from .run_summary import run_summary

        sys.stdout.write(json.dumps(run_summary(table, meta, costs=cost_matrix), indent=1, ensure_ascii=False) + "\n")
        return
    for line in value_range_warnings(meta.get("specs") or {}):
        err_console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)
    render(
        table,
        console,
        headline=meta.get("headline") or {},
        title=escape(f"advonnx · {meta.get('run_id', path)}"),
        costs=cost_matrix,
    )


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Results A (file, run folder or output folder).")],
    b: Annotated[
        Path | None, typer.Argument(help="Results B (omit it to compare the models of A with each other).")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the comparison as a self-contained HTML page.")
    ] = None,
):
    """Paired comparison on the same samples: per model pair × setting, the robust difference with a
    paired cluster-bootstrap 95 % interval and an exact McNemar p-value, and clean equivalence (TOST,
    ±2 points). With B: each model of A against itself in B (B − A), plus the per-setting table of
    clean and robust figures; without B: every two models of A on the same dataset and setting.

    [bold]Examples[/bold]

      advonnx compare results/before results/after
      advonnx compare results/quick-20261125-101500-ab12cd      # the models of one run, pairwise
      advonnx compare results/before results/after --html compare.html
    """
    from rich.table import Table

    from .compare import model_pairs, print_pairs
    from .leaderboard import compare_rows, percent
    from .results import read_results

    table_a = read_results(a)
    table_b = read_results(b) if b is not None else None
    pairs = model_pairs(table_a, table_b)
    if not console.is_terminal and console.width < 120:
        console.width = 120  # logs and pipes: no truncated model names (as the leaderboard does)
    if table_b is None:
        if len(set(table_a.column("model").to_pylist())) < 2:
            raise AdvonnxError(
                f"{a}: holds one model; give a second results folder (advonnx compare A B) or a run with several models"
            )
        print_pairs(console, pairs, f"advonnx compare: models of {a}, pairwise (second − first)")
        if html is not None:
            from .report import write_compare_report

            info = write_compare_report([], html, a_name=str(a), b_name="", pairs=pairs)
            console.print(escape(f"wrote {html} ({info['bytes'] / 1e3:.0f} kB)"))
        return
    rows = compare_rows(table_a, table_b)
    t = Table(title=escape(f"advonnx compare: B − A  (A = {a}, B = {b})"))
    for col in ("Model", "Dataset", "Setting", "Clean A", "Clean B", "Δ clean", "Robust A", "Robust B", "Δ robust"):
        t.add_column(col, justify="left" if col in ("Model", "Dataset", "Setting") else "right")

    def delta(v: float) -> str:
        if v != v:  # NaN: the setting is in one result set only
            return "–"
        v *= 100
        color = "green" if v > 0 else "red" if v < 0 else ""
        return f"[{color}]{v:+.1f}[/{color}]" if color else f"{v:+.1f}"

    for r in rows:
        t.add_row(
            escape(r["model"]),
            escape(r["dataset"]),
            escape(r["setting"]),
            percent(r["clean_a"]),
            percent(r["clean_b"]),
            delta(r["delta_clean"]),
            percent(r["robust_a"]),
            percent(r["robust_b"]),
            delta(r["delta_robust"]),
        )
    console.print(t)
    both = [r for r in rows if r["delta_robust"] == r["delta_robust"]]
    if both:
        moved = [r for r in both if abs(r["delta_robust"]) >= 0.0005]
        top = max(both, key=lambda r: abs(r["delta_robust"]))
        console.print(
            escape(
                f"{len(rows)} settings, {len(both)} in both; robust figure moved in {len(moved)}"
                + (
                    f", most for {top['model']} {top['setting']} ({100 * top['delta_robust']:+.1f} points)"
                    if moved
                    else ""
                )
            )
        )
    print_pairs(console, pairs, "Paired on the same samples (B − A)")
    if html is not None:
        from .report import write_compare_report

        info = write_compare_report(rows, html, a_name=str(a), b_name=str(b), pairs=pairs)
        console.print(escape(f"wrote {html} ({info['bytes'] / 1e3:.0f} kB)"))


@app.command()
def gate(
    path: Annotated[Path, typer.Argument(help="Results to check (file, run folder or output folder: latest run).")],
    min_robust: Annotated[
        float | None,
        typer.Option(
            "--min-robust",
            help="Fail a model whose robust figure at the headline setting (else its lowest over the attack settings) is below this fraction, e.g. 0.8.",
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Fail a model that is significantly less robust than in these results (paired on the same samples).",
        ),
    ] = None,
):
    """Exit 1 when a model fails, with one line per failing model; exit 0 when all pass (for CI).

    Significantly less robust than the baseline: on a setting both runs have, the paired 95 %
    cluster-bootstrap interval of the difference lies below 0 and the exact McNemar p < 0.05.

    [bold]Examples[/bold]

      advonnx gate advonnx-results --min-robust 0.8
      advonnx gate results/new --baseline results/released
    """
    from .compare import gate as run_gate
    from .results import read_results, run_metadata

    if min_robust is None and baseline is None:
        raise AdvonnxError("gate needs --min-robust FRACTION or --baseline RESULTS (see 'advonnx gate --help')")
    if min_robust is not None and not 0 <= min_robust <= 1:
        raise AdvonnxError(
            f"--min-robust {min_robust:g}: give a fraction in [0, 1], e.g. 0.8 for 80 % (see 'advonnx gate --help')"
        )
    table = read_results(path)
    fails = run_gate(
        table,
        min_robust=min_robust,
        baseline=read_results(baseline) if baseline is not None else None,
        headline=run_metadata(table).get("headline") or {},
    )
    for line in fails:
        sys.stdout.write(line + "\n")
    if fails:
        raise SystemExit(1)  # typer.Exit's code is swallowed by click outside standalone mode
    models = sorted(set(table.column("model").to_pylist()))
    sys.stdout.write(f"gate passed: {len(models)} models ({', '.join(models)})\n")


@app.command()
def report(
    path: Annotated[
        Path, typer.Argument(help="A Parquet file, a run folder, or an output folder (latest run).")
    ] = Path("advonnx-results"),
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the folder, not just the latest.")] = False,
    title: Annotated[str | None, typer.Option("--title", help="Page title (default: from the suite name).")] = None,
    examples: Annotated[
        int, typer.Option("--examples", help="Example samples shown per model × setting (of those the run saved).")
    ] = 4,
    costs: Annotated[
        Path | None,
        typer.Option(
            "--costs", help="Cost matrix CSV for the expected cost per sample (default: the run's own, if any)."
        ),
    ] = None,
):
    """Write a self-contained HTML report: leaderboard, robustness curves, adversarial examples.

    One file that opens offline (plots and images embedded); needs matplotlib (the report extra).

    [bold]Examples[/bold]

      advonnx report                                 # latest run in ./advonnx-results -> report.html
      advonnx report results/quick-20261125-101500-ab12cd -o quick.html
    """
    from .clinical import read_costs
    from .report import write_report

    info = write_report(
        path,
        output,
        all_runs=all_runs,
        title=title,
        examples_per_setting=max(0, examples),
        costs=read_costs(costs) if costs is not None else None,
    )
    console.print(
        escape(
            f"wrote {output} ({info['bytes'] / 1e6:.2f} MB): {info['settings']} settings of {info['models']} models, "
            f"{info['plots']} plots, {info['example_images']} example images"
        )
    )


app.command()(inspect)
app.command("attacks")(list_attacks)
app.command("corruptions")(list_corruptions)
app.command()(doctor)


def _is_usage_error(err: BaseException) -> bool:
    """A command-line parsing error from typer's click. Recognised by class name: typer >= 0.2x
    vendors click as ``typer._click`` (click itself may be absent), older typer uses click."""
    return any(cls.__name__ == "ClickException" for cls in type(err).__mro__)


def _usage_message(err: Any) -> str:
    """click's error as one line, with the --help hint click would print on its own lines."""
    message = " ".join(str(err.format_message()).split())
    ctx = getattr(err, "ctx", None)
    path = getattr(ctx, "command_path", None) or "advonnx"
    return f"{message} (see '{path} --help')"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors (exit 2) unless --debug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]  # accepted anywhere on the line
    for stream in (sys.stdout, sys.stderr):  # an ASCII terminal gets '?' for ‖δ‖, not a crash
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(errors="replace")
    try:
        app(args=args, standalone_mode=False)
    except AdvonnxError as err:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as err:
        if _is_usage_error(err):
            if debug:
                raise
            err_console.print(f"[red]error:[/red] {escape(_usage_message(err))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        if debug:
            raise
        err_console.print(
            f"[red]internal error:[/red] {type(err).__name__}: {escape(str(err))} (run again with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
