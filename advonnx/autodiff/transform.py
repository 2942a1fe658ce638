"""ONNX -> ONNX gradient transform: append a loss head and a reverse-mode (VJP) sweep.

``gradient_model`` returns a model whose outputs are the original scores, the per-sample
loss and the gradient of the summed loss with respect to the input, built from standard
ai.onnx ops only. The loss head (heads.py) is appended as ordinary forward nodes and
differentiated by the same VJP rules as the network, so there is exactly one gradient code
path. Graph facts and the activity analysis live in graph.py, opset lifting in opset.py.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import GradientUnavailable
from . import rules as _rules  # noqa: F401  (registers the VJP rules)
from .builder import Builder
from .graph import (  # noqa: F401  (names re-exported for the tests and older imports)
    LIFTED_AWAY,
    MIN_OPSET,
    NON_DIFFERENTIABLE,
    SHAPE_PRESERVING,
    STATIC_DIMS_NEEDED,
    _active,
    _all_names,
    _copy,
    _dims,
    _graph_info,
    _missing,
    _onnx_opset,
    _op_label,
    _renamed,
    _resolve_names,
    _rule_of,
)
from .heads import (  # noqa: F401  (the gradient model's names, re-exported)
    GRAD_INPUT_COTANGENT,
    GRAD_INPUT_LABEL,
    GRAD_INPUT_MASK,
    GRAD_OUTPUT_DECISIONS,
    GRAD_OUTPUT_GRAD,
    GRAD_OUTPUT_LOSS,
    GRAD_OUTPUT_SCORES,
    LOSSES,
    _loss_head,
)
from .opset import CUDA_SCATTER_OPSET, SCATTER_OPSET, _lift_for_scatter, _set_opset, lift_opset  # noqa: F401  (re-exported)
from .registry import FLOAT_TYPES, KERNELS, RuleUnavailable, TensorInfo, VJPContext


def unsupported_ops(
    model: onnx.ModelProto, *, input_name: str | None = None, output_name: str | None = None
) -> list[str]:
    """Sorted op types on the differentiable path from input to output that lack a VJP rule.

    Non-ai.onnx ops are written ``domain::OpType``. ``[]`` means exact gradients exist: when
    every op has a rule, the gradient graph is built once (without running it) so that rules
    refusing a node's particular attributes or shapes are reported too.
    """
    input_name, output_name = _resolve_names(model.graph, input_name, output_name)
    info = _graph_info(model)
    _, on_path = _active(model.graph, info, input_name, output_name)
    opset = _onnx_opset(model)
    missing = _missing(on_path, max(opset, MIN_OPSET), opset)
    if missing:
        return missing
    try:
        gradient_model(model, loss="cotangent", input_name=input_name, output_name=output_name)
    except RuleUnavailable as err:
        return [err.op]
    except GradientUnavailable:
        # the opset lift the backward ops need failed: blame the ops that need it
        lifting = sorted(
            {_op_label(n) for n in on_path if _rule_of(n, max(opset, MIN_OPSET)).required_opset(n) > opset}
        )
        if lifting:
            return lifting
        raise
    return []


# Ops whose gradient is the straight-through identity (BPDA), see rules/elementwise.py.
STRAIGHT_THROUGH = ("Ceil", "DequantizeLinear", "Floor", "QuantizeLinear", "Round", "Sign")


def straight_through_ops(
    model: onnx.ModelProto, *, input_name: str | None = None, output_name: str | None = None
) -> list[str]:
    """Sorted op types on the input→output path whose gradient is the straight-through
    identity (:data:`STRAIGHT_THROUGH`); ``[]`` means the gradient is exact everywhere."""
    input_name, output_name = _resolve_names(model.graph, input_name, output_name)
    info = _graph_info(model)
    _, on_path = _active(model.graph, info, input_name, output_name)
    return sorted({n.op_type for n in on_path if n.op_type in STRAIGHT_THROUGH and n.domain in ("", "ai.onnx")})


# -- the transform ------------------------------------------------------------------------------
def gradient_model(
    model: onnx.ModelProto,
    *,
    loss: str,
    input_name: str | None = None,
    output_name: str | None = None,
    probabilities: bool = False,
    class_axis: int = 1,
    scale_free: bool = False,
    threshold: float = 0.0,
    decision_output: str | None = None,
    kernels: str = "cpu",
) -> onnx.ModelProto:
    """A model computing ``advonnx_scores``, ``advonnx_loss`` (N,) and ``advonnx_grad``.

    ``decision_output`` (a tensor of ``model``, e.g. the Softmax after the attacked logits) is
    also returned as ``advonnx_decisions``, so an attack gets decisions, loss and gradient from
    one forward pass.

    ``advonnx_grad`` is d(sum of the loss over the batch)/d(input), or the vector-Jacobian
    product ``cotangent^T J`` of the scores for ``loss="cotangent"``. Losses follow
    :mod:`advonnx.losses`. ``scale_free`` (``ce`` on logits only): ``advonnx_grad`` is the
    gradient of the log-odds ``d = LSE_{j≠y} z_j − z_y`` (``∇CE = σ(d)·∇d``: CE's direction per
    sample, never underflowing to 0); ``advonnx_loss`` stays CE. ``bce`` / ``ml_margin``:
    multi-label (N, K) scores and (N, K) labels; ``threshold`` is ml_margin's decision threshold
    on the scores. Piecewise-constant ops
    (:data:`STRAIGHT_THROUGH`) pass the cotangent unchanged (BPDA). ``kernels`` (``cpu`` or
    ``cuda``): the execution provider the graph is built for, where rules choose between exact
    constructions by the speed of its kernels (autodiff/README.md). Raises
    :class:`GradientUnavailable` naming ops without a rule.
    """
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    input_name, output_name = _resolve_names(model.graph, input_name, output_name)
    model, opset = _lifted_copy(model, input_name, output_name)

    graph = model.graph
    facts = _graph_info(model)
    in_info = facts.tensors.get(input_name)
    if in_info is not None and in_info.elem_type not in FLOAT_TYPES:
        raise GradientUnavailable(f"input {input_name!r} is not floating point; no gradient")
    taken = _all_names(graph)

    # 1. loss head, appended as forward nodes
    head = Builder(taken, opset, prefix="advonnx_loss")
    sinfo = facts.tensors.get(output_name)
    if sinfo is None or sinfo.elem_type not in FLOAT_TYPES:
        raise GradientUnavailable(f"output {output_name!r} is not a floating-point tensor")
    new_inputs: list[onnx.ValueInfoProto] = []
    loss_name: str | None
    if loss == "cotangent":
        target = output_name
        new_inputs.append(helper.make_tensor_value_info(GRAD_INPUT_COTANGENT, sinfo.elem_type, _dims(sinfo.shape)))
        loss_name = None
    else:
        loss_name, new_inputs, target = _loss_head(
            head,
            output_name,
            sinfo,
            loss=loss,
            probabilities=probabilities,
            class_axis=class_axis,
            scale_free=scale_free,
            threshold=threshold,
        )
    graph.node.extend(head.nodes)
    graph.initializer.extend(head.initializers)
    graph.input.extend(new_inputs)

    # 2.-3. facts about the forward graph (with its loss head), the reverse sweep
    b, grad = _reverse_sweep(model, opset, input_name, target, sinfo, cotangent=loss == "cotangent", kernels=kernels)
    if grad is None:  # the output does not depend on the input
        in_dt = helper.tensor_dtype_to_np_dtype(in_info.elem_type if in_info else sinfo.elem_type)
        grad = b.zeros_like(input_name, None, in_dt)

    # 4. outputs
    _set_outputs(
        model,
        b,
        facts,
        sinfo,
        input_name=input_name,
        output_name=output_name,
        grad=grad,
        loss_name=loss_name,
        decision_output=decision_output,
    )
    _set_opset(model, opset)
    return model


def _lifted_copy(model: onnx.ModelProto, input_name: str, output_name: str) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` at the opset its rules need (lifted and checked when lower), and
    that opset; :class:`GradientUnavailable` when an op on the path has no rule."""
    opset = _onnx_opset(model)
    info = _graph_info(model)
    _, on_path = _active(model.graph, info, input_name, output_name)
    missing = _missing(on_path, max(opset, MIN_OPSET), opset)
    if missing:
        raise GradientUnavailable(f"no exact gradient: no VJP rule for {', '.join(missing)}; use estimated gradients")
    if opset < MIN_OPSET:  # rules are written for opset >= 13 semantics
        model = lift_opset(model, MIN_OPSET)
        opset = MIN_OPSET
        info = _graph_info(model)
        _, on_path = _active(model.graph, info, input_name, output_name)
        missing = _missing(on_path, opset)
    if missing:
        raise GradientUnavailable(f"no exact gradient: no VJP rule for {', '.join(missing)}; use estimated gradients")
    needed = max([MIN_OPSET] + [_rule_of(n, max(opset, MIN_OPSET)).required_opset(n) for n in on_path])
    if needed >= SCATTER_OPSET and opset < CUDA_SCATTER_OPSET:
        model, opset = _lift_for_scatter(model, opset, needed)
    elif opset < needed:
        model, opset = lift_opset(model, needed), needed
    else:
        model = _copy(model)
    return model, opset


