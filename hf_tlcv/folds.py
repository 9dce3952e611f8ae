"""Fold splitting: datasets in, persisted fold indices out.

Everything here is pure: no Trainer, no model, no process group. The indices come from scikit-learn
splitters run on `np.zeros(n_rows)` plus the labels and/or groups, so the same inputs give the same
folds in every process and on every machine. That is what lets several ranks (or several variants in a
study) train on identical folds: compute them once, [`save_folds`], and compare
[`folds_fingerprint`] wherever they are used.

Example:

```python
>>> from datasets import ClassLabel, Dataset
>>> ds = Dataset.from_dict({"text": ["a", "b", "c", "d"] * 5, "label": [0, 1] * 10})
>>> ds = ds.cast_column("label", ClassLabel(names=["neg", "pos"]))
>>> folds = make_folds(ds, n_folds=5)  # "auto" -> "stratified" because label is a ClassLabel
>>> [f.name for f in folds][:2], len(folds[0].eval_indices), len(folds[0].train_indices)
(['fold_0_0', 'fold_0_1'], 4, 16)

```
"""

from __future__ import annotations

import hashlib
import json
from transformers.utils import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .options import option
from .run_dir import write_json_atomic

if TYPE_CHECKING:  # datasets is heavy to import; only the type is needed here
    from datasets import Dataset

logger = logging.get_logger(__name__)

FOLD_STRATEGIES = ("auto", "kfold", "stratified", "group", "stratified_group", "timeseries")
"""Accepted values of `strategy`; `"auto"` is resolved by [`resolve_strategy`]."""

_STRATIFIED = ("stratified", "stratified_group")
_GROUPED = ("group", "stratified_group")
_FOLDS_FILE_VERSION = 1


@dataclass(frozen=True, eq=False)
class Fold:
    """One train/eval split of one repeat.

    Args:
        repeat (`int`): Zero-based repeat number (repeated k-fold reshuffles once per repeat).
        fold (`int`): Zero-based fold number within the repeat.
        train_indices (`np.ndarray`): Row positions to train on, sorted, `int64`.
        eval_indices (`np.ndarray`): Row positions to evaluate on, sorted, `int64`.

    The index arrays are stored as read-only copies, so a fold cannot be changed after it is made.
    Two folds are equal when their repeat, fold and indices are equal.
    """

    repeat: int
    fold: int
    train_indices: np.ndarray
    eval_indices: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "repeat", int(self.repeat))
        object.__setattr__(self, "fold", int(self.fold))
        for attr in ("train_indices", "eval_indices"):
            indices = np.sort(np.asarray(getattr(self, attr), dtype=np.int64).reshape(-1))
            indices.setflags(write=False)
            object.__setattr__(self, attr, indices)

    @property
    def name(self) -> str:
        """`fold_{repeat}_{fold}`, e.g. `fold_0_3`: unique across repeats, used for folders and logs."""
        return f"fold_{self.repeat}_{self.fold}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fold):
            return NotImplemented
        return (
            self.repeat == other.repeat
            and self.fold == other.fold
            and np.array_equal(self.train_indices, other.train_indices)
            and np.array_equal(self.eval_indices, other.eval_indices)
        )

    def __hash__(self) -> int:
        return hash((self.repeat, self.fold, self.train_indices.tobytes(), self.eval_indices.tobytes()))

    def __repr__(self) -> str:
        return (
            f"Fold(repeat={self.repeat}, fold={self.fold}, "
            f"n_train={len(self.train_indices)}, n_eval={len(self.eval_indices)})"
        )


# ----------------------------------------------------------------------------------------------------
# Validation


def _check_settings(strategy: str, n_folds: int, n_repeats: int) -> None:
    """Checks that need no data, so a config can run them before any dataset is loaded."""
    if strategy not in FOLD_STRATEGIES:
        raise ValueError(f"Unknown fold strategy: {option('fold_strategy', strategy)}; use one of "
                         f"{', '.join(map(repr, FOLD_STRATEGIES))}.")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(
            f"n_folds must be an integer of at least 2, got {n_folds!r}; set {option('n_folds', 2)} or more (5 is "
            "usual)."
        )
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise ValueError(
            f"n_repeats must be an integer of at least 1, got {n_repeats!r}; set {option('n_repeats', 1)} for plain "
            "k-fold."
        )
    if strategy == "timeseries" and n_repeats > 1:
        raise ValueError(
            f"{option('fold_strategy', 'timeseries')} keeps rows in time order, so there is nothing to reshuffle and "
            f"n_repeats must be 1 (got {n_repeats}); set {option('n_repeats', 1)}, or use "
            f"{option('fold_strategy', 'kfold')} for repeated cross-validation."
        )


