"""Plots of a cross-validation: per-fold spread, train vs. eval per fold, pooled confusion matrix, per-class F1.

Each function takes a [`CVResults`] and returns a matplotlib `Figure`; [`save_plots`] writes all of them as PNG.

Two rules hold for every figure of the package (these plots, the audit's galleries, a study's and a search's plots):
- **Bounded size.** A figure is made by [`bounded_figure`], at most `MAX_PIXELS` on each side at the resolution it
  is saved with, however many classes, folds or items it shows; plots that would grow with the classes draw at most
  `MAX_PLOTTED_CLASSES` of them and say in their title which ones.
- **Text from users is drawn literally.** Class, variant, metric and parameter names are folder names and keys that
  strangers choose: drawn with `**LITERAL_TEXT`, or passed through [`literal`], a name like `$^^$` is its six
  characters, not mathtext that fails and loses the image.

Example:
```python
>>> from hf_tlcv.plots import bounded_figure, short_label
>>> figure = bounded_figure(100, 3, dpi=110)  # asked 100 inches wide: capped at MAX_PIXELS
>>> [round(side * 110) for side in figure.get_size_inches()]
[2000, 330]
>>> short_label("a" * 40)
'aaaaaaaaaaaaaaaaaaaaaaaaaaa…'

```
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
import numpy as np
import pandas as pd

from ..results import CVResults

PLOT_FILES = {
    "fold_scores": "fold_scores.png",
    "train_vs_eval": "train_vs_eval.png",
    "confusion_matrix": "confusion_matrix.png",
    "per_class_f1": "per_class_f1.png",
}
# Written beside the confusion matrix when the plot shows only some of the classes: every non-zero count.
CONFUSION_COUNTS_FILE = "confusion_counts.csv"
# The per-class plot draws at most this many classes (the lowest F1), and the confusion matrix at most this many
# rows and columns (beyond, the classes of the largest confusions), so many classes keep a readable, bounded figure.
MAX_PLOTTED_CLASSES = 30
# Every figure is at most this many pixels wide and high at the dpi it is saved with: 300 classes once made a
# 230-megapixel confusion matrix and 1,000 classes an out-of-memory kill.
MAX_PIXELS = 2000
DPI = 110
# Keyword arguments for every matplotlib text drawn from user data: no mathtext (`$...$`), no LaTeX.
LITERAL_TEXT = {"parse_math": False, "usetex": False}
# Names longer than this are shortened with "…" on axes, so one long name cannot squeeze the plot to nothing.
MAX_LABEL_CHARS = 28


def bounded_figure(width: float, height: float, dpi: float = DPI) -> Figure:
    """A `Figure` of `width` x `height` inches, each side capped at `MAX_PIXELS` pixels at `dpi`.

    Args:
        width, height: the size the plot would like, in inches (it may grow with what it shows).
        dpi: the resolution the figure will be saved with.
    """
    cap = MAX_PIXELS / dpi
    return Figure(figsize=(min(width, cap), min(height, cap)))


def literal(*texts):
    """Make matplotlib `Text` objects drawn by others (legend entries) show their characters: no mathtext, no LaTeX.
    Returns the texts."""
    for text in texts:
        text.set(**LITERAL_TEXT)
    return texts


def short_label(name: object, width: int = MAX_LABEL_CHARS) -> str:
    """`name` as text for an axis: at most `width` characters (the last one "…" when shortened), one line."""
    text = str(name).replace("\r", " ").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _score_metrics(results: CVResults) -> list[str]:
    # Scores in [0, 1] share one axis; the loss has its own scale and is left to the train-vs-eval plot.
    return [m for m in results.summary if m != "loss"]


def plot_fold_scores(results: CVResults) -> Figure:
    """Every fold's eval score per metric (dots), the mean (bar) and the corrected 95% interval (whiskers)."""
    metrics = _score_metrics(results)
    summary = results.summary
    fig = bounded_figure(1.6 + 1.4 * len(metrics), 4)
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for i, name in enumerate(metrics):
        values = [f.eval_metrics[name] for f in results.folds]
        s = summary[name]
        low, high = s["ci95"]
        ax.bar(i, s["mean"], width=0.6, color="#c6dbef", edgecolor="#3182bd", zorder=1)
        if np.isfinite(low):
            ax.errorbar(i, s["mean"], yerr=[[s["mean"] - low], [high - s["mean"]]], color="#08519c", capsize=8,
                        zorder=2)
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, color="#08306b", s=18, zorder=3)
        ax.annotate(f"{s['mean']:.3f}", (i, s["mean"]), xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(metrics)), [short_label(m) for m in metrics], **LITERAL_TEXT)
    lows = [min(f.eval_metrics[m] for f in results.folds) for m in metrics]
    ax.set_ylim(max(0.0, min(lows) - 0.1), 1.02)
    ax.set_ylabel("eval score")
    ax.set_title(f"Per-fold scores ({len(results.folds)} folds): mean, 95% corrected interval, folds")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_train_vs_eval(results: CVResults, metric: str | None = None) -> Figure:
    """Per fold, the score (and loss) on the training rows beside the eval rows: the overfitting gap."""
    names = [f"{f.repeat}/{f.fold}" for f in results.folds]
    metric = metric or next(iter(_score_metrics(results)), "loss")
    panels = [m for m in (metric, "loss") if m in results.summary]
    fig = bounded_figure(4 + 0.5 * len(names) * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)
    x = np.arange(len(names))
    for ax, name in zip(axes[0], panels):
        train = [f.train_metrics.get(name, np.nan) for f in results.folds]
        evals = [f.eval_metrics[name] for f in results.folds]
        ax.bar(x - 0.2, train, width=0.4, label="train rows", color="#fdae6b")
        ax.bar(x + 0.2, evals, width=0.4, label="eval rows", color="#6baed6")
        ax.set_xticks(x, names, rotation=90 if len(names) > 20 else 0)
        ax.set_xlabel("fold (repeat/fold)")
        ax.set_title(short_label(name), **LITERAL_TEXT)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="lower right" if metric != "loss" else "upper right", fontsize=8)
    fig.suptitle("Train vs. eval per fold")
    fig.tight_layout()
    return fig


