"""Per-class precision, recall and F1: per fold from the saved predictions, their mean and interval, shown
in `format_table()`, the card and a plot, and the same after `CVResults.load`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hf_tlcv.results import CVResults, FoldResult, predictions_frame

HOSTILE = "<b>x|y</b>"


def _results(n_classes: int = 3, label_names: list[str] | None = None, seed: int = 0,
             absent: tuple[int, int] | None = None) -> CVResults:
    """2 repeats x 3 folds of 12 rows with random labels and predictions; `absent=(fold index, class)` removes that
    class from one fold's labels and predictions."""
    rng = np.random.default_rng(seed)
    folds = []
    for j in range(6):
        repeat, fold = divmod(j, 3)
        rows = np.arange(fold * 12, (fold + 1) * 12)
        labels = rng.integers(0, n_classes, 12)
        probs = rng.dirichlet(np.ones(n_classes), 12)
        if absent is not None and absent[0] == j:
            c = absent[1]
            labels[labels == c] = (c + 1) % n_classes
            probs[:, c] = 0.0
        frame = predictions_frame(rows, repeat, fold, labels, probs)
        acc = float((frame["prediction"] == frame["label"]).mean())
        folds.append(FoldResult(repeat, fold, 24, 12, {"loss": 1.0, "accuracy": acc}, predictions=frame))
    return CVResults(folds, config={"n_folds": 3, "n_repeats": 2}, label_names=label_names)


def _by_hand(oof: pd.DataFrame, n_classes: int) -> list[dict]:
    """TP / FP / FN counted with numpy, fold by fold; 0 where a ratio has a zero denominator."""
    out = []
    for (repeat, fold), part in oof.groupby(["repeat", "fold"], sort=True):
        y, p = part["label"].to_numpy(), part["prediction"].to_numpy()
        for c in range(n_classes):
            tp, fp, fn = np.sum((y == c) & (p == c)), np.sum((y != c) & (p == c)), np.sum((y == c) & (p != c))
            precision = tp / (tp + fp) if tp + fp else 0.0
            recall = tp / (tp + fn) if tp + fn else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.append({"repeat": repeat, "fold": fold, "class_id": c, "precision": precision, "recall": recall,
                        "f1": f1, "support": int(np.sum(y == c))})
    return out


def test_per_fold_values_match_counts_by_hand():
    results = _results(label_names=["cat", "dog", "cow"])
    folds = results.per_class_folds
    expected = pd.DataFrame(_by_hand(results.oof_predictions, 3))
    assert len(folds) == 6 * 3
    for column in ("repeat", "fold", "class_id", "support"):
        assert folds[column].tolist() == expected[column].tolist()
    for column in ("precision", "recall", "f1"):
        np.testing.assert_allclose(folds[column], expected[column])
    assert folds["class"].tolist() == ["cat", "dog", "cow"] * 6


def test_mean_is_the_mean_of_the_folds_and_the_interval_holds_it_inside_unit_range():
    results = _results(label_names=["cat", "dog", "cow"])
    table, folds = results.per_class, results.per_class_folds
    assert table["class"].tolist() == ["cat", "dog", "cow"]
    for metric in ("precision", "recall", "f1"):
        means = folds.groupby("class_id")[metric].mean()
        np.testing.assert_allclose(table[metric], means.to_numpy())
        assert (table[f"{metric}_low"] <= table[metric]).all() and (table[metric] <= table[f"{metric}_high"]).all()
        assert (table[f"{metric}_low"] >= 0).all() and (table[f"{metric}_high"] <= 1).all()
        assert (table[f"{metric}_high"] > table[f"{metric}_low"]).all()
    np.testing.assert_allclose(table["support"], folds.groupby("class_id")["support"].mean().to_numpy())


def test_interval_follows_the_summary_method():
    from hf_tlcv.stats import summarize

    results = _results()
    folds = results.per_class_folds
    values = folds.loc[folds["class_id"] == 1, "recall"].to_numpy()
    rows = folds.loc[folds["class_id"] == 1, "support"].sum() / 2
    expected = summarize(values, n_train=24, n_eval=12, bounded=True, n_rows=rows)["ci95"]
    np.testing.assert_allclose(results.per_class.loc[1, ["recall_low", "recall_high"]].to_numpy(dtype=float),
                               expected)


def test_class_absent_from_a_fold_gets_zero_and_its_support():
    results = _results(absent=(4, 2))
    folds = results.per_class_folds
    row = folds[(folds["repeat"] == 1) & (folds["fold"] == 1) & (folds["class_id"] == 2)].iloc[0]
    assert (row["precision"], row["recall"], row["f1"], row["support"]) == (0.0, 0.0, 0.0, 0)
    assert folds.loc[folds["class_id"] == 2, "support"].sum() > 0  # the class exists in other folds


def test_class_never_predicted_nor_seen_still_has_a_row():
    # label_names longer than the prob_ columns: the missing class has a row of zeros, not a crash
    results = _results(n_classes=2, label_names=["a", "b", "c"])
    table = results.per_class
    assert table["class"].tolist() == ["a", "b", "c"]
    assert table.loc[2, ["precision", "recall", "f1", "support"]].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_no_predictions_gives_empty_tables():
    folds = [FoldResult(0, k, 8, 4, {"accuracy": 0.5}) for k in range(2)]
    results = CVResults(folds)
    assert results.per_class_folds.empty and results.per_class.empty


def test_loaded_run_gives_the_same_table(tmp_path):
    results = _results(label_names=["cat", HOSTILE, "cow"])
    results.save(tmp_path)
    loaded = CVResults.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.per_class, results.per_class)
    pd.testing.assert_frame_equal(loaded.per_class_folds, results.per_class_folds)


