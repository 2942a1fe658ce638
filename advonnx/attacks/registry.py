"""Attack registry: names → classes, construction from loose settings (CLI / suite TOML)."""

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
ALIASES: dict[str, str] = {"fgm": "fgsm", "ifgsm": "bim", "i-fgsm": "bim", "pgd_linf": "pgd",
                          "cw_l2": "cw", "carlini_wagner": "cw", "saliency": "jsma", "jsm": "jsma"}


def register(cls: type[Attack]) -> type[Attack]:
    ATTACKS[cls.name] = cls
    return cls


for _cls in (FGSM, BIM, PGD, APGD, APGDT, DeepFool, JSMA, CarliniWagnerL2, DAG, FAB, FABT, SegPGD):
    register(_cls)
for _cls in (NES, SPSA, Square, HopSkipJump):  # query-only (score- and decision-based) attacks
    register(_cls)
register(AutoAttack)  # a cascade of registered attacks, looked up when it runs
register(Transfer)  # white-box on a surrogate, decisions of the target
register(UniversalPerturbation)
register(Certify)  # certificates, not attacks: the suite writes their rows
ALIASES.update({"fab-t": "fab_t", "fabt": "fab_t", "seg_pgd": "segpgd", "seg-pgd": "segpgd"})
ALIASES.update({"auto_pgd": "apgd", "aa": "autoattack", "apgd-t": "apgdt", "apgd_t": "apgdt", "universal": "uap",
                "hopskipjump": "hsj", "square_attack": "square", "nes_pgd": "nes", "spsa_pgd": "spsa"})


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
        raise AdvonnxError(
            f"attack {cls.name} has no setting {', '.join(unknown)}; its settings: {', '.join(allowed)}"
        )
    return cls(**settings)