def _check_group_setting(strategy: str, group_column: Optional[str]) -> None:
    if strategy in _GROUPED and group_column is None:
        raise ValueError(
            f"{option('fold_strategy', strategy)} needs to know which rows belong together; set "
            f"{option('group_column')} to the column that identifies the groups (for example a patient or speaker id)."
        )
    if group_column is not None and strategy not in (*_GROUPED, "auto"):
        raise ValueError(
            f"{option('group_column', group_column)} is set but {option('fold_strategy', strategy)} ignores groups, so "
            f"a group could land in both train and eval; use {option('fold_strategy', 'group')} or "
            f"{option('fold_strategy', 'stratified_group')}, or drop {option('group_column')}."
        )


def _check_arrays(
    n_rows: int,
    strategy: str,
    n_folds: int,
    labels: Optional[np.ndarray],
    groups: Optional[np.ndarray],
    label_name: str = "labels",
    group_name: str = "groups",
    class_names: Optional[Sequence[str]] = None,
) -> None:
    """Checks on the data itself (sizes, classes, groups) for an already resolved strategy."""
    if n_rows == 0:
        raise ValueError("The dataset is empty (0 rows); pass a dataset with at least n_folds rows.")
    if n_folds > n_rows:
        raise ValueError(
            f"n_folds={n_folds} is larger than the number of rows ({n_rows}); "
            f"lower {option('n_folds')} to at most {n_rows} or add rows."
        )
    if strategy == "timeseries" and n_folds + 1 > n_rows:
        raise ValueError(
            f"{option('fold_strategy', 'timeseries')} with n_folds={n_folds} needs at least {n_folds + 1} rows (the "
            f"first block only ever trains), got {n_rows}; lower {option('n_folds')} to at most {n_rows - 1}."
        )

    if strategy in _STRATIFIED:
        if labels is None:
            raise ValueError(f"strategy={strategy!r} stratifies on the labels; pass labels (one per row).")
        if len(labels) != n_rows:
            raise ValueError(f"Got {len(labels)} {label_name} for {n_rows} rows; pass exactly one label per row.")
        if labels.ndim != 1:
            raise ValueError(
                f"{label_name} has shape {labels.shape} (multi-label?), which cannot be stratified; "
                f"use {option('fold_strategy', 'kfold')} or stratify on a single-label column."
            )
        if labels.dtype.kind == "f":
            finite = labels[np.isfinite(labels)]
            if len(finite) < len(labels) or not np.all(finite == np.round(finite)):
                example = next((v for v in labels.tolist() if not float(v).is_integer()), None)
                raise ValueError(
                    f"{label_name} holds continuous values (e.g. {example}), which cannot be stratified; "
                    f"use {option('fold_strategy', 'kfold')} or bin the values into classes first."
                )
        values, counts = np.unique(labels, return_counts=True)
        smallest = int(np.argmin(counts))
        smallest_count = int(counts[smallest])
        if smallest_count < n_folds:
            value = values[smallest].item()
            named = class_names is not None and isinstance(value, int) and 0 <= value < len(class_names)
            shown = class_names[value] if named else value
            raise ValueError(
                f"Class {shown!r} has only {smallest_count} rows, fewer than n_folds={n_folds}, so stratified "
                f"folds cannot all contain it; lower {option('n_folds')} to at most {smallest_count} or use "
                f"{option('fold_strategy', 'kfold')}."
            )

    if strategy in _GROUPED:
        if groups is None:
            raise ValueError(f"strategy={strategy!r} keeps groups together; pass groups (one id per row).")
        if len(groups) != n_rows:
            raise ValueError(f"Got {len(groups)} {group_name} for {n_rows} rows; pass exactly one group id per row.")
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise ValueError(
                f"{group_name} has only {n_groups} distinct groups, fewer than n_folds={n_folds}; "
                f"lower {option('n_folds')} to at most {n_groups} or use finer groups."
            )


def _column(dataset: "Dataset", column: str) -> np.ndarray:
    # select_columns first: never decode images/audio just to read labels; [:] honours select()/shuffle().
    return np.asarray(dataset.select_columns(column).with_format("numpy")[:][column])


