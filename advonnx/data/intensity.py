"""Intensity rules: from image units (8-bit, HU, scanner units) to the model's value range."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from advonnx.errors import DataError

#: rule (as written by the user) -> what it does
INTENSITY_RULES: dict[str, str] = {
    "auto": "8-bit images (uint8) divided by 255; anything else (CT in HU, MRI scanner units, "
    "16-bit, float) percentile window 0.5-99.5 per image; mapped to the value range, clipped. "
    "For an .npz, 'auto' takes x as it is (it must lie inside the value range)",
    "none": "values taken as they are; they must already lie inside the value range",
    "minmax": "per image: minimum -> low end of the value range, maximum -> high end",
    "percentile:LO-HI": "per image: the LO-th and HI-th percentiles map to the ends of the "
    "value range, clipped (e.g. percentile:1-99; percentile:1,99 is the same)",
    "window:LO,HI": "fixed window in image units: LO and HI map to the ends of the value range, "
    "clipped (e.g. CT window:-1000,400)",
    "divide:K": "divide by K then clip to [0, 1] and map to the value range (e.g. divide:4095 for 12-bit)",
}

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class IntensityRule:
    kind: str  # auto | none | minmax | percentile | window | divide
    a: float | None = None
    b: float | None = None

    def __str__(self) -> str:
        if self.kind == "percentile":
            return f"percentile:{self.a:g}-{self.b:g}"
        if self.kind == "window":
            return f"window:{self.a:g},{self.b:g}"
        if self.kind == "divide":
            return f"divide:{self.a:g}"
        return self.kind


def _given(value: float | None, rule: IntensityRule) -> float:
    """A parameter that :func:`parse_intensity_rule` always sets for ``rule``'s kind."""
    if value is None:
        raise _bad_rule(rule.kind, "a parameter is missing")
    return value


def _bad_rule(rule: object, why: str = "") -> DataError:
    return DataError(
        f"intensity rule {rule!r} is not understood{(' (' + why + ')') if why else ''}; use one of "
        "auto, none, minmax, percentile:LO-HI (e.g. percentile:1-99), window:LO,HI "
        "(e.g. window:-1000,400), divide:K"
    )


def parse_intensity_rule(rule: str | IntensityRule) -> IntensityRule:
    """Parse ``"percentile:1-99"``, ``"window:-1000,400"`` ... raising :class:`DataError`."""
    if isinstance(rule, IntensityRule):
        return rule
    if not isinstance(rule, str):
        raise _bad_rule(rule)
    r = rule.strip().lower().replace(" ", "")
    if r in ("auto", "none", "minmax"):
        return IntensityRule(r)
    m = re.fullmatch(rf"percentile:({_NUM})[-,]({_NUM})", r)  # LO-HI or LO,HI
    if m:
        lo, hi = float(m.group(1)), float(m.group(2))
        if not (0 <= lo < hi <= 100):
            raise _bad_rule(rule, "need 0 <= LO < HI <= 100")
        return IntensityRule("percentile", lo, hi)
    m = re.fullmatch(rf"window:({_NUM}),({_NUM})", r)
    if m:
        lo, hi = float(m.group(1)), float(m.group(2))
        if not lo < hi:
            raise _bad_rule(rule, "need LO < HI")
        return IntensityRule("window", lo, hi)
    m = re.fullmatch(rf"divide:({_NUM})", r)
    if m:
        k = float(m.group(1))
        if not k > 0:
            raise _bad_rule(rule, "need K > 0")
        return IntensityRule("divide", k)
    raise _bad_rule(rule)


def _linear(x: np.ndarray, a: float, b: float, lo: float, hi: float) -> np.ndarray:
    """Map [a, b] to [lo, hi], clipped; a constant image (b <= a) maps to lo."""
    if not b > a:
        return np.full(x.shape, lo, dtype=np.float64)
    u = (x - a) / (b - a)
    np.clip(u, 0.0, 1.0, out=u)
    return lo + u * (hi - lo)


def apply_rule(
    image: np.ndarray,
    rule: IntensityRule,
    value_range: tuple[float, float],
    *,
    eight_bit: bool | None = None,
    name: str = "image",
) -> np.ndarray:
    """``rule`` on one image (all channels together); float64 result inside ``value_range``.

    ``eight_bit`` tells 'auto' whether the image came from an 8-bit file (default: its dtype
    is uint8).
    """
    x = np.asarray(image)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name}: pixel type {x.dtype} is not a real number; convert it to int or float")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name}: contains NaN or infinite values; replace them before loading")
    lo, hi = float(value_range[0]), float(value_range[1])
    kind = rule.kind
    if kind == "auto":
        if eight_bit is None:
            eight_bit = np.asarray(image).dtype == np.uint8
        if eight_bit:
            return _linear(x, 0.0, 255.0, lo, hi)
        kind, rule = "percentile", IntensityRule("percentile", 0.5, 99.5)
    if kind == "none":
        if x.size and (x.min() < lo or x.max() > hi):
            raise DataError(
                f"{name}: values span [{x.min():g}, {x.max():g}], outside the model's value range "
                f"[{lo:g}, {hi:g}]; pass an intensity rule such as 'percentile:0.5-99.5', 'minmax' or 'window:LO,HI'"
            )
        return x
    if x.size == 0:
        return x
    if kind == "minmax":
        return _linear(x, float(x.min()), float(x.max()), lo, hi)
    if kind == "percentile":
        a, b = np.percentile(x, [rule.a, rule.b])
        return _linear(x, float(a), float(b), lo, hi)
    if kind == "window":
        return _linear(x, _given(rule.a, rule), _given(rule.b, rule), lo, hi)
    if kind == "divide":
        return _linear(x, 0.0, _given(rule.a, rule), lo, hi)
    raise _bad_rule(str(rule))


def map_intensity(image: np.ndarray, rule: str, value_range=(0.0, 1.0)) -> np.ndarray:
    """Map one image's intensities to ``value_range`` by ``rule`` (see :data:`INTENSITY_RULES`).

    The whole array is one image (all channels share one window). Returns float64, clipped to
    ``value_range``. 'auto' divides uint8 arrays by 255 and windows anything else at the
    0.5/99.5 percentiles. Raises :class:`DataError` for unknown rules, non-finite values, or
    ('none') values outside the range.
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    if not lo < hi:
        raise DataError(f"value range {value_range!r} is not an interval lo < hi; fix the model spec")
    return apply_rule(image, parse_intensity_rule(rule), (lo, hi))
