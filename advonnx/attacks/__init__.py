"""Attacks, written against the model/oracle interface only (no onnxruntime here)."""

from .base import Attack, AttackContext, AttackResult
from .registry import ATTACKS, attack_class, make_attack, register

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackResult", "attack_class", "make_attack", "register"]
