"""Self-contained HTML report of a result set: leaderboard, robustness curves, example panels.

``write_report(path, output)`` reads the rows (``results.read_results``), the run metadata and
the adversarial examples the run saved (``_examples/part-<key>.npz`` beside the chunks) and writes
one HTML file that opens offline: CSS and the small sorting/selection script are inline (package
files ``style.css`` and ``report.js``), plots are matplotlib SVGs and example images tiny PNGs,
all as ``data:`` URIs.

Every figure comes from the run's :class:`~advonnx.summary.RunSummary`, the one the terminal
leaderboard renders. Modules: ``page`` (sections, writing), ``html`` (tables, callouts),
``figures`` (plots), ``examples`` (example panels).

Sections: run facts; the leaderboard per model (sortable) and every setting (sortable, filter);
the "equal clean, different robust" contrast at the headline setting (callout + paired bars);
robustness curves (metric vs eps per attack, vs severity per corruption, vs queries for
query-based attacks); example panels (clean, adversarial, amplified perturbation, predictions and
confidences; label-map overlays for segmentation; the central slice of 3-D images).

matplotlib comes with the ``report`` extra and is imported only here, lazily.
"""

from .examples import CLASS_COLORS, MAX_EXAMPLE_BYTES, MAX_IMAGE_SIDE, _plane, collect_examples, example_pairs
from .figures import PALETTE, _mpl, _png_uri, _svg_uri, contrast_figure, curve_figures
from .html import CSS, JS, NORM_NAMES, _class_label, _class_names, _contrast_html, _e
from .page import merged_metadata, render_report, write_compare_report, write_report

__all__ = [
    "render_report",
    "write_report",
    "write_compare_report",
    "collect_examples",
    "curve_figures",
    "contrast_figure",
    "example_pairs",
    "merged_metadata",
    "CSS",
    "JS",
    "PALETTE",
    "CLASS_COLORS",
    "NORM_NAMES",
    "MAX_IMAGE_SIDE",
    "MAX_EXAMPLE_BYTES",
    "_plane",
    "_mpl",
    "_svg_uri",
    "_png_uri",
    "_e",
    "_contrast_html",
    "_class_label",
    "_class_names",
]
