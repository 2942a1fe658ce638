"""Class labels: integers or class names, checked against the known classes."""

from __future__ import annotations

import re

import numpy as np

from advonnx.data.sources.base import err


def label_index(value: str | int, where: str, class_names: list[str] | None) -> int | str:
    """An int label (checked against class_names) or a class name left for later mapping."""
    if isinstance(value, str):
        v = value.strip()
        if v == "":
            raise err(where, "empty label", "give every sample a label (an integer or a class name)")
        if class_names is not None and v in class_names:
            return class_names.index(v)
        if re.fullmatch(r"[-+]?\d+", v):
            value = int(v)
        else:
            if class_names is not None:
                raise err(
                    where,
                    f"label {v!r} is not one of the known classes ({', '.join(class_names)})",
                    "fix the label or pass class_names that include it",
                )
            return v
    value = int(value)
    if value < 0 or (class_names is not None and value >= len(class_names)):
        known = f"0..{len(class_names) - 1} ({', '.join(class_names)})" if class_names else "0 or more"
        raise err(where, f"label {value} is outside the known classes {known}", "fix the label or pass class_names")
    return value


def finish_labels(labels: list, where: str, class_names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    names = [v for v in labels if isinstance(v, str)]
    if names:
        if any(isinstance(v, int) for v in labels):
            raise err(where, "labels mix integers and class names", "use one kind, or pass class_names")
        class_names = sorted(set(names))
        labels = [class_names.index(v) for v in labels]
    return np.asarray(labels, dtype=np.int64), class_names
