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

FOLD_STRATEGIES = ("auto", "kfold", "stratified", "group", "stratified_group", "timeseries", "spatial")
"""Accepted values of `strategy`; `"auto"` is resolved by [`resolve_strategy`]."""

_STRATIFIED = ("stratified", "stratified_group")
_GROUPED = ("group", "stratified_group")
COORDINATE_SYSTEMS = ("auto", "xy", "lonlat")
"""`"xy"`: planar coordinates, Euclidean distance in their unit; `"lonlat"`: degrees, great-circle distance in km;
`"auto"`: `"lonlat"` when the two columns are named like longitude then latitude, else `"xy"`."""
EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG): great-circle distances and block sizes of "lonlat" are in km
_LONGITUDE_NAMES = ("lon", "long", "lng", "longitude")
_LATITUDE_NAMES = ("lat", "latitude")
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


def _check_block_settings(
    strategy: str,
    coordinate_columns: Optional[Sequence[str]] = None,
    coordinate_system: str = "auto",
    block_size: Optional[float] = None,
    buffer: float = 0.0,
    gap: int = 0,
    group_column: Optional[str] = None,
) -> None:
    """Checks of the spatial and time-gap settings that need no data."""
    if coordinate_system not in COORDINATE_SYSTEMS:
        raise ValueError(f"Unknown {option('coordinate_system', coordinate_system)}; use one of "
                         f"{', '.join(map(repr, COORDINATE_SYSTEMS))}.")
    if coordinate_columns is not None and (isinstance(coordinate_columns, str) or len(coordinate_columns) != 2):
        raise ValueError(f"coordinate_columns must name two columns (x then y, or longitude then latitude), got "
                         f"{coordinate_columns!r}; e.g. {option('coordinate_columns', ['x', 'y'])}.")
    if strategy == "spatial":
        if coordinate_columns is None:
            raise ValueError(f"{option('fold_strategy', 'spatial')} cuts blocks from each row's position; set "
                             f"{option('coordinate_columns')} to the two columns that hold it, e.g. "
                             f"{option('coordinate_columns', ['x', 'y'])} or "
                             f"{option('coordinate_columns', ['longitude', 'latitude'])}.")
        if group_column is not None:
            raise ValueError(f"{option('fold_strategy', 'spatial')} keeps blocks of space together and ignores "
                             f"{option('group_column', group_column)}; drop {option('group_column')}, or use "
                             f"{option('fold_strategy', 'group')} with blocks of your own as groups.")
    for name, value in (("spatial_block_size", block_size), ("spatial_buffer", buffer)):
        if value is None or (name == "spatial_buffer" and value == 0):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not np.isfinite(value) or value < 0 or (name == "spatial_block_size" and value == 0):
            raise ValueError(f"{name} must be a positive distance (in the coordinates' unit, km for longitude and "
                             f"latitude), got {value!r}.")
        if strategy != "spatial":
            raise ValueError(f"{option(name, value)} only applies to {option('fold_strategy', 'spatial')} (got "
                             f"{option('fold_strategy', strategy)}); set {option('fold_strategy', 'spatial')} or "
                             f"drop {option(name)}.")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"fold_gap must be a whole number of rows >= 0, got {gap!r}; e.g. {option('fold_gap', 10)}.")
    if gap and strategy != "timeseries":
        raise ValueError(f"{option('fold_gap', gap)} leaves rows out between training and evaluation in time order, "
                         f"which only {option('fold_strategy', 'timeseries')} has (got "
                         f"{option('fold_strategy', strategy)}); set {option('fold_strategy', 'timeseries')} or use "
                         f"{option('spatial_buffer')} with {option('fold_strategy', 'spatial')}.")