def _class_names(results: CVResults, n_classes: int) -> list[str]:
    return [str(name) for name in results.label_names] if results.label_names else [str(i) for i in range(n_classes)]


def confusion_counts(results: CVResults) -> pd.DataFrame:
    """The pooled out-of-fold confusion matrix as a table of its non-zero cells (so its size follows the
    predictions, not the square of the classes): `true_id`, `predicted_id`, `true`, `predicted` (class names) and
    `count`, by true then predicted class. [`save_plots`] writes it as `confusion_counts.csv` when the plot shows
    only some of the classes."""
    oof = results.oof_predictions
    counts = oof.groupby(["label", "prediction"], sort=True).size().reset_index(name="count")
    names = np.asarray(_class_names(results, oof.filter(like="prob_").shape[1]), dtype=object)
    true_id, predicted_id = counts["label"].to_numpy(np.int64), counts["prediction"].to_numpy(np.int64)
    return pd.DataFrame({"true_id": true_id, "predicted_id": predicted_id, "true": names[true_id],
                         "predicted": names[predicted_id], "count": counts["count"].to_numpy(np.int64)})


def _top_confusion_classes(counts: pd.DataFrame, max_classes: int) -> tuple[list[int], int]:
    """The classes of the largest off-diagonal counts (ties: by class id), taken confusion by confusion while both
    classes fit in `max_classes`; and how many confusions that is."""
    off = counts[counts["true_id"] != counts["predicted_id"]].sort_values(
        ["count", "true_id", "predicted_id"], ascending=[False, True, True])
    chosen: dict[int, None] = {}
    used = 0
    for true_id, predicted_id in zip(off["true_id"].tolist(), off["predicted_id"].tolist()):
        new = {true_id, predicted_id} - chosen.keys()
        if len(chosen) + len(new) > max_classes:
            break
        chosen.update(dict.fromkeys(sorted(new)))
        used += 1
    return sorted(chosen), used


