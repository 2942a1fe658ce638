"""VJP rules, one module per op family; importing this package registers them all."""

from . import activations, conv, elementwise, linalg, normalization, pooling, recurrent, reduce, resize, shape, softmax  # noqa: F401
