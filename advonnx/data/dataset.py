"""What the model expects (:class:`InputExpectation`) and what the loaders give (:class:`Dataset`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from advonnx.errors import AdvonnxError

#: layout -> number of spatial axes (None: tabular feature vectors)
LAYOUTS: dict[str, int | None] = {"NCHW": 2, "NHWC": 2, "NCDHW": 3, "NDHWC": 3, "NCW": 1, "NWC": 1, "NF": None}


@dataclass(frozen=True)
class InputExpectation:
    """What the model wants, from the model spec.

    ``spatial_shape`` is ``(H, W)`` or ``(D, H, W)`` in array order; an entry may be ``None``
    (that axis is dynamic) or the whole tuple ``None``. For layout ``"NF"`` it is ``(F,)``, the
    number of features, and ``channels`` is ignored.
    """

    layout: str
    spatial_shape: tuple[int, ...] | None
    channels: int | None
    value_range: tuple[float, float] = (0.0, 1.0)
    task: str = "classification"
    dtype: str = "float32"
    #: multi-label models (independent sigmoids): the number of findings K; labels are then
    #: (N, K) 0/1 vectors (npz ``y``, one manifest column per finding). 0: one label per sample.
    findings: int = 0

    def __post_init__(self) -> None:
        layout = str(self.layout).upper()
        if layout not in LAYOUTS:
            raise AdvonnxError(f"unknown input layout {self.layout!r}; use one of {', '.join(LAYOUTS)}")
        object.__setattr__(self, "layout", layout)
        if self.spatial_shape is not None:
            shape = tuple(None if s is None or int(s) <= 0 else int(s) for s in self.spatial_shape)
            nd = LAYOUTS[layout] or 1
            if len(shape) != nd:
                raise AdvonnxError(
                    f"input layout {layout} needs a spatial shape of {nd} axes, got {self.spatial_shape!r}; "
                    "fix the model spec's input shape"
                )
            object.__setattr__(self, "spatial_shape", None if all(s is None for s in shape) else shape)
        if self.channels is not None:
            ch = int(self.channels)
            object.__setattr__(self, "channels", ch if ch > 0 else None)
        lo, hi = (float(v) for v in self.value_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise AdvonnxError(
                f"value range {self.value_range!r} is not an interval lo < hi; fix the model spec's value_range"
            )
        object.__setattr__(self, "value_range", (lo, hi))
        if self.task not in ("classification", "segmentation"):
            raise AdvonnxError(f"unknown task {self.task!r}; use 'classification' or 'segmentation'")
        try:
            dt = np.dtype(self.dtype)
        except TypeError as e:
            raise AdvonnxError(f"unknown input dtype {self.dtype!r}; use e.g. 'float32'") from e
        if dt.kind not in "uif":
            raise AdvonnxError(f"input dtype {self.dtype!r} is not numeric; use e.g. 'float32'")

    @property
    def spatial_ndim(self) -> int | None:
        """1 for signals, 2 or 3 for images, None for tabular ("NF")."""
        return LAYOUTS[self.layout]

    @property
    def channels_first(self) -> bool:
        return self.layout in ("NCHW", "NCDHW", "NCW")

    def shape_str(self) -> str:
        """The expected batch shape, e.g. ``(N, 1, 32, 32) [NCHW]``; ``?`` marks a dynamic axis."""

        def s(v):
            return "?" if v is None else str(v)

        nd = self.spatial_ndim
        if nd is None:
            f = self.spatial_shape[0] if self.spatial_shape else None
            return f"(N, {s(f)}) [NF]"
        sp = list(self.spatial_shape) if self.spatial_shape else [None] * nd
        c = s(self.channels)
        dims = [c, *map(s, sp)] if self.channels_first else [*map(s, sp), c]
        return f"(N, {', '.join(dims)}) [{self.layout}]"


@dataclass
class Dataset:
    """Samples ready for the model: ``x`` in its layout, dtype and value range."""

    #: stacked ``(N, ...)`` or, streamed or of mixed sizes, a :class:`~advonnx.data.stream.SampleArray`
    x: np.ndarray
    y: np.ndarray | None
    sample_ids: list[str]
    spacing: list[tuple[float, ...]] | None
    skipped: list[tuple[str, str]]
    description: dict[str, str]
    #: class names by label index when known (class folders, names in a manifest, npz
    #: ``class_names``, or given by the caller); an addition to the frozen contract.
    class_names: list[str] | None = field(default=None)
    #: a model's other inputs (not attacked, held fixed): name -> one row per sample
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    #: group id per sample (patient / subject / volume / study): samples of one group are not
    #: independent, and intervals resample groups. None: each sample is its own group.
    groups: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def blocks(self, size: int, stop: int | None = None):
        """``(start, stop)`` ranges of at most ``size`` samples of one size covering the first
        ``stop`` samples (all by default): the batches a run reads, one at a time."""
        stop = len(self) if stop is None else min(int(stop), len(self))
        if hasattr(self.x, "blocks"):  # a SampleArray: samples may differ in size
            yield from self.x.blocks(size, stop)
            return
        for start in range(0, stop, max(1, int(size))):
            yield start, min(stop, start + max(1, int(size)))

    def sample_shape(self, i: int) -> tuple[int, ...]:
        """Sample ``i``'s array shape in the model's layout (without the sample axis)."""
        if hasattr(self.x, "sample_shapes"):
            return tuple(int(v) for v in self.x.sample_shapes[i])
        return tuple(self.x.shape[1:])

    def subset(self, indices) -> Dataset:
        """The samples at ``indices`` (ints, a slice or a boolean mask), in that order."""
        idx = np.arange(len(self))[indices]
        idx = np.atleast_1d(idx).astype(np.int64)

        def pick(a):
            return a.take(idx) if hasattr(a, "take") else a[idx]

        return replace(
            self,
            x=pick(self.x),
            y=None if self.y is None else pick(self.y),
            sample_ids=[self.sample_ids[i] for i in idx],
            spacing=None if self.spacing is None else [self.spacing[i] for i in idx],
            skipped=list(self.skipped),
            description=dict(self.description),
            class_names=None if self.class_names is None else list(self.class_names),
            extras={k: v[idx] for k, v in self.extras.items()},
            groups=None if self.groups is None else [self.groups[i] for i in idx],
        )

    def block(self, start: int, stop: int) -> Dataset:
        """Samples ``start:stop`` holding only their references, not the whole dataset's (a streamed
        folder's block source keeps just these files): what a Dask worker is sent to read itself."""
        sub = self.subset(slice(start, stop))

        def detach(a):
            return a.detach() if hasattr(a, "detach") else a

        return replace(sub, x=detach(sub.x), y=None if sub.y is None else detach(sub.y), skipped=[])

    def __repr__(self) -> str:  # arrays would flood the terminal
        y = "None" if self.y is None else f"{tuple(self.y.shape)} {self.y.dtype}"
        return (
            f"Dataset(n={len(self)}, x={tuple(self.x.shape)} {self.x.dtype}, y={y}, "
            f"skipped={len(self.skipped)}, source={self.description.get('source', '?')!r})"
        )
