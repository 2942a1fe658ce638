"""A whole run, summarized once from its rows (:func:`summarize_run`): every setting, each model
(rank, clean figure, headline setting, worst attack and corruption, flags), and the run-level
figures (the headline, contrast pairs, gradient-masking verdicts, worst case over attacks,
cascade stages, corruption robustness, certified accuracy) and the leaderboard's notes. The
terminal leaderboard (``leaderboard.render``) and the HTML report (``advonnx.report``) only
render a :class:`RunSummary`, so their figures agree by construction."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .headline import Headline, at_headline, headline_key, is_headline
from .setting import SettingSummary, summarize_settings
from .tables import cascade_stages, certified_curves, corruption_summary


def _nan(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


@dataclass(frozen=True)
class ModelSummary:
    """One model on one dataset: its settings in leaderboard order and what the leaderboard
    row of the model shows. The clean figure (``clean``, ``clean_ci``, ``n``, ``groups``) is that
    of ``reference``, the first setting (leaderboard order) with a clean figure."""

    rank: int  # 1-based, leaderboard order (dataset, then headline robust figure)
    model: str
    dataset: str
    settings: tuple[SettingSummary, ...]
    reference: SettingSummary
    headline: SettingSummary | None  # the one adversarial setting at the headline (None: not run)
    headline_robust: float | None  # the model's robust figure at the headline, for ranking
    worst_attack: SettingSummary | None
    worst_corruption: SettingSummary | None
    gradients: tuple[str, ...]  # gradient kinds of its settings ("none": queries only)
    invalid: int  # rows over all its settings
    errored: int
    skipped: int

    @property
    def clean(self) -> float:
        return self.reference.clean

    @property
    def clean_ci(self) -> tuple[float, float]:
        return self.reference.clean_ci

    @property
    def metric(self) -> str:
        return self.reference.metric

    @property
    def drop(self) -> float:
        """Clean minus robust at the headline setting (NaN without one)."""
        h = self.headline
        return (self.clean - h.robust) if h and not _nan(h.robust) and not _nan(self.clean) else math.nan


@dataclass(frozen=True)
class RunSummary:
    """Every figure of a run that the leaderboard and the report show."""

    headline: Headline
    settings: tuple[SettingSummary, ...]  # in the order they first appear in the rows
    ranked: tuple[SettingSummary, ...]  # leaderboard order
    headline_robust: dict[str, float]  # per model, its robust figure at the headline (ranking)
    models: tuple[ModelSummary, ...]  # leaderboard order
    contrasts: tuple[dict[str, Any], ...]  # every headline pair (compare.contrast_tests, all_pairs)
    masking: dict[str, Any]  # masking.masking_checks
    worst_case: tuple[dict[str, Any], ...]  # worst_case.worst_case, where a norm has 2 attacks or more
    cascades: tuple[dict[str, Any], ...]  # tables.cascade_stages
    corruptions: tuple[dict[str, Any], ...]  # tables.corruption_summary rows with their intervals
    corruption_spearman: dict[str, tuple[float, int]]
    certified: tuple[dict[str, Any], ...]  # tables.certified_curves
    notes: tuple[str, ...] = field(default=())  # the leaderboard's footnotes (rich markup)

    def is_headline(self, s: SettingSummary) -> bool:
        """A leaderboard bold row: the headline attack's setting at the model's headline figure."""
        return is_headline(s, self.headline_robust, self.headline)

    def summaries(self) -> list[dict[str, Any]]:
        """The settings in leaderboard order as the plain dicts of ``leaderboard.summarize``."""
        return [s.as_dict() for s in self.ranked]

    def model(self, name: str, dataset: str) -> ModelSummary | None:
        return next((m for m in self.models if m.model == name and m.dataset == dataset), None)


def _ranked(settings: Sequence[SettingSummary], order: dict[str, float]) -> list[SettingSummary]:
    return sorted(
        settings,
        key=lambda s: (
            s.dataset,
            -(order.get(s.model, -1.0)),
            s.model,
            s.is_corruption,
            s.attack,
            s.norm,
            s.eps,
            s.label,
        ),
    )


def _models(
    settings: Sequence[SettingSummary],
    ranked: Sequence[SettingSummary],
    order: dict[str, float],
    heads: dict[tuple[str, str], SettingSummary],
) -> tuple[ModelSummary, ...]:
    groups: dict[tuple[str, str], list[SettingSummary]] = {}
    for s in ranked:
        groups.setdefault((s.model, s.dataset), []).append(s)
    out = []
    for rank, ((model, dataset), ss) in enumerate(groups.items(), start=1):
        mine = [s for s in settings if (s.model, s.dataset) == (model, dataset)]  # first-appearance order
        adv = [s for s in mine if not s.is_corruption and not _nan(s.robust)]
        cor = [s for s in mine if s.is_corruption and not _nan(s.robust)]
        out.append(
            ModelSummary(
                rank=rank,
                model=model,
                dataset=dataset,
                settings=tuple(ss),
                reference=next((s for s in ss if not _nan(s.clean)), ss[0]),
                headline=heads.get((model, dataset)),
                headline_robust=order.get(model),
                worst_attack=min(adv, key=lambda s: s.robust) if adv else None,
                worst_corruption=min(cor, key=lambda s: s.robust) if cor else None,
                gradients=tuple(sorted({s.gradient for s in mine if s.gradient and s.gradient != "none"}) or ["none"]),
                invalid=sum(s.invalid for s in mine),
                errored=sum(s.errored for s in mine),
                skipped=max(s.skipped for s in mine),
            )
        )
    return tuple(out)


def _masking(table: pa.Table, folders: Sequence[Path] | None) -> dict[str, Any]:
    """``masking.masking_checks``; with ``folders`` (the report), a table the checks cannot read
    falls back to the verdicts the runs stored."""
    from ..masking import masking_checks, read_masking

    if folders is None:
        return masking_checks(table)
    try:
        return masking_checks(table)
    except Exception:  # a report of odd rows still renders: fall back to what the run stored
        stored = [read_masking(f) for f in folders]
        return {"models": [m for r in stored if r for m in r.get("models", [])]}


def summarize_run(
    table: pa.Table,
    headline: Headline | None = None,
    *,
    folders: Sequence[Path] | None = None,
    settings: Sequence[SettingSummary] | None = None,
) -> RunSummary:
    """The :class:`RunSummary` of a result table at ``headline`` (the run's, or ``{}``: no ranking).
    ``folders``: the run folders the table came from (the report's fallback for the masking
    verdicts); ``settings``: the table's :func:`summarize_settings`, if already computed."""
    from ..compare import contrast_tests
    from ..worst_case import worst_case
    from .intervals import corruption_intervals
    from .notes import run_notes

    headline = headline or {}
    settings = summarize_settings(table) if settings is None else list(settings)
    order = headline_key(settings, headline)
    ranked = _ranked(settings, order)
    legacy = [s.as_dict() for s in ranked]
    # corruption figures summed in the rows' order (``show --json`` has always), listed by dataset name
    cs = corruption_summary([s.as_dict() for s in settings], headline) if settings else {"rows": [], "spearman": {}}
    run = RunSummary(
        headline=headline,
        settings=tuple(settings),
        ranked=tuple(ranked),
        headline_robust=order,
        models=_models(settings, ranked, order, at_headline(settings, headline)),
        contrasts=tuple(contrast_tests(table, legacy, headline, all_pairs=True) if headline and settings else ()),
        masking=_masking(table, folders) if settings else {"models": []},
        worst_case=tuple(r for r in worst_case(table.to_pylist()) if len(r["attacks"]) >= 2) if settings else (),
        cascades=tuple(cascade_stages(table)) if settings else (),
        corruptions=tuple(sorted(corruption_intervals(table, cs["rows"]), key=lambda r: r["dataset"]))
        if cs["rows"]
        else (),
        corruption_spearman=dict(sorted(cs["spearman"].items())),
        certified=tuple(certified_curves(table, legacy)) if settings else (),
    )
    return dataclasses.replace(run, notes=tuple(run_notes(run, table, legacy))) if settings else run
