"""``advonnx run``: parse the command line, build the suite (``Suite.with_overrides``), run it,
show the leaderboard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .errors import AdvonnxError

console = Console()
err_console = Console(stderr=True)


def run(
    suite: Annotated[
        str | None, typer.Argument(help="Suite TOML, or a built-in suite name (quick, full). Default: quick.")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="ONNX model(s) to attack instead of the suite's.")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Data: .npz (x, y), image folder (class subfolders or flat), CSV manifest, or one image/volume.",
        ),
    ] = None,
    attack: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            "--attacks",
            "-a",
            help='Attack name(s), comma-separated, each with optional settings: "pgd(steps=50, restarts=5),square(max_queries=5000)" (the keys of a suite TOML attack: `advonnx attacks` lists them; also norm, eps, targeted).',
        ),
    ] = None,
    eps: Annotated[
        str | None, typer.Option("--eps", help="Budget(s) in the model's value units, e.g. 2/255,8/255 or 0.03.")
    ] = None,
    norm: Annotated[str | None, typer.Option("--norm", help="linf or l2.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Iterations of iterative attacks.")] = None,
    max_queries: Annotated[
        int | None,
        typer.Option(
            "--max-queries", help="Query budget per sample of the query-based attacks (square, hsj, nes, spsa)."
        ),
    ] = None,
    worst_case: Annotated[
        bool,
        typer.Option(
            "--worst-case",
            help="AutoAttack style: attacks in the listed order, each later one only on the samples still robust at its norm and eps; the leaderboard adds the combined worst case.",
        ),
    ] = False,
    no_masking_checks: Annotated[
        bool,
        typer.Option(
            "--no-masking-checks",
            help="Do not add the extra attacks of the gradient-masking checks (a Square, a 5x-steps PGD and a PGD at half the value range, linf, on the first samples of each classifier with gradient attacks).",
        ),
    ] = False,
    transfer_matrix: Annotated[
        bool,
        typer.Option(
            "--transfer-matrix",
            help="Feed every model's adversarial examples to every other model of its dataset (same inputs) and show the source × target transfer rates after the leaderboard and in the report.",
        ),
    ] = False,
    targeted: Annotated[
        bool,
        typer.Option(
            "--targeted", help="Targeted attacks: each sample gets a random target class other than its label (seeded)."
        ),
    ] = False,
    target_map: Annotated[
        str | None,
        typer.Option(
            "--target-map",
            help="Targeted attacks in the named directions only (implies --targeted): single-label SOURCE:TARGET by class name or index, e.g. malignant:benign,tumour:notumor (samples of other classes are not attacked; the leaderboard shows the flip rate per direction); multi-label FINDING:present|absent, e.g. pneumothorax:absent (several entries must all hold).",
        ),
    ] = None,
    costs: Annotated[
        Path | None,
        typer.Option(
            "--costs",
            help="Cost matrix CSV (header: predicted class names; first column: true class names; cells: costs >= 0); the leaderboard shows the expected cost per sample clean vs under attack.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N samples of each dataset.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of every random draw of the run.")] = None,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", help="Rows per onnxruntime call (small batches are often faster on CPU caches)."),
    ] = 64,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    gradient: Annotated[str | None, typer.Option("--gradient", help="auto, exact or estimated.")] = None,
    input_name: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="Model input to attack, if several (default: the only spatial one); the others are read per sample from the data (npz arrays or manifest columns named after them) and held fixed.",
        ),
    ] = None,
    attack_inputs: Annotated[
        str | None,
        typer.Option(
            "--attack-inputs",
            help="Inputs to attack jointly, comma-separated, each within --eps (signal,features), or each with its own budget in its value units (signal=0.01,features=0.05; then no --eps). One name: same as --input.",
        ),
    ] = None,
    output_name: Annotated[
        str | None, typer.Option("--output", help="Model output holding the scores, if several.")
    ] = None,
    value_range: Annotated[
        str | None, typer.Option("--value-range", help="Model input value range LO,HI (default: declared, else 0,1).")
    ] = None,
    votes: Annotated[
        int | None,
        typer.Option("--votes", help="Evaluations per decision, majority vote (default: 1; 11 for randomized models)."),
    ] = None,
    eot: Annotated[
        int | None,
        typer.Option("--eot", help="Gradient draws averaged per gradient, EOT (default: 1; 20 for randomized models)."),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option("--layout", help="NCHW, NHWC, NCDHW, NDHWC, NCW, NWC (1-D signals) or NF if the guess is wrong."),
    ] = None,
    sampling_rate: Annotated[
        str | None,
        typer.Option(
            "--sampling-rate",
            help="1-D signals: samples per second (Hz), for powerline, baseline_wander and electrode_motion.",
        ),
    ] = None,
    output_layout: Annotated[
        str | None,
        typer.Option(
            "--output-layout",
            help="Axes of the scores output if not batch-first, e.g. TNC (sequence-first recurrent nets): N batch, C classes, D/H/W/T positions.",
        ),
    ] = None,
    patch_size: Annotated[
        str | None,
        typer.Option(
            "--patch-size",
            help="Segmentation: run the model on overlapping windows of this size (e.g. 96,96,96) of larger images or volumes and stitch the scores (MONAI's sliding windows); attacks perturb the whole volume.",
        ),
    ] = None,
    overlap: Annotated[
        str | None, typer.Option("--overlap", help="Sliding windows: overlap fraction in [0, 1) (default 0.25).")
    ] = None,
    blend: Annotated[
        str | None, typer.Option("--blend", help="Sliding windows: constant or gaussian (default constant).")
    ] = None,
    orientation: Annotated[
        str | None,
        typer.Option(
            "--orientation",
            help="Reorient every volume (and mask) to this code before use, e.g. RAS or LPS (DICOM convention: the direction each axis increases toward). Default: as stored.",
        ),
    ] = None,
    spacing: Annotated[
        str | None,
        typer.Option(
            "--spacing",
            help="Resample every image file (linear) and mask (nearest) to this voxel size in mm, array order, e.g. 1.0,1.0,1.0 (SimpleITK, after --orientation). Default: as stored.",
        ),
    ] = None,
    intensity: Annotated[
        str | None,
        typer.Option(
            "--intensity",
            help="How image intensities map to the model's value range: auto (default), none, minmax, percentile:LO-HI, window:LO,HI (e.g. CT window:-1000,400) or divide:K (e.g. divide:4095).",
        ),
    ] = None,
    class_names: Annotated[
        str | None,
        typer.Option(
            "--class-names",
            help="The model's classes in output order, comma-separated (e.g. benign,malignant); class subfolders and manifest labels are matched to them.",
        ),
    ] = None,
    corruptions: Annotated[
        str | None,
        typer.Option(
            "--corruptions", help="Natural corruptions too: all or NAME[,NAME...] (see `advonnx corruptions`)."
        ),
    ] = None,
    severities: Annotated[
        str | None, typer.Option("--severities", help="Corruption severities, e.g. 1-5 or 1,3,5.")
    ] = None,
    save_examples: Annotated[
        int | None,
        typer.Option("--save-examples", help="Keep adversarial examples of the first K samples per model × setting."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results folder; each run writes OUT/<run_id>/.")] = Path(
        "advonnx-results"
    ),
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish the latest run in OUT with the same settings.")
    ] = False,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Run on Dask: local:N (N local workers) or tcp://HOST:PORT (a scheduler). Needs the dask extra.",
        ),
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option("--chunk-size", help="Samples per result chunk (the unit of crash safety and resume).")
    ] = None,
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

    from .leaderboard import render
    from .runner import Runner
    from .suite import Suite, load_suite

    if model and not data and suite is None:
        raise AdvonnxError("--model needs --data (an .npz, image folder, CSV manifest or image file)")
    base = (
        load_suite(suite or "quick")
        if (suite or not model)
        else Suite(name="adhoc", models=[], datasets=[], attacks=[])
    )
    s = base.with_overrides(
        models=model,
        data=data,
        attack=attack,
        eps=eps,
        norm=norm,
        steps=steps,
        max_queries=max_queries,
        worst_case=worst_case,
        masking_checks=not no_masking_checks,
        transfer_matrix=transfer_matrix,
        targeted=targeted,
        target_map=target_map,
        costs=costs,
        limit=limit,
        seed=seed,
        gradient=gradient,
        input_name=input_name,
        attack_inputs=attack_inputs,
        output_name=output_name,
        value_range=value_range,
        votes=votes,
        eot=eot,
        layout=layout,
        sampling_rate=sampling_rate,
        output_layout=output_layout,
        patch_size=patch_size,
        overlap=overlap,
        blend=blend,
        orientation=orientation,
        spacing=spacing,
        intensity=intensity,
        class_names=class_names,
        corruptions=corruptions,
        severities=severities,
        save_examples=save_examples,
        chunk_size=chunk_size,
    )
    progress = (
        None
        if quiet
        else Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
    )
    t0 = time.perf_counter()
    runner = Runner(
        s,
        out=out,
        resume=resume,
        device=device,
        batch_size=batch_size,
        progress=progress,
        cluster=cluster,
        log=lambda m: err_console.print(f"[yellow]{escape(m)}[/yellow]", highlight=False),
    )
    if progress is not None:
        with progress:
            folder, table = runner.run()
    else:
        folder, table = runner.run()
    render(table, console, headline=s.headline, title=escape(f"advonnx · suite {s.name}"))  # costs: in the metadata
    console.print(f"[green]{table.num_rows} rows[/green] in {escape(str(folder))} ({time.perf_counter() - t0:.1f} s)")
