"""The VJP rule contract: the op list of advonnx/autodiff/README.md is the registry's op set, and
every registered op has a gradient check (float64 finite differences and float32 onnxruntime in
test_rules.py, or the torch/reference checks named below). Registering a rule without a line in
RULE_CHECKS, a README entry and a check case fails here."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import advonnx.autodiff
from advonnx.autodiff import STRAIGHT_THROUGH, supported_ops

from . import test_rules

README = Path(advonnx.autodiff.__file__).parent / "README.md"

# op -> the gradient checks of its rule: a case of test_rules.py (CASES, DYNAMIC_CASES,
# STRAIGHT_THROUGH_CASES; each run against float64 finite differences and in onnxruntime), or
# "module::test" of this package for checks written as their own tests.
RULE_CHECKS: dict[str, tuple[str, ...]] = {
    "Abs": ("abs",),
    "Add": ("add_bcast", "add_self_bcast"),
    "AveragePool": ("avgpool_2x2", "avgpool_pad_exclude", "avgpool_pad_include", "avgpool_ceil", "avgpool_1d"),
    "BatchNormalization": ("batchnorm",),
    "Cast": ("identity_dropout_cast",),
    "CastLike": ("identity_dropout_cast",),
    "Ceil": ("ceil",),
    "Clip": ("clip", "clip_min_only"),
    "Concat": ("concat_self", "concat_reduce_dynamic"),
    "Conv": (
        "conv2d_basic",
        "conv2d_stride_dil_asym",
        "conv2d_group",
        "conv2d_depthwise",
        "conv2d_depthwise_strided",
        "conv1d_strided_dilated_wide",
        "conv2d_strided_wide_crop",
        "conv3d_strided_wide",
        "conv_strided_wide_symbolic_batch",
        "conv2d_same_upper",
        "conv1d",
        "conv3d",
        "conv_stride2_dynamic_hw",
        "conv_stride1_dynamic_hw",
    ),
    "ConvTranspose": (
        "conv_transpose2d",
        "conv_transpose_group_dil",
        "conv_transpose1d",
        "conv_transpose_output_shape",
    ),
    "Cos": ("sin_cos",),
    "CumSum": ("cumsum", "cumsum_reverse_exclusive"),
    "DepthToSpace": ("depth_to_space_dcr", "depth_to_space_crd"),
    "DequantizeLinear": ("quantize_dequantize",),
    "Div": ("div_both", "div_scalar_num"),
    "Dropout": ("identity_dropout_cast",),
    "Einsum": ("einsum_bmm", "einsum_self", "einsum_sum_out", "einsum_implicit", "einsum_ellipsis"),
    "Elu": ("elu",),
    "Erf": ("erf",),
    "Exp": ("exp",),
    "Expand": ("expand",),
    "Flatten": ("reshape_flatten",),
    "Floor": ("floor",),
    "GRU": ("test_recurrent::test_directions", "test_recurrent::test_gru_linear_before_reset"),
    "Gather": ("gather_axis0_dup", "gather_axis1_2d_neg", "gather_scalar"),
    "GatherElements": ("gather_elements",),
    "Gelu": ("gelu_op", "gelu_tanh_op"),
    "Gemm": ("gemm", "gemm_transA", "gemm_transB", "gemm_both_inputs"),
    "GlobalAveragePool": ("global_avgpool", "global_pool_dynamic"),
    "GlobalMaxPool": ("global_maxpool",),
    "GroupNormalization": ("groupnorm_21",),
    "HardSigmoid": ("hard_sigmoid",),
    "HardSwish": ("hard_swish",),
    "Identity": ("identity_dropout_cast",),
    "InstanceNormalization": ("instancenorm",),
    "LSTM": ("test_recurrent::test_directions", "test_recurrent::test_lstm_peepholes"),
    "LayerNormalization": ("layernorm_last", "layernorm_axis1"),
    "LeakyRelu": ("leaky_relu",),
    "Log": ("log",),
    "LogSoftmax": ("log_softmax_axis0",),
    "MatMul": (
        "matmul_2d",
        "matmul_batched_bcast",
        "matmul_self",
        "matmul_vec_left",
        "matmul_vec_right",
        "matmul_lhs_bcast",
    ),
    "Max": ("max_min",),
    "MaxPool": (
        "maxpool_2x2",
        "maxpool_overlap_pad",
        "maxpool_ceil_dil",
        "maxpool_1d",
        "maxpool_3d",
        "maxpool_2x2_odd_size",
        "maxpool_kernel_below_stride",
        "maxpool_tiling_symbolic_batch",
        "maxpool_nearest_dynamic",
    ),
    "Mean": ("sum_mean",),
    "Min": ("max_min",),
    "Mish": ("mish",),
    "Mul": ("mul_both",),
    "Neg": ("neg",),
    "PRelu": ("prelu",),
    "Pad": (
        "pad_constant",
        "pad_negative",
        "pad_axes_18",
        "pad_reflect",
        "pad_edge",
        "pad_wrap_19",
        "pad_reflect_opset13",
    ),
    "Pow": ("pow_const", "pow_square", "pow_both"),
    "QuantizeLinear": ("quantize_dequantize",),
    "RNN": ("test_recurrent::test_directions",),
    "Reciprocal": ("reciprocal",),
    "ReduceL2": ("reduce_sum_square_l2",),
    "ReduceLogSumExp": ("reduce_log_sum_exp",),
    "ReduceMax": ("reduce_max",),
    "ReduceMean": ("reduce_mean_13", "reduce_mean_18"),
    "ReduceMin": ("reduce_min_18",),
    "ReduceSum": ("reduce_sum_keep", "reduce_sum_all"),
    "ReduceSumSquare": ("reduce_sum_square_l2",),
    "Relu": ("relu",),
    "Reshape": ("reshape_flatten",),
    "Resize": (
        "resize_nearest_x2",
        "resize_nearest_x3_halfpixel",
        "resize_linear_halfpixel",
        "resize_linear_align_sizes",
        "resize_linear_pytorch_down",
        "resize_linear_3d",
        "resize_cubic",
        "resize_axes_18",
    ),
    "Round": ("round",),
    "Selu": ("selu",),
    "Sigmoid": ("sigmoid",),
    "Sign": ("sign",),
    "Sin": ("sin_cos",),
    "Slice": ("slice_unit", "slice_steps", "slice_runtime_bounds", "slice_runtime_steps", "slice_dynamic_axis"),
    "Softmax": ("softmax_axis1", "softmax_last"),
    "Softplus": ("softplus",),
    "Softsign": ("softsign",),
    "SpaceToDepth": ("space_to_depth",),
    "Split": ("split_partial", "split_18"),
    "Sqrt": ("sqrt",),
    "Squeeze": ("squeeze_unsqueeze",),
    "Sub": ("sub_both",),
    "Sum": ("sum_mean",),
    "Tanh": ("tanh",),
    "ThresholdedRelu": ("thresholded_relu",),
    "Tile": ("tile",),
    "TopK": ("topk_values",),
    "Transpose": ("transpose",),
    "Trilu": ("trilu_lower",),
    "Unsqueeze": ("squeeze_unsqueeze",),
    "Where": ("where",),
}

CASE_TABLES = (test_rules.CASES, test_rules.DYNAMIC_CASES, test_rules.STRAIGHT_THROUGH_CASES)


def readme_ops() -> list[str]:
    """The comma-separated op list after the README's "Ops with a VJP rule" line."""
    text = README.read_text(encoding="utf-8")
    m = re.search(r"^Ops with a VJP rule.*?\n\n(.+?)\.\n\n", text, re.S | re.M)
    assert m, f"{README}: no 'Ops with a VJP rule' paragraph"
    return [op.strip() for op in m.group(1).replace("\n", " ").split(",")]


