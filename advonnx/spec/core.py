"""ModelSpec: the fields advonnx knows or guessed about a model, the layouts and output kinds
they take, and the layout arithmetic on them (see the package docstring for where values come
from)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

# N: batch, C: channels, D/H/W: spatial axes (W alone: the time axis of a 1-D signal), F: features.
# What a model's input and output can be: one Literal type each, its values as a tuple.
Layout = Literal["NCHW", "NHWC", "NCDHW", "NDHWC", "NCW", "NWC", "NF"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)
SIGNAL_LAYOUTS = ("NCW", "NWC")


def channels_first(layout: str) -> bool:
    """True when the channel axis is axis 1 (NCHW, NCDHW, NCW)."""
    return len(layout) > 2 and layout[1] == "C"


def channel_axis(layout: str, rank: int) -> int | None:
    """The channel axis of a batch of ``rank`` in ``layout`` (None for feature vectors)."""
    if layout == "NF":
        return None
    return 1 if channels_first(layout) else rank - 1


def layout_spatial_ndim(layout: str) -> int | None:
    """Spatial axes of ``layout``: 1 for signals, 2 for images, 3 for volumes; None for NF."""
    n = sum(c in "DHW" for c in layout)
    return n or None


ScoreKind = Literal["logits", "probabilities"]
SCORES: tuple[ScoreKind, ...] = get_args(ScoreKind)
Task = Literal["classification", "segmentation"]
TASKS: tuple[Task, ...] = get_args(Task)
OutputKind = Literal["softmax", "binary", "multilabel", "dense"]
OUTPUT_KINDS: tuple[OutputKind, ...] = get_args(OutputKind)
RANDOMIZED_VOTES = 11  # evaluations per decision of a randomized model (majority vote)
RANDOMIZED_EOT = 20  # gradient draws averaged per gradient of a randomized model (EOT)

# Fields a user may declare (metadata, sidecar, overrides) and how to parse them.
DECLARABLE = (
    "input_name",
    "output_name",
    "layout",
    "scores",
    "task",
    "class_names",
    "value_range",
    "scale",
    "mean",
    "std",
    "framework",
    "exporter",
    "dataset",
    "training",
    "threshold",
    "votes",
    "eot",
    "sampling_rate",
    "output_layout",
    "patch_size",
    "overlap",
    "blend",
    "logits_rule",
)


@dataclass
class ModelSpec:
    """Everything the attack engine needs to know about an ONNX model's interface.

    ``value_range`` is in the user's value units (after folding ``scale``, ``mean`` and ``std``
    in front of the graph): the model sees ``(x * scale - mean) / std``.
    """

    path: str
    input_name: str = ""
    output_name: str = ""
    input_shape: tuple = ()  # graph dims; None where dynamic
    input_dtype: str = "float32"  # what advonnx feeds the canonical graph
    input_integer: str = ""  # the file's integer input type (e.g. "uint8"), rounded to inside the graph
    # The model's other per-sample inputs, fed from the data and held fixed (never attacked):
    # (name, graph dims with None where dynamic, numpy dtype name) each.
    extra_inputs: tuple[tuple[str, tuple, str], ...] = ()
    layout: Layout = "NCHW"
    task: Task = "classification"
    scores: ScoreKind = "logits"
    output_kind: OutputKind = "softmax"
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    class_axis: int = 1  # in the canonical output
    value_range: tuple[float, float] = (0.0, 1.0)
    scale: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    fixed_batch: int | None = None
    threshold: float = 0.5  # multi-label decision threshold
    sampling_rate: float | None = None  # Hz, 1-D signals: what hertz-defined corruptions need
    output_layout: str = ""  # declared axes of the scores output (e.g. "TNC"); "" = batch-first as guessed
    patch_size: tuple[int, ...] = ()  # sliding-window inference on windows of this size (spatial, array order)
    overlap: float = 0.25  # sliding windows: overlap fraction
    blend: str = "constant"  # sliding windows: constant | gaussian
    label_output: str = ""  # the model's own decision output (int64 labels), when it has one
    # Logits rule: when the scores come from a final Softmax/LogSoftmax/Sigmoid (through
    # shape-only ops), losses, margins, gradients and query objectives use that node's input
    # (``attacked_output``, a tensor of the file's graph; "" = the scores themselves).
    logits_rule: bool = True
    attacked_output: str = ""
    attacked_op: str = ""  # the final op skipped (Softmax, LogSoftmax, Sigmoid)
    framework: str = "unknown"
    exporter: str = "unknown"
    producer: str = ""
    opset: int = 0
    dataset: str = ""
    training: str = ""
    # Randomized models: the random ops that affect the output (Dropout with training_mode true,
    # RandomNormal/RandomUniform(Like), Bernoulli, Multinomial), by op type; () = deterministic.
    randomized: tuple[str, ...] = ()
    # Evaluations per decision (majority vote) and gradient draws averaged per gradient (EOT);
    # 0 = automatic: 1 for deterministic models, RANDOMIZED_VOTES / RANDOMIZED_EOT for randomized ones.
    votes: int = 0
    eot: int = 0
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def spatial_shape(self) -> tuple[int, ...] | None:
        dims = self._spatial_dims()
        if dims is None or any(d is None for d in dims):
            return None
        return tuple(int(d) for d in dims)

    def _spatial_dims(self):
        shape = self.input_shape
        if self.layout == "NF" or len(shape) < 3:
            return None
        return tuple(shape[2:]) if channels_first(self.layout) else tuple(shape[1:-1])

    @property
    def channels(self) -> int | None:
        shape = self.input_shape
        if self.layout == "NF" or len(shape) < 3:
            return None
        return shape[1] if channels_first(self.layout) else shape[-1]

    @property
    def features(self) -> int | None:
        return self.input_shape[1] if self.layout == "NF" and len(self.input_shape) == 2 else None

    @property
    def attacked_scores(self) -> str:
        """What attacks' objectives see: ``logits`` (the input of a final Softmax/LogSoftmax/
        Sigmoid, or logit outputs) or ``probabilities`` (no such node: log-probabilities in float64)."""
        return "logits" if self.attacked_output else self.scores

    @property
    def decision_threshold(self) -> float:
        """Multi-label: the decision threshold on the attacked scores (``threshold`` on
        probabilities, its logit on the logits before a final Sigmoid, 0 on logit outputs)."""
        if self.attacked_scores == "probabilities":
            return self.threshold
        if self.scores == "probabilities":
            from ..losses import logit_threshold

            return logit_threshold(self.threshold)
        return 0.0

    @property
    def value_range_declared(self) -> bool:
        return self.sources.get("value_range", "assumed") != "assumed"

    def source(self, name: str) -> str:
        return self.sources.get(name, "graph")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OUTPUT_AXES = "NCDHWT"


def canonical_output_perm(output_layout: str, channels_first_input: bool) -> tuple[int, ...]:
    """Axis permutation taking a ``output_layout`` tensor to advonnx's canonical form: batch first,
    classes next to it (channels-first inputs) or last (channels-last inputs), positions in order."""
    n, c = output_layout.index("N"), output_layout.index("C")
    positions = [i for i, a in enumerate(output_layout) if a not in "NC"]
    return tuple([n, c, *positions] if channels_first_input or not positions else [n, *positions, c])


def output_perm(spec: ModelSpec) -> tuple[int, ...] | None:
    """The transpose a declared output layout needs (None when it is canonical already)."""
    if not spec.output_layout:
        return None
    perm = canonical_output_perm(spec.output_layout, channels_first(spec.layout) or spec.layout == "NF")
    return None if perm == tuple(range(len(perm))) else perm
