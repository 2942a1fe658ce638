"""On-disk cache of built gradient sessions, so a second run does not rebuild them.

The first exact gradient of a model builds the gradient graph (``advonnx.autodiff``) and lets
onnxruntime optimize it; for a VGG-sized network that is seconds per loss, paid again by every
run. This module keeps onnxruntime's *optimized* gradient model on disk and reopens it with
graph optimizations off, which is what makes a warm start cheap (benchmarks/bench_gradcache.py).

Key: sha256 of the exact graph that is differentiated (the model with its preprocessing and
output selection folded in, so overrides count), the loss and output arguments, and the
advonnx, onnx and onnxruntime versions, the source of the gradient builder itself
(``advonnx/autodiff``: a changed VJP rule builds another graph under the same version), the
execution providers and this CPU (an optimized model can hold CPU-specific layouts). Only CPU
sessions are cached.

The list of ops without a gradient rule (a whole-graph check) is kept beside, under the same
graph digest.

Where: ``$ADVONNX_CACHE_DIR``, else ``$XDG_CACHE_HOME/advonnx``, else ``~/.cache/advonnx``;
entries under ``grad/``. ``ADVONNX_CACHE=0`` turns the cache off. ``ADVONNX_CACHE_MAX_MB``
(default 2048) caps its size: least recently used entries go first. Entries are written to a
temporary file and renamed, so concurrent runs never see half an entry; each carries the
sha256 of its payload (in its name for gradient models, which onnxruntime then reads itself),
and an entry that fails the check or fails to load is deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import mmap
import os
import platform
import tempfile
import weakref
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from .results import atomic_write_bytes

FORMAT = b"advonnx-gradcache-1\n"
DIGEST_LEN = 64  # sha256 hex


def enabled() -> bool:
    return os.environ.get("ADVONNX_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """The cache root (see module docstring)."""
    explicit = os.environ.get("ADVONNX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "advonnx"


def max_bytes() -> int:
    try:
        return int(float(os.environ.get("ADVONNX_CACHE_MAX_MB", "2048")) * 2**20)
    except ValueError:
        return 2048 * 2**20


def _cpu_id() -> str:
    """Model name and instruction-set flags of this CPU (optimized models may depend on them)."""
    text = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    wanted = [
        ln.split(":", 1)[1].strip()
        for ln in text.splitlines()
        if ln.split(":", 1)[0].strip() in ("model name", "flags", "Features")
    ][:2]
    return platform.machine() + "|" + platform.processor() + "|" + "|".join(wanted)


@functools.cache
def builder_digest() -> str:
    """sha256 of the gradient builder's source (every ``.py`` under ``advonnx/autodiff``, by
    relative path), so a changed rule never reuses a graph the old rules built."""
    root = Path(__file__).parent / "autodiff"
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        with contextlib.suppress(OSError):
            h.update(path.read_bytes())
    return h.hexdigest()


_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _file_identity(model) -> str | None:
    """Where ``model``'s differentiated graph comes from, for the on-disk digest memo: its file
    (path, size, modification time in ns) and its spec (overrides included); None when the
    model was not loaded from a file."""
    from . import __version__

    try:
        path = Path(model.spec.path).resolve()
        st = path.stat()
    except (OSError, TypeError, ValueError):
        return None
    spec = {k: v for k, v in model.spec.as_dict().items() if k not in ("notes", "sources")}
    return hashlib.sha256(
        json.dumps(
            {
                "path": str(path),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "spec": spec,
                "advonnx": __version__,
                "onnx": onnx.__version__,
                "integer": bool(model.spec.input_integer),
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()


def graph_digest(model) -> str:
    """sha256 of the graph ``model`` (an OnnxModel) differentiates, computed once per model.
    Serializing and hashing a VGG-sized graph takes a noticeable part of a warm start, so the
    digest is also remembered on disk under the model file's identity (:func:`_file_identity`)."""
    graph = model.differentiable
    memo = _DIGESTS.get(model)
    if memo is not None and memo[0] is graph:
        return memo[1]
    ident = _file_identity(model) if enabled() else None
    memo_path = cache_dir() / "grad" / f"{ident}.digest" if ident else None
    digest = None
    if memo_path is not None:
        payload = _read(memo_path)
        if payload is not None and len(payload) == DIGEST_LEN:
            digest = payload.decode("ascii", errors="replace")
    if digest is None:
        digest = hashlib.sha256(graph.SerializeToString()).hexdigest()
        if memo_path is not None:
            with contextlib.suppress(OSError):
                _write(memo_path, digest.encode())
    _DIGESTS[model] = (graph, digest)
    return digest


