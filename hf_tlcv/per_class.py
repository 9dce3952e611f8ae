"""Per-class precision, recall and F1 of a cross-validation, from the saved out-of-fold predictions.

Pure functions: [`per_class_fold_scores`] scores each fold's predictions (grouped by `repeat` and `fold`) class by
class, and [`summarize_per_class`] gives each class its mean over the folds and a 95% interval. Both need only the
`oof_predictions` frame, so a loaded run (`CVResults.load`) gets the same table as the run that wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .stats import row_interval, summarize

__all__ = ["PER_CLASS_METRICS", "format_per_class", "per_class_fold_scores", "summarize_per_class", "worst_classes"]

PER_CLASS_METRICS = ("precision", "recall", "f1")
# Up to this many classes every class is listed in text; beyond it, only the WORST_SHOWN lowest by F1.
MAX_LISTED_CLASSES = 20
WORST_SHOWN = 10


def n_classes_of(predictions: pd.DataFrame, label_names: Sequence[str] | None = None) -> int:
    """Classes of a predictions frame: its `prob_<id>` columns, the class names, and the ids seen, whichever is most."""
    seen = [int(predictions[c].max()) + 1 for c in ("label", "prediction") if c in predictions and len(predictions)]
    return max([predictions.filter(regex=r"^prob_\d+$").shape[1], len(label_names or []), *seen])


def per_class_fold_scores(predictions: pd.DataFrame, n_classes: int | None = None) -> pd.DataFrame:
    """Precision, recall, F1 and support of every class in every fold.

    Each fold (one `repeat`, `fold` pair) is scored on its own predictions with
    `sklearn.metrics.precision_recall_fscore_support(labels=range(n_classes), zero_division=0)`: a class that a fold
    never predicts gets precision 0, one absent from a fold's labels gets recall 0 (and support 0).

    Args:
        predictions (`pd.DataFrame`): Out-of-fold predictions with columns `repeat`, `fold`, `label` and
            `prediction` (`CVResults.oof_predictions`).
        n_classes (`int`, *optional*): Number of classes; defaults to [`n_classes_of`] the frame.

    Returns:
        `pd.DataFrame`: Long format, one row per fold and class: `repeat`, `fold`, `class_id`, `precision`, `recall`,
        `f1`, `support` (rows of that class in the fold). Empty when there are no labelled predictions.

    Example:

    ```python
    >>> oof = pd.DataFrame({"repeat": 0, "fold": [0, 0, 0, 1, 1, 1], "label": [0, 1, 1, 0, 0, 1],
    ...                     "prediction": [0, 1, 0, 0, 1, 1]})
    >>> scores = per_class_fold_scores(oof)
    >>> scores[scores["fold"] == 0][["class_id", "precision", "recall", "support"]].values.tolist()
    [[0.0, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 2.0]]

    ```
    """
    from sklearn.metrics import precision_recall_fscore_support

    columns = ["repeat", "fold", "class_id", *PER_CLASS_METRICS, "support"]
    if predictions.empty or "label" not in predictions:
        return pd.DataFrame(columns=columns)
    n_classes = n_classes or n_classes_of(predictions)
    labels = list(range(n_classes))
    rows = []
    for (repeat, fold), part in predictions.groupby(["repeat", "fold"], sort=True):
        precision, recall, f1, support = precision_recall_fscore_support(
            part["label"].to_numpy(), part["prediction"].to_numpy(), labels=labels, zero_division=0)
        for c in labels:
            rows.append({"repeat": int(repeat), "fold": int(fold), "class_id": c, "precision": float(precision[c]),
                         "recall": float(recall[c]), "f1": float(f1[c]), "support": int(support[c])})
    return pd.DataFrame(rows, columns=columns)


def _row_intervals(predictions: pd.DataFrame, class_id: int, n_train: float) -> dict | None:
    """Per-row intervals of one class's recall (the right/wrong of the rows labelled `class_id`) and precision (of the
    rows predicted `class_id`), fold by fold; `None` when a fold has no such rows or the learner looks unstable."""
    out = {}
    for metric, column in (("recall", "label"), ("precision", "prediction")):
        values, rows, repeats = [], [], []
        for (repeat, _), part in predictions.groupby(["repeat", "fold"], sort=True):
            mine = part[part[column] == class_id]
            values.append((mine["prediction"] == mine["label"]).to_numpy(dtype=float))
            rows.append(mine["row"].to_numpy())
            repeats.append(repeat)
        if any(len(v) == 0 for v in values):
            return None
        result = row_interval(values, rows, repeats, bounded=True, n_train=n_train)
        if result["instability"]["unstable"]:
            return None
        out[metric] = result["ci95"]
    return out


def summarize_per_class(fold_scores: pd.DataFrame, n_train: float, n_eval: float,
                        label_names: Sequence[str] | None = None,
                        predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per class, the mean of each fold's precision, recall and F1 with its 95% interval, and the mean support.

    The interval follows the rule of `CVResults.summary`: a metric that is a mean of per-row values gets the per-row
    interval (`hf_tlcv.stats.row_interval`) when `predictions` are given, the others the corrected one. A class's
    recall is the mean right/wrong of the rows labelled with it, its precision of the rows predicted as it, so both get
    the per-row interval (`interval` = `"row"`) unless a fold has no such rows or the learner looks unstable there;
    F1 is not a per-row mean and always gets the corrected interval:
    `hf_tlcv.stats.summarize(values, n_train, n_eval, bounded=True)` (Nadeau–Bengio corrected variance, Wilson-type,
    inside [0, 1]), whose binomial floor (`n_rows`) is the class's rows per repeat, not all rows, because only those
    rows bear on the class's scores (at least 1, for a class no fold saw).

    Args:
        fold_scores (`pd.DataFrame`): The output of [`per_class_fold_scores`].
        n_train, n_eval (`float`): Training and evaluation rows per fold (averages), as the summary uses them.
        label_names (`Sequence[str]`, *optional*): Class names by id; `str(class_id)` when missing.
        predictions (`pd.DataFrame`, *optional*): The out-of-fold predictions the scores came from, when the per-row
            interval applies (`CVResults.per_class` passes them for `ci_method="row"` with independent rows).

    Returns:
        `pd.DataFrame`: One row per class, in class-id order: `class_id`, `class`, then for each metric `<metric>`
        (mean), `<metric>_low`, `<metric>_high` (the 95% interval; nan with a single fold), `support` (mean rows of
        the class per fold) and `interval` (`"row"` or `"corrected"`: the method of precision and recall).

    Example:

    ```python
    >>> scores = pd.DataFrame({"repeat": 0, "fold": [0, 1, 0, 1], "class_id": [0, 0, 1, 1],
    ...                        "precision": [1.0, 0.5, 0.5, 1.0], "recall": [0.5, 1.0, 1.0, 0.5],
    ...                        "f1": [0.667, 0.667, 0.667, 0.667], "support": [2, 1, 1, 2]})
    >>> table = summarize_per_class(scores, n_train=3, n_eval=3, label_names=["cat", "dog"])
    >>> table[["class", "precision", "support"]].values.tolist()
    [['cat', 0.75, 1.5], ['dog', 0.75, 1.5]]

    ```
    """
    columns = ["class_id", "class", *[f"{m}{s}" for m in PER_CLASS_METRICS for s in ("", "_low", "_high")], "support",
               "interval"]
    if fold_scores.empty:
        return pd.DataFrame(columns=columns)
    n_repeats = fold_scores["repeat"].nunique()
    rows = []
    for class_id, part in fold_scores.groupby("class_id", sort=True):
        name = label_names[class_id] if label_names is not None and class_id < len(label_names) else str(class_id)
        row = {"class_id": int(class_id), "class": str(name)}
        n_rows = max(float(part["support"].sum()) / n_repeats, 1.0)
        per_row = None if predictions is None else _row_intervals(predictions, int(class_id), n_train)
        for metric in PER_CLASS_METRICS:
            s = summarize(part[metric].to_numpy(dtype=float), n_train=n_train, n_eval=n_eval, bounded=True,
                          n_rows=n_rows)
            low, high = per_row[metric] if per_row and metric in per_row else s["ci95"]
            row.update({metric: s["mean"], f"{metric}_low": low, f"{metric}_high": high})
        row["support"] = float(part["support"].mean())
        row["interval"] = "row" if per_row else "corrected"
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def worst_classes(table: pd.DataFrame, n: int, metric: str = "f1") -> pd.DataFrame:
    """The `n` rows of a [`summarize_per_class`] table with the lowest mean `metric` (ties: lower class id first)."""
    return table.sort_values([metric, "class_id"], kind="stable").head(n)


