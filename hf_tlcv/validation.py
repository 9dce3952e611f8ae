"""The data check every entry point runs first: one function, [`validate_dataset`], before a model is loaded, a fold
is cut or anything is written to the output folder.

It checks, in order: the object is a `datasets.Dataset` with rows; the label column exists (a misspelling names the
columns there are) and is encodable (strings and booleans become a `ClassLabel` here, once, for every entry point);
there are at least two classes; the fold settings fit the data (`hf_tlcv.folds.validate_fold_inputs`: rows per class,
groups); every text cell holds text and every image decodes (`hf_tlcv.upload.open_image`). Each problem is one
`ValueError` that says what is wrong, where (row numbers, file names) and what to do.

`KFoldTrainer` (and so `cross_validate` and `hyperparameter_search`), `TransferStudy`, `audit`,
`classical_baseline`, `KFoldEnsemble.predict` and the recipes call it; none of them checks data on its own.

Example:
```python
>>> from hf_tlcv.validation import validate_dataset
>>> dataset = validate_dataset(load_dataset("csv", data_files="reviews.csv", split="train"), n_folds=5)
>>> dataset.features["label"].names
['negative', 'positive']

```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import encode_labels, find_column, needs_preprocessing
from .options import option

if TYPE_CHECKING:
    import datasets

__all__ = ["CheckedData", "validate_dataset"]

# How many bad rows a message names; the count says how many there are in all.
MAX_NAMED = 5


@dataclass(frozen=True)
class CheckedData:
    """What [`validate_dataset`] found: the dataset with encoded labels, its class names (`None` for integer labels
    without names) and count, and the fold strategy it resolved (`None` when no fold settings were given)."""

    dataset: "datasets.Dataset"
    class_names: list[str] | None
    n_labels: int | None
    fold_strategy: str | None


def validate_dataset(dataset: Any, args: Any = None, *, label_column: str | None = None,
                     text_column: str | None = None, image_column: str | None = None, n_folds: int | None = None,
                     labels: str = "required", inputs: bool | str = True, name: str = "the dataset",
                     checked: bool = False) -> "datasets.Dataset | CheckedData":
    """Check a dataset before anything is trained on it, and encode its labels.

    Args:
        dataset (`datasets.Dataset`): the rows as the user passed them.
        args ([`KFoldConfig`], *optional*): the run's settings; its `label_column`, `text_column`, `image_column` and
            fold settings (`fold_strategy`, `n_folds`, `n_repeats`, `group_column`) are used when given.
        label_column, text_column, image_column (`str`, *optional*): without `args` (default label column `label`).
        n_folds (`int`, *optional*): without `args`, checks there are enough rows per class for this many
            stratified folds.
        labels (`str`, defaults to `"required"`): `"required"` (a training set: the label column must exist and hold
            at least two classes), `"optional"` (a test set: labels are checked only when the column exists) or
            `"none"` (rows to predict).
        inputs (`bool` or `"if_present"`, defaults to `True`): check every text cell and decode every image, and
            require a text or image column when the rows hold no model inputs yet; `"if_present"`: check them when
            there are some (data that is not read, e.g. an audit given its embeddings); `False`: labels only.
        name (`str`): how messages refer to the dataset (`"train_dataset"`, `"eval_dataset"`, ...).
        checked (`bool`, defaults to `False`): return a [`CheckedData`] instead of the dataset alone.

    Returns:
        The dataset, its label column a `ClassLabel` when it held strings or booleans (or [`CheckedData`]).

    Raises:
        TypeError: not a `datasets.Dataset`.
        ValueError: what is wrong with the data and what to do about it.
    """
    import datasets

    if args is not None:
        label_column = args.label_column if label_column is None else label_column
        text_column = args.text_column if text_column is None else text_column
        image_column = args.image_column if image_column is None else image_column
    label_column = label_column or "label"
    if labels not in ("required", "optional", "none"):
        raise ValueError(f"labels must be 'required', 'optional' or 'none', got {labels!r}.")
    if not isinstance(dataset, datasets.Dataset):
        hint = " (a DatasetDict: pick a split, e.g. dataset['train'])" if isinstance(dataset, dict) else ""
        raise TypeError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}{hint}; convert it with "
                        "datasets.Dataset.from_dict / from_pandas, or load it with split='train'.")
    if labels == "required" and len(dataset) == 0:
        raise ValueError(f"{name} is empty (0 rows); pass the labelled rows to cross-validate.")

    class_names = n_labels = None
    has_labels = labels != "none" and label_column in dataset.column_names
    if labels == "required" and not has_labels:
        raise ValueError(f"{option('label_column', label_column)} is not a column of {name} (its columns: "
                         f"{', '.join(dataset.column_names)}); set {option('label_column')} to the column that holds "
                         "the labels.")
    if has_labels:
        dataset = encode_labels(dataset, label_column)
        if labels == "required":  # a test set's labels are checked against the training classes by its user
            class_names, n_labels = _classes(dataset, label_column, name)

    fold_strategy = None
    if labels == "required" and (args is not None or n_folds is not None):
        from .folds import fold_kwargs, validate_fold_inputs

        if args is not None:
            fold_strategy = validate_fold_inputs(dataset, **{**fold_kwargs(args), "label_column": label_column})
        else:
            fold_strategy = validate_fold_inputs(dataset, strategy="auto", n_folds=n_folds, label_column=label_column)

    if inputs and len(dataset) and needs_preprocessing(dataset):
        image_col = find_column(dataset, "image", image_column) if text_column is None else None
        text_col = None if image_col else find_column(dataset, "text", text_column)
        if image_col is not None:
            _check_images(dataset, image_col, name)
        elif text_col is not None:
            _check_texts(dataset, text_col, name)
        elif inputs != "if_present":
            raise ValueError(f"{name} has no model inputs (pixel_values / input_ids) and no image or text column to "
                             f"preprocess (its columns: {', '.join(dataset.column_names)}); set "
                             f"{option('image_column')} or {option('text_column')}.")
    if checked:
        return CheckedData(dataset, class_names, n_labels, fold_strategy)
    return dataset


def _classes(dataset: "datasets.Dataset", label_column: str, name: str) -> tuple[list | None, int]:
    """Class names (a `ClassLabel`'s) and the number of classes; at least two distinct labels in a training set."""
    import datasets

    feature = dataset.features[label_column]
    values = dataset.with_format(None)[label_column]
    if not isinstance(feature, datasets.ClassLabel):
        if not isinstance(feature, datasets.Value):
            raise ValueError(f"Label column {label_column!r} of {name} holds {feature} values; a classification label "
                             "is one class per row: a string, a boolean, an integer or a ClassLabel.")
        if any(v is None for v in values):
            missing = sum(v is None for v in values)
            raise ValueError(f"Label column {label_column!r} of {name} has {missing} missing label(s); drop those rows "
                             f"(dataset.filter(lambda row: row[{label_column!r}] is not None)) before "
                             "cross-validating.")
    array = np.asarray(values)
    if array.dtype.kind == "i" and len(array) and array.min() < 0:
        raise ValueError(f"Label column {label_column!r} of {name} holds the negative label {int(array.min())} (an "
                         "unlabelled row, in datasets' convention); drop those rows "
                         f"(dataset.filter(lambda row: row[{label_column!r}] >= 0)) before cross-validating.")
    present = np.unique(array) if len(array) else array
    if len(present) < 2:
        only = repr(feature.int2str(int(present[0])) if isinstance(feature, datasets.ClassLabel) and len(present)
                    else (present[0].item() if len(present) else None))
        raise ValueError(f"Label column {label_column!r} of {name} holds a single class ({only}) in all {len(array)} "
                         "rows; a classifier needs at least two classes to learn from: add rows of another class, or "
                         f"set {option('label_column')} to the column that holds the classes.")
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), feature.num_classes
    if array.dtype.kind in "iu":
        return None, int(array.max()) + 1 if len(array) else 0
    return None, len(present)