def _check_group_setting(strategy: str, group_column: Optional[str]) -> None:
    if strategy in _GROUPED and group_column is None:
        raise ValueError(
            f"{option('fold_strategy', strategy)} needs to know which rows belong together; set "
            f"{option('group_column')} to the column that identifies the groups (for example a patient or speaker id)."
        )
    if group_column is not None and strategy not in (*_GROUPED, "auto", "timeseries", "spatial"):
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

    if strategy == "timeseries" and groups is not None:
        if len(groups) != n_rows:
            raise ValueError(f"Got {len(groups)} {group_name} for {n_rows} rows; pass exactly one group id per row.")
        n_units = int(_time_units(n_rows, groups)[-1]) + 1  # raises when a group is not one run of rows
        if n_folds + 1 > n_units:
            raise ValueError(f"{option('fold_strategy', 'timeseries')} with n_folds={n_folds} needs at least "
                             f"{n_folds + 1} groups in time order, got {n_units}; lower {option('n_folds')}.")

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
    **blocks: Any,
) -> Optional[str]:
    """Check fold settings (and, when given, the dataset) before any training starts.

    Every problem raises a `ValueError` whose one sentence names what is wrong and what to do instead.
    Without a dataset only the settings are checked (unknown strategy, `n_folds < 2`, `n_repeats < 1`,
    `"timeseries"` with repeats, a grouped strategy without `group_column`, `"spatial"` without coordinates, a
    negative buffer or gap), which is what a config's `__post_init__` can do. With a dataset the data is checked too:
    empty dataset, more folds than rows, missing label/group/coordinate columns, fewer groups than folds, a class with
    fewer rows than folds, continuous labels under a stratified strategy, coordinates that are missing or not numbers,
    fewer spatial blocks than folds, and a buffer that leaves a fold without training rows.

    Args:
        dataset (`datasets.Dataset`, *optional*): The dataset to split.
        strategy (`str`, defaults to `"auto"`): One of `FOLD_STRATEGIES`.
        n_folds (`int`, defaults to 5): Number of folds per repeat.
        n_repeats (`int`, defaults to 1): Number of repeats, each with a fresh shuffle.
        label_column (`str`, defaults to `"label"`): Column holding the labels; required only by the
            stratified strategies (`"auto"` reads its type to decide).
        group_column (`str`, *optional*): Column holding group ids; required by the grouped strategies.
        blocks: the spatial and time-gap settings of [`make_folds`] (`coordinate_columns`, `coordinate_system`,
            `block_size`, `buffer`, `gap`).

    Returns:
        `str` or `None`: The resolved strategy when a dataset is given, else `None`.

    Example:

    ```python
    >>> validate_fold_inputs(strategy="stratified", n_folds=1)
    Traceback (most recent call last):
    ValueError: n_folds must be an integer of at least 2, got 1; set n_folds=2 or more (5 is usual).
    >>> validate_fold_inputs(strategy="spatial")
    Traceback (most recent call last):
    ValueError: fold_strategy='spatial' cuts blocks from each row's position; set coordinate_columns to the two columns that hold it, e.g. coordinate_columns=['x', 'y'] or coordinate_columns=['longitude', 'latitude'].

    ```
    """
    _check_settings(strategy, n_folds, n_repeats)
    _check_block_settings(strategy, group_column=group_column, **blocks)
    _check_group_setting(strategy, group_column)
    if dataset is None:
        return None
    resolved = _check_dataset(dataset, strategy, n_folds, label_column, group_column)[0]
    if blocks.get("coordinate_columns") is not None:  # also read by the dependence check of random folds
        read_coordinates(dataset, blocks["coordinate_columns"], blocks.get("coordinate_system", "auto"))
    if resolved == "spatial" or blocks.get("gap"):
        # Cutting the blocks (or the gapped time folds) is cheap and is the only way to know they all have training
        # rows: a buffer that empties a fold's training part must stop the run here, not in that fold.
        make_folds(dataset, resolved, n_folds, n_repeats, label_column=label_column, group_column=group_column,
                   **blocks)
    return resolved


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
    if resolved in _GROUPED or (resolved == "timeseries" and group_column is not None):
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
# Space: coordinates, distances, blocks


