"""Plots of a [`StudyReport`]: score per variant with per-fold points, freeze-depth and learning-rate curves,
learning curves per fold. Each function returns a matplotlib `Figure`; [`save_study_plots`] writes PNGs."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
import numpy as np
from matplotlib.ticker import MaxNLocator

from .overfitting import loss_curves
from ..plots.cv import LITERAL_TEXT, bounded_figure, literal, short_label

SAVE_DPI = 100  # what `save_study_plots` writes with; every figure is capped at `MAX_PIXELS` a side at it


def _scores(report, name: str) -> tuple[list[float], dict]:
    cv = report.variants[name]
    return [f.eval_metrics.get(report.metric, math.nan) for f in cv.folds], cv.summary.get(report.metric, {})


def plot_variant_scores(report, question: str) -> Figure:
    """Mean and corrected 95% interval per variant, every fold as a dot, the same fold joined across variants
    (the comparison is paired: a fold that is hard for one variant tends to be hard for all)."""
    names = [n for n in report.questions[question] if n in report.variants]
    fig = bounded_figure(max(6.0, 2 + 1.1 * len(names)), 4, dpi=SAVE_DPI)  # wide enough for the title
    ax = fig.subplots()
    per_fold = []
    for i, name in enumerate(names):
        values, s = _scores(report, name)
        per_fold.append(values)
        ax.bar(i, s.get("mean", np.nan), width=0.6, color="#c6dbef", edgecolor="#3182bd", zorder=1)
        low, high = s.get("ci95", [np.nan, np.nan])
        if np.isfinite(low):
            ax.errorbar(i, s["mean"], yerr=[[s["mean"] - low], [high - s["mean"]]], color="#08519c", capsize=6,
                        zorder=2)
        ax.annotate(f"{s.get('mean', np.nan):.3f}", (i, s.get("mean", 0)), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    folds = np.array(per_fold).T  # fold x variant
    for row in folds:
        ax.plot(range(len(names)), row, color="#08306b", alpha=0.35, lw=0.8, marker="o", ms=3, zorder=3)
    ax.set_xticks(range(len(names)), [short_label(n) for n in names], rotation=30 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center", **LITERAL_TEXT)
    ax.set_ylabel(f"eval {short_label(report.metric)}", **LITERAL_TEXT)
    ax.set_title(f"{short_label(question)}: mean, corrected 95% interval, folds (joined)", **LITERAL_TEXT)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _curve(report, question: str, log_x: bool, xlabel: str) -> Figure:
    names = [n for n in report.questions[question]
             if n in report.variants and report.variant_info[n].get("x") is not None]
    others = [n for n in report.questions[question] if n in report.variants and n not in names]
    names.sort(key=lambda n: report.variant_info[n]["x"])
    xs = np.array([report.variant_info[n]["x"] for n in names], dtype=float)
    fig = bounded_figure(6, 4, dpi=SAVE_DPI)
    ax = fig.subplots()
    means, lows, highs, folds = [], [], [], []
    for name in names:
        values, s = _scores(report, name)
        folds.append(values)
        means.append(s.get("mean", np.nan))
        lo, hi = s.get("ci95", [np.nan, np.nan])
        lows.append(lo)
        highs.append(hi)
    for row in np.array(folds).T:
        ax.plot(xs, row, color="#9ecae1", lw=0.8, marker=".", zorder=1)
    ax.fill_between(xs, lows, highs, color="#3182bd", alpha=0.15, label="corrected 95% interval")
    ax.plot(xs, means, color="#08519c", marker="o", lw=2, label="mean over folds", zorder=2)
    for k, name in enumerate(others):
        _, s = _scores(report, name)
        ax.axhline(s.get("mean", np.nan), ls="--", color=f"C{k + 1}", label=f"{short_label(name)} (mean)")
    if log_x:
        ax.set_xscale("log")
    ticks = [report.variant_info[n].get("tick", f"{report.variant_info[n]['x']:g}") for n in names]
    ax.set_xticks(xs, [short_label(t) for t in ticks], rotation=30 if log_x else 0, **LITERAL_TEXT)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"eval {short_label(report.metric)}", **LITERAL_TEXT)
    ax.grid(alpha=0.3)
    literal(*ax.legend(fontsize=7).get_texts())
    fig.tight_layout()
    return fig


def plot_freeze_curve(report) -> Figure:
    """Score against the number of frozen bottom blocks (linear probe at the right end), layer-wise decay as a
    dashed line."""
    fig = _curve(report, "freeze", log_x=False, xlabel="frozen bottom blocks (embeddings included when > 0)")
    fig.axes[0].set_title("Freeze-depth curve")
    fig.tight_layout()
    return fig


def plot_lr_curve(report) -> Figure:
    """Score against the learning rate (log axis)."""
    fig = _curve(report, "lr", log_x=True, xlabel="learning rate")
    fig.axes[0].set_title("Learning-rate curve")
    fig.tight_layout()
    return fig


def plot_learning_curves(report, run: str) -> Figure:
    """Per fold, train loss (solid) and eval loss (dashed) per epoch; where a fold overfits, its onset epoch is
    marked with a vertical line."""
    name = next(n for n, info in report.variant_info.items() if info.get("run", n) == run)
    cv = report.variants[name]
    diagnoses = {d["fold"]: d for d in report.overfitting.get(run, [])}
    fig = bounded_figure(6.5, 4, dpi=SAVE_DPI)
    ax = fig.subplots()
    for i, fold in enumerate(cv.folds):
        label = f"fold_{fold.repeat}_{fold.fold}"
        curves = loss_curves(fold.log_history)
        color = f"C{i % 10}"
        ax.plot(curves.epochs, curves.train_loss, color=color, marker="o", ms=3, label=f"{label} train")
        ax.plot(curves.epochs, curves.eval_loss, color=color, marker="s", ms=3, ls="--", label=f"{label} eval")
        onset = diagnoses.get(label, {}).get("onset_epoch")
        if onset is not None:
            ax.axvline(onset, color=color, ls=":", lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"Learning curves per fold: {short_label(run)} (dotted line: overfitting onset)", **LITERAL_TEXT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def save_study_plots(report, directory: str | Path) -> dict[str, Path]:
    """Write every plot the report has data for into `directory`; returns file stem -> path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    figures = {}
    for question in report.questions:
        if question != "overfitting":
            figures[f"variant_scores_{question}"] = lambda q=question: plot_variant_scores(report, q)
    if "freeze" in report.questions:
        figures["freeze_curve"] = lambda: plot_freeze_curve(report)
    if "lr" in report.questions:
        figures["lr_curve"] = lambda: plot_lr_curve(report)
    for run in report.overfitting:
        figures[f"learning_curves_{run}"] = lambda r=run: plot_learning_curves(report, r)
    written = {}
    for stem, make in figures.items():
        fig = make()
        path = directory / f"{stem}.png"
        fig.savefig(path, dpi=SAVE_DPI)
        written[stem] = path
    return written


__all__ = ["plot_freeze_curve", "plot_learning_curves", "plot_lr_curve", "plot_variant_scores", "save_study_plots"]
