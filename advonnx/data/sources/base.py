"""What every data source gets (:class:`LoadRequest`) and is (:class:`Source`), and the one-line error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from advonnx.data.dataset import Dataset, InputExpectation
from advonnx.data.intensity import IntensityRule
from advonnx.data.readers import one_line
from advonnx.errors import DataError


def err(where: object, what: str, todo: str) -> DataError:
    """One line: where, what is wrong; what to do."""
    return DataError(one_line(f"{where}: {what}; {todo}", 1000))


@dataclass
class LoadRequest:
    """The checked arguments of :func:`~advonnx.data.load.load_dataset` for one source.

    ``desc`` is the dataset description being built: a source fills ``format``,
    ``label_source``, ``spacing``, ... and appends to ``notes`` (``"...; "`` pieces).
    """

    path: Path
    expect: InputExpectation
    intensity: str  # as given ('auto' is resolved per source)
    rule: IntensityRule  # ``intensity`` parsed
    resize: str  # 'resample' or 'refuse'
    limit: int | None
    class_names: list[str] | None
    orientation: str | None  # a three-letter code (checked) or None: as stored
    voxel_spacing: tuple[float, ...] | None  # mm, array order; None: as stored
    stream: bool
    desc: dict[str, str]


@dataclass(frozen=True)
class Source:
    """A kind of data: ``matches(path)`` says whether ``path`` (it exists) is one,
    ``load(request)`` reads it into a :class:`Dataset`."""

    name: str
    matches: Callable[[Path], bool]
    load: Callable[[LoadRequest], Dataset]