def _cv_from(labels_per_fold: list[np.ndarray], preds_per_fold: list[np.ndarray], n_classes: int,
             label_names: list[str] | None = None) -> CVResults:
    folds, start = [], 0
    for k, (labels, preds) in enumerate(zip(labels_per_fold, preds_per_fold)):
        rows = np.arange(start, start + len(labels))
        start += len(labels)
        frame = predictions_frame(rows, 0, k, labels, np.eye(n_classes)[preds])
        folds.append(FoldResult(0, k, 2 * len(labels), len(labels), {"accuracy": float(np.mean(preds == labels))},
                                predictions=frame))
    return CVResults(folds, label_names=label_names)


def test_format_table_lists_every_class_up_to_the_cap():
    results = _results(label_names=["cat", HOSTILE, "cow"])
    text = results.format_table()
    block = text[text.index("Per class"):].splitlines()
    assert "precision" in block[1] and "F1" in block[1] and "support" in block[1]
    table = results.per_class
    for name, row in zip(["cat", HOSTILE, "cow"], block[2:5]):
        assert row.split()[0] == name
        f1 = table.loc[table["class"] == name].iloc[0]
        assert f"{f1['f1']:.3f} [{f1['f1_low']:.3f}, {f1['f1_high']:.3f}]" in row
    assert "more classes" not in text


def test_format_table_shows_only_the_worst_classes_beyond_the_cap():
    from hf_tlcv.per_class import MAX_LISTED_CLASSES, WORST_SHOWN

    n = MAX_LISTED_CLASSES + 5
    bad = set(range(3, 3 + WORST_SHOWN))  # these classes are always predicted as the next class: F1 0
    labels = np.tile(np.arange(n), 2)
    preds = np.array([(c + 1) % n if c in bad else c for c in labels])
    names = [f"c{c:02d}" for c in range(n)]
    text = _cv_from([labels, labels], [preds, preds], n, names).format_table()
    block = text[text.index("Per class"):].splitlines()
    listed = {line.split()[0] for line in block[2:] if not line.strip().startswith("...")}
    assert listed == {names[c] for c in bad}
    assert f"the {WORST_SHOWN} lowest F1 of {n} classes" in block[0]
    assert f"{n - WORST_SHOWN} more classes" in block[-1] and "CVResults.per_class" in block[-1]


def _card_table(card: str) -> list[list[str]]:
    """Rows of the card's per-class table, cells split on unescaped pipes."""
    import re

    section = card[card.index("### Per class"):]
    lines = [line for line in section.split("\n## ")[0].splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[1:]]


def test_card_has_the_per_class_table_with_escaped_names(tmp_path):
    from hf_tlcv.hub.card import CVCardData, build_model_card

    results = _results(label_names=["cat", HOSTILE, "cow"])
    results.save(tmp_path)
    card = str(build_model_card(CVResults.load(tmp_path), CVCardData(), tmp_path))
    rows = _card_table(card)
    assert [r[0] for r in rows] == ["cat", r"\<b\>x\|y\</b\>", "cow"]
    assert HOSTILE not in card  # never raw: no HTML, no extra table column
    assert all(len(r) == 5 for r in rows)
    table = results.per_class
    assert rows[2][3] == f"{table.loc[2, 'f1']:.3f} [{table.loc[2, 'f1_low']:.3f}, {table.loc[2, 'f1_high']:.3f}]"
    assert rows[0][4] == f"{table.loc[0, 'support']:.1f}"


def test_card_lists_only_the_worst_classes_beyond_its_cap():
    from hf_tlcv.hub.card import CARD_MAX_CLASSES, CARD_WORST_CLASSES, CVCardData, build_model_card

    n = CARD_MAX_CLASSES + 1
    labels = np.arange(n)
    preds = np.where(labels < CARD_WORST_CLASSES, (labels + 1) % n, labels)  # the first classes are always wrong
    card = str(build_model_card(_cv_from([labels, labels], [preds, preds], n), CVCardData()))
    rows = _card_table(card)
    assert sorted(int(r[0]) for r in rows) == list(range(CARD_WORST_CLASSES))
    assert f"lowest F1 of {n}" in card


def test_plot_draws_each_class_f1_and_caps_many_classes():
    from hf_tlcv.plots.cv import MAX_PLOTTED_CLASSES, plot_per_class_f1

    results = _results(label_names=["cat", "dog", "cow"])
    ax = plot_per_class_f1(results).axes[0]
    at = {round(y, 6): label.get_text() for y, label in zip(ax.get_yticks(), ax.get_yticklabels())}
    widths = {at[round(bar.get_y() + bar.get_height() / 2, 6)]: round(bar.get_width(), 6) for bar in ax.patches}
    table = results.per_class
    assert widths == {c: round(f, 6) for c, f in zip(table["class"], table["f1"])}

    n = MAX_PLOTTED_CLASSES + 20
    labels = np.arange(n)
    preds = np.where(labels >= n - MAX_PLOTTED_CLASSES, (labels + 1) % n, labels)  # the last classes are wrong
    many = _cv_from([labels, labels], [preds, preds], n)
    fig = plot_per_class_f1(many)
    drawn = {int(label.get_text()) for label in fig.axes[0].get_yticklabels()}
    assert drawn == set(range(n - MAX_PLOTTED_CLASSES, n))
    huge = np.arange(n + 30)
    assert fig.get_size_inches()[1] == plot_per_class_f1(_cv_from([huge] * 2, [huge] * 2, n + 30)).get_size_inches()[1]
    assert fig.get_size_inches()[1] > plot_per_class_f1(results).get_size_inches()[1]