def resolve_coordinate_system(coordinate_columns: Sequence[str], coordinate_system: str = "auto") -> str:
    """`"lonlat"` or `"xy"`: `"auto"` is `"lonlat"` when the columns are named like (longitude, latitude).

    Example:

    ```python
    >>> resolve_coordinate_system(["lon", "lat"]), resolve_coordinate_system(["x", "y"])
    ('lonlat', 'xy')

    ```
    """
    if coordinate_system != "auto":
        return coordinate_system
    first, second = (str(c).lower() for c in coordinate_columns)
    if first in _LATITUDE_NAMES and second in _LONGITUDE_NAMES:
        raise ValueError(f"coordinate_columns={list(coordinate_columns)!r} look like latitude then longitude; give "
                         f"longitude first, e.g. {option('coordinate_columns', [coordinate_columns[1], coordinate_columns[0]])}.")
    return "lonlat" if first in _LONGITUDE_NAMES and second in _LATITUDE_NAMES else "xy"


def read_coordinates(dataset: "Dataset", coordinate_columns: Sequence[str], coordinate_system: str = "auto") -> \
        tuple[np.ndarray, bool]:
    """The `(n, 2)` float coordinates of a dataset's rows and whether they are longitude/latitude (great-circle
    distances in km), after checking that both columns exist and hold finite numbers (in range, for degrees)."""
    for column in coordinate_columns:
        if column not in dataset.column_names:
            raise _missing_column("Coordinate", column, dataset, "coordinate_columns")
    columns = []
    for column in coordinate_columns:
        values = _column(dataset, column)
        if values.dtype.kind not in "iuf" or values.ndim != 1:
            raise ValueError(f"Coordinate column {column!r} holds {values.dtype} values, not numbers; "
                             f"set {option('coordinate_columns')} to two numeric columns (x/y or longitude/latitude).")
        values = values.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ValueError(f"Coordinate column {column!r} has {len(bad)} missing or infinite value(s) (first at row "
                             f"{int(bad[0])}); fill them in or drop those rows before cross-validating.")
        columns.append(values)
    coordinates = np.column_stack(columns) if columns else np.zeros((0, 2))
    geographic = resolve_coordinate_system(coordinate_columns, coordinate_system) == "lonlat"
    if geographic and (np.abs(coordinates[:, 0]).max(initial=0) > 180 or np.abs(coordinates[:, 1]).max(initial=0) > 90):
        raise ValueError(f"coordinate_columns={list(coordinate_columns)!r} are read as longitude/latitude in degrees, but "
                         "some values are outside [-180, 180] / [-90, 90]; set "
                         f"{option('coordinate_system', 'xy')} for planar coordinates.")
    return coordinates, geographic


def _planar(coordinates: np.ndarray, geographic: bool) -> np.ndarray:
    """Coordinates in which square blocks are cut: as they are, or for degrees the sinusoidal (equal-area)
    projection in km. Fixed, not fitted to the data, so a subset of the rows gets the same blocks."""
    coordinates = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    if not geographic:
        return coordinates
    lon, lat = np.radians(coordinates[:, 0]), np.radians(coordinates[:, 1])
    return np.column_stack([EARTH_RADIUS_KM * lon * np.cos(lat), EARTH_RADIUS_KM * lat])


def pairwise_distances(a: np.ndarray, b: np.ndarray, geographic: bool = False) -> np.ndarray:
    """All distances between the rows of `a` and `b` (Euclidean, or great-circle km for degrees). Quadratic memory:
    for small samples and brute-force checks; [`nearest_distances`] is the bounded-memory form."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 2), np.asarray(b, dtype=np.float64).reshape(-1, 2)
    if not geographic:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    lon1, lat1, lon2, lat2 = (np.radians(v) for v in (a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1]))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def neighbour_tree(coordinates: np.ndarray, geographic: bool = False):
    """A tree over the rows for nearest-neighbour queries, and the factor that turns its distances into the
    coordinates' unit (km for degrees): a KD-tree, or a ball tree with the haversine metric."""
    from sklearn.neighbors import BallTree, KDTree

    coordinates = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    if geographic:
        return BallTree(np.radians(coordinates[:, ::-1]), metric="haversine"), EARTH_RADIUS_KM
    return KDTree(coordinates), 1.0


