"""Galleries of an image dataset's audit: the suspected label errors, and the near-duplicate pairs split across folds.

Each function takes an [`AuditReport`] made on an image dataset (it keeps the dataset to read the images from) and
returns a `matplotlib.figure.Figure` (no pyplot state), or `None` when there is nothing to show.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .checks import AuditReport

__all__ = ["plot_duplicate_pairs", "plot_label_issues"]

SAVE_DPI = 100  # what `AuditReport.save` writes the galleries with


def _image(report: "AuditReport", row: int) -> np.ndarray:
    return np.asarray(report.dataset[int(row)][report.image_column].convert("RGB"))


def _shown(report: "AuditReport", frame, max_items: int):
    """The first `max_items` rows of `frame` to draw, or `None` when there are none."""
    if report.dataset is None or report.image_column is None:
        raise ValueError("This audit report has no image dataset to draw from (it was loaded, or made on text): "
                         "make it with hf_tlcv.audit.audit(results, dataset) on the image dataset.")
    shown = frame.head(max_items)
    return None if shown.empty else shown


def _grid(n: int, columns: int, cell: float, title_lines: int) -> tuple["Figure", np.ndarray]:
    from ..plots.cv import bounded_figure

    rows = math.ceil(n / columns)
    # Capped at MAX_PIXELS a side at the dpi `AuditReport.save` uses: a large `max_items` shrinks the images instead.
    figure = bounded_figure(cell * columns, (cell + 0.17 * title_lines) * rows + 0.5, dpi=SAVE_DPI)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    return figure, axes


def plot_label_issues(report: "AuditReport", max_items: int = 16, columns: int = 8) -> "Figure | None":
    """The suspected label errors, lowest label quality first: each image with its row, its given label (red), the
    label the out-of-fold model predicts and that prediction's probability.

    Args:
        report: an audit of an image dataset.
        max_items: images shown at most.
        columns: images per line.
    """
    from ..plots.cv import LITERAL_TEXT, short_label

    issues = _shown(report, report.label_issues, max_items)
    if issues is None:
        return None
    figure, axes = _grid(len(issues), min(columns, len(issues)), cell=1.7, title_lines=3)
    for ax, rec in zip(axes, issues.itertuples()):
        ax.imshow(_image(report, rec.row), interpolation="nearest")
        ax.set_title(f"row {rec.row}\ngiven: {short_label(rec.given, 20)}\n"
                     f"pred: {short_label(rec.predicted, 20)} ({rec.prob_prediction:.2f})",
                     fontsize=7, color="#a50f15", **LITERAL_TEXT)
    figure.suptitle(f"Suspected label errors ({len(report.label_issues)} flagged; out-of-fold probabilities)",
                    fontsize=9)
    figure.tight_layout()
    return figure


def plot_duplicate_pairs(report: "AuditReport", max_items: int = 8, columns: int = 4) -> "Figure | None":
    """The near-duplicate pairs split between a fold's training and eval parts, closest first: the two images side
    by side with their rows, labels and folds (first repeat) and their embedding distance.

    Args:
        report: an audit of an image dataset.
        max_items: pairs shown at most.
        columns: pairs per line.
    """
    from ..plots.cv import LITERAL_TEXT, short_label

    pairs = _shown(report, report.straddling_pairs, max_items)
    if pairs is None:
        return None
    figure, axes = _grid(2 * len(pairs), 2 * min(columns, len(pairs)), cell=1.4, title_lines=2)
    names = report.label_names
    for i, rec in enumerate(pairs.itertuples()):
        for ax, row, label, fold in ((axes[2 * i], rec.row_a, rec.label_a, rec.fold_a),
                                     (axes[2 * i + 1], rec.row_b, rec.label_b, rec.fold_b)):
            ax.imshow(_image(report, row), interpolation="nearest")
            ax.set_title(f"row {row}, fold {fold}\n{short_label(names[label], 20)}", fontsize=7, **LITERAL_TEXT)
        axes[2 * i].text(1.0, -0.08, f"distance {rec.distance:.3f}", transform=axes[2 * i].transAxes,
                         ha="center", va="top", fontsize=7)
    figure.suptitle(f"Near-duplicates split across folds ({len(report.straddling_pairs)} pairs)", fontsize=9)
    figure.tight_layout()
    return figure
