"""The canonical graph: an ONNX file turned into the graph advonnx runs, by a pipeline of passes
(:mod:`advonnx.passes`):

- the spec's preprocessing ``(x * scale - mean) / std`` is folded in front of the input, so the
  user's values (and ``eps``) are in the declared value range; an integer input is rounded;
- a ZipMap output (scikit-learn converters) is replaced by the probability tensor it reads;
- a single-output binary classifier (one logit ``z`` or one probability ``p``) is presented as
  two class scores ``[0, z]`` (logits; softmax gives ``sigmoid(z)``) or ``[1 - p, p]``;
- the logits rule: when the scores come from a final Softmax/LogSoftmax/Sigmoid (through
  shape-only ops), that node's input, passed through the same shape ops (and the binary
  ``[0, z]`` form), is a second output ``advonnx_attacked``: what losses, gradients and query
  objectives read (``attack_scores``); decisions still come from the first output.
"""

from __future__ import annotations

import copy

import onnx

from .passes import (
    binary_to_two_class,
    expose_attacked,
    finish_outputs,
    fold_preprocessing,
    lift_opset,
    remove_zipmap,
    round_integer_input,
    select_scores,
    to_batch_first,
)
from .spec import ModelSpec, channels_first, output_perm


def build_canonical(model: onnx.ModelProto, spec: ModelSpec, *, relaxed: bool = False) -> onnx.ModelProto:
    """The graph advonnx runs: preprocessing folded in, one canonical scores output.

    An integer input (``spec.input_integer``) becomes a float input that is rounded (Round:
    half to even) and cast to the file's type before the original graph. ``relaxed=True``
    leaves out the rounding and the cast, so the float reaches the original consumers: the
    graph exact gradients are taken on (BPDA with the identity for the rounding; Athalye,
    Carlini, Wagner 2018). It only builds when those consumers accept floats (a Cast, typically).
    """
    m = copy.deepcopy(model)
    rank = len(spec.input_shape)
    m = fold_preprocessing(
        m,
        spec.input_name,
        scale=spec.scale,
        mean=spec.mean,
        std=spec.std,
        channel_axis=1 if spec.layout == "NF" or channels_first(spec.layout) else rank - 1,
        dtype=spec.input_dtype,
    )
    if spec.input_integer:
        m = round_integer_input(m, spec.input_name, relaxed=relaxed)
    m = remove_zipmap(select_scores(m, spec.output_name))
    if spec.attacked_output:  # the logits rule
        m = expose_attacked(m, spec.attacked_output, op=spec.attacked_op, path=spec.path)
    m = to_batch_first(m, output_perm(spec))  # a declared output layout (e.g. TNC) → batch-first
    if spec.output_kind == "binary":
        probabilities = spec.scores == "probabilities"
        if probabilities:  # [1 - p, p] needs CastLike: opset 15
            m = lift_opset(m, 15)
        m = binary_to_two_class(m, spec.class_axis, probabilities=probabilities)
    return finish_outputs(m, spec.label_output)