def _tree_query(tree_scale, points: np.ndarray, geographic: bool, k: int):
    tree, scale = tree_scale
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    distances, indices = tree.query(np.radians(points[:, ::-1]) if geographic else points, k=k)
    return distances * scale, indices


def nearest_distances(points: np.ndarray, reference: np.ndarray, geographic: bool = False) -> np.ndarray:
    """Distance from each row of `points` to its nearest row of `reference` (memory linear in the rows)."""
    if len(points) == 0:
        return np.zeros(0)
    distances, _ = _tree_query(neighbour_tree(reference, geographic), points, geographic, k=1)
    return distances[:, 0]


def spatial_blocks(coordinates: np.ndarray, block_size: float, seed: int = 42, repeat: int = 0,
                   geographic: bool = False) -> np.ndarray:
    """The square block (grid cell of side `block_size`) of each row, as ids `0..n_blocks - 1`.

    The grid's origin is drawn from `(seed, repeat)`, so every repeat re-draws the blocks, and it does not depend on
    the rows: a subset of the rows (the inner folds of a nested run) gets the same blocks.

    Example:

    ```python
    >>> ids = spatial_blocks([[0.1, 0.1], [0.2, 0.3], [5.0, 5.0]], block_size=2.0)
    >>> bool(ids[0] == ids[1]), bool(ids[0] != ids[2])
    (True, True)

    ```
    """
    offset = np.random.default_rng(_repeat_seed(seed, repeat)).uniform(0, block_size, size=2)
    cells = np.floor((_planar(coordinates, geographic) - offset) / block_size).astype(np.int64)
    return np.unique(cells, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def autocorrelation_range(coordinates: np.ndarray, values: np.ndarray, geographic: bool = False,
                          categorical: bool = False, max_rows: int = 2000, n_bins: int = 20, seed: int = 0,
                          threshold: float = 0.1) -> tuple[float, np.ndarray, np.ndarray]:
    """The distance at which `values` stop being autocorrelated, read off a correlogram of at most `max_rows` rows.

    The correlogram is the mean of `z_i z_j / var(z)` over the pairs in each distance bin (for classes: the excess
    of same-class pairs over chance, `(P(same) - sum p_c^2) / (1 - sum p_c^2)`); both are 1 for identical neighbours
    and 0 without dependence. The range is the upper edge of the first bin whose value falls below the first bin's
    value times `threshold` or within the bin's noise (`2 / sqrt(pairs)`), or the last edge when none does. Bins are
    equally wide up to half the largest distance of the sample.

    Returns:
        `(range, bin_edges, correlogram)`.
    """
    coordinates = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(values), size=min(max_rows, len(values)), replace=False)
    distances = pairwise_distances(coordinates[rows], coordinates[rows], geographic)
    upper = np.triu_indices(len(rows), k=1)
    d = distances[upper]
    if categorical:
        _, codes = np.unique(values[rows], return_inverse=True)
        p = np.bincount(codes) / len(codes)
        chance = float((p ** 2).sum())
        same = (codes[upper[0]] == codes[upper[1]]).astype(np.float64)
        products = (same - chance) / max(1.0 - chance, 1e-12)
    else:
        v = values[rows].astype(np.float64)
        z = v - v.mean()
        products = z[upper[0]] * z[upper[1]] / max(float(z.var()), 1e-12)
    edges = np.linspace(0.0, float(d.max(initial=0.0)) / 2, n_bins + 1)
    which = np.digitize(d, edges[1:-1])
    inside = d <= edges[-1]
    sums = np.bincount(which[inside], weights=products[inside], minlength=n_bins)
    counts = np.bincount(which[inside], minlength=n_bins)
    correlogram = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    first = correlogram[np.isfinite(correlogram)][0] if np.isfinite(correlogram).any() else 0.0
    # Below a tenth of the short-range value, or within the noise of the bin's pairs (2 / sqrt(pairs)).
    limit = np.maximum(threshold * first, 2.0 / np.sqrt(np.maximum(counts, 1)))
    below = np.flatnonzero(np.isfinite(correlogram) & (correlogram < limit))
    return float(edges[below[0] + 1] if len(below) else edges[-1]), edges, correlogram


