"""Attacks, written against the model/oracle interface only (no onnxruntime here).

Every attack module is imported and registered here, so the registry (``registry.py``) imports
no attack and attacks that build others by name (AutoAttack's stages, Transfer's surrogate
attack) can use it without an import cycle."""

from .apgd import APGD
from .apgdt import APGDT
from .autoattack import AutoAttack
from .base import Attack, AttackContext, AttackResult
from .carlini_wagner import CarliniWagnerL2
from .certify import Certify
from .dag import DAG
from .deepfool import DeepFool
from .fab import FAB, FABT
from .gradient_descent import BIM, FGSM, PGD
from .hopskipjump import HopSkipJump
from .jsma import JSMA
from .nes import NES, SPSA
from .registry import ATTACKS, attack_class, make_attack, register
from .segpgd import SegPGD
from .square import Square
from .transfer import Transfer
from .universal import UniversalPerturbation

_cls: type[Attack]
for _cls in (FGSM, BIM, PGD, APGD, APGDT, DeepFool, JSMA, CarliniWagnerL2, DAG, FAB, FABT, SegPGD):
    register(_cls)
for _cls in (NES, SPSA, Square, HopSkipJump):  # query-only (score- and decision-based) attacks
    register(_cls)
register(AutoAttack)  # a cascade of registered attacks, looked up when it runs
register(Transfer)  # white-box on a surrogate, decisions of the target
register(UniversalPerturbation)
register(Certify)  # certificates, not attacks: the suite writes their rows

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackResult", "attack_class", "make_attack", "register"]
