"""Declared model facts: ``advonnx.*`` metadata, the sidecar ``MODEL.onnx.advonnx.toml`` and
overrides, each parsed and checked into spec fields (one parser per field)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib

from ..errors import ModelError
from .core import DECLARABLE, LAYOUTS, OUTPUT_AXES, SCORES, TASKS


def parse_output_layout(value: Any, origin: str) -> str:
    """An output layout: letters N (batch), C (classes) and D/H/W/T (positions), each once, e.g.
    ``NC``, ``TNC`` (sequence-first, as recurrent nets emit) or ``NHWC``."""
    text = str(value).strip().upper()
    if (
        not text
        or any(c not in OUTPUT_AXES for c in text)
        or len(set(text)) != len(text)
        or "N" not in text
        or "C" not in text
    ):
        raise ModelError(
            f"output layout {value!r} from {origin}: use the letters N (batch), C (classes) and D, H, W or T "
            "(positions), each once, e.g. NC, TNC or NCHW"
        )
    return text


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


def _layout(value: Any, origin: str) -> str:
    value = str(value).upper()
    if value not in LAYOUTS:
        raise ModelError(f"layout {value!r} from {origin} is not one of {', '.join(LAYOUTS)}")
    return value


def _scores(value: Any, origin: str) -> str:
    value = str(value).lower()
    if value in ("probs", "probability", "softmax", "sigmoid"):
        value = "probabilities"
    if value not in SCORES:
        raise ModelError(f"scores {value!r} from {origin}: use 'logits' or 'probabilities'")
    return value


def _task(value: Any, origin: str) -> str:
    value = str(value).lower()
    if value not in TASKS:
        raise ModelError(f"task {value!r} from {origin}: use 'classification' or 'segmentation'")
    return value


def _mean(value: Any, origin: str) -> tuple[float, ...]:
    return _floats(value)


def _std(value: Any, origin: str) -> tuple[float, ...]:
    value = _floats(value)
    if any(v == 0 for v in value):
        raise ModelError(f"std from {origin} contains 0; a normalization cannot divide by 0")
    return value


def _logits_rule(value: Any, origin: str) -> bool:
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ModelError(f"logits_rule {value!r} from {origin}: use true or false")
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _number(value: Any, origin: str) -> float:
    return float(_fraction(value))


def _count(key: str) -> Callable[[Any, str], int]:
    def parse(value: Any, origin: str) -> int:
        try:
            value = int(value)
        except (TypeError, ValueError):
            value = -1
        if value < 0:
            raise ModelError(f"{key} from {origin} must be an integer >= 0 (0 = automatic)")
        return value

    return parse


def _patch_size(value: Any, origin: str) -> tuple[int, ...]:
    try:
        value = tuple(int(v) for v in (value.replace("x", ",").split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ModelError(f"patch_size {value!r} from {origin}: give window sizes, e.g. 96,96,96") from None
    if not value or min(value) < 1:
        raise ModelError(f"patch_size {value!r} from {origin}: give positive window sizes, e.g. 96,96,96")
    return value


def _overlap(value: Any, origin: str) -> float:
    value = float(_fraction(value))
    if not 0 <= value < 1:
        raise ModelError(f"overlap {value!r} from {origin} must be in [0, 1)")
    return value


def _blend(value: Any, origin: str) -> str:
    value = str(value).lower()
    if value not in ("constant", "gaussian"):
        raise ModelError(f"blend {value!r} from {origin}: use 'constant' or 'gaussian'")
    return value


def _sampling_rate(value: Any, origin: str) -> float:
    value = float(_fraction(value))
    if not value > 0:
        raise ModelError(f"sampling_rate from {origin} must be a positive number of hertz, not {value!r}")
    return value


# How each declarable field is parsed and checked (``value, origin -> value``); others are text.
PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "layout": _layout,
    "scores": _scores,
    "task": _task,
    "value_range": lambda value, origin: parse_value_range(value),
    "mean": _mean,
    "std": _std,
    "logits_rule": _logits_rule,
    "scale": _number,
    "threshold": _number,
    "votes": _count("votes"),
    "eot": _count("eot"),
    "patch_size": _patch_size,
    "overlap": _overlap,
    "blend": _blend,
    "output_layout": parse_output_layout,
    "sampling_rate": _sampling_rate,
    "class_names": lambda value, origin: _names(value),
}


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
            raise ModelError(f"unknown model setting {key!r} in {origin}; known: {', '.join(DECLARABLE)}")
        parse = PARSERS.get(key)
        out[key] = str(value) if parse is None else parse(value, origin)
    return out


def read_metadata(model_proto) -> dict[str, Any]:
    """``advonnx.*`` entries of the model's metadata_props, prefix removed."""
    raw = {}
    for prop in model_proto.metadata_props:
        if prop.key.startswith("advonnx."):
            raw[prop.key[len("advonnx.") :]] = prop.value
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