def choose_block_size(coordinates: np.ndarray, values: np.ndarray, n_folds: int, geographic: bool = False,
                      categorical: bool = False, seed: int = 0) -> float:
    """A block size from the data: the range of autocorrelation of `values` ([`autocorrelation_range`]), lowered
    until the grid has at least `2 * n_folds` occupied blocks (so the folds can be balanced)."""
    size, _, _ = autocorrelation_range(coordinates, values, geographic, categorical, seed=seed)
    planar = _planar(coordinates, geographic)
    extent = float(np.ptp(planar, axis=0).max(initial=0.0))
    if size <= 0 or extent <= 0:
        raise ValueError("All rows share one position, so no spatial blocks can be cut; check "
                         f"{option('coordinate_columns')}.")
    while len(np.unique(np.floor(planar / size), axis=0)) < 2 * n_folds and size > extent * 1e-6:
        size /= 1.25
    return float(f"{size:.4g}")  # a round number the user can type


# ----------------------------------------------------------------------------------------------------
# Splitting


def _repeat_seed(seed: int, repeat: int) -> int:
    # Repeat 0 uses the seed itself, so single-repeat folds equal sklearn's splitter with random_state=seed.
    # Later repeats draw from a SeedSequence keyed on (seed, repeat): unlike seed + repeat, it never makes
    # (seed=42, repeat=1) collide with (seed=43, repeat=0), and it is the same on every platform.
    if repeat == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1, dtype=np.uint32)[0])


def _splitter(strategy: str, n_folds: int, random_state: int, gap: int = 0, stratify: bool = False):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold, TimeSeriesSplit

    if strategy == "timeseries":
        return TimeSeriesSplit(n_splits=n_folds, gap=gap)
    if strategy == "spatial":  # blocks are the groups; stratified where there are classes
        return (StratifiedGroupKFold if stratify else GroupKFold)(n_splits=n_folds, shuffle=True,
                                                                   random_state=random_state)
    cls = {
        "kfold": KFold,
        "stratified": StratifiedKFold,
        "group": GroupKFold,
        "stratified_group": StratifiedGroupKFold,
    }[strategy]
    return cls(n_splits=n_folds, shuffle=True, random_state=random_state)


def _time_units(n_rows: int, groups: Optional[np.ndarray]) -> np.ndarray:
    """The unit of time each row belongs to: the row itself, or its group (groups must be contiguous runs)."""
    if groups is None:
        return np.arange(n_rows)
    starts = np.r_[True, groups[1:] != groups[:-1]]
    runs = np.cumsum(starts) - 1
    if len(np.unique(groups)) != runs[-1] + 1:
        raise ValueError("With fold_strategy='timeseries' and a group_column, each group must be one contiguous run "
                         "of rows in time order (a group that comes back later would straddle a fold boundary); "
                         "sort the dataset by time, then group.")
    return runs