def _missing_column(kind: str, column: str, dataset: "Dataset", argument: str) -> ValueError:
    return ValueError(
        f"{kind} column {column!r} is not in the dataset (columns: {', '.join(dataset.column_names)}); "
        f"set {option(argument)} to one of them."
    )


def resolve_strategy(
    strategy: str, dataset: "Dataset", label_column: str = "label", group_column: Optional[str] = None
) -> str:
    """Turn `"auto"` into a concrete strategy; any other strategy is returned unchanged.

    `"auto"` means `"stratified"` when `dataset.features[label_column]` is a `datasets.ClassLabel`
    and `"kfold"` otherwise (continuous targets, plain integer or string columns, or no label column).
    When `group_column` is given, `"auto"` picks the grouped variant (`"stratified_group"` or
    `"group"`) so that groups are never split between train and eval.

    Args:
        strategy (`str`): One of `FOLD_STRATEGIES`.
        dataset (`datasets.Dataset`): The dataset to split; only its features are read.
        label_column (`str`, defaults to `"label"`): Column holding the labels.
        group_column (`str`, *optional*): Column holding group ids.

    Returns:
        `str`: A strategy other than `"auto"`.
    """
    if strategy not in FOLD_STRATEGIES:
        raise ValueError(f"Unknown fold strategy {strategy!r}; use one of {', '.join(map(repr, FOLD_STRATEGIES))}.")
    if strategy != "auto":
        return strategy
    from datasets import ClassLabel

    feature = dataset.features.get(label_column)
    if feature is None:
        logger.warning(
            "Label column %r is not in the dataset (columns: %s): strategy='auto' falls back to unstratified folds.",
            label_column,
            ", ".join(dataset.column_names),
        )
    classification = isinstance(feature, ClassLabel)
    if group_column is not None:
        return "stratified_group" if classification else "group"
    return "stratified" if classification else "kfold"


def validate_fold_inputs(
    dataset: Optional["Dataset"] = None,
    strategy: str = "auto",
    n_folds: int = 5,
    n_repeats: int = 1,
    label_column: str = "label",
    group_column: Optional[str] = None,
) -> Optional[str]:
    """Check fold settings (and, when given, the dataset) before any training starts.

    Every problem raises a `ValueError` whose one sentence names what is wrong and what to do instead.
    Without a dataset only the settings are checked (unknown strategy, `n_folds < 2`, `n_repeats < 1`,
    `"timeseries"` with repeats, a grouped strategy without `group_column`), which is what a config's
    `__post_init__` can do. With a dataset the data is checked too: empty dataset, more folds than rows,
    missing label/group columns, fewer groups than folds, a class with fewer rows than folds and continuous
    labels under a stratified strategy.

    Args:
        dataset (`datasets.Dataset`, *optional*): The dataset to split.
        strategy (`str`, defaults to `"auto"`): One of `FOLD_STRATEGIES`.
        n_folds (`int`, defaults to 5): Number of folds per repeat.
        n_repeats (`int`, defaults to 1): Number of repeats, each with a fresh shuffle.
        label_column (`str`, defaults to `"label"`): Column holding the labels; required only by the
            stratified strategies (`"auto"` reads its type to decide).
        group_column (`str`, *optional*): Column holding group ids; required by the grouped strategies.

    Returns:
        `str` or `None`: The resolved strategy when a dataset is given, else `None`.

    Example:

    ```python
    >>> validate_fold_inputs(strategy="stratified", n_folds=1)
    Traceback (most recent call last):
    ValueError: n_folds must be an integer of at least 2, got 1; set n_folds=2 or more (5 is usual).

    ```
    """
    _check_settings(strategy, n_folds, n_repeats)
    _check_group_setting(strategy, group_column)
    if dataset is None:
        return None
    return _check_dataset(dataset, strategy, n_folds, label_column, group_column)[0]


def _check_dataset(
    dataset: "Dataset", strategy: str, n_folds: int, label_column: str, group_column: Optional[str]
) -> tuple[str, Optional[np.ndarray], Optional[np.ndarray]]:
    """Data checks of [`validate_fold_inputs`]; returns the resolved strategy and the arrays it read."""
    if len(dataset) == 0:
        raise ValueError("The dataset is empty (0 rows); pass a dataset with at least n_folds rows.")
    if group_column is not None and group_column not in dataset.column_names:
        raise _missing_column("Group", group_column, dataset, "group_column")
    if strategy in _STRATIFIED and label_column not in dataset.column_names:
        raise _missing_column("Label", label_column, dataset, "label_column")

    resolved = resolve_strategy(strategy, dataset, label_column, group_column)
    labels = groups = class_names = None
    if resolved in _STRATIFIED:
        labels = _column(dataset, label_column)
        class_names = getattr(dataset.features[label_column], "names", None)
    if resolved in _GROUPED:
        groups = _column(dataset, group_column)
    _check_arrays(
        len(dataset),
        resolved,
        n_folds,
        labels,
        groups,
        label_name=f"Label column {label_column!r}",
        group_name=f"Group column {group_column!r}",
        class_names=class_names,
    )
    return resolved, labels, groups


