"""The ``advonnx`` command line (typer). Exit codes: 0 done, 1 internal error, 2 bad input."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

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


@app.command()
def run(
    suite: Annotated[str | None, typer.Argument(help="Suite TOML, or a built-in suite name (quick, full). Default: quick.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="ONNX model(s) to attack instead of the suite's.")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Data: .npz (x, y), image folder (class subfolders or flat), CSV manifest, or one image/volume.")] = None,
    attack: Annotated[list[str] | None, typer.Option("--attack", "--attacks", "-a", help="Attack name(s), comma-separated, each with optional settings: \"pgd(steps=50, restarts=5),square(max_queries=5000)\" (the keys of a suite TOML attack: `advonnx attacks` lists them; also norm, eps, targeted).")] = None,
    eps: Annotated[str | None, typer.Option("--eps", help="Budget(s) in the model's value units, e.g. 2/255,8/255 or 0.03.")] = None,
    norm: Annotated[str | None, typer.Option("--norm", help="linf or l2.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Iterations of iterative attacks.")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", help="Query budget per sample of the query-based attacks (square, hsj, nes, spsa).")] = None,
    worst_case: Annotated[bool, typer.Option("--worst-case", help="AutoAttack style: attacks in the listed order, each later one only on the samples still robust at its norm and eps; the leaderboard adds the combined worst case.")] = False,
    no_masking_checks: Annotated[bool, typer.Option("--no-masking-checks", help="Do not add the extra attacks of the gradient-masking checks (a Square, a 5x-steps PGD and a PGD at half the value range, linf, on the first samples of each classifier with gradient attacks).")] = False,
    transfer_matrix: Annotated[bool, typer.Option("--transfer-matrix", help="Feed every model's adversarial examples to every other model of its dataset (same inputs) and show the source × target transfer rates after the leaderboard and in the report.")] = False,
    targeted: Annotated[bool, typer.Option("--targeted", help="Targeted attacks: each sample gets a random target class other than its label (seeded).")] = False,
    target_map: Annotated[str | None, typer.Option("--target-map", help="Targeted attacks in the named directions only (implies --targeted): single-label SOURCE:TARGET by class name or index, e.g. malignant:benign,tumour:notumor (samples of other classes are not attacked; the leaderboard shows the flip rate per direction); multi-label FINDING:present|absent, e.g. pneumothorax:absent (several entries must all hold).")] = None,
    costs: Annotated[Path | None, typer.Option("--costs", help="Cost matrix CSV (header: predicted class names; first column: true class names; cells: costs >= 0); the leaderboard shows the expected cost per sample clean vs under attack.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N samples of each dataset.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of every random draw of the run.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per onnxruntime call (small batches are often faster on CPU caches).")] = 64,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    gradient: Annotated[str | None, typer.Option("--gradient", help="auto, exact or estimated.")] = None,
    input_name: Annotated[str | None, typer.Option("--input", help="Model input to attack, if several (default: the only spatial one); the others are read per sample from the data (npz arrays or manifest columns named after them) and held fixed.")] = None,
    attack_inputs: Annotated[str | None, typer.Option("--attack-inputs", help="Inputs to attack jointly, comma-separated, each within --eps (signal,features), or each with its own budget in its value units (signal=0.01,features=0.05; then no --eps). One name: same as --input.")] = None,
    output_name: Annotated[str | None, typer.Option("--output", help="Model output holding the scores, if several.")] = None,
    value_range: Annotated[str | None, typer.Option("--value-range", help="Model input value range LO,HI (default: declared, else 0,1).")] = None,
    votes: Annotated[int | None, typer.Option("--votes", help="Evaluations per decision, majority vote (default: 1; 11 for randomized models).")] = None,
    eot: Annotated[int | None, typer.Option("--eot", help="Gradient draws averaged per gradient, EOT (default: 1; 20 for randomized models).")] = None,
    layout: Annotated[str | None, typer.Option("--layout", help="NCHW, NHWC, NCDHW, NDHWC, NCW, NWC (1-D signals) or NF if the guess is wrong.")] = None,
    sampling_rate: Annotated[str | None, typer.Option("--sampling-rate", help="1-D signals: samples per second (Hz), for powerline, baseline_wander and electrode_motion.")] = None,
    output_layout: Annotated[str | None, typer.Option("--output-layout", help="Axes of the scores output if not batch-first, e.g. TNC (sequence-first recurrent nets): N batch, C classes, D/H/W/T positions.")] = None,
    patch_size: Annotated[str | None, typer.Option("--patch-size", help="Segmentation: run the model on overlapping windows of this size (e.g. 96,96,96) of larger images or volumes and stitch the scores (MONAI's sliding windows); attacks perturb the whole volume.")] = None,
    overlap: Annotated[str | None, typer.Option("--overlap", help="Sliding windows: overlap fraction in [0, 1) (default 0.25).")] = None,
    blend: Annotated[str | None, typer.Option("--blend", help="Sliding windows: constant or gaussian (default constant).")] = None,
    orientation: Annotated[str | None, typer.Option("--orientation", help="Reorient every volume (and mask) to this code before use, e.g. RAS or LPS (DICOM convention: the direction each axis increases toward). Default: as stored.")] = None,
    spacing: Annotated[str | None, typer.Option("--spacing", help="Resample every image file (linear) and mask (nearest) to this voxel size in mm, array order, e.g. 1.0,1.0,1.0 (SimpleITK, after --orientation). Default: as stored.")] = None,
    intensity: Annotated[str | None, typer.Option("--intensity", help="How image intensities map to the model's value range: auto (default), none, minmax, percentile:LO-HI, window:LO,HI (e.g. CT window:-1000,400) or divide:K (e.g. divide:4095).")] = None,
    class_names: Annotated[str | None, typer.Option("--class-names", help="The model's classes in output order, comma-separated (e.g. benign,malignant); class subfolders and manifest labels are matched to them.")] = None,
    corruptions: Annotated[str | None, typer.Option("--corruptions", help="Natural corruptions too: all or NAME[,NAME...] (see `advonnx corruptions`).")] = None,
    severities: Annotated[str | None, typer.Option("--severities", help="Corruption severities, e.g. 1-5 or 1,3,5.")] = None,
    save_examples: Annotated[int | None, typer.Option("--save-examples", help="Keep adversarial examples of the first K samples per model × setting.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder; each run writes OUT/<run_id>/.")] = Path("advonnx-results"),
    resume: Annotated[bool, typer.Option("--resume", help="Finish the latest run in OUT with the same settings.")] = False,
    cluster: Annotated[str | None, typer.Option("--cluster", help="Run on Dask: local:N (N local workers) or tcp://HOST:PORT (a scheduler). Needs the dask extra.")] = None,
    chunk_size: Annotated[int | None, typer.Option("--chunk-size", help="Samples per result chunk (the unit of crash safety and resume).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
):
    """Attack models and write one Parquet row per sample × attack setting, then show the leaderboard.

    [bold]Examples[/bold]

      advonnx run                                   # the built-in quick suite
      advonnx run full                              # the longer built-in suite
      advonnx run my_suite.toml --out results/
      advonnx run --model vendor.onnx --data scans/ --attack fgsm,pgd --eps 1/255,4/255
      advonnx run --model m.onnx --data test.npz --value-range 0,255 --eps 2,8
      advonnx run --corruptions all --severities 1-5   # natural corruptions beside the attacks
      advonnx run full --cluster local:4             # the same rows, on 4 Dask workers
      advonnx run --attack fgsm,pgd,deepfool --worst-case   # combined robust accuracy (AutoAttack style)
      advonnx run --attack "pgd(steps=50, restarts=5),square(max_queries=5000, p_init=0.3)"
      advonnx run --attack "pgd(norm=l2, eps=[0.25, 0.5]),fgsm" --eps 2/255   # per-attack norm and eps
      advonnx run --model ct.onnx --data scans/ --intensity window:-1000,400 --class-names normal,nodule
      advonnx run --model bc.onnx --data bc.npz --attack square --eps 0.05 --target-map malignant:benign --costs costs.csv

    Settings in parentheses use the suite TOML's names; values are numbers, fractions (2/255),
    true/false, words or [lists]. They win over --eps, --norm, --steps and --max-queries.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .attacks import attack_class, make_attack
    from .leaderboard import render
    from .suite import (
        AttackEntry,
        DatasetEntry,
        ModelEntry,
        Runner,
        Suite,
        load_suite,
        parse_corruptions,
        parse_eps,
        parse_severities,
    )

    if model and not data and suite is None:
        raise AdvonnxError("--model needs --data (an .npz, image folder, CSV manifest or image file)")
    s: Suite = load_suite(suite or "quick") if (suite or not model) else Suite(name="adhoc", models=[], datasets=[], attacks=[])
    input_name, joint, eps = _attacked_input(input_name, attack_inputs, eps)
    overrides = {k: v for k, v in (("input_name", input_name), ("output_name", output_name),
                                   ("value_range", value_range), ("layout", layout), ("votes", votes),
                                   ("eot", eot), ("sampling_rate", sampling_rate), ("output_layout", output_layout),
                                   ("patch_size", patch_size), ("overlap", overlap), ("blend", blend),
                                   ("attack_inputs", joint)) if v is not None}
    if joint and (corruptions or severities):
        raise AdvonnxError("--corruptions change one input: drop them for a joint attack (--attack-inputs), "
                           "or corrupt one input with --input")
    if class_names is not None:
        names = [c.strip() for c in class_names.split(",") if c.strip()]
        if not names or len(set(names)) != len(names):
            raise AdvonnxError(f"--class-names {class_names!r}: give each class once, comma-separated, e.g. benign,malignant")
        overrides["class_names"] = names
    if intensity is not None:
        from .data import parse_intensity_rule

        parse_intensity_rule(intensity)  # a typo fails now, with the valid rules
    if model:
        s.models = [ModelEntry(name=Path(m).stem, path=str(Path(m)), overrides=dict(overrides)) for m in model]
        s.name = s.name if suite else "adhoc"
    elif overrides:
        for m in s.models:
            m.overrides.update(overrides)
    if data:
        s.datasets = [DatasetEntry(name=Path(data).stem or "data", path=str(Path(data)), limit=limit,
                                   orientation=orientation, spacing=spacing)]
        for m in s.models:
            m.dataset = s.datasets[0].name
    elif limit is not None:
        for d in s.datasets:
            d.limit = limit
    for d in s.datasets if orientation else []:
        d.orientation = orientation
    for d in s.datasets if spacing else []:
        d.spacing = spacing
    if intensity is not None:
        for d in s.datasets:
            d.intensity = intensity
    from .attack_spec import parse_attack_specs

    specs = {}  # entry -> its spec, whose settings win over --steps / --max-queries
    if attack or not s.attacks:
        budgets = parse_eps(eps or "2/255,8/255")
        s.attacks = []
        for spec in parse_attack_specs(attack) or parse_attack_specs("fgsm,pgd"):
            own = attack_class(spec.name).norms  # an attack of one norm (jsma: l0, certify: l2) takes it
            entry = AttackEntry(name=spec.name, norm=spec.norm or norm or ("linf" if "linf" in own else own[0]),
                                eps=spec.eps or budgets,
                                targeted=bool(spec.targeted), datasets=spec.datasets or [])
            s.attacks.append(entry)
            specs[id(entry)] = spec
            if steps and "steps" in attack_class(spec.name).parameters():
                entry.settings["steps"] = steps
        last = s.attacks[-1]
        s.headline = {"attack": last.name, "norm": last.norm, "eps": last.eps[-1][1]}
    else:
        for a in s.attacks:
            if eps:
                a.eps = parse_eps(eps)
            if norm:
                a.norm = norm
            if steps and "steps" in attack_class(a.name).parameters():
                a.settings["steps"] = steps
    for a in s.attacks:  # --max-queries goes to the attacks that have it; then the spec's own settings
        if max_queries is not None and "max_queries" in attack_class(a.name).parameters():
            if max_queries < 1:
                raise AdvonnxError("--max-queries must be >= 1")
            a.settings["max_queries"] = max_queries
        if id(a) in specs:
            a.settings.update(specs[id(a)].settings)
            for value, _ in a.eps:  # every setting is built now, as a suite file's are, not mid-run
                make_attack(a.name, norm=a.norm, eps=value or 1e-12, **a.settings)
    if corruptions is not None:
        s.corruptions = parse_corruptions(corruptions)
        s.severities = parse_severities(severities or "1-5")
    elif severities is not None:
        if not s.corruptions:
            raise AdvonnxError("--severities needs --corruptions (e.g. --corruptions all --severities 1-5)")
        s.severities = parse_severities(severities)
    if joint:  # fail now, naming the attacks that run jointly
        from .joint import check_joint_attack

        for a in s.attacks:
            check_joint_attack(a.name)
    if target_map is not None:
        from .target_map import split_target_map

        split_target_map(target_map)  # syntax now; class names per model when the run is planned
        for a in s.attacks:
            if id(a) not in specs or specs[id(a)].targeted is None:  # pgd(targeted=false) stays untargeted
                a.targeted = True
            if a.targeted and not a.target_map:
                a.target_map = target_map
    for a in s.attacks:
        if id(a) in specs and specs[id(a)].target_map:  # pgd(target_map=...) is targeted
            a.target_map, a.targeted = specs[id(a)].target_map, True
    if costs is not None:
        from .clinical import read_costs

        read_costs(costs)  # a bad file fails now, not after the run
        s.costs = str(costs)
    if targeted:
        for a in s.attacks:
            if id(a) not in specs or specs[id(a)].targeted is None:  # pgd(targeted=false) stays untargeted
                a.targeted = True
    if worst_case:
        s.worst_case = True
    if no_masking_checks:
        s.masking_checks = False
    if transfer_matrix:
        s.transfer_matrix = True
    if seed is not None:
        s.seed = seed
    if gradient:
        s.gradient = gradient
    if save_examples is not None:
        s.save_examples = save_examples
    if chunk_size is not None:
        if chunk_size < 1:
            raise AdvonnxError("--chunk-size must be >= 1")
        s.chunk_size = chunk_size
    progress = None if quiet else Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    t0 = time.perf_counter()
    runner = Runner(s, out=out, resume=resume, device=device, batch_size=batch_size, progress=progress, cluster=cluster,
                    log=lambda m: err_console.print(f"[yellow]{escape(m)}[/yellow]", highlight=False))
    if progress is not None:
        with progress:
            folder, table = runner.run()
    else:
        folder, table = runner.run()
    render(table, console, headline=s.headline, title=escape(f"advonnx · suite {s.name}"))  # costs: in the metadata
    console.print(f"[green]{table.num_rows} rows[/green] in {escape(str(folder))} ({time.perf_counter() - t0:.1f} s)")


