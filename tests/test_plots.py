"""Plots draw what the results say: fold scores, train vs. eval, pooled confusion counts."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from sklearn.metrics import confusion_matrix

from hf_tlcv.plots.cv import plot_confusion_matrix, plot_fold_scores, plot_train_vs_eval, save_plots
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


# ---- many classes: every image bounded, the confusion matrix shows the largest confusions -------------------------
def _many_classes(n_classes: int, confusions: dict[tuple[int, int], int] = {}) -> CVResults:  # noqa: B006
    """2 folds in which every class is predicted right once per fold, plus `confusions[(true, predicted)]` wrong
    predictions of each listed pair (split between the folds)."""
    labels, predictions = list(range(n_classes)), list(range(n_classes))
    for (true, predicted), count in confusions.items():
        labels += [true] * count
        predictions += [predicted] * count
    labels, predictions = np.array(labels), np.array(predictions)
    folds = []
    for k in range(2):
        part = np.arange(len(labels))[k::2] if k else np.arange(len(labels))[0::2]
        probs = np.full((len(part), n_classes), 0.1 / n_classes)
        probs[np.arange(len(part)), predictions[part]] = 0.9
        frame = predictions_frame(part, 0, k, labels[part], probs)
        acc = float((frame["prediction"] == frame["label"]).mean())
        folds.append(FoldResult(0, k, len(part), len(part), {"loss": 1.0, "accuracy": acc},
                                {"loss": 0.5, "accuracy": 0.9}, [], frame))
    return CVResults(folds, config={"n_folds": 2, "n_repeats": 1},
                     label_names=[f"class {i}" for i in range(n_classes)])


def test_many_classes_confusion_matrix_shows_the_largest_confusions():
    from hf_tlcv.plots.cv import MAX_PLOTTED_CLASSES, confusion_counts

    confusions = {(5, 7): 9, (70, 60): 6, (7, 5): 4, (90, 2): 1}
    results = _many_classes(100, confusions)
    ax = plot_confusion_matrix(results, max_classes=4).axes[0]
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert shown == ["class 5", "class 7", "class 60", "class 70"]  # (90, 2) would need 6 rows
    assert "the 4 classes of the 3 largest confusions, of 100 classes" in ax.get_title()
    cells = np.array([int(t.get_text()) for t in ax.texts]).reshape(4, 4)
    assert cells[0, 1] == 9 and cells[3, 2] == 6 and cells[1, 0] == 4 and cells.trace() == 4
    # The share is of every prediction of the true class, not only of those drawn.
    assert ax.images[0].get_array()[0, 1] == pytest.approx(9 / 10)
    table = confusion_counts(results)
    assert table["count"].sum() == len(results.oof_predictions)
    assert table.loc[(table["true_id"] == 90) & (table["predicted_id"] == 2), "predicted"].tolist() == ["class 2"]
    assert MAX_PLOTTED_CLASSES <= 30


@pytest.mark.parametrize("n_classes", [300, pytest.param(1000, marks=pytest.mark.slow)])
def test_many_classes_plots_stay_under_the_pixel_cap(tmp_path, n_classes):
    from PIL import Image

    from hf_tlcv.plots.cv import CONFUSION_COUNTS_FILE, MAX_PIXELS

    results = _many_classes(n_classes, {(3, 4): 2})
    written = save_plots(results, tmp_path)
    assert {"fold_scores", "train_vs_eval", "confusion_matrix", "per_class_f1"} <= set(written)
    for path in tmp_path.glob("*.png"):
        with Image.open(path) as image:
            assert max(image.size) <= MAX_PIXELS == 2000, (path.name, image.size)
    counts = pd.read_csv(written["confusion_counts"])
    assert written["confusion_counts"].name == CONFUSION_COUNTS_FILE
    assert counts["count"].sum() == len(results.oof_predictions) == n_classes + 2


_MEMORY_SCRIPT = """
import resource, sys
limit, tests, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a regression fails here instead of taking the machine
sys.path.insert(0, tests)
import test_plots
from hf_tlcv.plots.cv import save_plots
for n in (300, 1000):
    results = test_plots._many_classes(n, {(3, 4): 2})
    results.per_class  # the statistics are not the plots' memory
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    save_plots(results, f"{out}/{n}")
    print(n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


@pytest.mark.slow  # about 25 s: two runs' predictions built and every plot saved, in a child process
def test_many_classes_plots_peak_memory_is_bounded(tmp_path):
    """Peak RSS growth while saving every plot of a 300- and a 1,000-class run, in a child with a 4 GB address-space
    cap (the old figure needed over 5 GB at 300 classes and failed at 1,000). Measured after the change: about
    120 MB, most of it matplotlib's first figure; the bound leaves room for other versions of the libraries."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-W", "ignore", "-c", _MEMORY_SCRIPT, str(4 << 30),
                           str(Path(__file__).parent), str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    growth = dict(line.split() for line in done.stdout.splitlines())
    assert set(growth) == {"300", "1000"}
    assert all(int(mb) < 400 for mb in growth.values()), growth
