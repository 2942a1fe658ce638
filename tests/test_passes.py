"""Each graph pass (advonnx/passes) on a tiny graph built with onnx.helper: the rewritten graph
passes onnx.checker and onnxruntime gives what the unrewritten graph gives on the same values
(or the hand-computed values the pass promises)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from advonnx.errors import ModelError
from advonnx.passes import (
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
from advonnx.passes.graph import ATTACKED_OUTPUT, opset
from advonnx.spec import canonical_output_perm


def _model(nodes, inputs, outputs, inits=(), opset_version=17, ml=False) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=list(inits))
    imports = [helper.make_opsetid("", opset_version)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    m = helper.make_model(graph, opset_imports=imports)
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _run(model: onnx.ModelProto, feeds: dict, outputs=None) -> list:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(outputs, feeds)


def _checked_run(model: onnx.ModelProto, feeds: dict) -> list:
    """onnxruntime's outputs of ``model`` on ``feeds``, after onnx.checker (full check, with
    shape inference) accepted it. The outputs passes declare carry no shape (onnxruntime infers
    it), which the checker requires of a main graph: they get their rank, dims dynamic, first."""
    outs = _run(model, feeds)
    ranked = copy.deepcopy(model)
    for vi, value in zip(ranked.graph.output, outs):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and not t.HasField("shape"):
            t.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in np.shape(value))
    onnx.checker.check_model(ranked, full_check=True)
    return outs


def _vi(name, elem=TensorProto.FLOAT, shape=(None, None)):
    return helper.make_tensor_value_info(name, elem, shape)


def _linear(shape, w: np.ndarray, opset_version=17) -> onnx.ModelProto:
    """y = x * w (broadcast), x of ``shape``."""
    return _model(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        [_vi("x", shape=shape)],
        [_vi("y", shape=shape)],
        [numpy_helper.from_array(w.astype(np.float32), "w")],
        opset_version,
    )


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fold_preprocessing_matches_preprocessing_by_hand(layout):
    shape = [None, 3, 2, 2] if layout == "NCHW" else [None, 2, 2, 3]
    axis = 1 if layout == "NCHW" else 3
    rng = np.random.default_rng(0)
    w = rng.normal(size=[1] + shape[1:]).astype(np.float32)
    raw = _linear(shape, w)
    mean, std, scale = (0.1, 0.2, 0.3), (0.5, 1.0, 2.0), 255.0
    folded = fold_preprocessing(copy.deepcopy(raw), "x", scale=scale, mean=mean, std=std, channel_axis=axis)
    x = rng.uniform(0, 1, size=[4] + shape[1:]).astype(np.float32)
    cshape = [1, 1, 1, 1]
    cshape[axis] = 3
    by_hand = (x.astype(np.float64) * scale - np.reshape(mean, cshape)) / np.reshape(std, cshape)
    (want,) = _run(raw, {"x": by_hand.astype(np.float32)})
    (got,) = _checked_run(folded, {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == want.shape


def test_fold_preprocessing_without_preprocessing_leaves_the_graph_alone():
    raw = _linear([None, 3], np.ones((1, 3)))
    before = raw.SerializeToString()
    assert fold_preprocessing(raw, "x").SerializeToString() == before


def test_fold_preprocessing_refuses_an_input_that_is_also_an_output():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", shape=[None, 2])], [_vi("y"), _vi("x")])
    with pytest.raises(ModelError, match="also an output"):
        fold_preprocessing(m, "x", scale=2.0)


def _uint8_model() -> onnx.ModelProto:
    """uint8 input, cast to float and doubled (the integer front end of an 8-bit pipeline)."""
    return _model(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["xf", "two"], ["y"])],
        [_vi("x", TensorProto.UINT8, [None, 4])],
        [_vi("y")],
        [numpy_helper.from_array(np.float32(2.0), "two")],
    )


def test_round_integer_input_rounds_half_to_even_and_casts():
    m = round_integer_input(_uint8_model(), "x")
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.array([[0.4, 1.5, 2.5, 254.6], [3.49, 0.5, 7.0, 100.5]], np.float32)
    (got,) = _checked_run(m, {"x": x})
    (want,) = _run(_uint8_model(), {"x": np.round(x).astype(np.uint8)})  # NumPy rounds half to even too
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, 2 * np.array([[0, 2, 2, 255], [3, 0, 7, 100]], np.float32))


def test_round_integer_input_relaxed_passes_the_float_through():
    m = round_integer_input(_uint8_model(), "x", relaxed=True)
    x = np.array([[0.4, 1.5, 2.5, 254.6]], np.float32)
    (got,) = _checked_run(m, {"x": x})
    np.testing.assert_allclose(got, 2 * x)
    assert not any(n.op_type == "Round" for n in m.graph.node)


def test_preprocessing_comes_before_the_rounding():
    """scale then round: a 0..1 float image becomes the 8-bit image the graph reads."""
    m = fold_preprocessing(_uint8_model(), "x", scale=255.0, channel_axis=1)
    m = round_integer_input(m, "x")
    x = np.array([[0.0, 0.5, 0.999, 1.0]], np.float32)
    (got,) = _checked_run(m, {"x": x})
    np.testing.assert_array_equal(got, 2 * np.round(x.astype(np.float32) * np.float32(255.0)))


def _zipmap_model() -> onnx.ModelProto:
    """scikit-learn's shape of output: int64 labels and a ZipMap of softmax probabilities."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["z"]),
        helper.make_node("Softmax", ["z"], ["p"], axis=1),
        helper.make_node("ArgMax", ["p"], ["label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["p"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2]),
    ]
    seq = helper.make_value_info(
        "probabilities",
        helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
        ),
    )
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    return _model(
        nodes,
        [_vi("x", shape=[None, 4])],
        [_vi("label", TensorProto.INT64, [None]), seq],
        [numpy_helper.from_array(w, "w")],
        ml=True,
    )


