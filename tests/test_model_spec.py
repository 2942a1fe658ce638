"""Spec inference and the canonical graph on tiny models built in code."""

import numpy as np
import onnx
import pytest

import advonnx
from advonnx.errors import ModelError
from models import save, small_cnn, softmax_regression


def _load(tmp_path, proto, name="m.onnx", **overrides):
    return advonnx.load_model(save(proto, tmp_path / name), **overrides)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("nhwc", [False, True])
def test_layout_guess(tmp_path, nhwc):
    m = _load(tmp_path, small_cnn(channels=1, size=8, nhwc=nhwc))
    assert m.spec.layout == ("NHWC" if nhwc else "NCHW")
    assert m.spec.spatial_shape == (8, 8)
    assert m.spec.channels == 1
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1) if nhwc else (4, 1, 8, 8)).astype(np.float32)
    assert m.predict(x).shape == (4, 3)


def test_rgb_nhwc_guess(tmp_path):
    m = _load(tmp_path, small_cnn(channels=3, size=16, nhwc=True))
    assert (m.spec.layout, m.spec.channels) == ("NHWC", 3)


def test_logits_vs_probabilities(tmp_path):
    logits = _load(tmp_path, small_cnn(head="logits"), "a.onnx")
    probs = _load(tmp_path, small_cnn(head="softmax"), "b.onnx")
    assert logits.spec.scores == "logits" and probs.spec.scores == "probabilities"
    x = np.random.default_rng(1).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_softmax(logits.predict(x)), probs.predict(x), rtol=1e-5, atol=1e-6)


def test_sigmoid_binary_becomes_two_classes(tmp_path):
    proto = small_cnn(head="sigmoid_binary")
    m = _load(tmp_path, proto)
    assert (m.spec.output_kind, m.spec.num_classes, m.spec.scores) == ("binary", 2, "probabilities")
    x = np.random.default_rng(2).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    scores = m.predict(x)
    import onnxruntime as ort

    raw = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": x})[0]
    np.testing.assert_allclose(scores[:, 1:], raw, rtol=1e-6)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-6)
    assert np.array_equal(m.classify(x), (raw[:, 0] > 0.5).astype(np.int64))


def test_binary_logit_two_classes(tmp_path):
    proto = small_cnn(head="sigmoid_binary")
    proto.graph.node.pop()  # drop the Sigmoid: a single logit
    proto.graph.output[0].name = "logits"
    m = _load(tmp_path, proto)
    assert (m.spec.output_kind, m.spec.scores) == ("binary", "logits")
    x = np.random.default_rng(3).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    s = m.predict(x)
    assert np.all(s[:, 0] == 0)


def test_multilabel(tmp_path):
    m = _load(tmp_path, small_cnn(head="sigmoid_multilabel", classes=4))
    assert m.spec.output_kind == "multilabel" and m.spec.num_classes == 4
    x = np.random.default_rng(4).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    labels = m.classify(x)
    assert labels.shape == (3, 4) and set(np.unique(labels)) <= {0, 1}


