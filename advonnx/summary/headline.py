"""The headline setting of a run: which setting of each model ranks it (``headline`` of the suite,
with per-dataset overrides), and the model's robust figure there."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .setting import SettingSummary

Headline = dict[str, Any]


def _fields(s: SettingSummary | Mapping[str, Any]) -> Mapping[str, Any]:
    return s.as_dict() if isinstance(s, SettingSummary) else s


def headline_for(headline: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    """The headline setting of one dataset: ``headline`` with its ``datasets.<name>`` override
    (a suite mixing images and tabular data needs a budget per dataset)."""
    headline = headline or {}
    base = {k: v for k, v in headline.items() if k != "datasets"}
    return {**base, **((headline.get("datasets") or {}).get(dataset) or {})}


def headline_key(summaries: Sequence[SettingSummary | Mapping[str, Any]], headline: dict[str, Any]) -> dict[str, float]:
    """Robust figure per model at the headline setting (for sorting)."""
    ranked: dict[str, tuple[int, float]] = {}
    for s in map(_fields, summaries):
        h = headline_for(headline, s["dataset"])
        want_attack, want_norm, want_eps = h.get("attack"), h.get("norm"), h.get("eps")
        if want_attack and s["attack"] != want_attack or want_norm and s["norm"] != want_norm:
            continue
        if want_eps is not None and str(want_eps) not in (s["eps_text"], f"{s['eps']:g}"):
            try:
                from ..spec import _fraction

                if not math.isclose(float(_fraction(want_eps)), s["eps"], rel_tol=1e-9):
                    continue
            except ValueError:
                continue
        # several settings of the headline attack (e.g. steps): the worst of them; untargeted ones
        # unless the headline says targeted or the model has only targeted ones
        rank = int(bool(s.get("targeted")) != bool(h.get("targeted", False)))
        best = ranked.get(s["model"], (2, math.inf))
        if (rank, s["robust"]) < best:
            ranked[s["model"]] = (rank, s["robust"])
    return {model: robust for model, (_, robust) in ranked.items()}


def is_headline(s: SettingSummary, order: dict[str, float], headline: Headline) -> bool:
    """The leaderboard's bold rows (and ``headline`` in ``show --json``): the headline attack's
    settings at the model's headline robust figure."""
    return (
        bool(order)
        and s.model in order
        and s.robust == order[s.model]
        and s.attack == headline_for(headline, s.dataset).get("attack")
    )


def _nan(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def at_headline(settings: Sequence[SettingSummary], headline: Headline) -> dict[tuple[str, str], SettingSummary]:
    """Per (model, dataset), the one adversarial setting at the headline (the first in
    ``settings`` of those :func:`is_headline` marks at the headline norm)."""
    keys = headline_key(settings, headline) if headline else {}
    out: dict[tuple[str, str], SettingSummary] = {}
    for s in settings:
        h = headline_for(headline, s.dataset)
        if (
            s.model in keys
            and not s.is_corruption
            and s.attack == h.get("attack")
            and s.norm == h.get("norm")
            and s.robust == keys[s.model]
            or (s.model in keys and _nan(keys[s.model]) and _nan(s.robust) and s.attack == h.get("attack"))
        ):
            out.setdefault((s.model, s.dataset), s)
    return out


def guess_headline(settings: Sequence[SettingSummary], meta: dict[str, Any]) -> Headline:
    """The run's headline setting (metadata), else the adversarial setting most models share
    (the largest eps among those)."""
    h = dict(meta.get("headline") or (meta.get("config") or {}).get("headline") or {})
    if h:
        return h
    adv = [s for s in settings if not s.is_corruption]
    if not adv:
        return {}
    counts: dict[tuple, set] = defaultdict(set)
    for s in adv:
        counts[(s.attack, s.norm, s.eps, s.eps_text)].add(s.model)
    best = max(counts, key=lambda k: (len(counts[k]), k[2]))
    return {"attack": best[0], "norm": best[1], "eps": best[3]}