def _interval(low: float, high: float) -> str:
    from .utils import fmt

    return f"[{fmt(low, 3)}, {fmt(high, 3)}]"


def format_per_class(table: pd.DataFrame, max_classes: int = MAX_LISTED_CLASSES, n_worst: int = WORST_SHOWN,
                     where: str = "CVResults.per_class") -> list[str]:
    """Plain-text lines of a [`summarize_per_class`] table: every class when there are at most `max_classes`, else
    the `n_worst` lowest by F1 and a line saying where the full table is. Empty for an empty table."""
    from .utils import fmt

    if table.empty:
        return []
    shown = table if len(table) <= max_classes else worst_classes(table, n_worst)
    width = min(max(len("class"), *(len(str(c)) for c in shown["class"])), 24)
    title = "Per class (mean over folds, 95% interval)"
    if len(shown) < len(table):
        title += f": the {len(shown)} lowest F1 of {len(table)} classes"
    lines = [title, f"  {'class':<{width}}  {'precision':<22} {'recall':<22} {'F1':<22} support"]
    for row in shown.itertuples(index=False):
        name = str(row[1])
        name = name if len(name) <= width else name[:width - 1] + "…"
        cells = [f"{fmt(getattr(row, m), 3)} {_interval(getattr(row, m + '_low'), getattr(row, m + '_high'))}"
                 for m in PER_CLASS_METRICS]
        lines.append(f"  {name:<{width}}  " + " ".join(f"{c:<22}" for c in cells) + f" {row.support:.1f}")
    if len(shown) < len(table):
        lines.append(f"  ... {len(table) - len(shown)} more classes: the full table is {where} (a DataFrame)")
    return lines
