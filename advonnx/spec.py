"""ModelSpec: what advonnx knows or guessed about a model, and where each fact came from.

Precedence, lowest to highest: graph guess < ONNX ``metadata_props`` (keys ``advonnx.*``) <
sidecar ``MODEL.onnx.advonnx.toml`` < explicit overrides (CLI flags, ``load_model(**overrides)``).
Every field records its source so ``advonnx inspect`` and the results can show what was
declared and what was assumed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .errors import ModelError

# N: batch, C: channels, D/H/W: spatial axes (W alone: the time axis of a 1-D signal), F: features.
LAYOUTS = ("NCHW", "NHWC", "NCDHW", "NDHWC", "NCW", "NWC", "NF")
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
SCORES = ("logits", "probabilities")
TASKS = ("classification", "segmentation")
OUTPUT_KINDS = ("softmax", "binary", "multilabel", "dense")
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
    layout: str = "NCHW"
    task: str = "classification"
    scores: str = "logits"
    output_kind: str = "softmax"
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
            from .losses import logit_threshold

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


def parse_output_layout(value: Any, origin: str) -> str:
    """An output layout: letters N (batch), C (classes) and D/H/W/T (positions), each once, e.g.
    ``NC``, ``TNC`` (sequence-first, as recurrent nets emit) or ``NHWC``."""
    text = str(value).strip().upper()
    if (not text or any(c not in OUTPUT_AXES for c in text) or len(set(text)) != len(text)
            or "N" not in text or "C" not in text):
        raise ModelError(
            f"output layout {value!r} from {origin}: use the letters N (batch), C (classes) and D, H, W or T "
            "(positions), each once, e.g. NC, TNC or NCHW"
        )
    return text


def canonical_output_perm(output_layout: str, channels_first_input: bool) -> tuple[int, ...]:
    """Axis permutation taking a ``output_layout`` tensor to advonnx's canonical form: batch first,
    classes next to it (channels-first inputs) or last (channels-last inputs), positions in order."""
    n, c = output_layout.index("N"), output_layout.index("C")
    positions = [i for i, a in enumerate(output_layout) if a not in "NC"]
    return tuple([n, c, *positions] if channels_first_input or not positions else [n, *positions, c])


def parse_value_range(value: Any) -> tuple[float, float]:
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    else:
        parts = list(value)
    try:
        lo, hi = (float(_fraction(p)) for p in parts)
    except (TypeError, ValueError):
        raise ModelError(f"value range {value!r} is not two numbers; write it as 'LO,HI', e.g. '0,1'") from None
    if not lo < hi:
        raise ModelError(f"value range {value!r} must have LO < HI")
    return (lo, hi)


def _fraction(text: Any) -> float:
    if isinstance(text, str) and "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def _floats(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if isinstance(value, (int, float)):
        value = [value]
    return tuple(float(v) for v in value)


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return tuple(str(v) for v in value)


def normalize_declared(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    """Parse and validate declared fields from metadata, a sidecar or overrides."""
    out: dict[str, Any] = {}
    aliases = {"input": "input_name", "output": "output_name", "classes": "class_names"}
    for key, value in raw.items():
        if value is None:
            continue
        key = aliases.get(key, key)
        if key not in DECLARABLE:
            if origin == "metadata":
                continue  # other tools' metadata keys are not ours to judge
            raise ModelError(
                f"unknown model setting {key!r} in {origin}; known: {', '.join(DECLARABLE)}"
            )
        if key == "layout":
            value = str(value).upper()
            if value not in LAYOUTS:
                raise ModelError(f"layout {value!r} from {origin} is not one of {', '.join(LAYOUTS)}")
        elif key == "scores":
            value = str(value).lower()
            if value in ("probs", "probability", "softmax", "sigmoid"):
                value = "probabilities"
            if value not in SCORES:
                raise ModelError(f"scores {value!r} from {origin}: use 'logits' or 'probabilities'")
        elif key == "task":
            value = str(value).lower()
            if value not in TASKS:
                raise ModelError(f"task {value!r} from {origin}: use 'classification' or 'segmentation'")
        elif key == "value_range":
            value = parse_value_range(value)
        elif key in ("mean", "std"):
            value = _floats(value)
            if key == "std" and any(v == 0 for v in value):
                raise ModelError(f"std from {origin} contains 0; a normalization cannot divide by 0")
        elif key == "logits_rule":
            if isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ModelError(f"logits_rule {value!r} from {origin}: use true or false")
                value = value.strip().lower() in ("true", "1", "yes", "on")
            else:
                value = bool(value)
        elif key in ("scale", "threshold"):
            value = float(_fraction(value))
        elif key in ("votes", "eot"):
            try:
                value = int(value)
            except (TypeError, ValueError):
                value = -1
            if value < 0:
                raise ModelError(f"{key} from {origin} must be an integer >= 0 (0 = automatic)")
        elif key == "patch_size":
            try:
                value = tuple(int(v) for v in (value.replace("x", ",").split(",") if isinstance(value, str) else value))
            except (TypeError, ValueError):
                raise ModelError(f"patch_size {value!r} from {origin}: give window sizes, e.g. 96,96,96") from None
            if not value or min(value) < 1:
                raise ModelError(f"patch_size {value!r} from {origin}: give positive window sizes, e.g. 96,96,96")
        elif key == "overlap":
            value = float(_fraction(value))
            if not 0 <= value < 1:
                raise ModelError(f"overlap {value!r} from {origin} must be in [0, 1)")
        elif key == "blend":
            value = str(value).lower()
            if value not in ("constant", "gaussian"):
                raise ModelError(f"blend {value!r} from {origin}: use 'constant' or 'gaussian'")
        elif key == "output_layout":
            value = parse_output_layout(value, origin)
        elif key == "sampling_rate":
            value = float(_fraction(value))
            if not value > 0:
                raise ModelError(f"sampling_rate from {origin} must be a positive number of hertz, not {value!r}")
        elif key == "class_names":
            value = _names(value)
        else:
            value = str(value)
        out[key] = value
    return out


def read_metadata(model_proto) -> dict[str, Any]:
    """``advonnx.*`` entries of the model's metadata_props, prefix removed."""
    raw = {}
    for prop in model_proto.metadata_props:
        if prop.key.startswith("advonnx."):
            raw[prop.key[len("advonnx."):]] = prop.value
    return normalize_declared(raw, "metadata")


def sidecar_path(model_path: str | Path) -> Path:
    return Path(str(model_path) + ".advonnx.toml")


def read_sidecar(model_path: str | Path) -> dict[str, Any]:
    path = sidecar_path(model_path)
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{path}: not valid TOML ({err}); fix or remove the sidecar file") from None
    return normalize_declared(raw, f"sidecar {path.name}")