# ----------------------------------------------------------------------------------------------------
# Splitting


def _repeat_seed(seed: int, repeat: int) -> int:
    # Repeat 0 uses the seed itself, so single-repeat folds equal sklearn's splitter with random_state=seed.
    # Later repeats draw from a SeedSequence keyed on (seed, repeat): unlike seed + repeat, it never makes
    # (seed=42, repeat=1) collide with (seed=43, repeat=0), and it is the same on every platform.
    if repeat == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1, dtype=np.uint32)[0])


def _splitter(strategy: str, n_folds: int, random_state: int):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold, TimeSeriesSplit

    if strategy == "timeseries":
        return TimeSeriesSplit(n_splits=n_folds)
    cls = {
        "kfold": KFold,
        "stratified": StratifiedKFold,
        "group": GroupKFold,
        "stratified_group": StratifiedGroupKFold,
    }[strategy]
    return cls(n_splits=n_folds, shuffle=True, random_state=random_state)


def split_indices(
    n_rows: int,
    strategy: str,
    n_folds: int,
    n_repeats: int = 1,
    seed: int = 42,
    labels: Optional[Sequence[Any]] = None,
    groups: Optional[Sequence[Any]] = None,
) -> list[Fold]:
    """Split `range(n_rows)` into folds with an already resolved strategy.

    For `"kfold"`, `"stratified"`, `"group"` and `"stratified_group"` the eval parts of one repeat
    are disjoint and together cover every row; train is the complement. Each repeat reshuffles with its
    own seed derived from `seed`, and repeat 0 uses `seed` itself (so it matches the sklearn splitter
    with `shuffle=True, random_state=seed`). `"timeseries"` assumes rows are in time order: fold `i`
    trains on a prefix and evaluates on the block right after it, so the first block is never evaluated.

    Args:
        n_rows (`int`): Number of rows.
        strategy (`str`): `"kfold"`, `"stratified"`, `"group"`, `"stratified_group"` or `"timeseries"`.
        n_folds (`int`): Folds per repeat.
        n_repeats (`int`, defaults to 1): Repeats; must be 1 for `"timeseries"`.
        seed (`int`, defaults to 42): Seed of the shuffles; same inputs give the same folds everywhere.
        labels (`Sequence`, *optional*): One label per row; required by the stratified strategies.
        groups (`Sequence`, *optional*): One group id per row; required by the grouped strategies.

    Returns:
        `list[Fold]`: `n_folds * n_repeats` folds, ordered by repeat then fold.

    Example:

    ```python
    >>> folds = split_indices(10, "kfold", n_folds=5, n_repeats=2)
    >>> len(folds), folds[-1].name, len(folds[0].eval_indices)
    (10, 'fold_1_4', 2)

    ```
    """
    if strategy == "auto" or strategy not in FOLD_STRATEGIES:
        raise ValueError(
            f"split_indices needs a resolved strategy, got {strategy!r}; use one of "
            f"{', '.join(repr(s) for s in FOLD_STRATEGIES if s != 'auto')} (resolve 'auto' with resolve_strategy)."
        )
    _check_settings(strategy, n_folds, n_repeats)
    labels_arr = None if labels is None else np.asarray(labels)
    groups_arr = None if groups is None else np.asarray(groups)
    _check_arrays(int(n_rows), strategy, int(n_folds), labels_arr, groups_arr)

    X = np.zeros(n_rows)
    all_rows = np.arange(n_rows, dtype=np.int64)
    folds = []
    for repeat in range(n_repeats):
        splitter = _splitter(strategy, int(n_folds), _repeat_seed(seed, repeat))
        # Hand each splitter only what it uses: sklearn warns about ignored labels/groups.
        y = labels_arr if strategy in _STRATIFIED else None
        g = groups_arr if strategy in _GROUPED else None
        for fold, (train, evaluation) in enumerate(splitter.split(X, y, g)):
            if strategy != "timeseries":
                # sklearn already returns the complement; rebuilding it makes the invariant explicit.
                train = np.setdiff1d(all_rows, evaluation, assume_unique=True)
            folds.append(Fold(repeat=repeat, fold=fold, train_indices=train, eval_indices=evaluation))
    return folds


