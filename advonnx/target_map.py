"""``--target-map``: which direction a targeted attack pushes, by name.

One syntax for both kinds of classifier, comma-separated entries ``SOURCE:TARGET``:

- multi-label models (independent sigmoids): ``FINDING:present`` or ``FINDING:absent`` (also
  ``1``/``0``), e.g. ``"pneumothorax:absent"``. The entries together form one target vector;
  a targeted attack succeeds when every named finding takes its named state (the others are
  free). FINDING is a class name or an index.
- single-label models: ``CLASS_A:CLASS_B``, e.g. ``"malignant:benign"``: samples whose
  reference class is A are pushed toward B. Classes are names or indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import AdvonnxError

STATES = {"present": 1, "absent": 0, "1": 1, "0": 0, "positive": 1, "negative": 0}


def _index(name: str, names: Sequence[str], what: str, text: str) -> int:
    if name in names:
        return list(names).index(name)
    if name.isdigit() and int(name) < len(names):
        return int(name)
    raise AdvonnxError(f"--target-map {text!r}: {name!r} is not a {what} of the model "
                       f"({', '.join(names)}); use a name or an index")


def parse_target_map(text: str, class_names: Sequence[str], *, multilabel: bool) -> list[tuple[int, int]]:
    """``text`` as (source, target) index pairs: (finding, state 0/1) for a multi-label model,
    (class, class) for a single-label one. One-line :class:`AdvonnxError` on anything else."""
    pairs: list[tuple[int, int]] = []
    entries = [e.strip() for e in str(text).split(",") if e.strip()]
    if not entries:
        raise AdvonnxError(f"--target-map {text!r} is empty; write e.g. pneumothorax:absent or malignant:benign")
    for entry in entries:
        src, sep, dst = (p.strip() for p in entry.partition(":"))
        if not sep or not src or not dst:
            raise AdvonnxError(f"--target-map entry {entry!r}: write SOURCE:TARGET, e.g. pneumothorax:absent "
                               "(multi-label) or malignant:benign (single-label)")
        if multilabel:
            state = STATES.get(dst.lower())
            if state is None:
                raise AdvonnxError(f"--target-map entry {entry!r}: a multi-label finding's state is present or "
                                   "absent (or 1/0)")
            pair = (_index(src, class_names, "finding", text), state)
        else:
            pair = (_index(src, class_names, "class", text), _index(dst, class_names, "class", text))
            if pair[0] == pair[1]:
                raise AdvonnxError(f"--target-map entry {entry!r} maps a class to itself")
        if any(p[0] == pair[0] for p in pairs):
            raise AdvonnxError(f"--target-map {text!r} names {src!r} twice")
        pairs.append(pair)
    return pairs


def multilabel_target(pairs: Sequence[tuple[int, int]], findings: int) -> np.ndarray:
    """The (K,) target vector of multi-label ``pairs``: the named state, -1 where free."""
    t = np.full(findings, -1, dtype=np.int64)
    for k, state in pairs:
        t[k] = state
    return t