def _timeseries_folds(n_rows: int, n_folds: int, gap: int, groups: Optional[np.ndarray]) -> list[tuple]:
    units = _time_units(n_rows, groups)
    n_units = int(units[-1]) + 1
    what = "groups" if groups is not None else "rows"
    test_size = n_units // (n_folds + 1)
    if n_units - gap - test_size * n_folds <= 0 or test_size == 0:
        raise ValueError(f"fold_strategy='timeseries' with n_folds={n_folds} and fold_gap={gap} leaves no training "
                         f"{what} in the first fold ({n_units} {what}); lower {option('fold_gap')} below "
                         f"{max(n_units - test_size * n_folds, 0)} or lower {option('n_folds')}.")
    out = []
    for train_units, eval_units in _splitter("timeseries", n_folds, 0, gap=gap).split(np.zeros(n_units)):
        out.append((np.flatnonzero(np.isin(units, train_units)), np.flatnonzero(np.isin(units, eval_units))))
    return out


def split_indices(
    n_rows: int,
    strategy: str,
    n_folds: int,
    n_repeats: int = 1,
    seed: int = 42,
    labels: Optional[Sequence[Any]] = None,
    groups: Optional[Sequence[Any]] = None,
    coordinates: Optional[np.ndarray] = None,
    geographic: bool = False,
    block_size: Optional[float] = None,
    buffer: float = 0.0,
    gap: int = 0,
) -> list[Fold]:
    """Split `range(n_rows)` into folds with an already resolved strategy.

    For `"kfold"`, `"stratified"`, `"group"` and `"stratified_group"` the eval parts of one repeat
    are disjoint and together cover every row; train is the complement. Each repeat reshuffles with its
    own seed derived from `seed`, and repeat 0 uses `seed` itself (so it matches the sklearn splitter
    with `shuffle=True, random_state=seed`). `"timeseries"` assumes rows are in time order: fold `i`
    trains on a prefix and evaluates on the block right after it, so the first block is never evaluated;
    `gap` rows (groups, when `groups` are given: no group straddles a boundary) between them are left out.
    `"spatial"` cuts the plane into square blocks of side `block_size` ([`spatial_blocks`], re-drawn every repeat)
    and deals whole blocks to folds, balanced in size and, when `labels` are given, in class proportions (sklearn's
    `StratifiedGroupKFold` with the blocks as groups); training rows closer than `buffer` to any of the fold's
    evaluation rows are left out of that fold's training. Whole blocks are dealt, so balance depends on how many there
    are: with about 20 blocks per fold or more, each fold's class shares are within 0.05 of the overall shares and
    its size within 25% of `n_rows / n_folds` (tested); with a few large blocks, less so.

    Args:
        n_rows (`int`): Number of rows.
        strategy (`str`): `"kfold"`, `"stratified"`, `"group"`, `"stratified_group"`, `"timeseries"` or `"spatial"`.
        n_folds (`int`): Folds per repeat.
        n_repeats (`int`, defaults to 1): Repeats; must be 1 for `"timeseries"`.
        seed (`int`, defaults to 42): Seed of the shuffles; same inputs give the same folds everywhere.
        labels (`Sequence`, *optional*): One label per row; required by the stratified strategies, and stratifies
            `"spatial"` when given.
        groups (`Sequence`, *optional*): One group id per row; required by the grouped strategies, optional for
            `"timeseries"`.
        coordinates (`np.ndarray`, *optional*): `(n_rows, 2)` positions; required by `"spatial"`.
        geographic (`bool`, defaults to `False`): the coordinates are longitude/latitude degrees (distances in km).
        block_size (`float`, *optional*): side of the spatial blocks; required by `"spatial"` here (see
            [`choose_block_size`]).
        buffer (`float`, defaults to 0): spatial buffer between a fold's evaluation rows and its training rows.
        gap (`int`, defaults to 0): time-series rows (or groups) left out between training and evaluation.

    Returns:
        `list[Fold]`: `n_folds * n_repeats` folds, ordered by repeat then fold.

    Example:

    ```python
    >>> folds = split_indices(10, "kfold", n_folds=5, n_repeats=2)
    >>> len(folds), folds[-1].name, len(folds[0].eval_indices)
    (10, 'fold_1_4', 2)
    >>> folds = split_indices(12, "timeseries", n_folds=3, gap=2)
    >>> int(folds[0].train_indices.max()), int(folds[0].eval_indices.min())
    (0, 3)

    ```
    """
    if strategy == "auto" or strategy not in FOLD_STRATEGIES:
        raise ValueError(
            f"split_indices needs a resolved strategy, got {strategy!r}; use one of "
            f"{', '.join(repr(s) for s in FOLD_STRATEGIES if s != 'auto')} (resolve 'auto' with resolve_strategy)."
        )
    _check_settings(strategy, n_folds, n_repeats)
    _check_block_settings(strategy, coordinate_columns=None if coordinates is None else ("x", "y"),
                          block_size=block_size, buffer=buffer, gap=gap)
    labels_arr = None if labels is None else np.asarray(labels)
    groups_arr = None if groups is None else np.asarray(groups)
    _check_arrays(int(n_rows), strategy, int(n_folds), labels_arr, groups_arr)
    if strategy == "spatial":
        coordinates = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
        if len(coordinates) != n_rows:
            raise ValueError(f"Got {len(coordinates)} coordinates for {n_rows} rows; pass one (x, y) per row.")
        if block_size is None:
            raise ValueError("split_indices needs the spatial block_size; choose one with choose_block_size.")

    X = np.zeros(n_rows)
    all_rows = np.arange(n_rows, dtype=np.int64)
    folds = []
    for repeat in range(n_repeats):
        if strategy == "timeseries":
            splits = _timeseries_folds(int(n_rows), int(n_folds), int(gap), groups_arr)
        elif strategy == "spatial":
            blocks = spatial_blocks(coordinates, block_size, seed, repeat, geographic)
            n_blocks = int(blocks.max(initial=-1)) + 1
            if n_blocks < n_folds:
                raise ValueError(f"The rows fall into {n_blocks} spatial block(s) of size {block_size:g}, fewer than "
                                 f"n_folds={n_folds}; lower {option('spatial_block_size')} or {option('n_folds')}.")
            splitter = _splitter(strategy, int(n_folds), _repeat_seed(seed, repeat), stratify=labels_arr is not None)
            splits = splitter.split(X, labels_arr, blocks)
        else:
            splitter = _splitter(strategy, int(n_folds), _repeat_seed(seed, repeat))
            # Hand each splitter only what it uses: sklearn warns about ignored labels/groups.
            y = labels_arr if strategy in _STRATIFIED else None
            g = groups_arr if strategy in _GROUPED else None
            splits = splitter.split(X, y, g)
        for fold, (train, evaluation) in enumerate(splits):
            if strategy != "timeseries":
                # sklearn already returns the complement; rebuilding it makes the invariant explicit.
                train = np.setdiff1d(all_rows, evaluation, assume_unique=True)
            if strategy == "spatial" and buffer:
                keep = nearest_distances(coordinates[train], coordinates[evaluation], geographic) >= buffer
                train = train[keep]
                if len(train) == 0:
                    raise ValueError(f"spatial_buffer={buffer:g} leaves fold {fold} of repeat {repeat} without "
                                     f"training rows (every row is within {buffer:g} of its evaluation block); lower "
                                     f"{option('spatial_buffer')} or {option('n_folds')}.")
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
    coordinate_columns: Optional[Sequence[str]] = None,
    coordinate_system: str = "auto",
    block_size: Optional[float] = None,
    buffer: float = 0.0,
    gap: int = 0,
) -> list[Fold]:
    """Validate the inputs, then split a `datasets.Dataset` into `n_folds * n_repeats` folds.

    Args:
        dataset (`datasets.Dataset`): The dataset to split (row positions refer to it as it is now).
        strategy (`str`, defaults to `"auto"`): One of `FOLD_STRATEGIES`; see [`resolve_strategy`].
        n_folds (`int`, defaults to 5): Folds per repeat.
        n_repeats (`int`, defaults to 1): Repeats, each with a fresh shuffle.
        seed (`int`, defaults to 42): Seed of the shuffles.
        label_column (`str`, defaults to `"label"`): Column holding the labels.
        group_column (`str`, *optional*): Column holding group ids (with `"timeseries"`: no group straddles a fold
            boundary).
        coordinate_columns (`Sequence[str]`, *optional*): the two position columns of `"spatial"`.
        coordinate_system (`str`, defaults to `"auto"`): see `COORDINATE_SYSTEMS`.
        block_size (`float`, *optional*): side of the spatial blocks; default: chosen from the data
            ([`spatial_block_size`]).
        buffer (`float`, defaults to 0): training rows closer than this to a fold's evaluation rows are left out of
            its training.
        gap (`int`, defaults to 0): with `"timeseries"`, rows (or groups) left out between training and evaluation.

    Returns:
        `list[Fold]`: Ordered by repeat then fold; use `dataset.select(fold.train_indices)`.
    """
    _check_settings(strategy, n_folds, n_repeats)
    _check_block_settings(strategy, coordinate_columns, coordinate_system, block_size, buffer, gap, group_column)
    _check_group_setting(strategy, group_column)
    resolved, labels, groups = _check_dataset(dataset, strategy, n_folds, label_column, group_column)
    spatial = {}
    if resolved == "spatial":
        coordinates, geographic = read_coordinates(dataset, coordinate_columns, coordinate_system)
        labels = _class_labels(dataset, label_column)
        if block_size is None:
            block_size = spatial_block_size(dataset, n_folds, label_column, coordinate_columns, coordinate_system)
        spatial = dict(coordinates=coordinates, geographic=geographic, block_size=block_size, buffer=buffer)
    return split_indices(len(dataset), resolved, n_folds, n_repeats, seed, labels=labels, groups=groups, gap=gap,
                         **spatial)


