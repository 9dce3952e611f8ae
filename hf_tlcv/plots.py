"""Plots of a cross-validation: per-fold spread, train vs. eval per fold, pooled confusion matrix, per-class F1.

Each function takes a [`CVResults`] and returns a matplotlib `Figure`; [`save_plots`] writes all of them as PNG.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
import numpy as np
from sklearn.metrics import confusion_matrix

from .results import CVResults

PLOT_FILES = {
    "fold_scores": "fold_scores.png",
    "train_vs_eval": "train_vs_eval.png",
    "confusion_matrix": "confusion_matrix.png",
    "per_class_f1": "per_class_f1.png",
}
# The per-class plot draws at most this many classes (the lowest F1), so many classes keep a readable, bounded figure.
MAX_PLOTTED_CLASSES = 30


def _score_metrics(results: CVResults) -> list[str]:
    # Scores in [0, 1] share one axis; the loss has its own scale and is left to the train-vs-eval plot.
    return [m for m in results.summary if m != "loss"]


def plot_fold_scores(results: CVResults) -> Figure:
    """Every fold's eval score per metric (dots), the mean (bar) and the corrected 95% interval (whiskers)."""
    metrics = _score_metrics(results)
    summary = results.summary
    fig = Figure(figsize=(1.6 + 1.4 * len(metrics), 4))
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
    ax.set_xticks(range(len(metrics)), metrics)
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
    fig = Figure(figsize=(4 + 0.5 * len(names) * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    x = np.arange(len(names))
    for ax, name in zip(axes[0], panels):
        train = [f.train_metrics.get(name, np.nan) for f in results.folds]
        evals = [f.eval_metrics[name] for f in results.folds]
        ax.bar(x - 0.2, train, width=0.4, label="train rows", color="#fdae6b")
        ax.bar(x + 0.2, evals, width=0.4, label="eval rows", color="#6baed6")
        ax.set_xticks(x, names)
        ax.set_xlabel("fold (repeat/fold)")
        ax.set_title(name)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(loc="lower right" if metric != "loss" else "upper right", fontsize=8)
    fig.suptitle("Train vs. eval per fold")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(results: CVResults) -> Figure:
    """Confusion matrix of all out-of-fold predictions pooled, rows normalised, counts written in."""
    oof = results.oof_predictions
    n_classes = oof.filter(like="prob_").shape[1]
    labels = results.label_names or [str(i) for i in range(n_classes)]
    counts = confusion_matrix(oof["label"], oof["prediction"], labels=list(range(n_classes)))
    share = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    size = 2.5 + 0.45 * n_classes
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n_classes <= 20:
        for i in range(n_classes):
            for j in range(n_classes):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n_classes), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n_classes), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Pooled out-of-fold confusion ({len(oof)} predictions)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    return fig


def plot_per_class_f1(results: CVResults, max_classes: int = MAX_PLOTTED_CLASSES) -> Figure:
    """Per class, the mean F1 over folds (bar) and its 95% interval (whiskers), lowest first; beyond `max_classes`
    classes only the lowest `max_classes` are drawn (the full table is `results.per_class`)."""
    from .per_class import worst_classes

    table = results.per_class
    shown = worst_classes(table, max_classes)
    n = len(shown)
    fig = Figure(figsize=(6.5, min(1.2 + 0.28 * n, 1.2 + 0.28 * MAX_PLOTTED_CLASSES)))
    ax = fig.subplots()
    y = np.arange(n)[::-1]  # the lowest F1 on top
    f1 = shown["f1"].to_numpy(dtype=float)
    low, high = shown["f1_low"].to_numpy(dtype=float), shown["f1_high"].to_numpy(dtype=float)
    ax.barh(y, f1, color="#c6dbef", edgecolor="#3182bd", height=0.6)
    finite = np.isfinite(low) & np.isfinite(high)
    if finite.any():
        ax.errorbar(f1[finite], y[finite], xerr=[f1[finite] - low[finite], high[finite] - f1[finite]], fmt="none",
                    color="#08519c", capsize=3)
    names = [name if len(name) <= 28 else name[:27] + "…" for name in shown["class"].astype(str)]
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("F1 (mean over folds, 95% interval)")
    title = "Per-class F1" if n == len(table) else f"Per-class F1: the {n} lowest of {len(table)} classes"
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def save_plots(results: CVResults, directory: str | Path) -> dict[str, Path]:
    """Write the plots as PNG into `directory` (those the run has data for); returns name -> path."""
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
        fig.savefig(path, dpi=110)
        written[name] = path
    return written