@app.command()
def show(
    path: Annotated[Path, typer.Argument(help="A Parquet file, a run folder, or an output folder (latest run).")] = Path("advonnx-results"),
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the folder, not just the latest.")] = False,
    costs: Annotated[Path | None, typer.Option("--costs", help="Cost matrix CSV for the expected cost per sample (default: the run's own, if any).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON instead: every figure with its interval bounds, n, groups and method.")] = False,
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
    from .suite import value_range_warnings

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
    render(table, console, headline=meta.get("headline") or {}, title=escape(f"advonnx · {meta.get('run_id', path)}"),
           costs=cost_matrix)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Results A (file, run folder or output folder).")],
    b: Annotated[Path | None, typer.Argument(help="Results B (omit it to compare the models of A with each other).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the comparison as a self-contained HTML page.")] = None,
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
            raise AdvonnxError(f"{a}: holds one model; give a second results folder (advonnx compare A B) or a run with several models")
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
        t.add_row(escape(r["model"]), escape(r["dataset"]), escape(r["setting"]), percent(r["clean_a"]), percent(r["clean_b"]), delta(r["delta_clean"]),
                  percent(r["robust_a"]), percent(r["robust_b"]), delta(r["delta_robust"]))
    console.print(t)
    both = [r for r in rows if r["delta_robust"] == r["delta_robust"]]
    if both:
        moved = [r for r in both if abs(r["delta_robust"]) >= 0.0005]
        top = max(both, key=lambda r: abs(r["delta_robust"]))
        console.print(escape(f"{len(rows)} settings, {len(both)} in both; robust figure moved in {len(moved)}"
                             + (f", most for {top['model']} {top['setting']} ({100 * top['delta_robust']:+.1f} points)"
                                if moved else "")))
    print_pairs(console, pairs, "Paired on the same samples (B − A)")
    if html is not None:
        from .report import write_compare_report

        info = write_compare_report(rows, html, a_name=str(a), b_name=str(b), pairs=pairs)
        console.print(escape(f"wrote {html} ({info['bytes'] / 1e3:.0f} kB)"))


@app.command()
def gate(
    path: Annotated[Path, typer.Argument(help="Results to check (file, run folder or output folder: latest run).")],
    min_robust: Annotated[float | None, typer.Option("--min-robust", help="Fail a model whose robust figure at the headline setting (else its lowest over the attack settings) is below this fraction, e.g. 0.8.")] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Fail a model that is significantly less robust than in these results (paired on the same samples).")] = None,
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
        raise AdvonnxError(f"--min-robust {min_robust:g}: give a fraction in [0, 1], e.g. 0.8 for 80 % (see 'advonnx gate --help')")
    table = read_results(path)
    fails = run_gate(table, min_robust=min_robust, baseline=read_results(baseline) if baseline is not None else None,
                     headline=run_metadata(table).get("headline") or {})
    for line in fails:
        sys.stdout.write(line + "\n")
    if fails:
        raise SystemExit(1)  # typer.Exit's code is swallowed by click outside standalone mode
    models = sorted(set(table.column("model").to_pylist()))
    sys.stdout.write(f"gate passed: {len(models)} models ({', '.join(models)})\n")


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A Parquet file, a run folder, or an output folder (latest run).")] = Path("advonnx-results"),
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path("report.html"),
    all_runs: Annotated[bool, typer.Option("--all", help="Every run in the folder, not just the latest.")] = False,
    title: Annotated[str | None, typer.Option("--title", help="Page title (default: from the suite name).")] = None,
    examples: Annotated[int, typer.Option("--examples", help="Example samples shown per model × setting (of those the run saved).")] = 4,
    costs: Annotated[Path | None, typer.Option("--costs", help="Cost matrix CSV for the expected cost per sample (default: the run's own, if any).")] = None,
):
    """Write a self-contained HTML report: leaderboard, robustness curves, adversarial examples.

    One file that opens offline (plots and images embedded); needs matplotlib (the report extra).

    [bold]Examples[/bold]

      advonnx report                                 # latest run in ./advonnx-results -> report.html
      advonnx report results/quick-20261125-101500-ab12cd -o quick.html
    """
    from .clinical import read_costs
    from .report import write_report

    info = write_report(path, output, all_runs=all_runs, title=title, examples_per_setting=max(0, examples),
                        costs=read_costs(costs) if costs is not None else None)
    console.print(escape(f"wrote {output} ({info['bytes'] / 1e6:.2f} MB): {info['settings']} settings of {info['models']} models, "
                         f"{info['plots']} plots, {info['example_images']} example images"))


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="The ONNX model.")],
    input_name: Annotated[str | None, typer.Option("--input", help="The input to attack, if several.")] = None,
    output_name: Annotated[str | None, typer.Option("--output")] = None,
    value_range: Annotated[str | None, typer.Option("--value-range")] = None,
    layout: Annotated[str | None, typer.Option("--layout")] = None,
    sampling_rate: Annotated[str | None, typer.Option("--sampling-rate")] = None,
    output_layout: Annotated[str | None, typer.Option("--output-layout", help="e.g. TNC for a sequence-first output.")] = None,
    patch_size: Annotated[str | None, typer.Option("--patch-size", help="Sliding-window size, e.g. 96,96,96.")] = None,
):
    """Show what advonnx found or guessed about a model, where each fact came from, and gradient support.

    [bold]Example[/bold]

      advonnx inspect vendor_model.onnx
    """
    from rich.table import Table

    from .model import load_model

    overrides = {k: v for k, v in (("input_name", input_name), ("output_name", output_name),
                                   ("value_range", value_range), ("layout", layout),
                                   ("sampling_rate", sampling_rate), ("output_layout", output_layout),
                                   ("patch_size", patch_size)) if v is not None}
    m = load_model(model, **overrides)
    s = m.spec
    t = Table(title=escape(f"advonnx inspect {model}"), show_header=True, header_style="bold")
    t.add_column("field")
    t.add_column("value")
    t.add_column("source")
    shape = "(" + ", ".join("?" if d is None else str(d) for d in s.input_shape) + ")"
    missing = m.unsupported_ops()
    gradient = "exact" if not missing else "estimated (no VJP rule for: " + ", ".join(missing) + ")"
    straight = m.straight_through_ops() if not missing else []
    if straight:
        gradient = "exact + straight-through: " + ", ".join(straight) + " (identity in the backward pass, BPDA)"
    if s.attacked_output:
        attacked = f"{s.attacked_output!r} (input of the final {s.attacked_op}); decisions from {s.output_name!r}"
    else:
        attacked = f"{s.output_name!r} ({s.attacked_scores}" + (
            "; log-probabilities in float64" if s.attacked_scores == "probabilities" else "") + ")"
    for name, value, src in (
        ("input", f"{s.input_name} {shape} " + (f"{s.input_integer} (fed as {s.input_dtype}, rounded in the graph)"
                                                 if s.input_integer else s.input_dtype)
         + (" (attacked)" if s.extra_inputs else ""), s.source("input_name")),
        *(("held fixed", f"{name} ({', '.join('?' if d is None else str(d) for d in dims)}) {dtype}: per sample from the "
           "data (npz array or manifest column of that name), not attacked", "graph") for name, dims, dtype in s.extra_inputs),
        ("output", s.output_name + (f" (declared layout {s.output_layout}, read batch-first)" if s.output_layout else ""),
         s.source("output_name")),
        ("layout", s.layout + (" (1-D signal)" if s.layout in ("NCW", "NWC") else ""), s.source("layout")),
        *([("sampling rate", f"{s.sampling_rate:g} Hz" if s.sampling_rate else "not declared (--sampling-rate)",
            s.sources.get("sampling_rate", "-"))] if s.layout in ("NCW", "NWC") else []),
        ("task", s.task + (f" (multi-label: {s.num_classes} findings, independent sigmoids; a finding is present when "
                           + (f"p > {s.threshold:g})" if s.scores == "probabilities" else "its logit > 0)")
                           if s.output_kind == "multilabel" else ""), s.source("task")),
        ("scores", f"{s.scores} ({s.output_kind})", s.source("scores")),
        ("findings" if s.output_kind == "multilabel" else "classes", f"{s.num_classes}: {', '.join(s.class_names)}",
         s.source("class_names")),
        ("value range", f"[{s.value_range[0]:g}, {s.value_range[1]:g}]", s.sources.get("value_range", "assumed")),
        ("preprocessing", f"scale={s.scale:g} mean={list(s.mean) or '-'} std={list(s.std) or '-'}", s.source("mean")),
        ("batch", "dynamic" if s.fixed_batch is None else f"fixed at {s.fixed_batch} (advonnx batches internally)", "graph"),
        ("framework", f"{s.framework} ({s.exporter}); producer {s.producer or '?'}; opset {s.opset}", s.source("framework")),
        ("attacked tensor", attacked, "logits rule" if s.logits_rule else "logits rule off"),
        ("gradient", gradient, "autodiff"),
        ("randomized", (f"yes: {', '.join(s.randomized)}; decisions: majority of {m.votes} evaluations, gradients: "
                        f"mean of {m.eot} draws (EOT)") if s.randomized else
         f"no (votes {m.votes}, eot {m.eot})" if m.votes > 1 or m.eot > 1 else "no", "graph"),
        ("execution provider", m.execution_provider + (f" ({m.cuda_note})" if m.cuda_note else ""), "onnxruntime"),
    ):
        t.add_row(name, escape(str(value)), escape(str(src)))
    console.print(t)
    for note in s.notes:
        console.print(f"[yellow]•[/yellow] {escape(note)}")