def entry_key(model, **facts: Any) -> str:
    """The cache key of ``model``'s differentiated graph together with ``facts``."""
    from . import __version__

    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "format": FORMAT.decode().strip(),
                "advonnx": __version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "builder": builder_digest(),
                **facts,
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    h.update(graph_digest(model).encode())
    return h.hexdigest()


def _read(path: Path) -> bytes | None:
    """The payload of an entry, or None when it is missing or corrupted (then it is deleted)."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(FORMAT) + DIGEST_LEN + 1)
            payload = f.read()
    except OSError:
        return None
    ok = (
        header[: len(FORMAT)] == FORMAT
        and header[-1:] == b"\n"
        and hashlib.sha256(payload).hexdigest().encode() == header[len(FORMAT) : -1]
    )
    if not ok:
        _discard(path)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: evicted last
    return payload


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _write(path: Path, payload: bytes) -> None:
    """Atomically store ``payload`` at ``path`` behind the format line and its sha256."""
    atomic_write_bytes(path, lambda f: f.write(FORMAT + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload))


def _verified(path: Path) -> bool:
    """Whether the ONNX entry ``path`` (named ``KEY-SHA256.onnx``) still hashes to its name;
    hashed through mmap, so a large entry is not copied into Python."""
    want = path.stem.rsplit("-", 1)[-1]
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                ok = hashlib.sha256(view).hexdigest() == want
            finally:
                view.release()
    except (OSError, ValueError):  # missing, or empty (mmap refuses length 0)
        ok = False
    if not ok:
        _discard(path)
    return ok


def _store_onnx(folder: Path, key: str, payload: bytes) -> Path:
    """Atomically store an ONNX entry as ``KEY-SHA256.onnx``: one rename makes it whole, and two
    runs writing the same key at once leave two valid files, never a mixed one."""
    path = folder / f"{key}-{hashlib.sha256(payload).hexdigest()}.onnx"
    atomic_write_bytes(path, lambda f: f.write(payload))
    return path


def _evict(folder: Path, cap: int) -> None:
    """Delete least recently used entries (and stale temporaries) until the folder fits ``cap``."""
    entries = []
    for p in folder.glob("*.*"):
        with contextlib.suppress(OSError):
            st = p.stat()
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= cap:
            break
        _discard(p)
        total -= size


def _options(threads: int | None, level) -> ort.SessionOptions:
    from .session import session_options

    so = session_options(threads)
    so.graph_optimization_level = level
    return so


def gradient_session(model, build_args: dict[str, Any], build) -> ort.InferenceSession:
    """The gradient session of ``model`` (an OnnxModel) for ``build_args``; ``build()`` makes
    the gradient ModelProto when the cache cannot answer."""
    providers = list(model._providers)
    cpu_only = all((p[0] if isinstance(p, tuple) else p) == "CPUExecutionProvider" for p in providers)
    if not (enabled() and cpu_only):
        return model._make_session(build())
    folder = cache_dir() / "grad"
    key = entry_key(model, args=build_args, providers=[str(p) for p in providers], cpu=_cpu_id())
    for path in sorted(folder.glob(f"{key}-*.onnx")):
        if _verified(path):
            try:
                session = ort.InferenceSession(
                    str(path),
                    sess_options=_options(model._threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                    providers=providers,
                )
            except Exception:  # onnxruntime raises several private exception types: rebuild
                _discard(path)
                continue
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: evicted last
            return session
    proto = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=str(folder), prefix=".build-") as tmp:
            so = _options(model._threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = ort.InferenceSession(proto.SerializeToString(), sess_options=so, providers=providers)
            optimized = Path(so.optimized_model_filepath).read_bytes()
    except Exception:  # a read-only disk, or onnxruntime cannot save this model: no cache
        return model._make_session(proto)
    cap = max_bytes()
    if len(optimized) < cap:
        with contextlib.suppress(OSError):  # a full disk only loses the cache entry
            _store_onnx(folder, key, optimized)
            _evict(folder, cap)
    return session


def unsupported_ops(model, compute) -> list[str]:
    """``compute()`` (the ops of ``model``'s graph without a VJP rule), remembered on disk: the
    check walks the whole graph with shape inference, seconds for a VGG-sized model."""
    if not enabled():
        return compute()
    key = entry_key(
        model,
        input_name=model.spec.input_name,
        check="unsupported_ops",
        output_name=getattr(model, "_attacked_out", ""),
    )  # the path differentiated
    path = cache_dir() / "grad" / f"{key}.ops"
    payload = _read(path)
    if payload is not None:
        with contextlib.suppress(ValueError):
            ops = json.loads(payload.decode())
            if isinstance(ops, list) and all(isinstance(o, str) for o in ops):
                return ops
        _discard(path)
    ops = list(compute())
    with contextlib.suppress(OSError):
        _write(path, json.dumps(ops).encode())
    return ops
