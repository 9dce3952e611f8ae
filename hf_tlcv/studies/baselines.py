"""Classical baselines on the same folds: does the pretrained model beat what a skeptic would try first?

Text: TF-IDF of word unigrams and bigrams + logistic regression. Images: a logistic regression on the raw pixels
(resized to a small square, standardised). Each is fitted on every fold's training rows and scored on its eval
rows, exactly the `folds.json` indices a [`KFoldTrainer`] run used, and returned as a [`CVResults`] with the same
metrics, per-fold predictions and fold sizes, so that [`hf_tlcv.studies.study.compare`] can pair it with any run on
those folds (a [`TransferStudy`] asks it as the `"baseline"` question).

```python
>>> from hf_tlcv import load_data
>>> from hf_tlcv.studies.baselines import classical_baseline
>>> from hf_tlcv.folds import load_folds
>>> folds, _ = load_folds("cv/folds.json")                       # the folds of a finished run
>>> baseline = classical_baseline(load_data("builtin:trec"), folds)
>>> baseline.summary["accuracy"]["mean"]

```
"""

from __future__ import annotations

from typing import Callable, Sequence

import datasets
import numpy as np

from ..data import find_column, label_names
from ..folds import Fold, folds_fingerprint
from ..metrics import build_compute_metrics, metrics_from_probabilities
from ..results import CVResults, FoldResult, predictions_frame
from ..validation import validate_dataset

BASELINE_KINDS = ("auto", "tfidf_logreg", "pixels_logreg")


def _text_model(seed: int, C: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                         LogisticRegression(C=C, max_iter=2000, random_state=seed))


def _pixel_model(seed: int, C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def _pixels(dataset: datasets.Dataset, column: str, size: int) -> np.ndarray:
    """Every image as RGB, resized to `size` x `size`, flattened to [0, 1] floats."""
    rows = []
    for image in dataset.with_format(None)[column]:
        rows.append(np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(rows)


def _full_probabilities(model, features, n_labels: int) -> np.ndarray:
    """`predict_proba` with one column per class id (a class absent from a fold's training rows gets 0)."""
    probs = np.zeros((features.shape[0], n_labels))
    probs[:, model.classes_.astype(np.int64)] = model.predict_proba(features)
    return probs


def baseline_kind(dataset: datasets.Dataset, kind: str = "auto", text_column: str | None = None,
                  image_column: str | None = None) -> tuple[str, str]:
    """The baseline `kind` resolves to on `dataset`, and the column it reads: `("tfidf_logreg", text column)` or
    `("pixels_logreg", image column)`. Raises `ValueError` (what to do) when the dataset has no such raw column, e.g.
    images already turned into `pixel_values`."""
    if kind not in BASELINE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(BASELINE_KINDS)}, got {kind!r}.")
    text = find_column(dataset, "text", text_column) if image_column is None else None
    image = find_column(dataset, "image", image_column) if text_column is None else None
    if kind == "auto":
        kind = "pixels_logreg" if image is not None else "tfidf_logreg"
    column = text if kind == "tfidf_logreg" else image
    if column is None:
        raise ValueError(f"The classical baseline ({kind}) needs a raw {'text' if kind == 'tfidf_logreg' else 'image'} "
                         f"column (a string column, or a datasets.Image column), and the dataset has "
                         f"{dataset.column_names}; pass the raw rows, or name the column with text_column= / "
                         "image_column=.")
    return kind, column


def classical_baseline(dataset: datasets.Dataset, folds: Sequence[Fold], *, kind: str = "auto",
                       label_column: str = "label", text_column: str | None = None, image_column: str | None = None,
                       metrics: Sequence[str] | str = ("accuracy", "precision", "recall", "f1"),
                       metric_average: str = "macro", compute_metrics: Callable | None = None, C: float = 10.0,
                       image_size: int = 32, seed: int = 0) -> CVResults:
    """Cross-validate a classical model on `folds` (the folds of a run on the same `dataset`).

    Args:
        dataset: the raw rows the run was given (text or image column, and the label column).
        folds: the run's folds (e.g. `load_folds(output_dir / "folds.json")[0]`).
        kind: `"tfidf_logreg"` (text), `"pixels_logreg"` (images) or `"auto"` (from the dataset's columns).
        label_column, text_column, image_column: as in [`KFoldConfig`] (columns found automatically when unset).
        metrics, metric_average: the metrics computed, as in [`KFoldConfig`]; `compute_metrics` overrides them.
        C: inverse L2 regularisation of the logistic regression (10 suits TF-IDF features of a few hundred rows).
        image_size: images are resized to this square before their pixels become features.
        seed: the logistic regression's random state.

    Returns:
        [`CVResults`] with per-fold eval metrics (`loss`: the log loss), out-of-fold predictions and, in `config`,
        the baseline's settings; `metadata["folds_fingerprint"]` names the folds.
    """
    # Checked (and string labels encoded) as every entry point checks its data: hf_tlcv.validation.
    dataset = validate_dataset(dataset, label_column=label_column, text_column=text_column, image_column=image_column)
    if not folds:
        raise ValueError("classical_baseline needs the folds of a run (load_folds(output_dir / 'folds.json')[0]).")
    n_rows = len(dataset)
    too_far = max(int(max(f.train_indices.max(initial=-1), f.eval_indices.max(initial=-1))) for f in folds)
    if too_far >= n_rows:
        raise ValueError(f"The folds index row {too_far}, but the dataset has {n_rows} rows: they were made for "
                         "another dataset.")
    labels = np.asarray(dataset.with_format(None)[label_column], dtype=np.int64)
    names = label_names(dataset, label_column)
    n_labels = len(names) if names is not None else int(labels.max()) + 1
    kind, column = baseline_kind(dataset, kind, text_column, image_column)
    if kind == "tfidf_logreg":
        features, build = np.asarray(dataset.with_format(None)[column], dtype=object), _text_model
    else:
        features, build = _pixels(dataset, column, image_size), _pixel_model
    compute = compute_metrics or build_compute_metrics(metrics, metric_average)
    results = []
    for fold in folds:
        model = build(seed, C).fit(features[fold.train_indices], labels[fold.train_indices])
        probs = _full_probabilities(model, features[fold.eval_indices], n_labels)
        eval_labels = labels[fold.eval_indices]
        scores = metrics_from_probabilities(probs, eval_labels, compute)
        scores["loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(eval_labels)), eval_labels], 1e-15, 1))))
        results.append(FoldResult(repeat=fold.repeat, fold=fold.fold, n_train=len(fold.train_indices),
                                  n_eval=len(fold.eval_indices), eval_metrics=scores,
                                  predictions=predictions_frame(fold.eval_indices, fold.repeat, fold.fold, eval_labels,
                                                                probs)))
    oof = CVResults(results).oof_predictions
    pooled = metrics_from_probabilities(oof.filter(like="prob_").to_numpy(), oof["label"].to_numpy(), compute)
    config = {"baseline": kind, "C": C, "seed": seed, "label_column": label_column,
              **({"image_size": image_size} if kind == "pixels_logreg" else {}),
              "n_folds": len({f.fold for f in folds}), "n_repeats": len({f.repeat for f in folds})}
    return CVResults(results, oof_metrics=pooled, config=config, label_names=names,
                     metadata={"n_rows": n_rows, "folds_fingerprint": folds_fingerprint(folds), "baseline": kind})


__all__ = ["BASELINE_KINDS", "baseline_kind", "classical_baseline"]
