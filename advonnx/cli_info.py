"""``advonnx inspect``, ``attacks``, ``corruptions`` and ``doctor``: what advonnx knows about
a model, its attacks and corruptions, and this machine."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .errors import AdvonnxError

console = Console()


def inspect(
    model: Annotated[Path, typer.Argument(help="The ONNX model.")],
    input_name: Annotated[str | None, typer.Option("--input", help="The input to attack, if several.")] = None,
    output_name: Annotated[str | None, typer.Option("--output")] = None,
    value_range: Annotated[str | None, typer.Option("--value-range")] = None,
    layout: Annotated[str | None, typer.Option("--layout")] = None,
    sampling_rate: Annotated[str | None, typer.Option("--sampling-rate")] = None,
    output_layout: Annotated[
        str | None, typer.Option("--output-layout", help="e.g. TNC for a sequence-first output.")
    ] = None,
    patch_size: Annotated[str | None, typer.Option("--patch-size", help="Sliding-window size, e.g. 96,96,96.")] = None,
):
    """Show what advonnx found or guessed about a model, where each fact came from, and gradient support.

    [bold]Example[/bold]

      advonnx inspect vendor_model.onnx
    """
    from rich.table import Table

    from .factory import load_model

    overrides: dict[str, Any] = {
        k: v
        for k, v in (
            ("input_name", input_name),
            ("output_name", output_name),
            ("value_range", value_range),
            ("layout", layout),
            ("sampling_rate", sampling_rate),
            ("output_layout", output_layout),
            ("patch_size", patch_size),
        )
        if v is not None
    }
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
        attacked = (
            f"{s.output_name!r} ({s.attacked_scores}"
            + ("; log-probabilities in float64" if s.attacked_scores == "probabilities" else "")
            + ")"
        )
    for name, value, src in (
        (
            "input",
            f"{s.input_name} {shape} "
            + (
                f"{s.input_integer} (fed as {s.input_dtype}, rounded in the graph)"
                if s.input_integer
                else s.input_dtype
            )
            + (" (attacked)" if s.extra_inputs else ""),
            s.source("input_name"),
        ),
        *(
            (
                "held fixed",
                f"{name} ({', '.join('?' if d is None else str(d) for d in dims)}) {dtype}: per sample from the "
                "data (npz array or manifest column of that name), not attacked",
                "graph",
            )
            for name, dims, dtype in s.extra_inputs
        ),
        (
            "output",
            s.output_name + (f" (declared layout {s.output_layout}, read batch-first)" if s.output_layout else ""),
            s.source("output_name"),
        ),
        ("layout", s.layout + (" (1-D signal)" if s.layout in ("NCW", "NWC") else ""), s.source("layout")),
        *(
            [
                (
                    "sampling rate",
                    f"{s.sampling_rate:g} Hz" if s.sampling_rate else "not declared (--sampling-rate)",
                    s.sources.get("sampling_rate", "-"),
                )
            ]
            if s.layout in ("NCW", "NWC")
            else []
        ),
        (
            "task",
            s.task
            + (
                f" (multi-label: {s.num_classes} findings, independent sigmoids; a finding is present when "
                + (f"p > {s.threshold:g})" if s.scores == "probabilities" else "its logit > 0)")
                if s.output_kind == "multilabel"
                else ""
            ),
            s.source("task"),
        ),
        ("scores", f"{s.scores} ({s.output_kind})", s.source("scores")),
        (
            "findings" if s.output_kind == "multilabel" else "classes",
            f"{s.num_classes}: {', '.join(s.class_names)}",
            s.source("class_names"),
        ),
        ("value range", f"[{s.value_range[0]:g}, {s.value_range[1]:g}]", s.sources.get("value_range", "assumed")),
        ("preprocessing", f"scale={s.scale:g} mean={list(s.mean) or '-'} std={list(s.std) or '-'}", s.source("mean")),
        (
            "batch",
            "dynamic" if s.fixed_batch is None else f"fixed at {s.fixed_batch} (advonnx batches internally)",
            "graph",
        ),
        (
            "framework",
            f"{s.framework} ({s.exporter}); producer {s.producer or '?'}; opset {s.opset}",
            s.source("framework"),
        ),
        ("attacked tensor", attacked, "logits rule" if s.logits_rule else "logits rule off"),
        ("gradient", gradient, "autodiff"),
        (
            "randomized",
            (
                f"yes: {', '.join(s.randomized)}; decisions: majority of {m.votes} evaluations, gradients: "
                f"mean of {m.eot} draws (EOT)"
            )
            if s.randomized
            else f"no (votes {m.votes}, eot {m.eot})"
            if m.votes > 1 or m.eot > 1
            else "no",
            "graph",
        ),
        ("execution provider", m.execution_provider + (f" ({m.cuda_note})" if m.cuda_note else ""), "onnxruntime"),
    ):
        t.add_row(name, escape(str(value)), escape(str(src)))
    console.print(t)
    for note in s.notes:
        console.print(f"[yellow]•[/yellow] {escape(note)}")


def list_attacks() -> None:
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
    console.print(
        "[dim]eps is in the model's value units (e.g. 8/255 for images in [0, 1]); jsma's theta and dag's gamma are fractions of the value-range width (the same attack on [0, 1] and [0, 255] models); gradient attacks use exact gradients when the graph allows, else NES estimates; losses and query objectives are on the logits before a final Softmax/Sigmoid (decisions from the output); multi-label models (independent sigmoids): fgsm, bim, pgd, apgd, square, nes and spsa, with ce read as per-finding binary cross-entropy and margin as the worst finding's margin; joint attacks on several inputs (--attack-inputs): fgsm, bim, pgd, apgd and square.[/dim]"
    )
    console.print(
        "[dim]"
        + escape(
            'Set them per attack: advonnx run --attack "pgd(steps=50, restarts=5),square(max_queries=5000)"'
            ' (also norm, eps=[1/255, 2/255], targeted=true, target_map="malignant:benign").'
        )
        + "[/dim]"
    )


def _fmt_default(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return repr(v)


def list_corruptions(
    preview: Annotated[
        Path | None, typer.Option("--preview", help="An image or volume to show under every corruption and severity.")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file for the preview grid.")] = Path(
        "corruptions.png"
    ),
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
        raise AdvonnxError(
            f"{preview}: SimpleITK cannot read this image; give a PNG, JPEG, NIfTI, MHA, NRRD or DICOM file"
        ) from None
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = arr[..., :3].mean(axis=-1)
    arr = np.squeeze(arr)
    if arr.ndim not in (2, 3):
        raise AdvonnxError(f"{preview}: image of shape {arr.shape} is neither 2-D nor 3-D")
    rule = "divide:255" if img.GetPixelID() in (sitk.sitkUInt8, sitk.sitkVectorUInt8) else "percentile:0.5-99.5"
    grid = preview_grid(map_intensity(arr.astype(np.float64), rule), selected, output)
    console.print(
        escape(
            f"wrote {output} ({grid.shape[1]}×{grid.shape[0]} px): rows {', '.join(selected)}; columns clean, severity 1-5"
        )
    )


def doctor(seconds: Annotated[float, typer.Option("--seconds", help="Length of the speed check per device.")] = 5.0):
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
        t.add_row(
            "[red]broken install[/red]",
            escape(
                "onnxruntime and onnxruntime-gpu are both installed and overwrite each other's module: "
                "pip uninstall -y onnxruntime onnxruntime-gpu, then install only one (GPU: pip install 'advonnx[gpu]')"
            ),
        )
    else:
        t.add_row("onnxruntime package", ", ".join(f"{k} {v}" for k, v in installed.items()) or "?")
    usable, why = cuda_status(0)
    t.add_row(
        "CUDA",
        "[green]usable[/green] (onnxruntime CUDA provider and CuPy on GPU 0)" if usable else escape(f"not used: {why}"),
    )
    try:
        import cupy

        t.add_row("cupy", f"{cupy.__version__}")
    except Exception as err:  # import errors of a broken CuPy come in many kinds
        t.add_row("cupy", f"not available ({type(err).__name__}); attacks run on NumPy")
    threads = os.environ.get("ADVONNX_THREADS")
    t.add_row(
        "cores / onnxruntime threads", f"{os.cpu_count()} / {threads or 'onnxruntime default (all physical cores)'}"
    )
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        t.add_row("memory", f"{pages * size / 2**30:.1f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        from .factory import load_model
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
            t.add_row(
                f"speed on {dev}",
                f"{n / (time.perf_counter() - t0):,.0f} predictions/s "
                f"({Path(path).stem}, batch 64, {m.execution_provider})",
            )
        t.add_row("exact gradients", m.gradient_mode("auto", loss="ce"))
    except AdvonnxError as err:
        t.add_row("[red]default suite[/red]", escape(str(err)))
    console.print(t)