def test_select_scores_then_remove_zipmap_gives_the_probability_tensor():
    raw = _zipmap_model()
    m = remove_zipmap(select_scores(copy.deepcopy(raw), "probabilities"))
    assert [o.name for o in m.graph.output] == ["p"]
    assert not any(n.op_type == "ZipMap" for n in m.graph.node)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    _, maps = _run(raw, {"x": x})
    (got,) = _checked_run(m, {"x": x})
    want = np.array([[row[k] for k in (0, 1, 2)] for row in maps], np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_select_scores_keeps_a_float_type_and_remove_zipmap_leaves_other_outputs():
    m = _model(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["n"])],
        [_vi("x", TensorProto.DOUBLE, [None, 2])],
        [_vi("n", TensorProto.DOUBLE), _vi("y", TensorProto.DOUBLE)],
    )
    m = remove_zipmap(select_scores(m, "y"))
    assert [(o.name, o.type.tensor_type.elem_type) for o in m.graph.output] == [("y", TensorProto.DOUBLE)]
    (got,) = _checked_run(m, {"x": np.array([[-1.0, 2.0]])})
    np.testing.assert_array_equal(got, [[0.0, 2.0]])


def _softmax_head(two_class_sigmoid: bool = False) -> onnx.ModelProto:
    """z = x W; scores = Flatten(Softmax(z)), or the sigmoid form Concat([1 − σ(z), σ(z)])."""
    w = (np.arange(6, dtype=np.float32).reshape(2, 3) - 2) / 3
    if two_class_sigmoid:
        w = w[:, :1]
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["s"]),
            helper.make_node("Sub", ["one", "s"], ["neg"]),
            helper.make_node("Concat", ["neg", "s"], ["cat"], axis=1),
            helper.make_node("Identity", ["cat"], ["scores"]),
        ]
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(1.0), "one")]
    else:
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["z"]),
            helper.make_node("Softmax", ["z"], ["s"], axis=1),
            helper.make_node("Flatten", ["s"], ["scores"], axis=1),
        ]
        inits = [numpy_helper.from_array(w, "w")]
    return _model(nodes, [_vi("x", shape=[None, 2])], [_vi("scores")], inits)


@pytest.mark.parametrize("two_class", [False, True])
def test_expose_attacked_gives_the_logits_shaped_like_the_scores(two_class):
    raw = _softmax_head(two_class)
    m = expose_attacked(select_scores(copy.deepcopy(raw), "scores"), "z", op="Softmax")
    x = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    (want_scores,) = _run(raw, {"x": x})
    scores, attacked = _checked_run(m, {"x": x})
    np.testing.assert_array_equal(scores, want_scores)
    z = x.astype(np.float64) @ numpy_helper.to_array(raw.graph.initializer[0]).astype(np.float64)
    logits = np.concatenate([np.zeros_like(z), z], axis=1) if two_class else z
    np.testing.assert_allclose(attacked, logits, rtol=1e-6, atol=1e-6)
    # softmax of the attacked tensor gives the scores back (the logits rule's promise)
    e = np.exp(attacked - attacked.max(axis=1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), scores, rtol=1e-5, atol=1e-6)


