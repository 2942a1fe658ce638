"""Every VJP rule against float64 central finite differences (onnx reference evaluator) and
the float32 gradient graph in onnxruntime against the same reference."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from onnx import helper

from .harness import check_vjp, tiny_model

R = np.random.default_rng(1234)


def w(*shape):
    return R.standard_normal(shape)


def i64(*values):
    return np.asarray(values, dtype=np.int64)


def N(op, inputs, output="y", **attrs):
    outs = [output] if isinstance(output, str) else list(output)
    return helper.make_node(op, inputs, outs, **attrs)


def away_from_zero(shape, rng):
    return rng.uniform(0.2, 1.2, shape) * rng.choice([-1.0, 1.0], shape)


def positive(shape, rng):
    return rng.uniform(0.5, 2.0, shape)


# name: (nodes, initializers, x shape, opset, sampler)
CASES = {
    # elementwise, broadcasting on both sides
    "add_bcast": ([N("Add", ["x", "w"])], {"w": w(3, 1)}, (2, 3, 4)),
    "add_self_bcast": ([N("ReduceSum", ["x", "a"], "t", keepdims=1), N("Add", ["t", "x"])], {"a": i64(1)}, (2, 3, 4)),
    "sub_both": ([N("ReduceMean", ["x"], "t", axes=[2], keepdims=1), N("Sub", ["t", "x"])], {}, (2, 3, 4)),
    "mul_both": ([N("ReduceMax", ["x"], "t", axes=[0], keepdims=0), N("Mul", ["x", "t"])], {}, (2, 3, 4)),
    "div_both": (
        [N("Exp", ["x"], "e"), N("ReduceSum", ["e", "a"], "t", keepdims=1), N("Div", ["x", "t"])],
        {"a": i64(1, 2)},
        (2, 3, 4),
    ),
    "div_scalar_num": ([N("Div", ["w", "x"])], {"w": np.asarray(1.5)}, (3, 4), 17, positive),
    "pow_const": ([N("Pow", ["x", "p"])], {"p": np.asarray(3.0)}, (3, 4)),
    "pow_square": ([N("Pow", ["x", "p"])], {"p": np.asarray(2.0)}, (3, 4)),
    "pow_both": ([N("Pow", ["x", "x"])], {}, (3, 4), 17, positive),
    "neg": ([N("Neg", ["x"])], {}, (3, 4)),
    "abs": ([N("Abs", ["x"])], {}, (3, 4), 17, away_from_zero),
    "sqrt": ([N("Sqrt", ["x"])], {}, (3, 4), 17, positive),
    "exp": ([N("Exp", ["x"])], {}, (3, 4)),
    "log": ([N("Log", ["x"])], {}, (3, 4), 17, positive),
    "reciprocal": ([N("Reciprocal", ["x"])], {}, (3, 4), 17, positive),
    "sin_cos": ([N("Sin", ["x"], "s"), N("Cos", ["s"])], {}, (3, 4)),
    "erf": ([N("Erf", ["x"])], {}, (3, 4)),
    "sum_mean": ([N("Sum", ["x", "w", "x"], "s"), N("Mean", ["s", "x"])], {"w": w(4)}, (3, 4)),
    "max_min": ([N("Max", ["x", "w"], "a"), N("Min", ["a", "v", "x"])], {"w": w(4), "v": w(3, 1)}, (3, 4)),
    "where": (
        [N("Greater", ["x", "z"], "c"), N("Mul", ["x", "x"], "sq"), N("Where", ["c", "sq", "w"], "y")],
        {"z": np.asarray(0.0), "w": w(4)},
        (3, 4),
        17,
        away_from_zero,
    ),
    "identity_dropout_cast": (
        [
            N("Identity", ["x"], "a"),
            N("Dropout", ["a"], "b"),
            N("Cast", ["b"], "c", to=11),
            N("CastLike", ["c", "x"], "y"),
        ],
        {},
        (3, 4),
    ),
    # activations
    "relu": ([N("Relu", ["x"])], {}, (3, 4), 17, away_from_zero),
    "leaky_relu": ([N("LeakyRelu", ["x"], alpha=0.1)], {}, (3, 4), 17, away_from_zero),
    "thresholded_relu": ([N("ThresholdedRelu", ["x"], alpha=0.1)], {}, (3, 4), 17, away_from_zero),
    "prelu": ([N("PRelu", ["x", "s"])], {"s": w(3, 1, 1)}, (2, 3, 2, 2), 17, away_from_zero),
    "elu": ([N("Elu", ["x"], alpha=0.7)], {}, (3, 4), 17, away_from_zero),
    "selu": ([N("Selu", ["x"])], {}, (3, 4), 17, away_from_zero),
    "sigmoid": ([N("Sigmoid", ["x"])], {}, (3, 4)),
    "tanh": ([N("Tanh", ["x"])], {}, (3, 4)),
    "hard_sigmoid": ([N("HardSigmoid", ["x"], alpha=0.3, beta=0.4)], {}, (3, 4)),
    "hard_swish": (
        [N("Mul", ["x", "k"], "t"), N("HardSwish", ["t"])],
        {"k": np.asarray(4.0)},
        (3, 4),
        17,
        away_from_zero,
    ),
    "softplus": ([N("Softplus", ["x"])], {}, (3, 4)),
    "softsign": ([N("Softsign", ["x"])], {}, (3, 4), 17, away_from_zero),
    "mish": ([N("Mish", ["x"])], {}, (3, 4), 18),
    "gelu_op": ([N("Gelu", ["x"])], {}, (3, 4), 20),
    "gelu_tanh_op": ([N("Gelu", ["x"], approximate="tanh")], {}, (3, 4), 20),
    "gelu_erf_decomposed": (
        [
            N("Div", ["x", "r2"], "a"),
            N("Erf", ["a"], "b"),
            N("Add", ["b", "one"], "c"),
            N("Mul", ["x", "c"], "d"),
            N("Mul", ["d", "half"]),
        ],
        {"r2": np.asarray(np.sqrt(2.0)), "one": np.asarray(1.0), "half": np.asarray(0.5)},
        (3, 4),
    ),
    "gelu_tanh_decomposed": (
        [
            N("Pow", ["x", "three"], "p"),
            N("Mul", ["p", "k"], "q"),
            N("Add", ["x", "q"], "r"),
            N("Mul", ["r", "c"], "s"),
            N("Tanh", ["s"], "t"),
            N("Add", ["t", "one"], "u"),
            N("Mul", ["x", "u"], "v"),
            N("Mul", ["v", "half"]),
        ],
        {
            "three": np.asarray(3.0),
            "k": np.asarray(0.044715),
            "c": np.asarray(np.sqrt(2 / np.pi)),
            "one": np.asarray(1.0),
            "half": np.asarray(0.5),
        },
        (3, 4),
    ),
    "clip": (
        [N("Clip", ["x", "lo", "hi"])],
        {"lo": np.asarray(-0.5), "hi": np.asarray(0.6)},
        (3, 4),
        17,
        away_from_zero,
    ),
    "clip_min_only": ([N("Clip", ["x", "lo"])], {"lo": np.asarray(-0.5)}, (3, 4), 17, away_from_zero),
    # softmax family
    "softmax_axis1": ([N("Softmax", ["x"], axis=1)], {}, (2, 3, 4)),
    "softmax_last": ([N("Softmax", ["x"])], {}, (2, 3, 4)),
    "log_softmax_axis0": ([N("LogSoftmax", ["x"], axis=0)], {}, (2, 3, 4)),
    # linear algebra
    "gemm": ([N("Gemm", ["x", "b", "c"], alpha=0.7, beta=1.3)], {"b": w(4, 5), "c": w(5)}, (3, 4)),
    "gemm_transA": ([N("Gemm", ["x", "b"], transA=1)], {"b": w(3, 5)}, (3, 4)),
    "gemm_transB": ([N("Gemm", ["x", "b", "c"], transB=1)], {"b": w(5, 4), "c": w(1, 5)}, (3, 4)),
    "gemm_both_inputs": (
        [N("Transpose", ["x"], "t"), N("Gemm", ["x", "t"], transA=1, transB=1, alpha=0.5)],
        {},
        (3, 4),
    ),
    "matmul_2d": ([N("MatMul", ["x", "b"])], {"b": w(4, 5)}, (3, 4)),
    "matmul_batched_bcast": ([N("MatMul", ["x", "b"])], {"b": w(1, 4, 5)}, (2, 3, 4)),
    "matmul_self": ([N("Transpose", ["x"], "t", perm=[0, 2, 1]), N("MatMul", ["x", "t"])], {}, (2, 3, 4)),
    "matmul_vec_left": ([N("MatMul", ["v", "x"])], {"v": w(3)}, (2, 3, 4)),
    "matmul_vec_right": ([N("MatMul", ["x", "v"])], {"v": w(4)}, (2, 3, 4)),
    "matmul_lhs_bcast": ([N("MatMul", ["a", "x"])], {"a": w(5, 3)}, (2, 3, 4)),
    "einsum_bmm": ([N("Einsum", ["x", "b"], equation="bij,jk->bik")], {"b": w(4, 5)}, (2, 3, 4)),
    "einsum_self": ([N("Einsum", ["x", "x"], equation="bij,bkj->bik")], {}, (2, 3, 4)),
    "einsum_sum_out": ([N("Einsum", ["x", "b"], equation="bij,k->bk")], {"b": w(5)}, (2, 3, 4)),
    "einsum_implicit": ([N("Einsum", ["x", "b"], equation="ij,jk")], {"b": w(4, 5)}, (3, 4)),
    "einsum_ellipsis": ([N("Einsum", ["x", "b"], equation="...ij,jk->...ik")], {"b": w(4, 2)}, (2, 3, 4)),
    # convolutions
    "conv2d_basic": ([N("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1])], {"w": w(4, 3, 3, 3), "b": w(4)}, (2, 3, 5, 5)),
    "conv2d_stride_dil_asym": (
        [N("Conv", ["x", "w"], strides=[2, 3], dilations=[2, 1], pads=[1, 0, 2, 1])],
        {"w": w(2, 2, 3, 2)},
        (1, 2, 7, 8),
    ),
    "conv2d_group": ([N("Conv", ["x", "w"], group=2, strides=[2, 2])], {"w": w(4, 2, 3, 3)}, (1, 4, 6, 7)),
    "conv2d_group_stride1_dil": (
        [N("Conv", ["x", "w", "b"], group=2, dilations=[2, 1], pads=[2, 0, 1, 1])],
        {"w": w(6, 2, 3, 2), "b": w(6)},
        (1, 4, 6, 5),
    ),
    "conv2d_depthwise_multiplier": (
        [N("Conv", ["x", "w"], group=2, pads=[1, 1, 1, 1])],
        {"w": w(4, 1, 3, 3)},
        (1, 2, 4, 4),
    ),
    "conv2d_depthwise": ([N("Conv", ["x", "w"], group=3, pads=[1, 1, 1, 1])], {"w": w(3, 1, 3, 3)}, (2, 3, 5, 4)),
    "conv2d_same_upper": (
        [N("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2])],
        {"w": w(2, 2, 4, 3)},
        (1, 2, 7, 6),
    ),
    "conv2d_same_lower": (
        [N("Conv", ["x", "w"], auto_pad="SAME_LOWER", strides=[2, 1])],
        {"w": w(2, 2, 2, 3)},
        (1, 2, 6, 5),
    ),
    "conv2d_valid": ([N("Conv", ["x", "w"], auto_pad="VALID", strides=[3, 2])], {"w": w(2, 2, 2, 2)}, (1, 2, 8, 7)),
    "conv1d": ([N("Conv", ["x", "w", "b"], strides=[2], pads=[1, 2])], {"w": w(3, 2, 3), "b": w(3)}, (2, 2, 9)),
    "conv3d": (
        [N("Conv", ["x", "w"], strides=[1, 2, 2], pads=[1, 1, 0, 1, 0, 1])],
        {"w": w(2, 1, 3, 2, 3)},
        (1, 1, 4, 5, 5),
    ),
    "conv2d_depthwise_strided": (
        [N("Conv", ["x", "w", "b"], group=4, strides=[2, 2], pads=[1, 1, 1, 1])],
        {"w": w(4, 1, 3, 3), "b": w(4)},
        (2, 4, 7, 6),
    ),
    "conv1d_strided_dilated_wide": (
        [N("Conv", ["x", "w"], strides=[3], dilations=[2], pads=[2, 0])],
        {"w": w(3, 5, 3)},
        (2, 5, 12),
    ),
    "conv2d_strided_wide_crop": (
        [N("Conv", ["x", "w"], strides=[2, 3], pads=[0, 1, 0, 0])],
        {"w": w(3, 4, 2, 3)},
        (1, 4, 8, 9),
    ),
    "conv3d_strided_wide": (
        [N("Conv", ["x", "w"], strides=[2, 1, 2], pads=[1, 0, 1, 1, 1, 0])],
        {"w": w(2, 4, 3, 2, 3)},
        (1, 4, 5, 4, 6),
    ),
    "conv_transpose2d": (
        [N("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 0])],
        {"w": w(3, 2, 3, 3), "b": w(2)},
        (1, 3, 3, 4),
    ),
    "conv_transpose_group_dil": (
        [N("ConvTranspose", ["x", "w"], strides=[2, 1], group=2, dilations=[1, 2])],
        {"w": w(4, 1, 2, 3)},
        (1, 4, 3, 3),
    ),
    "conv_transpose1d": ([N("ConvTranspose", ["x", "w"], strides=[3])], {"w": w(2, 3, 4)}, (2, 2, 4)),
    "conv_transpose_output_shape": (
        [N("ConvTranspose", ["x", "w"], strides=[2, 2], output_shape=[7, 8], auto_pad="SAME_UPPER")],
        {"w": w(2, 2, 3, 3)},
        (1, 2, 4, 4),
    ),
    # pooling
    "maxpool_2x2": ([N("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], {}, (2, 3, 4, 4)),
    "maxpool_overlap_pad": (
        [N("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        {},
        (2, 2, 5, 6),
    ),
    "maxpool_ceil_dil": (
        [N("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 1], ceil_mode=1)],
        {},
        (1, 2, 7, 7),
    ),
    "maxpool_1d": ([N("MaxPool", ["x"], kernel_shape=[3], strides=[2])], {}, (2, 3, 9)),
    "maxpool_3d": ([N("MaxPool", ["x"], kernel_shape=[2, 2, 2], strides=[2, 2, 2])], {}, (1, 2, 4, 4, 4)),
    "maxpool_2x2_odd_size": ([N("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], {}, (2, 3, 5, 4)),
    "maxpool_kernel_below_stride": ([N("MaxPool", ["x"], kernel_shape=[2], strides=[3])], {}, (2, 3, 8)),
    "avgpool_2x2": ([N("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], {}, (2, 3, 4, 4)),
    "avgpool_pad_exclude": (
        [N("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        {},
        (1, 2, 5, 6),
    ),
    "avgpool_pad_include": (
        [N("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)],
        {},
        (1, 2, 5, 6),
    ),
    "avgpool_ceil": ([N("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)], {}, (1, 2, 6, 6)),
    "avgpool_1d": ([N("AveragePool", ["x"], kernel_shape=[3], strides=[1], pads=[1, 1])], {}, (2, 3, 6)),
    "global_avgpool": ([N("GlobalAveragePool", ["x"])], {}, (2, 3, 4, 5)),
    "global_maxpool": ([N("GlobalMaxPool", ["x"])], {}, (2, 3, 4, 5)),
    # normalization
    "batchnorm": (
        [N("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
        {"s": w(3), "b": w(3), "m": w(3), "v": R.uniform(0.5, 2, 3)},
        (2, 3, 4, 2),
    ),
    "instancenorm": ([N("InstanceNormalization", ["x", "s", "b"])], {"s": w(3), "b": w(3)}, (2, 3, 4, 3)),
    "layernorm_last": ([N("LayerNormalization", ["x", "s", "b"], epsilon=1e-5)], {"s": w(5), "b": w(5)}, (2, 3, 5)),
    "layernorm_axis1": ([N("LayerNormalization", ["x", "s"], axis=1)], {"s": w(3, 4)}, (2, 3, 4)),
    "groupnorm_21": ([N("GroupNormalization", ["x", "s", "b"], num_groups=3)], {"s": w(6), "b": w(6)}, (2, 6, 4), 21),
    # reductions
    "reduce_sum_keep": ([N("ReduceSum", ["x", "a"], keepdims=1)], {"a": i64(1, -1)}, (2, 3, 4)),
    "reduce_sum_all": ([N("ReduceSum", ["x"], keepdims=0)], {}, (2, 3, 4)),
    "reduce_mean_13": ([N("ReduceMean", ["x"], axes=[0, 2], keepdims=0)], {}, (2, 3, 4), 13),
    "reduce_mean_18": ([N("ReduceMean", ["x", "a"], keepdims=0)], {"a": i64(-1)}, (2, 3, 4), 18),
    "reduce_max": ([N("ReduceMax", ["x"], axes=[1], keepdims=0)], {}, (2, 3, 4)),
    "reduce_min_18": ([N("ReduceMin", ["x", "a"], keepdims=1)], {"a": i64(2)}, (2, 3, 4), 18),
    "reduce_sum_square_l2": (
        [
            N("ReduceSumSquare", ["x"], "a", axes=[1], keepdims=1),
            N("ReduceL2", ["x"], "b", axes=[2], keepdims=1),
            N("Add", ["a", "b"]),
        ],
        {},
        (2, 3, 4),
    ),
    "reduce_log_sum_exp": ([N("ReduceLogSumExp", ["x"], axes=[1], keepdims=0)], {}, (2, 3, 4)),
    # data movement
    "reshape_flatten": ([N("Reshape", ["x", "s"], "a"), N("Flatten", ["a"], axis=2)], {"s": i64(3, -1, 2)}, (2, 3, 4)),
    "squeeze_unsqueeze": (
        [N("Unsqueeze", ["x", "a"], "u"), N("Squeeze", ["u", "a"], "s"), N("Mul", ["s", "s"])],
        {"a": i64(1)},
        (2, 3, 4),
    ),
    "transpose": ([N("Transpose", ["x"], perm=[2, 0, 1])], {}, (2, 3, 4)),
    "concat_self": ([N("Exp", ["x"], "e"), N("Concat", ["x", "w", "e"], axis=1)], {"w": w(2, 2, 4)}, (2, 3, 4)),
    "split_partial": (
        [N("Split", ["x", "s"], ["a", "b", "c"], axis=2), N("Mul", ["a", "c"])],
        {"s": i64(2, 1, 2)},
        (2, 3, 5),
    ),
    "split_18": ([N("Split", ["x"], ["a", "b"], axis=1, num_outputs=2), N("Sub", ["a", "b"])], {}, (2, 4, 3), 18),
    "slice_unit": ([N("Slice", ["x", "s", "e", "a"])], {"s": i64(1, -3), "e": i64(3, 100), "a": i64(1, 2)}, (2, 4, 5)),
    "slice_steps": (
        [N("Slice", ["x", "s", "e", "a", "p"])],
        {"s": i64(0, -1), "e": i64(100, -100), "a": i64(2, 1), "p": i64(2, -2)},
        (2, 4, 5),
    ),
    "slice_runtime_bounds": (
        [
            N("Shape", ["x"], "s"),
            N("Gather", ["s", "i1"], "d"),
            N("Div", ["d", "two"], "h"),
            N("Neg", ["h"], "nh"),
            N("Slice", ["x", "h", "big", "i1"], "a"),
            N("Slice", ["x", "nh", "big", "i1"], "b"),
            N("Slice", ["x", "zero", "h", "i2", "i1"], "c"),
            N("Concat", ["a", "b"], "ab", axis=1),
            N("Mul", ["ab", "ab"], "sq"),
            N("ReduceSum", ["c", "i12"], "cs", keepdims=1),
            N("Mul", ["sq", "cs"]),
        ],
        {"i1": i64(1), "i2": i64(2), "i12": i64(1, 2), "two": i64(2), "big": i64(99), "zero": i64(0)},
        (2, 4, 5),
    ),
    "slice_runtime_steps": (
        [
            N("Shape", ["x"], "s"),
            N("Gather", ["s", "i1"], "d"),
            N("Sub", ["d", "i1"], "e"),
            N("Slice", ["x", "e", "m", "i1", "mtwo"]),
        ],
        {"i1": i64(1), "m": i64(-99), "mtwo": i64(-2)},
        (2, 5, 3),
    ),
    "pad_constant": ([N("Pad", ["x", "p", "v"])], {"p": i64(0, 1, 2, 0, 0, 3), "v": np.asarray(0.5)}, (2, 3, 4)),
    "pad_negative": ([N("Pad", ["x", "p"])], {"p": i64(0, -1, 2, 0, 1, -1)}, (2, 3, 4)),
    "pad_axes_18": ([N("Pad", ["x", "p", "", "a"])], {"p": i64(1, 2), "a": i64(-1)}, (2, 3, 4), 18),
    "pad_reflect": ([N("Pad", ["x", "p"], mode="reflect")], {"p": i64(0, 0, 2, 1, 0, 0, 1, 3)}, (1, 2, 4, 5)),
    "pad_edge": ([N("Pad", ["x", "p"], mode="edge")], {"p": i64(0, 1, 2, 0, 2, 1)}, (2, 3, 4)),
    "pad_wrap_19": ([N("Pad", ["x", "p"], mode="wrap")], {"p": i64(0, 0, 1, 0, 0, 2)}, (2, 3, 4), 19),
    "pad_reflect_opset13": ([N("Pad", ["x", "p"], mode="reflect")], {"p": i64(0, 0, 1, 0, 0, 2)}, (2, 3, 4), 13),
    "expand": ([N("Expand", ["x", "s"])], {"s": i64(2, 3, 4)}, (3, 1)),
    "tile": ([N("Tile", ["x", "r"])], {"r": i64(2, 1, 3)}, (2, 3, 2)),
    "gather_axis0_dup": ([N("Gather", ["x", "i"], axis=0)], {"i": i64(2, 0, 2)}, (3, 4)),
    "gather_axis1_2d_neg": (
        [N("Gather", ["x", "i"], axis=1)],
        {"i": np.asarray([[0, -1], [2, 0]], np.int64)},
        (2, 3, 4),
    ),
    "gather_scalar": ([N("Gather", ["x", "i"], axis=1)], {"i": np.asarray(1, np.int64)}, (2, 3, 4)),
    "gather_elements": (
        [N("GatherElements", ["x", "i"], axis=1)],
        {"i": np.asarray([[[0, 1, 2, 0]], [[2, 2, 1, -1]]], np.int64)},
        (2, 3, 4),
    ),
    "depth_to_space_dcr": ([N("DepthToSpace", ["x"], blocksize=2)], {}, (1, 8, 2, 3)),
    "depth_to_space_crd": ([N("DepthToSpace", ["x"], blocksize=2, mode="CRD")], {}, (1, 8, 2, 3)),
    "space_to_depth": ([N("SpaceToDepth", ["x"], blocksize=2)], {}, (1, 2, 4, 6)),
    "trilu_lower": ([N("Trilu", ["x", "k"], upper=0)], {"k": np.asarray(1, np.int64)}, (2, 3, 4)),
    "cumsum_reverse_exclusive": (
        [N("CumSum", ["x", "a"], exclusive=1, reverse=1)],
        {"a": np.asarray(1, np.int64)},
        (2, 4, 3),
    ),
    "cumsum": ([N("CumSum", ["x", "a"])], {"a": np.asarray(-1, np.int64)}, (2, 3, 4)),
    "topk_values": ([N("TopK", ["x", "k"], ["y", "i"], axis=1)], {"k": i64(2)}, (2, 4, 3)),
    # resize
    "resize_nearest_x2": (
        [
            N(
                "Resize",
                ["x", "", "s"],
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            )
        ],
        {"s": np.asarray([1, 1, 2, 2], np.float32)},
        (2, 2, 3, 4),
    ),
    "resize_nearest_x3_halfpixel": (
        [N("Resize", ["x", "", "s"], mode="nearest")],
        {"s": np.asarray([1, 1, 3, 1.5], np.float32)},
        (1, 2, 3, 4),
    ),
    "resize_linear_halfpixel": (
        [N("Resize", ["x", "", "s"], mode="linear")],
        {"s": np.asarray([1, 1, 2, 2], np.float32)},
        (2, 2, 3, 4),
    ),
    "resize_linear_align_sizes": (
        [N("Resize", ["x", "", "", "z"], mode="linear", coordinate_transformation_mode="align_corners")],
        {"z": i64(1, 2, 7, 5)},
        (1, 2, 3, 4),
    ),
    "resize_linear_pytorch_down": (
        [N("Resize", ["x", "", "s"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel")],
        {"s": np.asarray([1, 1, 0.5, 0.75], np.float32)},
        (1, 2, 6, 8),
    ),
    "resize_linear_3d": (
        [N("Resize", ["x", "", "s"], mode="linear")],
        {"s": np.asarray([1, 1, 2, 2, 2], np.float32)},
        (1, 1, 2, 3, 2),
    ),
    "resize_cubic": (
        [N("Resize", ["x", "", "s"], mode="cubic")],
        {"s": np.asarray([1, 1, 2, 2], np.float32)},
        (1, 1, 4, 4),
    ),
    "upsample_opset9_nearest": (
        [N("Upsample", ["x", "s"], mode="nearest")],
        {"s": np.asarray([1, 1, 2, 3], np.float32)},
        (1, 2, 3, 2),
        9,
    ),
    "resize_axes_18": (
        [N("Resize", ["x", "", "s"], mode="linear", axes=[3, 2])],
        {"s": np.asarray([2, 1.5], np.float32)},
        (1, 2, 4, 3),
        18,
    ),
}


def _sampler(case):
    return case[4] if len(case) > 4 else (lambda shape, rng: rng.standard_normal(shape))


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_matches_finite_differences(name):
    case = CASES[name]
    nodes, inits, shape = case[:3]
    opset = case[3] if len(case) > 3 else 17
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = _sampler(case)(shape, rng)
    check_vjp(lambda dt: tiny_model(nodes, inits, shape, dt, opset), x)


# Straight-through (BPDA) rules: the gradient is that of the model with the op replaced by the
# identity (its finite differences); name: (nodes, initializers, x shape, nodes of that model,
# opset)
STRAIGHT_THROUGH_CASES = {
    **{
        op.lower(): (
            [N(op, ["x"], "r"), N("Mul", ["r", "w"])],
            {"w": w(3, 4)},
            (3, 4),
            [N("Identity", ["x"], "r"), N("Mul", ["r", "w"])],
            17,
        )
        for op in ("Round", "Floor", "Ceil", "Sign")
    },
    # a QDQ pair (float32 only, hence the casts) is the identity
    "quantize_dequantize": (
        [
            N("Cast", ["x"], "f", to=1),
            N("QuantizeLinear", ["f", "s", "z"], "q"),
            N("DequantizeLinear", ["q", "s", "z"], "d"),
            N("CastLike", ["d", "x"], "c"),
            N("Mul", ["c", "w"]),
        ],
        {"w": w(3, 4), "s": np.asarray(0.05, np.float32), "z": np.asarray(128, np.uint8)},
        (3, 4),
        [N("Mul", ["x", "w"])],
        19,
    ),
}


@pytest.mark.parametrize("name", sorted(STRAIGHT_THROUGH_CASES))
def test_straight_through_rule_is_the_identity(name):
    nodes, inits, shape, identity_nodes, opset = STRAIGHT_THROUGH_CASES[name]
    x = np.random.default_rng(zlib.crc32(name.encode())).uniform(-2, 2, shape)
    check_vjp(
        lambda dt: tiny_model(nodes, inits, shape, dt, opset),
        x,
        expected_from=lambda dt: tiny_model(identity_nodes, inits, shape, dt, opset),
    )


# dynamic dims: (nodes, initializers, declared shape, concrete shape, opset)
DYNAMIC_CASES = {
    "conv_stride2_dynamic_hw": (
        [N("Conv", ["x", "w"], strides=[2, 2], pads=[1, 1, 1, 1])],
        {"w": w(2, 2, 3, 3)},
        ("N", 2, "H", "W"),
        (2, 2, 6, 5),
        13,
    ),
    "conv_stride1_dynamic_hw": (
        [N("Conv", ["x", "w"], pads=[1, 0, 1, 2], dilations=[1, 2])],
        {"w": w(2, 2, 3, 3)},
        ("N", 2, "H", "W"),
        (1, 2, 5, 6),
        17,
    ),
    "concat_reduce_dynamic": (
        [
            N("Exp", ["x"], "e"),
            N("Concat", ["x", "e"], "c", axis=2),
            N("ReduceMean", ["c"], "m", axes=[2], keepdims=1),
            N("Mul", ["c", "m"], "y"),
        ],
        {},
        ("N", 3, "L"),
        (2, 3, 4),
        17,
    ),
    "slice_dynamic_axis": (
        [N("Slice", ["x", "s", "e", "a"])],
        {"s": i64(1), "e": i64(-1), "a": i64(2)},
        ("N", 3, "L"),
        (2, 3, 5),
        17,
    ),
    "global_pool_dynamic": (
        [N("GlobalAveragePool", ["x"], "a"), N("Mul", ["x", "a"])],
        {},
        ("N", 2, "H", "W"),
        (2, 2, 3, 4),
        17,
    ),
    "maxpool_tiling_symbolic_batch": (
        [N("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])],
        {},
        ("N", 3, 4, 6),
        (2, 3, 4, 6),
        17,
    ),
    "conv_strided_wide_symbolic_batch": (
        [N("Conv", ["x", "w"], strides=[2, 2], pads=[1, 1, 1, 1])],
        {"w": w(3, 4, 3, 3)},
        ("N", 4, 7, 6),
        (2, 4, 7, 6),
        17,
    ),
    "maxpool_nearest_dynamic": (
        [
            N("MaxPool", ["x"], "p", kernel_shape=[2, 2], strides=[2, 2]),
            N(
                "Resize",
                ["p", "", "s"],
                "y",
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            ),
        ],
        {"s": np.asarray([1, 1, 2, 2], np.float32)},
        ("N", 2, "H", "W"),
        (2, 2, 4, 6),
        17,
    ),
}


@pytest.mark.parametrize("name", sorted(DYNAMIC_CASES))
def test_rule_with_dynamic_dims(name):
    nodes, inits, declared, concrete, opset = DYNAMIC_CASES[name]
    x = np.random.default_rng(7).standard_normal(concrete)
    check_vjp(lambda dt: tiny_model(nodes, inits, declared, dt, opset), x)


def test_broadcast_axes_found_at_run_time():
    """A binary op whose operand's dims shape inference cannot know (a row sliced with
    run-time bounds, broadcast over the rows of x): the broadcast axes are found at run time."""
    from advonnx.autodiff import gradient_model

    nodes = [
        N("Shape", ["x"], "s"),
        N("Gather", ["s", "zero"], "n"),
        N("Div", ["n", "n"], "one"),
        N("Unsqueeze", ["one", "zero"], "end"),
        N("Slice", ["x", "zero1", "end", "zero1"], "row"),
        N("Mul", ["x", "row"], "m"),
        N("Add", ["m", "row"]),
    ]
    inits = {"zero": np.asarray(0, np.int64), "zero1": i64(0)}
    build = lambda dt: tiny_model(nodes, inits, ("N", "M"), dt)  # noqa: E731
    gm = gradient_model(build(np.float32), loss="cotangent")
    assert any(n.op_type == "NonZero" for n in gm.graph.node)
    check_vjp(build, np.random.default_rng(3).standard_normal((3, 4)))
