"""The entries of a suite (a model, a dataset, an attack setting) and the parsers of its
corruption and severity lists, shared by TOML parsing (``suite.py``) and the ``advonnx run``
options (``suite_overrides.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import AdvonnxError


@dataclass
class ModelEntry:
    name: str
    path: str
    dataset: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetEntry:
    name: str
    path: str
    limit: int | None = None
    intensity: str = "auto"
    resize: str = "resample"
    orientation: str | None = None  # e.g. "RAS": volumes reoriented on reading; None: as stored
    spacing: str | None = None  # e.g. "1.0,1.0,1.0" (mm): images resampled to it on reading; None: as stored
    # None: the suite's corruptions / severities; [] (corruptions = []): none for this dataset
    corruptions: list[str] | None = None
    severities: list[int] | None = None


@dataclass
class AttackEntry:
    name: str
    norm: str = "linf"
    eps: list[tuple[float, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    targeted: bool = False
    datasets: list[str] = field(default_factory=list)  # run only on these datasets ([] = all)
    # targeted only: "SOURCE:TARGET,..." directions (target_map.py; multi-label "FINDING:absent");
    # "" = a random target per sample
    target_map: str = ""


def parse_corruptions(value: Any) -> list[str]:
    """Corruption names from ``"all"``, ``"a,b"`` or a list; [] for none."""
    if not value:
        return []
    from .corruptions import corruption_names

    # "all" takes image and signal corruptions; each model gets those that fit its layout
    return corruption_names(value if isinstance(value, str) else ",".join(map(str, value)), modality=None)


def parse_severities(value: Any) -> list[int]:
    """Severities from ``"1-5"``, ``"1,3,5"``, ``3`` or a list; each in 1..5."""
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            lo, _, hi = part.partition("-")
            try:
                items.extend(range(int(lo), int(hi or lo) + 1))
            except ValueError:
                raise AdvonnxError(f"severities {value!r}: write e.g. 1-5 or 1,3,5") from None
    else:
        items = [int(v) for v in value]
    if not items or any(not 1 <= v <= 5 for v in items):
        raise AdvonnxError(f"severities {value!r} must lie in 1..5, e.g. 1-5 or 1,3,5")
    return sorted(set(items))
