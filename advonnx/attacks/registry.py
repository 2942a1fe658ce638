"""Attack registry: names → classes, construction from loose settings (CLI / suite TOML).

Each attack class declares its ``name`` and ``aliases``; :func:`register` reads both."""

from __future__ import annotations

from typing import Any

from ..errors import AdvonnxError
from .apgd import APGD
from .apgdt import APGDT
from .autoattack import AutoAttack
from .base import Attack
from .carlini_wagner import CarliniWagnerL2
from .certify import Certify
from .dag import DAG
from .deepfool import DeepFool
from .fab import FAB, FABT
from .gradient_descent import BIM, FGSM, PGD
from .hopskipjump import HopSkipJump
from .jsma import JSMA
from .nes import NES, SPSA
from .segpgd import SegPGD
from .square import Square
from .transfer import Transfer
from .universal import UniversalPerturbation

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


_cls: type[Attack]
for _cls in (FGSM, BIM, PGD, APGD, APGDT, DeepFool, JSMA, CarliniWagnerL2, DAG, FAB, FABT, SegPGD):
    register(_cls)
for _cls in (NES, SPSA, Square, HopSkipJump):  # query-only (score- and decision-based) attacks
    register(_cls)
register(AutoAttack)  # a cascade of registered attacks, looked up when it runs
register(Transfer)  # white-box on a surrogate, decisions of the target
register(UniversalPerturbation)
register(Certify)  # certificates, not attacks: the suite writes their rows


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
