"""Plots draw what the results say: fold scores, train vs. eval, pooled confusion counts."""

from __future__ import annotations

import numpy as np
from matplotlib.collections import PathCollection
from sklearn.metrics import confusion_matrix

from hf_tlcv.plots import plot_confusion_matrix, plot_fold_scores, plot_train_vs_eval, save_plots
from hf_tlcv.results import CVResults, FoldResult, predictions_frame


def _results(seed: int = 0) -> CVResults:
    rng = np.random.default_rng(seed)
    folds = []
    for k in range(3):
        rows = np.arange(k * 10, (k + 1) * 10)
        labels = rng.integers(0, 3, 10)
        probs = rng.dirichlet(np.ones(3), 10)
        frame = predictions_frame(rows, 0, k, labels, probs)
        acc = float((frame["prediction"] == frame["label"]).mean())
        folds.append(FoldResult(0, k, 20, 10, {"loss": 1.0 + k, "accuracy": acc, "f1": acc / 2},
                                {"loss": 0.5, "accuracy": 0.9, "f1": 0.8}, [], frame))
    return CVResults(folds, label_names=["cat", "dog", "cow"])


def test_confusion_matrix_shows_the_pooled_counts():
    results = _results()
    fig = plot_confusion_matrix(results)
    oof = results.oof_predictions
    expected = confusion_matrix(oof["label"], oof["prediction"], labels=[0, 1, 2])
    shown = np.array([int(t.get_text()) for t in fig.axes[0].texts]).reshape(3, 3)
    assert np.array_equal(shown, expected)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cat", "dog", "cow"]


def test_fold_scores_plot_one_point_per_fold_and_metric():
    results = _results()
    ax = plot_fold_scores(results).axes[0]
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if isinstance(c, PathCollection)])
    expected = [f.eval_metrics[m] for m in ("accuracy", "f1") for f in results.folds]
    assert sorted(points) == sorted(expected)  # the loss is not mixed into the score axis


def test_train_vs_eval_bars_hold_both_parts():
    results = _results()
    ax = plot_train_vs_eval(results).axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights[:3] == [0.9, 0.9, 0.9]
    assert heights[3:6] == [round(f.eval_metrics["accuracy"], 6) for f in results.folds]


def test_save_plots_writes_pngs(tmp_path):
    written = save_plots(_results(), tmp_path)
    assert set(written) == {"fold_scores", "train_vs_eval", "confusion_matrix", "per_class_f1"}
    for path in written.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
