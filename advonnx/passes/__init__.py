"""Graph rewrites, one ``ModelProto -> ModelProto`` pass per module, that turn an ONNX file into
the canonical graph advonnx runs (:func:`advonnx.canonical.build_canonical` chains them):

- ``fold_preprocessing`` (preprocess.py): ``(x * scale - mean) / std`` in front of the input;
- ``round_integer_input`` (integer.py): a float input rounded and cast to the file's integer type;
- ``select_scores`` (outputs.py): the scores output alone;
- ``remove_zipmap`` (zipmap.py): a ZipMap's probability tensor instead of its maps;
- ``expose_attacked`` (logits.py): the logits rule's tensor as a second output;
- ``to_batch_first`` (layout.py): a declared output layout transposed batch-first;
- ``binary_to_two_class`` (binary.py): one binary score as two class scores;
- ``finish_outputs`` (outputs.py): the attacked output named, the model's label output added;
- ``lift_opset`` (opset.py): the opset raised to what the emitted ops need.

Each pass edits the model it is given and returns it (``lift_opset`` may return a converted
copy); ``build_canonical`` copies the file's model once. Between ``select_scores`` and
``finish_outputs`` the graph's output 0 is the scores and output 1 (when present) the attacked
tensor. Shared graph facts are in ``graph.py``.
"""

from .binary import binary_to_two_class
from .integer import round_integer_input
from .layout import to_batch_first
from .logits import expose_attacked
from .opset import lift_opset
from .outputs import finish_outputs, select_scores
from .preprocess import fold_preprocessing
from .zipmap import remove_zipmap

__all__ = [
    "binary_to_two_class",
    "expose_attacked",
    "finish_outputs",
    "fold_preprocessing",
    "lift_opset",
    "remove_zipmap",
    "round_integer_input",
    "select_scores",
    "to_batch_first",
]
