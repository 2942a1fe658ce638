"""The corruption contract: what a corruption is, and the one entry point that applies it.

A corruption owns only its idea: ``fn(x, param, rng, *, spatial_axes, value_range, spacing)``
returning the corrupted batch. :func:`apply_corruption` owns the contract around it: it checks
the name, severity, layout, value range and spacing, picks the severity's parameter, runs the
function in a floating dtype, and clips and casts the result back to the input's range and
dtype, so no corruption can leave the valid range or change the dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from advonnx.errors import AdvonnxError
from advonnx.xp import Random, namespace

LAYOUTS = ("NCHW", "NHWC", "NCDHW", "NDHWC", "NCW", "NWC")
#: what a corruption applies to: images and volumes (2-D/3-D layouts) or 1-D signals
MODALITIES = {"image": ("NCHW", "NHWC", "NCDHW", "NDHWC"), "signal": ("NCW", "NWC")}
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    """A natural corruption with five documented severities.

    name: registry key (also the ``attack`` column of a result row; its ``eps`` is the severity).
    description: one line.
    source: where the model and the parameters come from, and what was adapted.
    severity_params: five parameter values (or tuples) for severities 1..5.
    host_only: True when ``fn`` leaves the array namespace (JPEG coding runs in NumPy).
    fn: ``fn(x, param, rng, *, spatial_axes, value_range, spacing) -> x'``.
    modalities: what it applies to, keys of :data:`MODALITIES` (images/volumes, 1-D signals).
    needs_sampling_rate: a signal corruption defined in hertz or seconds (needs ``spacing``).
    """

    name: str
    description: str
    source: str
    severity_params: tuple
    host_only: bool
    fn: Callable
    modalities: tuple[str, ...] = ("image",)
    needs_sampling_rate: bool = False  # defined in hertz or seconds (signals): needs ``spacing``

    def fits(self, layout: str) -> bool:
        """Whether this corruption applies to batches in ``layout``."""
        return any(layout.upper() in MODALITIES[m] for m in self.modalities)

    def __post_init__(self):
        if len(self.severity_params) != len(SEVERITIES):
            raise ValueError(f"{self.name}: needs {len(SEVERITIES)} severity parameters")

    def __repr__(self) -> str:
        return f"Corruption({self.name!r})"


def spatial_axes_of(layout: str, ndim: int) -> tuple[int, ...]:
    """Axes of D (3-D only), H and W in ``layout``, in that order (W alone for a 1-D signal)."""
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise AdvonnxError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    layout = layout.upper()
    if len(layout) != ndim:
        raise AdvonnxError(f"layout {layout} needs a {len(layout)}-D batch but the array is {ndim}-D")
    return tuple(layout.index(c) for c in "DHW" if c in layout)


def _check_severity(severity) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise AdvonnxError(f"corruption severity must be an integer 1..5, not {severity!r}")
    return severity


def _check_value_range(value_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise AdvonnxError(f"value_range must be (low, high), not {value_range!r}") from None
    if not hi > lo:
        raise AdvonnxError(f"value_range must have low < high, not {value_range!r}")
    return lo, hi


def _check_spacing(spacing, n_spatial: int):
    if spacing is None:
        return None
    try:
        spacing = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise AdvonnxError(f"spacing must be one number per spatial axis, not {spacing!r}") from None
    if len(spacing) != n_spatial or min(spacing) <= 0:
        raise AdvonnxError(
            f"spacing must be {n_spatial} positive numbers (ordered D, H, W as in the layout; "
            "a signal's sample period in seconds), "
            f"not {spacing!r}"
        )
    return spacing


def apply_corruption_with(
    corruption: Corruption, x, severity: int, rng, *, layout: str, value_range=(0.0, 1.0), spacing=None
):
    """:func:`advonnx.corruptions.apply_corruption` for a :class:`Corruption` object."""
    severity = _check_severity(severity)
    spatial_axes = spatial_axes_of(layout, x.ndim)
    if not corruption.fits(layout):
        kinds = " and ".join(corruption.modalities)
        raise AdvonnxError(f"{corruption.name} applies to {kinds} batches, not to layout {layout.upper()}")
    lo, hi = _check_value_range(value_range)
    spacing = _check_spacing(spacing, len(spatial_axes))
    if isinstance(rng, int) and not isinstance(rng, bool):
        rng = Random(rng)
    xp = namespace(x)
    floating = x.dtype in (xp.float32, xp.float64)
    work = x if floating else xp.astype(x, xp.float32)
    out = corruption.fn(
        work,
        corruption.severity_params[severity - 1],
        rng,
        spatial_axes=spatial_axes,
        value_range=(lo, hi),
        spacing=spacing,
    )
    out = xp.clip(xp.astype(out, work.dtype), lo, hi)
    if not floating:
        out = xp.round(out)
    return xp.astype(out, x.dtype)
