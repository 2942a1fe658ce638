"""The public contract of advonnx.autodiff: names, graph signature, coverage reports, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from advonnx import autodiff
from advonnx.autodiff import (
    GRAD_INPUT_COTANGENT,
    GRAD_INPUT_LABEL,
    GRAD_INPUT_MASK,
    GRAD_OUTPUT_GRAD,
    GRAD_OUTPUT_LOSS,
    GRAD_OUTPUT_SCORES,
    gradient_model,
    unsupported_ops,
)
from advonnx.errors import AdvonnxError, GradientUnavailable

from .harness import check_default_domain, ort_session


def test_contract_names():
    assert (GRAD_INPUT_LABEL, GRAD_INPUT_MASK, GRAD_INPUT_COTANGENT) == (
        "advonnx_label",
        "advonnx_mask",
        "advonnx_cotangent",
    )
    assert (GRAD_OUTPUT_SCORES, GRAD_OUTPUT_LOSS, GRAD_OUTPUT_GRAD) == (
        "advonnx_scores",
        "advonnx_loss",
        "advonnx_grad",
    )
    assert issubclass(GradientUnavailable, AdvonnxError)
    assert {"Conv", "ConvTranspose", "MaxPool", "Resize", "LayerNormalization", "Einsum"} <= set(
        autodiff.supported_ops()
    )


def _dims(vi):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def linear_model(out_shape=("N", 3), extra_nodes=(), extra_outputs=(), opsets=()):
    """x (N, 4) -> Gemm -> y (N, 3), with optional extra nodes on or off the path."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.ones(12, np.float32))
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"])] + list(extra_nodes)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))] + list(extra_outputs),
        initializer=[w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *opsets])


@pytest.mark.parametrize("loss", ["ce", "margin", "cotangent"])
def test_signature_keeps_dynamic_dims(loss):
    gm = gradient_model(linear_model(), loss=loss)
    check_default_domain(gm)
    inputs = {vi.name: vi for vi in gm.graph.input}
    outputs = {vi.name: vi for vi in gm.graph.output}
    assert _dims(inputs["x"]) == ["N", 4]
    assert inputs["x"].type.tensor_type.elem_type == TensorProto.FLOAT
    if loss == "cotangent":
        assert set(inputs) >= {GRAD_INPUT_COTANGENT} and GRAD_INPUT_LABEL not in inputs
        assert _dims(inputs[GRAD_INPUT_COTANGENT]) == ["N", 3]
        assert list(outputs) == [GRAD_OUTPUT_SCORES, GRAD_OUTPUT_GRAD]
    else:
        assert inputs[GRAD_INPUT_LABEL].type.tensor_type.elem_type == TensorProto.INT64
        assert _dims(inputs[GRAD_INPUT_LABEL]) == ["N"]
        assert list(outputs) == [GRAD_OUTPUT_SCORES, GRAD_OUTPUT_LOSS, GRAD_OUTPUT_GRAD]
        assert _dims(outputs[GRAD_OUTPUT_LOSS]) == ["N"]
    assert _dims(outputs[GRAD_OUTPUT_GRAD]) == ["N", 4]


def test_input_model_is_not_modified():
    """Neither the lift nor the extra MaxPool/LayerNormalization outputs touch the caller's
    model."""
    graph = helper.make_graph(
        [
            helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2], strides=[2]),
            helper.make_node("LayerNormalization", ["p", "s"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4])],
        initializer=[helper.make_tensor("s", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()
    gm = gradient_model(model, loss="cotangent")
    assert model.SerializeToString() == before
    assert len(next(n for n in gm.graph.node if n.op_type == "MaxPool").output) == 2


def test_seg_ce_inputs():
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 2, 1, 1], np.ones(6, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 6])],
        initializer=[w],
    )
    gm = gradient_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), loss="seg_ce")
    inputs = {vi.name: vi for vi in gm.graph.input}
    assert _dims(inputs[GRAD_INPUT_LABEL]) == ["N", 5, 6]
    assert _dims(inputs[GRAD_INPUT_MASK]) == ["N", 5, 6]
    assert inputs[GRAD_INPUT_MASK].type.tensor_type.elem_type == TensorProto.FLOAT


def test_classification_loss_on_dense_output_is_refused():
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 2, 1, 1], np.ones(6, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5, 6])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GradientUnavailable, match="seg_ce"):
        gradient_model(model, loss="ce")