def _reverse_sweep(
    model: onnx.ModelProto,
    opset: int,
    input_name: str,
    target: str,
    sinfo: TensorInfo,
    *,
    cotangent: bool,
    kernels: str = "cpu",
) -> tuple[Builder, str | None]:
    """The backward nodes (in the returned builder) and the cotangent of ``input_name``
    (``None``: the target does not depend on it), seeded with ones or the cotangent input."""
    # 2. facts about the forward graph (with its loss head) and the path to differentiate
    graph = model.graph
    info = _graph_info(model)
    active, on_path = _active(graph, info, input_name, target)
    on_path_ids = {id(n) for n in on_path}

    # 3. reverse sweep
    b = Builder(_all_names(graph), opset)
    grads: dict[str, list[str]] = {}
    if cotangent:
        grads[target] = [GRAD_INPUT_COTANGENT]
    else:
        dt = helper.tensor_dtype_to_np_dtype(sinfo.elem_type)
        grads[target] = [b.op("ConstantOfShape", [b.shape(target)], value=numpy_helper.from_array(np.ones((1,), dt)))]

    def total(name: str) -> str | None:
        parts = grads.get(name)
        if not parts:
            return None
        if len(parts) > 1:
            grads[name] = [b.op("Sum", parts)]
        return grads[name][0]

    forward_nodes = list(graph.node)
    for node in reversed(forward_nodes):
        if id(node) not in on_path_ids:
            continue
        out_grads = [total(o) if o in active else None for o in node.output]
        if all(g is None for g in out_grads):
            continue
        needs = [bool(i) and i in active for i in node.input]
        rule = _rule_of(node, opset)
        ctx = VJPContext(node, b, info, out_grads, needs, opset, kernels)
        in_grads = list(rule.fn(ctx))
        for i, gi in enumerate(in_grads):
            if gi is not None and i < len(needs) and needs[i]:
                grads.setdefault(node.input[i], []).append(gi)
    return b, total(input_name)


