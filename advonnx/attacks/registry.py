"""Attack registry: names → classes, construction from loose settings (CLI / suite TOML).

Each attack class declares its ``name`` and ``aliases``; :func:`register` reads both. The built-in
attacks are registered by ``advonnx/attacks/__init__.py``."""

from __future__ import annotations

from typing import Any

from ..errors import AdvonnxError
from .base import Attack

ATTACKS: dict[str, type[Attack]] = {}
ALIASES: dict[str, str] = {}  # alias -> registered name, filled from the classes' ``aliases``


def register(cls: type[Attack]) -> type[Attack]:
    """Register ``cls`` under its ``name`` and the ``aliases`` it declares itself (not a base
    class's). A name or alias taken by another attack is refused."""
    own = tuple(vars(cls).get("aliases", ()))
    for key in (cls.name, *own):
        taken = ATTACKS.get(ALIASES.get(key, key))
        if taken is not None and taken is not cls:
            raise AdvonnxError(f"attack name {key!r} of {cls.__name__} is taken by {taken.__name__}; choose another")
    ATTACKS[cls.name] = cls
    ALIASES.update({a.lower(): cls.name for a in own})
    return cls


def unregister(name: str) -> None:
    """Remove attack ``name`` and its aliases (tests that register a toy attack)."""
    cls = ATTACKS.pop(name)
    for a in [a for a, n in ALIASES.items() if n == cls.name]:
        del ALIASES[a]


def attack_class(name: str) -> type[Attack]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ATTACKS:
        raise AdvonnxError(f"unknown attack {name!r}; available: {', '.join(sorted(ATTACKS))} (see `advonnx attacks`)")
    return ATTACKS[key]


def make_attack(name: str, **settings: Any) -> Attack:
    """Build attack ``name`` from settings; unknown settings are refused with the valid ones."""
    cls = attack_class(name)
    allowed = cls.parameters()
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise AdvonnxError(f"attack {cls.name} has no setting {', '.join(unknown)}; its settings: {', '.join(allowed)}")
    return cls(**settings)
