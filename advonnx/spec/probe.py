"""The probe run: the raw graph (no folding) on a small random batch, to read the scores' shape,
task, kind and classes, and to judge the tensor the logits rule would attack."""

from __future__ import annotations

import copy
import os

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ModelError
from ..passes import remove_zipmap, select_scores
from ..passes.graph import head as find_head
from ..passes.graph import producer_map, replay
from ..session import first_line, session_options
from .core import ModelSpec, ScoreKind, channel_axis, channels_first, output_perm

PROBE_SPATIAL = 64  # spatial size used to probe models whose spatial dims are dynamic
PROBE_SIGNAL = 1024  # time steps used to probe signal models whose length is dynamic (pooling-deep 1-D nets)
# Refuse models whose declared input (at the probe batch) exceeds this many values (2**28 = 1 GiB float32).
MAX_INPUT_ELEMENTS = int(os.environ.get("ADVONNX_MAX_INPUT_ELEMENTS", 2**28))


def _probe_length(layout: str) -> int:
    return PROBE_SIGNAL if len(layout) == 3 else PROBE_SPATIAL


def probe_output(proto: onnx.ModelProto, spec: ModelSpec, notes: list[str]):
    """Scores of the raw graph (no folding) on a small random batch, and the input of a final
    Softmax/LogSoftmax/Sigmoid passed through the same shape ops (None when there is none)."""
    shape = list(spec.input_shape)
    shape[0] = spec.fixed_batch or 2
    for k in range(1, len(shape)):
        if shape[k] is None:
            is_channel = k == channel_axis(spec.layout, len(shape))
            shape[k] = 1 if is_channel else (8 if spec.layout == "NF" else _probe_length(spec.layout))
    elements = int(np.prod(shape, dtype=np.float64))
    if elements > MAX_INPUT_ELEMENTS:
        raise ModelError(
            f"{spec.path}: input {spec.input_name!r} declares {elements:,} values per batch of {shape[0]} "
            f"(shape {tuple(shape)}), above the limit of {MAX_INPUT_ELEMENTS:,}; "
            "raise ADVONNX_MAX_INPUT_ELEMENTS if this is intended"
        )
    rng = np.random.default_rng(0)
    if spec.input_integer:
        info = np.iinfo(spec.input_integer)
        x = rng.integers(max(int(info.min), 0), min(int(info.max), 255), size=shape, endpoint=True).astype(
            spec.input_integer
        )
    else:
        x = rng.uniform(0.0, 1.0, size=shape).astype(spec.input_dtype)
    bare = copy.deepcopy(proto)
    out = spec.output_name
    zip_node = producer_map(bare.graph).get(out)
    if zip_node is not None and zip_node.op_type == "ZipMap":  # the probability tensor it reads
        out = remove_zipmap(select_scores(bare, out)).graph.output[0].name
    head, chain = find_head(bare.graph, out)
    names = [out]
    if head is not None:
        nodes, before = replay(head.input[0], chain, "advonnx_probe_attacked")
        bare.graph.node.extend(nodes)
        bare.graph.output.append(onnx.ValueInfoProto(name=before))
        names.append(before)
    try:
        so = session_options(1)
        sess = ort.InferenceSession(bare.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
        feeds = {spec.input_name: x, **_probe_extras(spec, shape, rng)}
        values = [np.asarray(v) for v in sess.run(names, feeds)]
        if head is not None:
            spec.attacked_output, spec.attacked_op = head.input[0], head.op_type
        return values[0], (values[1] if len(values) > 1 else None)
    except Exception as err:
        msg = first_line(err)
        raise ModelError(
            f"{spec.path}: onnxruntime cannot run the model on a probe batch of shape {tuple(shape)}: {msg}"
        ) from None


def _probe_extras(spec: ModelSpec, shape: list, rng) -> dict[str, np.ndarray]:
    """Values for the inputs held fixed on a probe batch of ``shape`` (the attacked input's):
    uniform [0, 1) floats, zeros for integers; a dynamic axis takes the attacked input's size at
    that position (a scalogram's time axis), else 8."""
    out = {}
    for name, dims, dtype in spec.extra_inputs:
        want = [shape[0]] + [
            d if d is not None else (shape[k] if k < len(shape) else 8) for k, d in enumerate(dims[1:], start=1)
        ]
        out[name] = (rng.uniform(0.0, 1.0, size=want) if np.dtype(dtype).kind == "f" else np.zeros(want)).astype(dtype)
    return out


def attacked_tensor(spec: ModelSpec, scores: np.ndarray, before: np.ndarray | None, notes: list[str]) -> None:
    """Keep ``spec.attacked_output`` (set by the probe) when the logits rule is on and the final
    activation, applied along the class axis to the probe's pre-activation tensor, gives the
    scores; else clear it and say why."""
    op, name = spec.attacked_op, spec.attacked_output
    spec.attacked_output = spec.attacked_op = ""
    if before is None or not op:
        return
    if not spec.logits_rule:
        notes.append(f"logits rule off: attacks use the {op} output itself, not its input {name!r}")
        return
    z = before.astype(np.float64)
    if z.shape != scores.shape:
        notes.append(
            f"the input of the final {op} has shape {z.shape}, not the scores' {scores.shape}: attacks use the scores"
        )
        return
    ax = spec.class_axis
    shifted = z - z.max(axis=ax, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=ax, keepdims=True))
    expect = [log_p] if op == "LogSoftmax" else [np.exp(log_p)]
    if op == "Sigmoid":  # sigmoid(z); or softmax([0, z]) = [1 − σ(z), σ(z)] for the two-class form
        expect = [1.0 / (1.0 + np.exp(-z))] + (expect if scores.shape[ax] == 2 else [])
    if not any(np.allclose(e, scores.astype(np.float64), rtol=1e-3, atol=1e-5, equal_nan=True) for e in expect):
        notes.append(
            f"the final {op} does not act along the class axis {ax}: attacks use its output, not its input {name!r}"
        )
        return
    spec.attacked_output, spec.attacked_op = name, op
    notes.append(f"attacked tensor: {name!r} (input of the final {op}); decisions from {spec.output_name!r}")


