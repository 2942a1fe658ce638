"""Which model a file becomes: :func:`load_model` reads an ONNX file and its spec and returns an
:class:`~advonnx.model.OnnxModel`, or a wrapper of models (sliding windows over larger inputs,
several inputs attacked jointly); all three answer the protocol attacks are typed with."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import ModelError
from .loading import load_onnx
from .model import OnnxModel
from .oracles import EstimatorConfig
from .spec import infer_spec

if TYPE_CHECKING:
    from .joint import JointInputModel
    from .oracles import Model
    from .sliding import SlidingWindowModel

LoadedModel: TypeAlias = "OnnxModel | SlidingWindowModel | JointInputModel"


def load_model(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    threads: int | None = None,
    batch_size: int = 64,
    estimator: EstimatorConfig | None = None,
    io_binding: bool = False,
    **overrides: Any,
) -> LoadedModel:
    """Load an ONNX model, infer or read its spec, and open an onnxruntime session.

    ``overrides`` (highest precedence) may set: input_name, output_name, layout (NCHW, NHWC,
    NCDHW, NDHWC, NF), scores (logits|probabilities), task, class_names, value_range (LO, HI in
    the user's units), scale, mean, std (the model sees ``(x * scale - mean) / std``),
    framework, threshold, votes (evaluations per decision), eot (gradient draws averaged per
    gradient; both 0 = automatic: 1, or 11 and 20 for a randomized model), sampling_rate (Hz,
    signals), output_layout (e.g. TNC), patch_size, overlap, blend (sliding-window inference:
    returns a :class:`advonnx.sliding.SlidingWindowModel`), logits_rule (default True: losses,
    gradients and query objectives use the input of a final Softmax/LogSoftmax/Sigmoid; False
    attacks the output itself, for masking checks), attack_inputs (``a,b`` or ``a=0.01,b=0.05``:
    several inputs attacked jointly, returns a :class:`advonnx.joint.JointInputModel`; the other
    overrides apply to each input's model). ``device``: auto|cpu|cuda[:N]; ``io_binding`` binds buffers even on
    the CPU (always on with CUDA); ``batch_size``: rows per onnxruntime call.
    """
    path = str(path)
    if overrides.get("attack_inputs"):  # several inputs attacked jointly: one model per input, packed
        from .joint import JointInputModel, parse_attack_inputs

        pairs = parse_attack_inputs(str(overrides.pop("attack_inputs")))
        overrides.pop("input_name", None)
        models = [
            load_model(
                path,
                device=device,
                threads=threads,
                batch_size=batch_size,
                estimator=estimator,
                io_binding=io_binding,
                input_name=name,
                **overrides,
            )
            for name, _ in pairs
        ]
        ref = pairs[0][1]
        return JointInputModel(models, [1.0 if ref is None or e is None else e / ref for _, e in pairs])
    overrides.pop("attack_inputs", None)
    proto = load_onnx(path)
    spec = infer_spec(proto, path, overrides)
    model = OnnxModel(
        proto, spec, device=device, threads=threads, batch_size=batch_size, estimator=estimator, io_binding=io_binding
    )
    if spec.patch_size and spec.extra_inputs:
        raise ModelError(
            f"{path}: sliding windows (patch_size) need a model with one input; this one also takes "
            f"{', '.join(n for n, _, _ in spec.extra_inputs)} (held fixed per sample): drop --patch-size"
        )
    if spec.patch_size:  # run on overlapping windows of larger inputs, scores stitched
        from .sliding import SlidingWindowModel

        return SlidingWindowModel(model, spec.patch_size, overlap=spec.overlap, blend=spec.blend)
    return model


def with_spec(model: OnnxModel, **changes: Any) -> OnnxModel:
    """A new OnnxModel on the same file with spec fields replaced (used by tests and the CLI)."""
    return OnnxModel(
        model.original,
        replace(model.spec, **changes),
        batch_size=model.batch_size,
        estimator=model.estimator,
        io_binding=model.io_binding,
    )


if TYPE_CHECKING:  # the three models answer the protocol attacks are typed with (checked by mypy)

    def _answer_the_protocol(a: OnnxModel, b: SlidingWindowModel, c: JointInputModel) -> list[Model]:
        return [a, b, c]