def _row_list(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:MAX_NAMED])
    return f"{shown}{', ...' if len(rows) > MAX_NAMED else ''}"


def _check_texts(dataset: "datasets.Dataset", column: str, name: str) -> None:
    values = dataset.with_format(None)[column]
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(
            f"Text column {column!r} of {name} is empty or missing in {len(bad)} of {len(values)} rows (row "
            f"{_row_list(bad)}), and an empty row has nothing to classify; drop them first: dataset = dataset.filter("
            f"lambda row: isinstance(row[{column!r}], str) and row[{column!r}].strip() != '')."
        )


# A user's own images are trusted: only damage is refused, not size (the limits of strangers' uploads do not apply).
def _own_image_limits():
    from .upload import UploadLimits

    return UploadLimits(max_file_bytes=2**40, max_image_pixels=2**40, max_decode_seconds=3600.0)


def _check_images(dataset: "datasets.Dataset", column: str, name: str) -> None:
    """Decode every image (through `hf_tlcv.upload.open_image`) and name the files or rows that do not decode."""
    import datasets

    from .upload import UploadError, open_image

    feature = dataset.features[column]
    if not isinstance(feature, datasets.Image):
        return
    raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    limits = _own_image_limits()
    bad: list[str] = []
    bad_rows: list[int] = []
    for start in range(0, len(raw), 256):
        for row, item in enumerate(raw[start:start + 256][column], start):
            item = item or {}
            path = item.get("path")
            label = f"row {row} ({Path(path).name})" if path else f"row {row}"
            # A trusted file is read whole (open_image's bounded read would reserve its byte limit up front).
            source = item.get("bytes") or (Path(path).read_bytes() if path and os.path.isfile(path) else None)
            try:
                if source is None:
                    raise UploadError(f"{label} holds no image" + (f" (no file {path})" if path else ""))
                open_image(source, limits, name=label, exif_transpose=False)
            except UploadError as exc:
                bad_rows.append(row)
                if len(bad) < MAX_NAMED:
                    bad.append(str(exc).split(";")[0].rstrip("."))
    if bad_rows:
        shown = "; ".join(bad) + ("; ..." if len(bad_rows) > len(bad) else "")
        drop = f"{{{', '.join(map(str, bad_rows))}}}" if len(bad_rows) <= MAX_NAMED else "bad_rows"
        raise ValueError(
            f"{len(bad_rows)} of {len(raw)} images in column {column!r} of {name} cannot be decoded: {shown}. Replace "
            f"or re-save those files, or drop their rows first: dataset = dataset.select([i for i in "
            f"range(len(dataset)) if i not in {drop}])."
        )
