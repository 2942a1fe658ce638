"""ModelSpec: what advonnx knows or guessed about a model, and where each fact came from.

Precedence, lowest to highest: graph guess < ONNX ``metadata_props`` (keys ``advonnx.*``) <
sidecar ``MODEL.onnx.advonnx.toml`` < explicit overrides (CLI flags, ``load_model(**overrides)``).
Every field records its source so ``advonnx inspect`` and the results can show what was
declared and what was assumed.

- ``core.py``: the :class:`ModelSpec` fields, layouts and the layout arithmetic;
- ``declared.py``: metadata, sidecar and overrides, parsed and checked (one parser per field);
- ``infer.py``: the guesses from the graph (:func:`infer_spec`), input and output selection,
  layout, random ops;
- ``probe.py``: the probe run that reads the scores' shape and kind and judges the logits rule.
"""

from .core import (
    DECLARABLE,
    LAYOUTS,
    OUTPUT_AXES,
    OUTPUT_KINDS,
    RANDOMIZED_EOT,
    RANDOMIZED_VOTES,
    SCORES,
    SIGNAL_LAYOUTS,
    TASKS,
    ModelSpec,
    canonical_output_perm,
    channel_axis,
    channels_first,
    layout_spatial_ndim,
    output_perm,
)
from .declared import (
    _fraction,
    normalize_declared,
    parse_output_layout,
    parse_value_range,
    read_metadata,
    read_sidecar,
    sidecar_path,
)
from .infer import RANDOM_OPS, infer_spec, randomized_ops
from .probe import MAX_INPUT_ELEMENTS, PROBE_SIGNAL, PROBE_SPATIAL

__all__ = [
    "DECLARABLE",
    "LAYOUTS",
    "MAX_INPUT_ELEMENTS",
    "OUTPUT_AXES",
    "OUTPUT_KINDS",
    "PROBE_SIGNAL",
    "PROBE_SPATIAL",
    "RANDOMIZED_EOT",
    "RANDOMIZED_VOTES",
    "RANDOM_OPS",
    "SCORES",
    "SIGNAL_LAYOUTS",
    "TASKS",
    "ModelSpec",
    "_fraction",
    "canonical_output_perm",
    "channel_axis",
    "channels_first",
    "infer_spec",
    "layout_spatial_ndim",
    "normalize_declared",
    "output_perm",
    "parse_output_layout",
    "parse_value_range",
    "randomized_ops",
    "read_metadata",
    "read_sidecar",
    "sidecar_path",
]
