"""Attack settings on the command line: ``--attack "pgd(steps=50, restarts=5),square(max_queries=5000)"``.

The keys are those of a suite TOML ``[[attacks]]`` entry: the attack's own settings (``advonnx
attacks`` lists them with their defaults) plus ``norm``, ``eps`` (one budget or a list
``[1/255, 2/255]``), ``targeted``, ``datasets`` and ``target_map`` (``target_map.py``; quoted
when it holds commas). Values are parsed, never evaluated: integers,
floats (``1e-3``), fractions (``2/255``), booleans (``true``/``false``), ``none``, strings (bare
words or quoted) and ``[...]`` lists. Each value is checked against the type of the setting's
default, so a typo fails at once with a one-line error, not an hour into a run.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import AdvonnxError

# keys of a TOML attack entry that are not constructor settings of the attack
ENTRY_KEYS = ("targeted", "datasets", "target_map")
_INT = re.compile(r"[+-]?\d+")
_FRACTION = re.compile(r"([+-]?[0-9.eE+-]+)/([0-9.eE+-]+)")


@dataclass
class AttackSpec:
    """One attack of ``--attack``: its name and the keys given in parentheses (typed)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)  # the attack's own settings
    norm: str | None = None
    eps: list[tuple[float, str]] | None = None  # (value, text as written)
    targeted: bool | None = None
    datasets: list[str] | None = None
    target_map: str | None = None  # "SOURCE:TARGET,..." (target_map.py); makes the attack targeted


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside parentheses, brackets and quotes; items stripped."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise AdvonnxError(f"--attack {text!r}: unbalanced {ch!r}")
        elif ch == sep and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise AdvonnxError(f"--attack {text!r}: unclosed {quote or '( or ['}")
    items.append(text[start:])
    return [s.strip() for s in items if s.strip()]


def parse_value(text: str) -> Any:
    """A literal without eval: int, float, fraction, bool, none, quoted or bare string, [list]."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        return [parse_value(v) for v in split_top_level(t[1:-1])]
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if _INT.fullmatch(t):
        return int(t)
    m = _FRACTION.fullmatch(t)
    try:
        if m:
            return float(m[1]) / float(m[2])
        return float(t)
    except (ValueError, ZeroDivisionError):
        pass
    return t


def _expected(cls, key: str) -> type | None:
    """The type a setting takes, from its default or else its annotation (None: any)."""
    default = cls.parameters()[key]
    if default is not None:
        return type(default)
    annotation = str(inspect.signature(cls.__init__).parameters[key].annotation)
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if re.search(rf"\b{name}\b", annotation):
            return typ
    return None


def _typed(cls, key: str, value: Any, where: str) -> Any:
    want = _expected(cls, key)
    if value is None or want is None:
        return value
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, bool) or not isinstance(value, want):
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a word"}.get(want, want.__name__)
        raise AdvonnxError(f"{where}: {cls.name} setting {key} takes {kind}, not {value!r}")
    return value


def parse_attack_specs(values: list[str] | str | None) -> list[AttackSpec]:
    """``--attack`` values (repeatable, comma-separated) as :class:`AttackSpec` s, validated
    against the registry: unknown attacks and unknown or mistyped settings raise AdvonnxError."""
    from .attacks import attack_class
    from .budgets import parse_eps

    texts = [values] if isinstance(values, str) else list(values or [])
    specs = []
    for item in (s for t in texts for s in split_top_level(t)):
        m = re.fullmatch(r"([A-Za-z][\w\-]*)\s*(?:\((.*)\))?", item, flags=re.S)
        if m is None:
            raise AdvonnxError(f"--attack {item!r}: write NAME or NAME(key=value, ...), e.g. pgd(steps=50, restarts=5)")
        cls = attack_class(m[1])
        spec = AttackSpec(name=m[1])
        where = f"--attack {item!r}"
        accepted = list(cls.parameters()) + list(ENTRY_KEYS)
        for pair in split_top_level(m[2] or ""):
            key, eq, raw = (s.strip() for s in pair.partition("="))
            if not eq or not raw:
                raise AdvonnxError(f"{where}: {pair!r} is not key=value (lists go in brackets: eps=[1/255, 2/255])")
            if key not in accepted:
                raise AdvonnxError(f"{where}: {cls.name} has no setting {key!r}; its settings: {', '.join(accepted)}")
            if key == "eps":
                inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
                spec.eps = parse_eps(split_top_level(inner))
            elif key == "norm":
                spec.norm = str(parse_value(raw)).lower()
            elif key == "targeted":
                if not isinstance(value := parse_value(raw), bool):
                    raise AdvonnxError(f"{where}: targeted takes true or false, not {raw!r}")
                spec.targeted = value
            elif key == "target_map":
                from .target_map import split_target_map

                spec.target_map = str(parse_value(raw))
                split_target_map(spec.target_map)
            elif key == "datasets":
                value = parse_value(raw)
                spec.datasets = [str(v) for v in (value if isinstance(value, list) else [value])]
            else:
                spec.settings[key] = _typed(cls, key, parse_value(raw), where)
        specs.append(spec)
    return specs
