"""Train ``brain_cnn_jax`` in JAX and export it with jax2onnx: the fourth framework of the suite.

Same architecture and recipe as ``brain_cnn`` (``train_brain_classifiers.py``), written in plain
JAX (``jax.lax.conv_general_dilated``, NCHW): 3 x (conv3x3 - ReLU - maxpool2) with 16-32-32
channels, linear 512-64-3. Weights and biases start from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like
PyTorch's defaults; Adam (optax) lr 1e-3 with cosine decay, batch 128, 8 epochs, cross-entropy,
the same intensity-scale augmentation (0.95-1.05, clipped), seed 0. So ``brain_cnn`` vs
``brain_cnn_jax`` is "the same network trained in two frameworks".

Max pooling is written as reshape + max (ONNX ReduceMax): jax2onnx 0.17 exports
``lax.reduce_window`` as a 4-D MaxPool over batch and channel axes too, which onnxruntime
rejects ("Unsupported pooling size").

Training data: ``models/_work/brain_patches_train.npz`` (``models/build_brain_data.py``).
Output: ``advonnx/suites/models/brain_cnn_jax.onnx`` (input "image" (batch, 1, 32, 32) float32
in [0, 1] NCHW, output "logits"), clean accuracy with onnxruntime into ``models/metrics.json``.

Usage: python models/train_brain_jax.py     (needs .[export]: jax, jax2onnx, optax)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SUITE_DATA, SUITE_MODELS, WORK, load_npz, per_class_accuracy, save_model, update_metrics  # noqa: E402

NAME = "brain_cnn_jax"
CLASS_NAMES = "csf_other,gray_matter,white_matter"
EPOCHS, LR, BATCH, SEED = 8, 1e-3, 128, 0


def _uniform(key, shape, fan_in):
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def init_params(key):
    shapes = [("c1", (16, 1, 3, 3)), ("c2", (32, 16, 3, 3)), ("c3", (32, 32, 3, 3)), ("f1", (512, 64)), ("f2", (64, 3))]
    params = {}
    for name, shape in shapes:
        key, kw, kb = jax.random.split(key, 3)
        fan_in = int(np.prod(shape[1:])) if name.startswith("c") else shape[0]
        params[name] = {
            "w": _uniform(kw, shape, fan_in),
            "b": _uniform(kb, (shape[0] if name.startswith("c") else shape[1],), fan_in),
        }
    return params


def _conv(x, p):
    y = lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + p["b"][None, :, None, None]


def _pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def forward(params, x):
    for k in ("c1", "c2", "c3"):
        x = _pool(jax.nn.relu(_conv(x, params[k])))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["f1"]["w"] + params["f1"]["b"])
    return x @ params["f2"]["w"] + params["f2"]["b"]


def main() -> None:
    from importlib.metadata import version

    import jax2onnx

    train = load_npz(WORK / "brain_patches_train.npz")
    test = load_npz(SUITE_DATA / "brain_patches_test.npz")
    x, y = train["x"].astype(np.float32), train["y"].astype(np.int32)
    steps_per_epoch = len(x) // BATCH
    sched = optax.cosine_decay_schedule(LR, EPOCHS * steps_per_epoch)
    opt = optax.adam(sched)
    key = jax.random.PRNGKey(SEED)
    key, kinit = jax.random.split(key)
    params = init_params(kinit)
    state = opt.init(params)

    @jax.jit
    def step(params, state, xb, yb, kscale):
        xb = jnp.clip(xb * (0.95 + 0.1 * jax.random.uniform(kscale, (xb.shape[0], 1, 1, 1))), 0.0, 1.0)

        def loss_fn(p):
            logits = forward(p, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss, (logits.argmax(1) == yb).sum()

    predict = jax.jit(forward)
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    for epoch in range(EPOCHS):
        perm = rng.permutation(len(x))
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            key, ks = jax.random.split(key)
            params, state, loss, c = step(params, state, x[idx], y[idx], ks)
            loss_sum += float(loss) * BATCH
            correct += int(c)
        te = float((np.asarray(predict(params, test["x"])).argmax(1) == test["y"]).mean())
        n = steps_per_epoch * BATCH
        print(
            f"{NAME} epoch {epoch + 1}/{EPOCHS}: loss {loss_sum / n:.4f} train acc {correct / n:.4f} "
            f"test acc {te:.4f} ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    train_time = time.perf_counter() - t0

    frozen = jax.tree_util.tree_map(np.asarray, params)
    proto = jax2onnx.to_onnx(
        lambda im: forward(frozen, im),
        inputs=[("batch", 1, 32, 32)],
        input_names=["image"],
        output_names=["logits"],
        opset=18,
        model_name=NAME,
    )
    exporter = f"jax2onnx {version('jax2onnx')} (jax {jax.__version__})"
    meta = {
        "advonnx.task": "classification",
        "advonnx.layout": "NCHW",
        "advonnx.value_range": "0,1",
        "advonnx.scores": "logits",
        "advonnx.class_names": CLASS_NAMES,
        "advonnx.framework": "jax",
        "advonnx.exporter": exporter,
        "advonnx.dataset": "brain-tissue-patch",
        "advonnx.training": (
            f"standard training, {EPOCHS} epochs, Adam (optax) lr {LR:g} cosine, batch {BATCH}, "
            f"intensity-scale augmentation 0.95-1.05, seed {SEED}; same architecture as brain_cnn"
        ),
    }
    path = SUITE_MODELS / f"{NAME}.onnx"
    save_model(proto, path, meta)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"image": test["x"]})[0]
    ref = np.asarray(predict(params, test["x"]))
    diff = float(np.abs(logits - ref).max())
    pred = logits.argmax(1)
    acc = float((pred == test["y"]).mean())
    per_class = per_class_accuracy(pred, test["y"], 3)
    n_params = int(sum(v.size for v in jax.tree_util.tree_leaves(frozen)))
    print(
        f"{NAME}: onnxruntime test accuracy {acc:.4f} {per_class} (max |ort - jax| {diff:.2e}), "
        f"{path.stat().st_size} bytes, exporter {exporter}"
    )
    update_metrics(
        {
            NAME: {
                "task": "classification",
                "dataset": "brain-tissue-patch",
                "test_data": "advonnx/suites/data/brain_patches_test.npz",
                "n_test": int(len(test["y"])),
                "test_accuracy": round(acc, 4),
                "test_accuracy_per_class": per_class,
                "params": n_params,
                "onnx_bytes": path.stat().st_size,
                "train_time_s": round(train_time, 1),
                "epochs": EPOCHS,
                "framework": "jax",
                "exporter": exporter,
                "max_abs_diff_ort_vs_jax": diff,
            }
        }
    )


if __name__ == "__main__":
    main()