@app.command("attacks")
def list_attacks():
    """List the attacks, their norms, what they need, and their settings with defaults."""
    from rich.table import Table

    from .attacks import ATTACKS

    t = Table(title="advonnx attacks")
    for col in ("name", "norms", "needs", "settings (defaults)", "what it does"):
        t.add_column(col)
    for name, cls in sorted(ATTACKS.items()):
        params = ", ".join(f"{k}={_fmt_default(v)}" for k, v in cls.parameters().items())
        t.add_row(name, ", ".join(cls.norms), cls.needs, params, cls.summary)
    console.print(t)
    console.print("[dim]eps is in the model's value units (e.g. 8/255 for images in [0, 1]); jsma's theta and dag's gamma are fractions of the value-range width (the same attack on [0, 1] and [0, 255] models); gradient attacks use exact gradients when the graph allows, else NES estimates; losses and query objectives are on the logits before a final Softmax/Sigmoid (decisions from the output); multi-label models (independent sigmoids): fgsm, bim, pgd, apgd, square, nes and spsa, with ce read as per-finding binary cross-entropy and margin as the worst finding's margin; joint attacks on several inputs (--attack-inputs): fgsm, bim, pgd, apgd and square.[/dim]")
    console.print("[dim]" + escape('Set them per attack: advonnx run --attack "pgd(steps=50, restarts=5),square(max_queries=5000)"'
                                   " (also norm, eps=[1/255, 2/255], targeted=true, target_map=\"malignant:benign\").") + "[/dim]")


