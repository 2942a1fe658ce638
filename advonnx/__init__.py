"""advonnx: how far can a trained medical-imaging model be trusted?

Adversarial attacks (exact gradients from the ONNX graph, or queries alone) and natural
corruptions, run through onnxruntime on any ONNX model; results in Parquet.
"""

__version__ = "0.1.0"

from .errors import AdvonnxError, DataError, GradientUnavailable, ModelError  # noqa: E402
from .factory import load_model  # noqa: E402
from .model import OnnxModel  # noqa: E402
from .spec import ModelSpec  # noqa: E402


def attack(
    model,
    x,
    y=None,
    name: str = "pgd",
    *,
    rng=None,
    gradient: str = "auto",
    targeted: bool = False,
    target=None,
    max_queries=None,
    eot=None,
    extras=None,
    **settings,
):
    """Run attack ``name`` (see ``advonnx attacks``) on the batch ``x``; returns an AttackResult.

    ``settings`` are the attack's keyword parameters, e.g. ``norm="linf", eps=8/255, steps=10``
    (eps in the model's value units). ``eot``: gradient draws averaged per gradient (default:
    the model's, 1 unless it is randomized). ``extras``: a model's other inputs (name -> one row
    per sample of ``x``), held fixed while ``x`` is attacked.
    """
    from .attacks import make_attack
    from .xp import Random

    atk = make_attack(name, **settings)
    if isinstance(rng, int) or rng is None:
        rng = Random(0 if rng is None else rng)
    return atk(
        model,
        x,
        y,
        target=target,
        targeted=targeted,
        rng=rng,
        gradient=gradient,
        max_queries=max_queries,
        eot=eot,
        extras=extras,
    )


def run_suite(suite="quick", **kwargs):
    """Run a built-in suite (``quick``, ``full``) or a suite TOML; returns a pyarrow Table."""
    from .suite import run_suite as _run

    return _run(suite, **kwargs)


__all__ = [
    "AdvonnxError",
    "DataError",
    "GradientUnavailable",
    "ModelError",
    "ModelSpec",
    "OnnxModel",
    "attack",
    "load_model",
    "run_suite",
    "__version__",
]