def test_input_and_output_names():
    side = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])
    model = linear_model(extra_nodes=[helper.make_node("Relu", ["x"], ["z"])], extra_outputs=[side])
    gm = gradient_model(model, loss="cotangent", output_name="z")
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    cot = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
    scores, g = ort_session(gm).run(None, {"x": x, GRAD_INPUT_COTANGENT: cot})
    np.testing.assert_array_equal(scores, np.maximum(x, 0))
    np.testing.assert_array_equal(g, [[0, 1, 0, 1]])
    with pytest.raises(GradientUnavailable, match="not among the model outputs"):
        gradient_model(model, loss="ce", output_name="nope")
    with pytest.raises(GradientUnavailable, match="not among the model inputs"):
        gradient_model(model, loss="ce", input_name="w")
    with pytest.raises(ValueError, match="unknown loss"):
        gradient_model(model, loss="hinge")


def test_two_inputs_need_input_name():
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GradientUnavailable, match="pass input_name"):
        gradient_model(model, loss="cotangent")
    gm = gradient_model(model, loss="cotangent", input_name="b")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 3), np.float32)
    (g,) = ort_session(gm).run([GRAD_OUTPUT_GRAD], {"a": a, "b": b, GRAD_INPUT_COTANGENT: b})
    np.testing.assert_array_equal(g, a)


def test_output_independent_of_input_gives_zero_gradient():
    c = helper.make_tensor("c", TensorProto.FLOAT, [1, 3], [1.0, 2.0, 3.0])
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Slice", ["s", "z", "o"], ["n"]),
            helper.make_node("Concat", ["n", "three"], ["shape"], axis=0),
            helper.make_node("Expand", ["c", "shape"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            c,
            helper.make_tensor("z", TensorProto.INT64, [1], [0]),
            helper.make_tensor("o", TensorProto.INT64, [1], [1]),
            helper.make_tensor("three", TensorProto.INT64, [1], [3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert unsupported_ops(model) == []
    gm = gradient_model(model, loss="ce")
    x = np.ones((2, 4), np.float32)
    _, loss, g = ort_session(gm).run(None, {"x": x, GRAD_INPUT_LABEL: np.array([0, 2])})
    assert loss.shape == (2,) and not np.any(g) and g.shape == x.shape


ML = helper.make_opsetid("ai.onnx.ml", 3)
CUSTOM = helper.make_opsetid("com.example", 1)


def _ml_model(on_path: bool):
    """Gemm scores, plus an ai.onnx.ml LinearClassifier on or off the scores' path."""
    clf = helper.make_node(
        "LinearClassifier",
        ["x" if on_path else "x2"],
        ["label", "probs"],
        domain="ai.onnx.ml",
        coefficients=[1.0] * 12,
        classlabels_ints=[0, 1, 2],
    )
    nodes = [clf]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    if on_path:
        nodes.append(helper.make_node("Add", ["probs", "y0"], ["y"]))
        gemm_out = "y0"
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["x2"]))
        nodes.append(helper.make_node("Identity", ["y0"], ["y"]))
        gemm_out = "y0"
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.ones(12, np.float32))
    nodes.insert(0, helper.make_node("Gemm", ["x", "w"], [gemm_out]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])]
    if not on_path:
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), ML])


def test_unsupported_ops_lists_ml_op_on_path():
    model = _ml_model(on_path=True)
    assert unsupported_ops(model) == ["ai.onnx.ml::LinearClassifier"]
    with pytest.raises(GradientUnavailable, match="ai.onnx.ml::LinearClassifier") as err:
        gradient_model(model, loss="ce")
    assert "\n" not in str(err.value)


def test_unsupported_ops_ignores_ops_off_path():
    model = _ml_model(on_path=False)
    assert unsupported_ops(model) == []
    # ... unless that output is the one differentiated
    assert unsupported_ops(model, output_name="probs") == ["ai.onnx.ml::LinearClassifier"]
    gm = gradient_model(model, loss="ce")
    check_default_domain_except_forward(gm)


def check_default_domain_except_forward(gm):
    """The backward nodes are all ai.onnx (the forward keeps the model's own ops)."""
    backward = [n for n in gm.graph.node if n.name.startswith(("advonnx_vjp/", "advonnx_loss/"))]
    assert backward and all(n.domain in ("", "ai.onnx") for n in backward)


