"""Models whose input is an 8/16-bit integer image: floats in, rounded and cast inside the graph,
exact gradients through the rounding as identity (BPDA), adversarial examples on the integer grid."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import advonnx
from advonnx.errors import ModelError
from models import save, small_cnn


def integer_input(proto: onnx.ModelProto, elem=TensorProto.UINT8, *, scale: float = 1 / 255) -> onnx.ModelProto:
    """``proto`` behind ``Cast(to=float) * scale`` with an integer input: an 8-bit pipeline."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    for node in g.node:
        for k, name in enumerate(node.input):
            if name == "image":
                node.input[k] = "scaled"
    g.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), "scale"))
    g.node.insert(0, helper.make_node("Mul", ["as_float", "scale"], ["scaled"]))
    g.node.insert(0, helper.make_node("Cast", ["image"], ["as_float"], to=TensorProto.FLOAT))
    g.input[0].type.tensor_type.elem_type = elem
    onnx.checker.check_model(m)
    return m


def linear_12x12(seed: int = 0) -> onnx.ModelProto:
    """Flatten → Gemm on 1×12×12 images in [0, 1]: a toy that small budgets break."""
    from models import _model

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (144, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    return _model(
        [helper.make_node("Flatten", ["image"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["logits"])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [w, b],
    )


@pytest.fixture(params=["cnn", "linear"])
def uint8_model(request, tmp_path):
    proto = small_cnn(size=12, seed=2) if request.param == "cnn" else linear_12x12()
    return advonnx.load_model(save(integer_input(proto), tmp_path / "u8.onnx"))


def _images(n=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 12, 12)).astype(np.float32)


def test_spec_value_range_from_the_type_and_rounding_inside_the_graph(uint8_model, tmp_path):
    spec = uint8_model.spec
    assert spec.input_integer == "uint8" and spec.input_dtype == "float32"
    assert spec.value_range == (0.0, 255.0) and spec.source("value_range") == "input type"
    assert any("integer input (uint8)" in n for n in spec.notes)
    # predictions equal the file run on the rounded uint8 values (onnxruntime, no advonnx)
    raw = ort.InferenceSession(str(tmp_path / "u8.onnx"), providers=["CPUExecutionProvider"])
    x = _images() + np.random.default_rng(1).uniform(-0.4, 0.4, (12, 1, 12, 12)).astype(np.float32)
    x = np.clip(x, 0, 255)
    want = raw.run(None, {"image": np.round(x).astype(np.uint8)})[0]
    np.testing.assert_allclose(uint8_model.predict(x), want, rtol=1e-6, atol=1e-6)


def test_exact_gradient_is_the_float_models_at_integer_points(tmp_path):
    # BPDA: d/dx of the relaxed graph = the float model's gradient of f(x / 255)
    uint8_model = advonnx.load_model(save(integer_input(small_cnn(size=12, seed=2)), tmp_path / "u8.onnx"))
    float_model = advonnx.load_model(save(small_cnn(size=12, seed=2), tmp_path / "f.onnx"), value_range="0,1")
    x, y = _images(6), np.arange(6) % 3
    assert uint8_model.gradient_mode("auto", loss="ce") == "exact"
    loss, grad = uint8_model.value_and_grad(x, y, loss="ce")
    loss_f, grad_f = float_model.value_and_grad(x / 255, y, loss="ce")
    np.testing.assert_allclose(loss, loss_f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, grad_f / 255, rtol=1e-4, atol=1e-9)
    assert np.abs(grad).max() > 0


@pytest.mark.parametrize(
    "attack,settings",
    [
        ("pgd", dict(norm="linf", eps=8, steps=10)),
        ("pgd", dict(norm="l2", eps=40.0, steps=10)),
        ("square", dict(norm="linf", eps=8, max_queries=200)),
    ],
)
def test_adversarial_examples_stay_on_the_integer_grid(tmp_path, attack, settings):
    uint8_model = advonnx.load_model(save(integer_input(linear_12x12()), tmp_path / "u8.onnx"))
    x = _images(16)
    y = uint8_model.classify(x)
    res = advonnx.attack(uint8_model, x, y, attack, rng=0, **settings)
    assert np.array_equal(res.x_adv, np.round(res.x_adv))  # what the model saw
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 255
    delta = (res.x_adv - x).reshape(len(x), -1)
    bound = np.abs(delta).max(1) if settings["norm"] == "linf" else np.linalg.norm(delta, axis=1)
    assert bound.max() <= settings["eps"] * (1 + 1e-6)
    assert np.array_equal(res.success, uint8_model.classify(res.x_adv) != y)
    assert res.success.any()


def test_integer_ops_after_the_input_fall_back_to_estimated_gradients(tmp_path):
    # the input feeds an integer Sub first: no float relaxation, so auto uses query gradients
    m = integer_input(small_cnn(size=8, seed=0))
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(1, np.uint8), "one"))
    g.node[0].input[0] = "shifted"
    g.node.insert(0, helper.make_node("Sub", ["image", "one"], ["shifted"]))
    model = advonnx.load_model(save(m, tmp_path / "int_ops.onnx"))
    assert model.gradient_mode("auto", loss="ce") == "estimated"
    assert any("integer" in n for n in model.spec.notes)


def test_int32_inputs_are_refused_with_a_reason(tmp_path):
    proto = integer_input(small_cnn(size=8), TensorProto.INT32)
    with pytest.raises(ModelError, match="8/16-bit integer image inputs"):
        advonnx.load_model(save(proto, tmp_path / "i32.onnx"))