def test_fixed_batch_one_runs_any_batch(tmp_path):
    fixed = _load(tmp_path, small_cnn(batch=1), "fixed.onnx")
    dyn = _load(tmp_path, small_cnn(), "dyn.onnx")
    assert fixed.spec.fixed_batch == 1 and dyn.spec.fixed_batch is None
    x = np.random.default_rng(5).uniform(0, 1, (7, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(fixed.predict(x), dyn.predict(x), rtol=1e-6)
    assert fixed.queries == 7


def test_fixed_batch_three_pads_last_chunk(tmp_path):
    m = _load(tmp_path, small_cnn(batch=3), batch_size=256)
    x = np.random.default_rng(6).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    assert m.predict(x).shape == (5, 3)


def test_precedence_metadata_sidecar_override(tmp_path):
    proto = small_cnn()
    for k, v in (("advonnx.value_range", "0,255"), ("advonnx.class_names", "a,b,c")):
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    path = save(proto, tmp_path / "m.onnx")
    m = advonnx.load_model(path)
    assert m.spec.value_range == (0.0, 255.0) and m.spec.sources["value_range"] == "metadata"
    assert m.spec.class_names == ("a", "b", "c")
    (tmp_path / "m.onnx.advonnx.toml").write_text("value_range = [0, 4095]\n", encoding="utf-8")
    m = advonnx.load_model(path)
    assert m.spec.value_range == (0.0, 4095.0) and m.spec.sources["value_range"] == "sidecar"
    m = advonnx.load_model(path, value_range="-1,1")
    assert m.spec.value_range == (-1.0, 1.0) and m.spec.sources["value_range"] == "override"


def test_value_range_assumed_is_recorded(tmp_path):
    m = _load(tmp_path, small_cnn())
    assert m.spec.value_range == (0.0, 1.0) and not m.spec.value_range_declared
    assert any("assuming [0, 1]" in n for n in m.spec.notes)


def test_preprocessing_is_folded(tmp_path):
    proto, w, b = softmax_regression(d=6, classes=3)
    mean, std, scale = 0.5, 0.25, 2.0
    m = _load(tmp_path, proto, scale=scale, mean=[mean], std=[std], value_range="0,1")
    x = np.random.default_rng(7).uniform(0, 1, (4, 6)).astype(np.float32)
    expected = ((x * scale - mean) / std) @ w + b
    np.testing.assert_allclose(m.predict(x), expected, rtol=1e-5, atol=1e-5)


def test_per_channel_normalization(tmp_path):
    proto = small_cnn(channels=3)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    m = _load(tmp_path, proto, mean=mean, std=std)
    x = np.random.default_rng(8).uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    pre = ((x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]).astype(
        np.float32
    )
    raw = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": pre})[0]
    np.testing.assert_allclose(m.predict(x), raw, rtol=1e-5, atol=1e-5)


def test_ambiguous_inputs(tmp_path):
    proto = small_cnn()
    proto.graph.input.append(onnx.helper.make_tensor_value_info("other", onnx.TensorProto.FLOAT, ["N", 3]))
    proto.graph.node.append(onnx.helper.make_node("Identity", ["other"], ["other_out"]))
    proto.graph.output.append(onnx.helper.make_tensor_value_info("other_out", onnx.TensorProto.FLOAT, ["N", 3]))
    path = save(proto, tmp_path / "two.onnx")
    # the only spatial input is attacked; the vector input is held fixed per sample
    m = advonnx.load_model(path, output_name="logits")
    assert m.spec.input_name == "image" and m.spec.extra_inputs == (("other", (None, 3), "float32"),)
    proto.graph.input.append(onnx.helper.make_tensor_value_info("image2", onnx.TensorProto.FLOAT, ["N", 1, 8, 8]))
    path = save(proto, tmp_path / "three.onnx")
    with pytest.raises(ModelError, match="--input NAME"):
        advonnx.load_model(path, output_name="logits")
    m = advonnx.load_model(path, input_name="image2", output_name="logits")
    assert [n for n, _, _ in m.spec.extra_inputs] == ["image", "other"]


def test_ambiguous_outputs(tmp_path):
    proto = small_cnn()
    proto.graph.node.append(onnx.helper.make_node("Identity", ["logits"], ["copy"]))
    proto.graph.output.append(onnx.helper.make_tensor_value_info("copy", onnx.TensorProto.FLOAT, ["N", 3]))
    path = save(proto, tmp_path / "two.onnx")
    with pytest.raises(ModelError, match="--output NAME"):
        advonnx.load_model(path)
    m = advonnx.load_model(path, output_name="copy")
    assert m.spec.output_name == "copy" and m.spec.num_classes == 3


def test_bad_layout_override(tmp_path):
    with pytest.raises(ModelError, match="layout"):
        _load(tmp_path, small_cnn(), layout="NF")


def test_suite_models_spec(brain_cnn_path):
    m = advonnx.load_model(brain_cnn_path)
    s = m.spec
    assert (s.layout, s.task, s.scores, s.num_classes) == ("NCHW", "classification", "logits", 3)
    assert s.value_range_declared and s.framework == "pytorch"
