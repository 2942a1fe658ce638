"""Where models run: execution-provider choice and IO binding.

``resolve_device("auto")`` picks CUDA only when onnxruntime has a CUDA execution provider that
really opens a session on the GPU *and* CuPy works on that device (the attack loops run in
CuPy there); otherwise the CPU, with the reason recorded. ``cuda[:N]`` insists and fails with
one clear line when it cannot be had.

IO binding (:func:`run_bound`) hands onnxruntime the device buffers of the inputs and of
preallocated outputs, so CuPy batches never visit the host inside an attack loop. The same
code binds NumPy buffers on the CPU (``ADVONNX_IO_BINDING=1`` or ``io_binding=True``), which is
how it is tested on machines without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from .errors import AdvonnxError

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


@dataclass
class Device:
    """The resolved device: ``kind`` cpu|cuda, CUDA ``index``, providers, and why."""

    kind: str = "cpu"
    index: int = 0
    providers: list = field(default_factory=lambda: ["CPUExecutionProvider"])
    reason: str = ""


def _tiny_model_bytes() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def cuda_status(index: int = 0) -> tuple[bool, str]:
    """(usable, reason): onnxruntime's CUDA provider opens a session and CuPy computes on ``index``."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "onnxruntime has no CUDA execution provider (the CPU package is installed)"
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(
            _tiny_model_bytes(), sess_options=so, providers=[("CUDAExecutionProvider", {"device_id": index})]
        )
        if sess.get_providers()[0] != "CUDAExecutionProvider":
            return (
                False,
                "onnxruntime's CUDA provider fell back to CPU (CUDA/cuDNN libraries missing or driver too old)",
            )
    except Exception as err:  # onnxruntime raises private exception types here
        return False, f"onnxruntime's CUDA provider failed: {str(err).strip().splitlines()[0][:200]}"
    try:
        import cupy

        with cupy.cuda.Device(index):
            if int(cupy.arange(3).sum()) != 3:
                return False, "CuPy computed a wrong result"
    except ImportError:
        return False, "CuPy is not installed (pip install the gpu extra)"
    except Exception as err:  # CUDA driver/runtime errors come in many types
        return False, f"CuPy cannot use GPU {index}: {str(err).strip().splitlines()[0][:200]}"
    return True, ""


def resolve_device(device: str = "auto") -> Device:
    """The device for ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see module docstring)."""
    device = (device or "auto").lower()
    if device == "cpu":
        return Device(reason="cpu requested")
    if device == "auto" or device == "cuda" or device.startswith("cuda:"):
        index = 0
        if device.startswith("cuda:"):
            try:
                index = int(device.split(":", 1)[1])
            except ValueError:
                raise AdvonnxError(f"--device {device}: write cuda:N with a GPU number, e.g. cuda:0") from None
        ok, why = cuda_status(index)
        if ok:
            return Device("cuda", index, [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"])
        if device != "auto":
            raise AdvonnxError(
                f"--device {device}: CUDA is not usable: {why}; see `advonnx doctor`, or use --device cpu"
            )
        return Device(reason=why)
    raise AdvonnxError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")


def is_device_array(x: Any) -> bool:
    return array_api_compat.is_cupy_array(x)


def _pointer(a) -> int:
    return int(a.data.ptr) if array_api_compat.is_cupy_array(a) else int(a.ctypes.data)


class BoundRunner:
    """Runs a session with IO binding; learns each output's per-sample shape once per input shape."""

    def __init__(self, session: ort.InferenceSession, device: Device):
        self.session = session
        self.device = device
        self._out_types = {o.name: _ORT_TYPES.get(o.type, np.float32) for o in session.get_outputs()}
        self._tails: dict[tuple, dict[str, tuple]] = {}

    def _output_tails(self, feeds: dict[str, Any], names: list[str]) -> dict[str, tuple]:
        key = tuple((k, tuple(v.shape[1:])) for k, v in sorted(feeds.items()))
        if key not in self._tails:
            # One unbound run on host copies (the whole batch: a fixed batch size must be met).
            host = {k: (v.get() if array_api_compat.is_cupy_array(v) else np.asarray(v)) for k, v in feeds.items()}
            outs = self.session.run(names, host)
            self._tails[key] = {n: tuple(o.shape[1:]) for n, o in zip(names, outs)}
        return self._tails[key]

    def run(self, names: list[str] | None, feeds: dict[str, Any]) -> list:
        names = names or [o.name for o in self.session.get_outputs()]
        first = next(iter(feeds.values()))
        xp = array_api_compat.array_namespace(first)
        on_gpu = array_api_compat.is_cupy_array(first)
        kind, index = ("cuda", self.device.index) if on_gpu else ("cpu", 0)
        n = first.shape[0]
        tails = self._output_tails(feeds, names)
        binding = self.session.io_binding()
        keep = []  # hold contiguous copies alive until the run ends
        for name, arr in feeds.items():
            arr = xp.asarray(arr)
            if on_gpu:
                arr = xp.ascontiguousarray(arr)
            else:
                arr = np.ascontiguousarray(arr)
            keep.append(arr)
            binding.bind_input(name, kind, index, np.dtype(str(arr.dtype)).type, list(arr.shape), _pointer(arr))
        outputs = []
        for name in names:
            out = xp.empty((n, *tails[name]), dtype=self._out_types[name])
            binding.bind_output(name, kind, index, self._out_types[name], list(out.shape), _pointer(out))
            outputs.append(out)
        self.session.run_with_iobinding(binding)
        del keep
        return outputs


def io_binding_requested() -> bool:
    return os.environ.get("ADVONNX_IO_BINDING", "") not in ("", "0", "false", "no")