def _fmt_default(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return repr(v)


@app.command("corruptions")
def list_corruptions(
    preview: Annotated[Path | None, typer.Option("--preview", help="An image or volume to show under every corruption and severity.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file for the preview grid.")] = Path("corruptions.png"),
    names: Annotated[str, typer.Option("--names", help="Which corruptions: all or NAME[,NAME...].")] = "all",
):
    """List the natural corruptions, or preview them on one image (rows: corruption; columns: clean, severity 1-5).

    [bold]Examples[/bold]

      advonnx corruptions
      advonnx corruptions --preview slice.nii.gz -o grid.png
    """
    from rich.table import Table

    from .corruptions import CORRUPTIONS, corruption_names

    selected = corruption_names(names)
    if preview is None:
        t = Table(title="advonnx corruptions (severity 1-5)")
        for col in ("name", "what it does", "parameters 1..5", "source"):
            t.add_column(col)
        for name in selected:
            c = CORRUPTIONS[name]
            t.add_row(name, c.description, ", ".join(map(str, c.severity_params)), c.source)
        console.print(t)
        return
    import numpy as np
    import SimpleITK as sitk

    from .corruptions.preview import preview_grid
    from .data import map_intensity

    if not preview.is_file():
        raise AdvonnxError(f"{preview}: no such image file")
    try:
        img = sitk.ReadImage(str(preview))
    except RuntimeError:
        raise AdvonnxError(f"{preview}: SimpleITK cannot read this image; give a PNG, JPEG, NIfTI, MHA, NRRD or DICOM file") from None
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = arr[..., :3].mean(axis=-1)
    arr = np.squeeze(arr)
    if arr.ndim not in (2, 3):
        raise AdvonnxError(f"{preview}: image of shape {arr.shape} is neither 2-D nor 3-D")
    rule = "divide:255" if img.GetPixelID() in (sitk.sitkUInt8, sitk.sitkVectorUInt8) else "percentile:0.5-99.5"
    grid = preview_grid(map_intensity(arr.astype(np.float64), rule), selected, output)
    console.print(escape(f"wrote {output} ({grid.shape[1]}×{grid.shape[0]} px): rows {', '.join(selected)}; columns clean, severity 1-5"))


@app.command()
def doctor(
    seconds: Annotated[float, typer.Option("--seconds", help="Length of the speed check per device.")] = 5.0,
):
    """Versions, execution providers and whether they really work, CuPy, threads, memory, and a
    speed check of the default suite's model on each usable device.

    [bold]Example[/bold]

      advonnx doctor
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np
    import onnx
    import onnxruntime as ort
    from rich.table import Table

    from . import __version__
    from .backend import cuda_status

    t = Table(title="advonnx doctor", show_header=False)
    t.add_column("check", style="bold")
    t.add_column("result")
    t.add_row("advonnx", __version__)
    t.add_row("python", platform.python_version() + " on " + platform.platform())
    t.add_row("onnx / onnxruntime / numpy", f"{onnx.__version__} / {ort.__version__} / {np.__version__}")
    t.add_row("execution providers", ", ".join(ort.get_available_providers()))
    installed = {}
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed[dist] = version(dist)
        except PackageNotFoundError:
            pass
    if len(installed) == 2:
        t.add_row("[red]broken install[/red]",
                  escape("onnxruntime and onnxruntime-gpu are both installed and overwrite each other's module: "
                         "pip uninstall -y onnxruntime onnxruntime-gpu, then install only one (GPU: pip install 'advonnx[gpu]')"))
    else:
        t.add_row("onnxruntime package", ", ".join(f"{k} {v}" for k, v in installed.items()) or "?")
    usable, why = cuda_status(0)
    t.add_row("CUDA", "[green]usable[/green] (onnxruntime CUDA provider and CuPy on GPU 0)" if usable else escape(f"not used: {why}"))
    try:
        import cupy

        t.add_row("cupy", f"{cupy.__version__}")
    except Exception as err:  # import errors of a broken CuPy come in many kinds
        t.add_row("cupy", f"not available ({type(err).__name__}); attacks run on NumPy")
    threads = os.environ.get("ADVONNX_THREADS")
    t.add_row("cores / onnxruntime threads", f"{os.cpu_count()} / {threads or 'onnxruntime default (all physical cores)'}")
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        t.add_row("memory", f"{pages * size / 2**30:.1f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        from .model import load_model
        from .suite import load_suite

        path = load_suite("quick").models[0].path
        devices = ["cpu"] + (["cuda"] if usable else [])
        for dev in devices:
            m = load_model(path, device=dev)
            x = np.random.default_rng(0).uniform(0, 1, (64,) + tuple(m.spec.input_shape[1:])).astype(np.float32)
            if dev == "cuda":
                import cupy

                x = cupy.asarray(x)
            m.predict(x)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                m.predict(x)
                n += x.shape[0]
            t.add_row(f"speed on {dev}", f"{n / (time.perf_counter() - t0):,.0f} predictions/s "
                      f"({Path(path).stem}, batch 64, {m.execution_provider})")
        t.add_row("exact gradients", m.gradient_mode("auto", loss="ce"))
    except AdvonnxError as err:
        t.add_row("[red]default suite[/red]", escape(str(err)))
    console.print(t)


def _attacked_input(input_name: str | None, attack_inputs: str | None,
                    eps: str | None) -> tuple[str | None, str | None, str | None]:
    """``(input to attack, joint attack_inputs override, --eps)`` from ``--input``,
    ``--attack-inputs`` and ``--eps``: one name is ``--input``; several attack jointly
    (advonnx.joint), with per-input budgets ``a=0.01,b=0.05`` the first input's is the eps."""
    if attack_inputs is None:
        return input_name, None, eps
    from .joint import parse_attack_inputs

    pairs = parse_attack_inputs(attack_inputs)
    if len(pairs) == 1:
        if input_name and input_name != pairs[0][0]:
            raise AdvonnxError(f"--attack-inputs {attack_inputs!r}: give one input name (or use --input alone)")
        if pairs[0][1] is not None:
            raise AdvonnxError(f"--attack-inputs {attack_inputs!r}: one input takes its budget from --eps")
        return pairs[0][0], None, eps
    if input_name:
        raise AdvonnxError(f"--input {input_name} with --attack-inputs {attack_inputs}: name the attacked inputs once")
    if pairs[0][1] is not None:
        if eps is not None:
            raise AdvonnxError(f"--attack-inputs {attack_inputs!r} gives each input's budget: drop --eps")
        eps = attack_inputs.split(",")[0].partition("=")[2].strip()
    return None, attack_inputs, eps


def _is_usage_error(err: BaseException) -> bool:
    """A command-line parsing error from typer's click. Recognised by class name: typer >= 0.2x
    vendors click as ``typer._click`` (click itself may be absent), older typer uses click."""
    return any(cls.__name__ == "ClickException" for cls in type(err).__mro__)


def _usage_message(err) -> str:
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
        err_console.print(f"[red]internal error:[/red] {type(err).__name__}: {escape(str(err))} (run again with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
