"""Attack budgets as the suite TOML and the command line write them (``8/255``, ``0.03``,
``"1/255,2/255"`` or a list): a leaf module, so the suite, ``--attack`` specs and joint
attacks parse them one way without importing each other."""

from __future__ import annotations

from typing import Any

from .errors import AdvonnxError
from .spec import _fraction


def parse_eps(value: Any) -> list[tuple[float, str]]:
    """Budgets from ``8/255``, ``0.03``, ``"1/255,2/255"`` or a list of those."""
    items: list[Any]
    if isinstance(value, (int, float)):
        items = [value]
    elif isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v]
    else:
        items = list(value)
    out = []
    for item in items:
        text = str(item)
        try:
            val = float(_fraction(text))
        except (ValueError, ZeroDivisionError):
            raise AdvonnxError(f"eps {text!r} is not a number; write e.g. 8/255 or 0.03") from None
        if not val >= 0:
            raise AdvonnxError(f"eps {text!r} must be >= 0")
        out.append((val, text))
    if not out:
        raise AdvonnxError("no eps given; write e.g. --eps 2/255,8/255")
    return out