def _batch_first(spec: ModelSpec, scores: np.ndarray, notes: list[str]) -> np.ndarray:
    """The probe's scores batch-first: transposed by a declared output layout (checked against
    the probe batch), else refused when the batch is not their first axis."""
    if spec.output_layout:
        if scores.ndim != len(spec.output_layout):
            raise ModelError(
                f"{spec.path}: declared output layout {spec.output_layout} has {len(spec.output_layout)} axes but "
                f"output {spec.output_name!r} has shape {scores.shape}; declare a layout of its rank"
            )
        batch = scores.shape[spec.output_layout.index("N")]
        probe_batch = spec.fixed_batch or 2
        if batch != probe_batch:
            raise ModelError(
                f"{spec.path}: declared output layout {spec.output_layout} puts the batch on an axis of size {batch} "
                f"(probe batch {probe_batch}, output shape {scores.shape}); check the N axis"
            )
        perm = output_perm(spec)
        if perm is not None:
            scores = np.transpose(scores, perm)
            notes.append(f"output layout {spec.output_layout} (declared): scores transposed to batch-first")
    elif scores.ndim >= 2 and scores.shape[0] != (spec.fixed_batch or 2):
        raise ModelError(
            f"{spec.path}: output {spec.output_name!r} has shape {scores.shape} for a batch of {spec.fixed_batch or 2}: "
            "the batch is not its first axis; declare its axes with --output-layout (e.g. TNC for (time, batch, "
            "classes))"
        )
    return scores


def _task_of(spec: ModelSpec, scores: np.ndarray) -> tuple[str, int]:
    """The task the scores' rank says (classification (N, C), segmentation: a score map of the
    input's rank) and their class axis."""
    in_rank = len(spec.input_shape)
    if scores.ndim == 2:
        return "classification", 1
    if scores.ndim == in_rank and scores.ndim >= 3:
        return "segmentation", 1 if channels_first(spec.layout) else scores.ndim - 1
    if scores.ndim == in_rank - 1 and scores.ndim >= 3:
        # (N, H, W) dense output: one channel squeezed away
        raise ModelError(
            f"{spec.path}: output {spec.output_name!r} of shape {scores.shape} has no class axis; "
            "export the model with a (N, C, H, W) score map"
        )
    raise ModelError(
        f"{spec.path}: output {spec.output_name!r} of shape {scores.shape} is neither class scores (N, C) "
        "nor a score map of the input's rank; choose another output with --output NAME"
    )


def _scores_kind(spec: ModelSpec, scores: np.ndarray, last_op: str, declared: dict, notes: list[str]) -> ScoreKind:
    """``probabilities`` or ``logits``: declared, else from the final op, else from the values."""
    if "scores" in declared:
        return declared["scores"]
    if last_op in ("Softmax", "Sigmoid"):
        notes.append(f"scores are probabilities: the output comes from {last_op}")
        return "probabilities"
    if last_op == "ZipMap":
        return "probabilities"
    finite = scores[np.isfinite(scores)]
    in_unit = finite.size and finite.min() >= 0 and finite.max() <= 1
    sums = np.sum(scores, axis=spec.class_axis)
    if in_unit and scores.shape[spec.class_axis] > 1 and np.allclose(sums, 1.0, atol=1e-3):
        notes.append("scores guessed to be probabilities: probe outputs lie in [0,1] and sum to 1")
        return "probabilities"
    return "logits"


def infer_output(spec: ModelSpec, scores: np.ndarray, last_op: str, declared: dict, notes: list[str]) -> None:
    """Task, class axis, scores kind, output kind and class count from the probe's ``scores``
    (``last_op``: the op making the output, through shape-only ops)."""
    scores = _batch_first(spec, scores, notes)
    task, class_axis = _task_of(spec, scores)
    spec.task = declared.get("task", task)
    spec.class_axis = class_axis
    n_out = scores.shape[class_axis]
    if not np.all(np.isfinite(scores)):
        notes.append("the probe batch gave NaN/Inf scores; results on such samples are marked invalid")
    spec.scores = _scores_kind(spec, scores, last_op, declared, notes)
    if n_out == 1:
        spec.output_kind = "binary"
        spec.num_classes = 2
        notes.append("single-output binary model: presented as two class scores")
    elif last_op == "Sigmoid" and spec.task == "classification":
        spec.output_kind = "multilabel"
        spec.num_classes = n_out
        notes.append(f"multi-label output ({n_out} independent sigmoids, threshold {spec.threshold})")
    else:
        spec.output_kind = "softmax" if spec.task == "classification" else "dense"
        spec.num_classes = n_out