def make_folds(
    dataset: "Dataset",
    strategy: str = "auto",
    n_folds: int = 5,
    n_repeats: int = 1,
    seed: int = 42,
    label_column: str = "label",
    group_column: Optional[str] = None,
) -> list[Fold]:
    """Validate the inputs, then split a `datasets.Dataset` into `n_folds * n_repeats` folds.

    Args:
        dataset (`datasets.Dataset`): The dataset to split (row positions refer to it as it is now).
        strategy (`str`, defaults to `"auto"`): One of `FOLD_STRATEGIES`; see [`resolve_strategy`].
        n_folds (`int`, defaults to 5): Folds per repeat.
        n_repeats (`int`, defaults to 1): Repeats, each with a fresh shuffle.
        seed (`int`, defaults to 42): Seed of the shuffles.
        label_column (`str`, defaults to `"label"`): Column holding the labels.
        group_column (`str`, *optional*): Column holding group ids.

    Returns:
        `list[Fold]`: Ordered by repeat then fold; use `dataset.select(fold.train_indices)`.
    """
    _check_settings(strategy, n_folds, n_repeats)
    _check_group_setting(strategy, group_column)
    resolved, labels, groups = _check_dataset(dataset, strategy, n_folds, label_column, group_column)
    return split_indices(len(dataset), resolved, n_folds, n_repeats, seed, labels=labels, groups=groups)


# ----------------------------------------------------------------------------------------------------
# Persistence


def folds_fingerprint(folds: Sequence[Fold]) -> str:
    """SHA-256 of the folds' numbers and indices: equal strings mean identical folds.

    Independent of platform byte order, so two processes (or two machines) can compare their folds
    by exchanging one short string.
    """
    digest = hashlib.sha256()
    for fold in folds:
        header = [fold.repeat, fold.fold, len(fold.train_indices), len(fold.eval_indices)]
        digest.update(np.asarray(header, dtype="<i8").tobytes())
        digest.update(fold.train_indices.astype("<i8").tobytes())
        digest.update(fold.eval_indices.astype("<i8").tobytes())
    return digest.hexdigest()


def save_folds(folds: Sequence[Fold], path: str | os.PathLike, metadata: Optional[dict] = None) -> None:
    """Write folds and their metadata to a JSON file, atomically.

    The file is `{"version": 1, **metadata, "folds": [{"repeat", "fold", "eval", "train"}, ...]}`. It is
    written to a temporary file in the same folder and moved into place with `os.replace`, so a reader
    (or a rank that crashed mid-write) never sees half a file.

    Args:
        folds (`Sequence[Fold]`): The folds to save.
        path (`str` or `os.PathLike`): Destination file; missing parent folders are created.
        metadata (`dict`, *optional*): JSON-serialisable extras (strategy, seed, dataset fingerprint...).
    """
    metadata = dict(metadata or {})
    reserved = {"version", "folds"} & metadata.keys()
    if reserved:
        raise ValueError(f"metadata uses the reserved key(s) {sorted(reserved)}; rename them.")
    payload = {
        "version": _FOLDS_FILE_VERSION,
        **metadata,
        "folds": [
            {
                "repeat": fold.repeat,
                "fold": fold.fold,
                "eval": fold.eval_indices.tolist(),
                "train": fold.train_indices.tolist(),
            }
            for fold in folds
        ],
    }
    write_json_atomic(path, payload)


def load_folds(path: str | os.PathLike) -> tuple[list[Fold], dict]:
    """Read folds written by [`save_folds`].

    Returns:
        `tuple[list[Fold], dict]`: The folds, and the metadata that was saved with them (without
        `"version"` and `"folds"`).
    """
    with open(path, encoding="utf-8") as f:
        payload = json.load(f)
    version = payload.pop("version", None)
    if version != _FOLDS_FILE_VERSION:
        raise ValueError(
            f"{os.fspath(path)} has folds file version {version!r}, but this hf_tlcv reads version "
            f"{_FOLDS_FILE_VERSION}; recreate the folds with make_folds and save_folds."
        )
    folds = [
        Fold(repeat=item["repeat"], fold=item["fold"], train_indices=item["train"], eval_indices=item["eval"])
        for item in payload.pop("folds")
    ]
    return folds, payload
