"""Shared helpers of the suite's training scripts: paths, determinism, ONNX export and saving,
metadata, metrics.

torch is imported by the PyTorch helpers only, so the JAX and tabular scripts share the rest
without loading it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE_DATA = ROOT / "advonnx" / "suites" / "data"
SUITE_MODELS = ROOT / "advonnx" / "suites" / "models"
WORK = ROOT / "models" / "_work"
METRICS = ROOT / "models" / "metrics.json"
OPSET = 18


def make_deterministic(seed: int) -> None:
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> str:
    """Export with the dynamo exporter, falling back to TorchScript; returns the exporter tag.

    Input "image", output "logits" (raw), dynamic batch axis, opset OPSET, weights inlined.
    """
    import torch

    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    version = torch.__version__.split("+")[0]
    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                optimize=True,
                verbose=False,
            )
        proto = prog.model_proto
        exporter = f"torch.onnx {version} (dynamo)"
    except Exception as err:  # pragma: no cover - fallback path
        print(f"dynamo export failed ({type(err).__name__}: {err}); using dynamo=False")
        tmp = path.with_suffix(".tmp.onnx")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
        )
        proto = onnx.load(str(tmp))
        tmp.unlink()
        exporter = f"torch.onnx {version} (torchscript)"
    # a stable batch dimension name on input and output
    for vi in list(proto.graph.input) + list(proto.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    save_model(proto, path, {**metadata, "advonnx.exporter": exporter})
    return exporter


def save_model(proto: onnx.ModelProto, path: Path, metadata: dict[str, str]) -> None:
    """Save an exported model as the suite ships it: exactly ``metadata`` as its
    ``metadata_props``, producer "advonnx/models", nothing about the build machine, checked."""
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name = "advonnx/models"
    _drop_build_specific_metadata(proto.graph)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def _drop_build_specific_metadata(graph: onnx.GraphProto) -> None:
    """Remove what the dynamo exporter writes about the build rather than the model.

    Per-node Python stack traces hold absolute paths of the machine that built the file (the
    training script, the site-packages folder), and the graph's copy of torch.export's program
    (signature, range constraints) names symbolic shapes by counters that change from run to run:
    with them the same weights gave different bytes in another checkout or venv, and shipped
    files leaked build paths. The module hierarchy of every node (``namespace``) stays.
    """
    _keep_props(graph.metadata_props, lambda key: not key.startswith("pkg.torch.export."))
    for node in graph.node:
        _keep_props(node.metadata_props, lambda key: key != "pkg.torch.onnx.stack_trace")
        for attr in node.attribute:
            if attr.g.node:
                _drop_build_specific_metadata(attr.g)


def _keep_props(props, keep) -> None:
    kept = [(p.key, p.value) for p in props if keep(p.key)]
    del props[:]
    for key, value in kept:
        props.add(key=key, value=value)


def ort_logits(path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = [sess.run(["logits"], {"image": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def dice_per_class(pred: np.ndarray, y: np.ndarray, n_classes: int) -> list[float]:
    """Dice per class over the whole test set (pooled over samples); NaN if absent in both."""
    out = []
    for c in range(n_classes):
        p, t = pred == c, y == c
        denom = p.sum() + t.sum()
        out.append(float(2 * (p & t).sum() / denom) if denom else float("nan"))
    return out


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int) -> list[float]:
    """Accuracy within each true class, rounded to 4 decimals as metrics.json stores it."""
    return [round(float((pred[y == c] == c).mean()), 4) for c in range(n_classes)]


def update_metrics(entries: dict) -> None:
    data = json.loads(METRICS.read_text(encoding="utf-8")) if METRICS.exists() else {}
    data.update(entries)
    METRICS.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")


def pytorch_metadata(task: str, dataset: str, class_names: str, training: str) -> dict[str, str]:
    """The ``advonnx.*`` metadata of a PyTorch image model: NCHW, values in [0, 1], raw logits."""
    return {
        "advonnx.task": task,
        "advonnx.layout": "NCHW",
        "advonnx.value_range": "0,1",
        "advonnx.scores": "logits",
        "advonnx.class_names": class_names,
        "advonnx.framework": "pytorch",
        "advonnx.dataset": dataset,
        "advonnx.training": training,
    }


def export_and_check(
    model: torch.nn.Module, test_x: np.ndarray, path: Path, metadata: dict, batch: int = 256
) -> tuple[str, np.ndarray, float]:
    """Export ``model`` to ``path`` and run the file with onnxruntime on the test set.

    Returns the exporter's name, onnxruntime's logits and their largest absolute difference
    from the PyTorch model's own (eval mode): the export is checked, not trusted.
    """
    import torch

    model.eval()
    exporter = export_onnx(model, torch.from_numpy(test_x[:2]), path, metadata)
    logits = ort_logits(path, test_x, batch=batch)
    with torch.no_grad():
        ref = model(torch.from_numpy(test_x)).numpy()
    return exporter, logits, float(np.abs(logits - ref).max())


def train_all(doc: str, configs: dict, train_file: str, test_file: str, train_one, metric: str) -> int:
    """The command line of a training script: ``--only NAME`` (repeatable) or every model.

    ``train_one(name, train, test)`` returns the model's ``metrics.json`` record, which is
    written as soon as that model is done; ``metric`` is the record key printed last.
    """
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--only", choices=sorted(configs), action="append")
    args = ap.parse_args()
    train = load_npz(WORK / train_file)
    test = load_npz(SUITE_DATA / test_file)
    results = {}
    for name in args.only or list(configs):
        results[name] = train_one(name, train, test)
        update_metrics({name: results[name]})
    for name, r in results.items():
        print(
            f"{name}: {metric} {r[metric]:.4f}, {r['params']} params, "
            f"{r['onnx_bytes']} bytes, {r['train_time_s']} s, {r['exporter']}"
        )
    return 0
