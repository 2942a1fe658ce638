"""The typed summary layer: every figure of a run computed once from its Parquet rows.

- :class:`SettingSummary` (``setting.py``): one model × attack setting (a leaderboard row).
- :class:`ModelSummary`, :class:`RunSummary` (``run.py``): per model, and the whole run with
  its headline, contrast pairs, masking verdicts, worst case, corruption figures and notes.
- ``headline.py`` (which setting ranks a model), ``tables.py`` (run-level figures from the rows),
  ``notes.py`` (the leaderboard's footnotes).

Renderers (``leaderboard.py``, ``advonnx.report``) read these and compute no figure themselves.
"""

from .headline import at_headline, guess_headline, headline_for, headline_key
from .run import ModelSummary, RunSummary, summarize_run
from .setting import SettingSummary, percent, setting_label, summarize, summarize_settings

__all__ = [
    "SettingSummary",
    "ModelSummary",
    "RunSummary",
    "summarize_settings",
    "summarize_run",
    "summarize",
    "headline_for",
    "headline_key",
    "at_headline",
    "guess_headline",
    "setting_label",
    "percent",
]
