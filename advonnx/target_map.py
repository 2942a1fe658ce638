"""Clinically costly attack directions: ``--target-map "malignant:benign,tumour:notumor"``.

A target map lists directions ``SOURCE:TARGET`` (class names, or class indices 0..K-1),
comma-separated. A targeted attack setting with a map attacks each sample whose reference label
(the dataset's label, else the clean prediction) is a source class toward that source's target,
and does not attack the samples of other classes: their rows have status ``skipped`` and an
error starting with :data:`NOT_ATTACKED` (they count neither as robust nor as broken). Each
source class takes one target per map; several maps make several attack settings
(``--attack "pgd(target_map=a:b),pgd(target_map=a:c)"``). The flip rate per direction is in
``clinical.flip_rates``.

Multi-label models (independent sigmoids) take ``FINDING:present`` or ``FINDING:absent`` (also
``1``/``0``, ``positive``/``negative``), e.g. ``"pneumothorax:absent"``: the entries together form
one target vector (:func:`multilabel_target`); a targeted attack succeeds when every named finding
takes its named state, the others are free. Samples whose reference already holds the target are
not attacked (error starting with :data:`NO_TARGET`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import AdvonnxError

__all__ = ["NOT_ATTACKED", "NO_TARGET", "multilabel_target", "not_attacked", "parse_target_map", "split_target_map"]

# error text of the rows of samples a target map leaves unattacked (their class is no source)
NOT_ATTACKED = "not attacked: class"
# multi-label: the sample's reference already holds every named state
NO_TARGET = "no target: "
STATES = {"present": 1, "absent": 0, "1": 1, "0": 0, "positive": 1, "negative": 0}


def split_target_map(text: str) -> list[tuple[str, str]]:
    """The ``(source, target)`` words of ``text``, syntax only (no class names needed)."""
    pairs = []
    for entry in (e.strip() for e in str(text).split(",")):
        if not entry:
            continue
        src, colon, dst = (s.strip() for s in entry.partition(":"))
        if not colon or not src or not dst or ":" in dst:
            raise AdvonnxError(
                f"target map entry {entry!r}: write SOURCE:TARGET with class names or indices, "
                "e.g. --target-map malignant:benign"
            )
        pairs.append((src, dst))
    if not pairs:
        raise AdvonnxError(f"target map {text!r} names no direction; write e.g. --target-map malignant:benign")
    return pairs


def parse_target_map(
    text: str, class_names: Sequence[str] | None, num_classes: int | None = None, *, multilabel: bool = False
) -> list[tuple[int, int]]:
    """``text`` as ``[(source index, target index), ...]`` in the order written; for a
    multi-label model ``[(finding index, state 0/1), ...]``.

    Words are matched to ``class_names`` (exactly, else case-insensitively); integers are class
    indices (checked against ``num_classes`` or ``len(class_names)``). A bad entry raises a
    one-line :class:`AdvonnxError` naming it and the known class names."""
    names = [str(n) for n in (class_names or [])]
    k = num_classes if num_classes is not None else len(names) or None
    known = (", ".join(names) if names else "none") + (f" (or indices 0..{k - 1})" if k else "")

    def index(word: str, entry: str) -> int:
        if word in names:
            return names.index(word)
        folded = [n.lower() for n in names]
        if word.lower() in folded and folded.count(word.lower()) == 1:
            return folded.index(word.lower())
        if word.lstrip("-").isdigit():
            i = int(word)
            if k is not None and 0 <= i < k:
                return i
        raise AdvonnxError(f"target map entry {entry!r}: unknown class {word!r}; known classes: {known}")

    out: list[tuple[int, int]] = []
    for src, dst in split_target_map(text):
        entry = f"{src}:{dst}"
        if multilabel:
            state = STATES.get(dst.lower())
            if state is None:
                raise AdvonnxError(
                    f"target map entry {entry!r}: a multi-label finding's state is present or absent (or 1/0)"
                )
            if any(s == index(src, entry) for s, _ in out):
                raise AdvonnxError(f"target map entry {entry!r}: finding {src!r} is named twice")
            out.append((index(src, entry), state))
            continue
        pair = (index(src, entry), index(dst, entry))
        if pair[0] == pair[1]:
            raise AdvonnxError(f"target map entry {entry!r}: source and target are the same class")
        if any(s == pair[0] for s, _ in out):
            raise AdvonnxError(
                f"target map entry {entry!r}: class {src!r} is already a source; give each source one "
                "target per map (another target: a second attack with its own target_map)"
            )
        out.append(pair)
    return out


def multilabel_target(pairs: Sequence[tuple[int, int]], findings: int) -> np.ndarray:
    """The (K,) target vector of multi-label ``pairs``: the named state, -1 where free."""
    t = np.full(findings, -1, dtype=np.int64)
    for k, state in pairs:
        t[k] = state
    return t


def not_attacked(row: dict) -> bool:
    """A row of a sample that its setting's target map did not attack: its class is no source,
    or (multi-label) its reference already holds the target."""
    return row.get("status") == "skipped" and str(row.get("error") or "").startswith((NOT_ATTACKED, NO_TARGET))


def directions_for(
    text: str, class_names: Sequence[str] | None, num_classes: int | None = None
) -> tuple[list[tuple[int, int]], list[str]]:
    """The directions of ``text`` that fit one model's classes, and the entries that do not.

    A suite-wide map may name the classes of several datasets ("malignant:benign,tumour:notumor"):
    each model takes the entries whose two classes it knows; the runner rejects an entry that no
    model of the suite knows (with :func:`parse_target_map`'s message)."""
    fit, rest, texts = [], [], []
    for src, dst in split_target_map(text):
        try:
            fit.append(parse_target_map(f"{src}:{dst}", class_names, num_classes)[0])
            texts.append(f"{src}:{dst}")
        except AdvonnxError:
            rest.append(f"{src}:{dst}")
    if fit:
        parse_target_map(",".join(texts), class_names, num_classes)  # one target per source
    return fit, rest