def _class_labels(dataset: "Dataset", label_column: str) -> Optional[np.ndarray]:
    """The labels of a `ClassLabel` column (spatial folds stratify on them), else `None`."""
    from datasets import ClassLabel

    if isinstance(dataset.features.get(label_column), ClassLabel):
        return _column(dataset, label_column)
    return None


def spatial_block_size(dataset: "Dataset", n_folds: int, label_column: str, coordinate_columns: Sequence[str],
                       coordinate_system: str = "auto") -> float:
    """The block size `"spatial"` folds use when none is set: the distance at which the labels stop being
    autocorrelated ([`choose_block_size`]), in the coordinates' unit (km for longitude/latitude)."""
    coordinates, geographic = read_coordinates(dataset, coordinate_columns, coordinate_system)
    if label_column not in dataset.column_names:
        raise ValueError(f"spatial_block_size is chosen from the labels' autocorrelation, but label column "
                         f"{label_column!r} is missing; set {option('spatial_block_size')} yourself.")
    labels = _column(dataset, label_column)
    categorical = _class_labels(dataset, label_column) is not None or labels.dtype.kind not in "f"
    return choose_block_size(coordinates, labels, n_folds, geographic, categorical=categorical)


def fold_kwargs(config: Any) -> dict[str, Any]:
    """The keyword arguments of [`make_folds`] / [`validate_fold_inputs`] that a `KFoldConfig` sets (all but the
    dataset and the seed), so that every place that cuts folds cuts them the same way."""
    return dict(strategy=config.fold_strategy, n_folds=config.n_folds, n_repeats=config.n_repeats,
                label_column=config.label_column, group_column=config.group_column,
                coordinate_columns=getattr(config, "coordinate_columns", None),
                coordinate_system=getattr(config, "coordinate_system", "auto"),
                block_size=getattr(config, "spatial_block_size", None), buffer=getattr(config, "spatial_buffer", 0.0),
                gap=getattr(config, "fold_gap", 0))


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