def _set_outputs(
    model: onnx.ModelProto,
    b: Builder,
    facts,
    sinfo: TensorInfo,
    *,
    input_name: str,
    output_name: str,
    grad: str,
    loss_name: str | None,
    decision_output: str | None,
) -> None:
    """Append the backward nodes and make scores, loss, gradient (and decisions) the outputs."""
    graph = model.graph
    b.op("Identity", [output_name], output=GRAD_OUTPUT_SCORES)
    b.op("Identity", [grad], output=GRAD_OUTPUT_GRAD)
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    in_vi = next(vi for vi in graph.input if vi.name == input_name)
    outputs = [helper.make_tensor_value_info(GRAD_OUTPUT_SCORES, sinfo.elem_type, _dims(sinfo.shape))]
    if loss_name is not None:
        b2 = helper.make_node("Identity", [loss_name], [GRAD_OUTPUT_LOSS], name=b.fresh("loss_out"))
        graph.node.append(b2)
        n_dim = (sinfo.shape or [None])[0]
        outputs.append(helper.make_tensor_value_info(GRAD_OUTPUT_LOSS, sinfo.elem_type, [n_dim]))
    outputs.append(_renamed(in_vi, GRAD_OUTPUT_GRAD))
    if decision_output is not None:
        dinfo = facts.tensors.get(decision_output)
        if dinfo is None:
            raise ValueError(f"no tensor named {decision_output!r} in the graph")
        graph.node.append(
            helper.make_node("Identity", [decision_output], [GRAD_OUTPUT_DECISIONS], name=b.fresh("decisions_out"))
        )
        outputs.append(helper.make_tensor_value_info(GRAD_OUTPUT_DECISIONS, dinfo.elem_type, _dims(dinfo.shape)))
    del graph.output[:]
    graph.output.extend(outputs)
