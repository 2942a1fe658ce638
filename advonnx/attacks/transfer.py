"""Transfer attack: adversarial examples crafted white-box on a surrogate ONNX model, judged on the
target through its decisions alone (Papernot et al. 2017; the realistic threat against a
vendor's API: the attacker has a model of their own, not the vendor's weights).

The surrogate must take the target's input (same shape, layout and value range: eps means the
same on both) and predict the same classes. Any registered attack runs on it (``via``, with
``via_settings``), including the AutoAttack cascade where available; the target spends one
query per sample, the evaluation advonnx makes of every attack's result.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import AdvonnxError
from .base import Attack, AttackContext

_SURROGATES: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def load_surrogate(path: str, like_spec):
    """The surrogate at ``path`` with the target's declared value range and layout (cached)."""
    from ..factory import load_model

    key = (str(Path(path).resolve()), tuple(like_spec.value_range), like_spec.layout)
    with _LOCK:
        if key not in _SURROGATES:
            if not Path(path).is_file():
                raise AdvonnxError(f"transfer: surrogate {path!r} is not a file; give the path of an ONNX model")
            _SURROGATES[key] = load_model(path, value_range=like_spec.value_range, layout=like_spec.layout)
        return _SURROGATES[key]


class Transfer(Attack):
    """Craft on ``surrogate`` (an ONNX path) with attack ``via``; judge on the target."""

    name = "transfer"
    summary = "White-box attack on a surrogate ONNX model, judged on the target's decisions (transferability)"
    needs = "decisions"

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float = 8 / 255,
        surrogate: str = "",
        via: str = "pgd",
        via_settings: dict | None = None,
        loss: str = "ce",
    ):
        super().__init__(norm=norm, eps=eps, loss=loss)
        if not surrogate:
            raise AdvonnxError("transfer needs surrogate=PATH (an ONNX model taking the target's input)")
        self.surrogate = str(surrogate)
        self.via = str(via)
        self.via_settings = dict(via_settings or {})
        from .registry import attack_class, make_attack

        if attack_class(self.via) is Transfer:
            raise AdvonnxError("transfer: via cannot be transfer itself; name the attack to run on the surrogate")
        self._via = make_attack(self.via, norm=norm, eps=eps, **self.via_settings)

    def run(self, ctx: AttackContext, x, labels):
        spec = ctx.spec
        surrogate = load_surrogate(self.surrogate, spec)
        s = surrogate.spec
        if tuple(d for d in s.input_shape[1:]) != tuple(spec.input_shape[1:]) and all(
            d is not None for d in (*s.input_shape[1:], *spec.input_shape[1:])
        ):
            raise AdvonnxError(
                f"transfer: surrogate {Path(self.surrogate).name} takes {s.input_shape[1:]} but the target takes "
                f"{spec.input_shape[1:]}; use a surrogate with the target's input"
            )
        if s.num_classes != spec.num_classes or s.task != spec.task:
            raise AdvonnxError(
                f"transfer: surrogate {Path(self.surrogate).name} predicts {s.num_classes} classes ({s.task}) but the "
                f"target {spec.num_classes} ({spec.task}); use a surrogate of the same task"
            )
        fixed = ctx.extras if s.extra_inputs else None  # a surrogate with the same held-fixed inputs gets them
        if ctx.targeted:
            result = self._via(surrogate, x, None, target=labels, targeted=True, rng=ctx.rng, extras=fixed)
        else:
            result = self._via(surrogate, x, labels, rng=ctx.rng, extras=fixed)
        return result.x_adv