def test_readme_lists_the_registered_ops():
    documented, registered = readme_ops(), set(supported_ops())
    assert len(documented) == len(set(documented)), "an op is listed twice in the README"
    undocumented = sorted(registered - set(documented))
    unregistered = sorted(set(documented) - registered)
    assert not undocumented, f"registered but not in {README.name}'s op list: {undocumented}"
    assert not unregistered, f"in {README.name}'s op list but without a rule: {unregistered}"
    assert set(STRAIGHT_THROUGH) <= registered


def test_every_registered_rule_has_a_gradient_check():
    registered = set(supported_ops())
    unchecked = sorted(registered - set(RULE_CHECKS))
    stale = sorted(set(RULE_CHECKS) - registered)
    assert not unchecked, (
        f"rules without a gradient check: {unchecked}; add a case to "
        "tests/autodiff/test_rules.py and a line to RULE_CHECKS"
    )
    assert not stale, f"RULE_CHECKS names ops without a rule: {stale}"


def _case_ops(name: str) -> set[str] | None:
    for table in CASE_TABLES:
        if name in table:
            return {n.op_type for n in table[name][0]}
    return None


@pytest.mark.parametrize("op", sorted(RULE_CHECKS))
def test_gradient_checks_exercise_the_op(op):
    """Every check named for ``op`` exists and builds a graph containing ``op`` (a case), or is
    a test of this package whose source or parameters name ``op``."""
    assert RULE_CHECKS[op], f"no check named for {op}"
    for check in RULE_CHECKS[op]:
        if "::" in check:
            module, func = check.split("::")
            fn = getattr(importlib.import_module(f"{__package__}.{module}"), func, None)
            assert fn is not None, f"{op}: no test {check}"
            marks = " ".join(str(m.args) for m in getattr(fn, "pytestmark", []))
            assert op in inspect.getsource(fn) or repr(op) in marks, f"{check} does not name {op}"
            continue
        ops = _case_ops(check)
        assert ops is not None, f"{op}: no case {check!r} in test_rules.py"
        assert op in ops, f"{op}: case {check!r} has no {op} node ({sorted(ops)})"