def plot_confusion_matrix(results: CVResults, max_classes: int = MAX_PLOTTED_CLASSES) -> Figure:
    """Confusion matrix of all out-of-fold predictions pooled, rows normalised, counts written in.

    Up to `max_classes` classes the whole matrix is drawn. Beyond, the figure would outgrow any screen (and memory),
    so it shows the classes involved in the largest confusions (off-diagonal counts), as many confusions as fit in
    `max_classes` rows, and says so in its title; each row's share is still of all the true class's predictions.
    Every count is in [`confusion_counts`].
    """
    oof = results.oof_predictions
    n_classes = oof.filter(like="prob_").shape[1]
    labels = _class_names(results, n_classes)
    table = confusion_counts(results)
    if n_classes <= max_classes:
        classes, subtitle = list(range(n_classes)), ""
    else:
        classes, used = _top_confusion_classes(table, max_classes)
        subtitle = (f"\nthe {len(classes)} classes of the {used:,} largest confusions, of {n_classes:,} classes"
                    if used else f"\nno confusions: the first {max_classes} of {n_classes:,} classes")
        classes = classes or list(range(max_classes))
    n = len(classes)
    position = np.full(n_classes, -1)
    position[classes] = np.arange(n)
    row, column = position[table["true_id"].to_numpy()], position[table["predicted_id"].to_numpy()]
    cell = table["count"].to_numpy()
    totals = np.bincount(row[row >= 0], weights=cell[row >= 0], minlength=n)  # all predictions of the true class
    counts = np.zeros((n, n), dtype=np.int64)
    both = (row >= 0) & (column >= 0)
    counts[row[both], column[both]] = cell[both]
    share = counts / np.clip(totals[:, None], 1, None)
    size = 2.5 + 0.45 * n
    fig = bounded_figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= MAX_PLOTTED_CLASSES:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    names = [short_label(labels[c]) for c in classes]
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8, **LITERAL_TEXT)
    ax.set_yticks(range(n), names, fontsize=8, **LITERAL_TEXT)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Pooled out-of-fold confusion ({len(oof):,} predictions){subtitle}",
                 **({"fontsize": 10} if subtitle else {}))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    return fig


def plot_per_class_f1(results: CVResults, max_classes: int = MAX_PLOTTED_CLASSES) -> Figure:
    """Per class, the mean F1 over folds (bar) and its 95% interval (whiskers), lowest first; beyond `max_classes`
    classes only the lowest `max_classes` are drawn (the full table is `results.per_class`)."""
    from ..per_class import worst_classes

    table = results.per_class
    shown = worst_classes(table, max_classes)
    n = len(shown)
    fig = bounded_figure(6.5, 1.2 + 0.28 * min(n, MAX_PLOTTED_CLASSES))
    ax = fig.subplots()
    y = np.arange(n)[::-1]  # the lowest F1 on top
    f1 = shown["f1"].to_numpy(dtype=float)
    low, high = shown["f1_low"].to_numpy(dtype=float), shown["f1_high"].to_numpy(dtype=float)
    ax.barh(y, f1, color="#c6dbef", edgecolor="#3182bd", height=0.6)
    finite = np.isfinite(low) & np.isfinite(high)
    if finite.any():
        ax.errorbar(f1[finite], y[finite], xerr=[f1[finite] - low[finite], high[finite] - f1[finite]], fmt="none",
                    color="#08519c", capsize=3)
    ax.set_yticks(y, [short_label(name) for name in shown["class"].astype(str)], fontsize=8, **LITERAL_TEXT)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("F1 (mean over folds, 95% interval)")
    title = "Per-class F1" if n == len(table) else f"Per-class F1: the {n} lowest of {len(table):,} classes"
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def save_plots(results: CVResults, directory: str | Path) -> dict[str, Path]:
    """Write the plots as PNG into `directory` (those the run has data for), and `confusion_counts.csv` when the
    confusion matrix shows only some of the classes; returns name -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    makers = {
        "fold_scores": plot_fold_scores,
        "train_vs_eval": plot_train_vs_eval,
        "confusion_matrix": plot_confusion_matrix,
        "per_class_f1": plot_per_class_f1,
    }
    written = {}
    for name, make in makers.items():
        if name in ("confusion_matrix", "per_class_f1") and results.oof_predictions.empty:
            continue
        if name == "train_vs_eval" and not results.folds[0].train_metrics:
            continue
        fig = make(results)
        path = directory / PLOT_FILES[name]
        fig.savefig(path, dpi=DPI)
        written[name] = path
    if "confusion_matrix" in written and results.oof_predictions.filter(like="prob_").shape[1] > MAX_PLOTTED_CLASSES:
        path = directory / CONFUSION_COUNTS_FILE
        confusion_counts(results).to_csv(path, index=False)
        written["confusion_counts"] = path
    return written


__all__ = ["PLOT_FILES", "bounded_figure", "confusion_counts", "literal", "plot_confusion_matrix", "plot_fold_scores",
           "plot_per_class_f1", "plot_train_vs_eval", "save_plots", "short_label"]