def test_expose_attacked_refuses_scores_from_elsewhere():
    m = select_scores(_softmax_head(), "scores")
    with pytest.raises(ModelError, match="m.onnx: the scores no longer come from Softmax"):
        expose_attacked(m, "x", op="Softmax", path="m.onnx")


def test_to_batch_first_transposes_scores_and_attacked():
    """(T, N, C) sequence-first scores of a (N, C, T) signal → (N, C, T)."""
    raw = _model(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[2, 0, 1])],
        [_vi("x", shape=[None, 3, 5])],
        [_vi("y", shape=[5, None, 3])],
    )
    perm = canonical_output_perm("TNC", True)
    m = select_scores(copy.deepcopy(raw), "y")
    m.graph.output.append(_vi("x"))  # stands for an attacked tensor of the same layout
    m = to_batch_first(m, perm)
    x = np.random.default_rng(2).normal(size=(2, 3, 5)).astype(np.float32)
    (y,) = _run(raw, {"x": x})
    got, second = _checked_run(m, {"x": x})
    np.testing.assert_array_equal(got, np.transpose(y, perm))
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(second, np.transpose(x, perm))
    assert to_batch_first(m, None) is m


@pytest.mark.parametrize("probabilities", [True, False])
def test_binary_to_two_class(probabilities):
    w = np.array([[0.5], [-2.0]], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"])]
    if probabilities:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["p"]))
    out = "p" if probabilities else "z"
    raw = _model(nodes, [_vi("x", shape=[None, 2])], [_vi(out)], [numpy_helper.from_array(w, "w")], opset_version=13)
    m = select_scores(copy.deepcopy(raw), out)
    if probabilities:
        m.graph.output.append(_vi("z"))  # the attacked logit before the sigmoid
    m = binary_to_two_class(lift_opset(m, 15), 1, probabilities=probabilities)  # CastLike: opset 15
    x = np.array([[1.0, 0.25], [-1.0, 2.0], [0.0, 0.0]], np.float32)
    (single,) = _run(raw, {"x": x})
    outs = _checked_run(m, {"x": x})
    z = x.astype(np.float64) @ w.astype(np.float64)
    if probabilities:
        np.testing.assert_allclose(outs[0], np.concatenate([1 - single, single], axis=1), rtol=1e-6)
        np.testing.assert_allclose(outs[1], np.concatenate([np.zeros_like(z), z], axis=1), rtol=1e-6)
    else:
        np.testing.assert_allclose(outs[0], np.concatenate([np.zeros_like(z), z], axis=1), rtol=1e-6)
        assert len(outs) == 1


def test_finish_outputs_names_the_attacked_tensor_and_adds_the_label():
    m = select_scores(_softmax_head(), "scores")
    m.graph.node.append(helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0))
    m = finish_outputs(expose_attacked(m, "z"), "label")
    assert [o.name for o in m.graph.output] == ["scores", ATTACKED_OUTPUT, "label"]
    x = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    scores, attacked, label = _checked_run(m, {"x": x})
    np.testing.assert_array_equal(label, np.argmax(scores, axis=1))
    np.testing.assert_array_equal(np.argmax(attacked, axis=1), label)


def test_lift_opset_converts_only_when_below():
    raw = _linear([None, 3], np.arange(3.0), opset_version=11)
    lifted = lift_opset(copy.deepcopy(raw), 15)
    assert opset(raw) == 11 and opset(lifted) == 15
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(_checked_run(lifted, {"x": x})[0], _run(raw, {"x": x})[0])
    assert lift_opset(lifted, 13) is lifted


def test_canonical_binary_probabilities_below_opset_15(tmp_path):
    """A single-sigmoid binary model exported at opset 13: the pipeline lifts the opset before
    emitting CastLike (lifting after it failed: no CastLike adapter from opset 14)."""
    from advonnx.factory import load_model

    w = np.array([[0.5], [-2.0]], np.float32)
    raw = _model(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"])],
        [_vi("x", shape=[None, 2])],
        [_vi("p", shape=[None, 1])],
        [numpy_helper.from_array(w, "w")],
        opset_version=13,
    )
    path = tmp_path / "binary13.onnx"
    onnx.save(raw, str(path))
    model = load_model(path, device="cpu")
    assert (model.spec.output_kind, model.spec.scores, opset(model.canonical)) == ("binary", "probabilities", 15)
    x = np.array([[1.0, 0.25], [-1.0, 2.0]], np.float32)
    z = x.astype(np.float64) @ w.astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    scores, attacked = model.predict_both(x)
    np.testing.assert_allclose(scores, np.concatenate([1 - p, p], axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(attacked, np.concatenate([np.zeros_like(z), z], axis=1), rtol=1e-6)