def test_custom_domain_and_control_flow_are_reported():
    custom = helper.make_node("Swish", ["h"], ["y"], domain="com.example")
    model = linear_model(extra_nodes=[custom], opsets=[CUSTOM])
    model.graph.node[0].output[0] = "h"
    assert unsupported_ops(model) == ["com.example::Swish"]

    then = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    model = linear_model(extra_nodes=[helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)])
    model.graph.node[0].output[0] = "h"
    model.graph.initializer.append(cond)
    assert unsupported_ops(model) == ["If"]


def test_rule_refusing_a_node_is_reported():
    """Resize has a rule, but not for tf_crop_and_resize: unsupported_ops says so."""
    roi = helper.make_tensor("roi", TensorProto.FLOAT, [8], [0, 0, 0, 0, 1, 1, 1, 1])
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph = helper.make_graph(
        [
            helper.make_node(
                "Resize", ["x", "roi", "s"], ["y"], mode="linear", coordinate_transformation_mode="tf_crop_and_resize"
            )
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        initializer=[roi, scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert unsupported_ops(model) == ["Resize"]
    with pytest.raises(GradientUnavailable, match="tf_crop_and_resize"):
        gradient_model(model, loss="cotangent")


def test_non_float_input_is_refused():
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node("Relu", ["f"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GradientUnavailable, match="not floating point"):
        gradient_model(model, loss="cotangent")


def test_opset_lift_is_verified(monkeypatch):
    """A lifted model that computed something else is refused, not silently used."""
    from onnx import version_converter

    from advonnx.autodiff import transform

    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    gm = gradient_model(model, loss="cotangent")
    assert transform._onnx_opset(gm) == 18  # scatter-add kernels on CUDA too
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    (g,) = ort_session(gm).run([GRAD_OUTPUT_GRAD], {"x": x, GRAD_INPUT_COTANGENT: np.ones((1, 1, 2, 2), np.float32)})
    assert g.sum() == 4 and g[0, 0, 1, 1] == 1 and g[0, 0, 3, 3] == 1

    real = version_converter.convert_version

    def no_18(m, target):
        if target == 18:
            raise RuntimeError("no adapter")
        return real(m, target)

    monkeypatch.setattr(version_converter, "convert_version", no_18)
    assert transform._onnx_opset(gradient_model(model, loss="cotangent")) == 16

    def broken(m, target):
        lifted = real(m, target)
        lifted.graph.node[0].op_type = "AveragePool"
        return lifted

    monkeypatch.setattr(version_converter, "convert_version", broken)
    with pytest.raises(GradientUnavailable, match="different outputs"):
        gradient_model(model, loss="cotangent")


def test_gradient_model_is_deterministic_and_checked():
    a = gradient_model(linear_model(), loss="margin")
    b = gradient_model(linear_model(), loss="margin")
    assert a.SerializeToString() == b.SerializeToString()
    onnx.checker.check_model(a, full_check=True)


def test_graphs_built_for_cuda_keep_the_kernels_cuda_has():
    """``kernels="cuda"``: no MaxUnpool (a CPU-only kernel in onnxruntime) and no zero-inserted
    strided Conv VJP (measured for CPU kernels); the same gradients as the CPU graph."""
    import collections

    from .harness import tiny_model
    from .test_rules import CASES

    rng = np.random.default_rng(0)
    for name, want_cpu, want_cuda in (
        ("maxpool_2x2", "MaxUnpool", "ScatterElements"),
        ("conv2d_depthwise_strided", "Resize", "ConvTranspose"),
    ):
        nodes, inits, shape = CASES[name][:3]
        model = tiny_model(nodes, inits, shape, np.float32)
        graphs = {k: gradient_model(model, loss="cotangent", kernels=k) for k in ("cpu", "cuda")}
        ops = {k: collections.Counter(n.op_type for n in g.graph.node) for k, g in graphs.items()}
        assert ops["cpu"][want_cpu] and not ops["cuda"][want_cpu] and ops["cuda"][want_cuda], name
        x = rng.standard_normal(shape).astype(np.float32)
        y = ort_session(model).run(None, {"x": x})[0]
        feeds = {"x": x, GRAD_INPUT_COTANGENT: rng.standard_normal(y.shape).astype(np.float32)}
        got = {k: ort_session(g).run([GRAD_OUTPUT_GRAD], feeds)[0] for k, g in graphs.items()}
        np.testing.assert_allclose(got["cpu"], got["cuda"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown kernels"):
        gradient_model(tiny_model(*CASES["maxpool_2x2"][:3], np.float32), loss="cotangent", kernels="tpu")
