"""Fold splitting: coverage, stratification, groups, time order, determinism, persistence, bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value
from sklearn.model_selection import KFold

from hf_tlcv.folds import (
    choose_block_size,
    spatial_blocks,
    FOLD_STRATEGIES,
    Fold,
    folds_fingerprint,
    load_folds,
    make_folds,
    resolve_strategy,
    save_folds,
    split_indices,
    validate_fold_inputs,
)

# Strategies whose eval folds partition the rows in every repeat (everything but "timeseries").
PARTITIONING = ("kfold", "stratified", "group", "stratified_group")
GROUPED = ("group", "stratified_group")


def make_labels(counts, seed=0):
    """Shuffled labels with counts[c] rows of class c."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def make_dataset(labels, names=None, groups=None, label_feature=None):
    data = {"text": [f"row {i}" for i in range(len(labels))], "label": list(labels)}
    features = {"text": Value("string")}
    n_classes = int(max(labels, default=0)) + 1
    features["label"] = label_feature or ClassLabel(names=names or [f"c{i}" for i in range(n_classes)])
    if groups is not None:
        data["patient"] = list(groups)
        features["patient"] = Value("string")
    return Dataset.from_dict(data, features=Features(features))


def split(strategy, n_rows=60, n_folds=5, n_repeats=2, seed=42):
    labels = make_labels([n_rows // 2, n_rows // 3, n_rows - n_rows // 2 - n_rows // 3])
    groups = np.arange(n_rows) // 3  # 20 groups of 3 rows
    return split_indices(n_rows, strategy, n_folds, n_repeats, seed, labels=labels, groups=groups), labels, groups


# ----------------------------------------------------------------------------------------------------
# Shape of the folds


@pytest.mark.parametrize("strategy", PARTITIONING)
def test_eval_folds_partition_rows_in_every_repeat(strategy):
    n_rows, n_folds, n_repeats = 60, 5, 3
    folds, _, _ = split(strategy, n_rows, n_folds, n_repeats)
    assert len(folds) == n_folds * n_repeats
    assert [(f.repeat, f.fold) for f in folds] == [(r, k) for r in range(n_repeats) for k in range(n_folds)]
    for repeat in range(n_repeats):
        evals = [f.eval_indices for f in folds if f.repeat == repeat]
        joined = np.concatenate(evals)
        assert len(joined) == n_rows and set(joined.tolist()) == set(range(n_rows))  # disjoint and covering
    for fold in folds:
        assert fold.train_indices.dtype == np.int64 and fold.eval_indices.dtype == np.int64
        assert np.all(np.diff(fold.train_indices) > 0) and np.all(np.diff(fold.eval_indices) > 0)  # sorted
        np.testing.assert_array_equal(np.union1d(fold.train_indices, fold.eval_indices), np.arange(n_rows))
        assert len(np.intersect1d(fold.train_indices, fold.eval_indices)) == 0


@pytest.mark.parametrize("counts", [(20, 20, 20), (50, 30, 20), (47, 31, 22), (90, 10)])
@pytest.mark.parametrize("strategy", ["stratified", "stratified_group"])
def test_stratified_folds_keep_class_proportions(strategy, counts):
    n_folds = 5
    labels = make_labels(counts)
    groups = np.arange(len(labels))  # singleton groups: stratified_group can balance exactly
    folds = split_indices(len(labels), strategy, n_folds, n_repeats=2, labels=labels, groups=groups)
    for fold in folds:
        fold_counts = np.bincount(labels[fold.eval_indices], minlength=len(counts))
        expected = np.asarray(counts) / n_folds
        assert np.all(np.abs(fold_counts - expected) <= 1), (fold.name, fold_counts, expected)


@pytest.mark.parametrize("strategy", GROUPED)
def test_groups_are_never_split(strategy):
    folds, _, groups = split(strategy, n_repeats=2)
    for fold in folds:
        assert not set(groups[fold.train_indices]) & set(groups[fold.eval_indices]), fold.name
    for repeat in (0, 1):
        # every group is evaluated exactly once per repeat
        eval_groups = [g for f in folds if f.repeat == repeat for g in np.unique(groups[f.eval_indices])]
        assert sorted(eval_groups) == sorted(np.unique(groups).tolist())


def test_timeseries_trains_on_the_past_only():
    n_rows, n_folds = 23, 4
    folds = split_indices(n_rows, "timeseries", n_folds)
    assert [f.name for f in folds] == [f"fold_0_{k}" for k in range(n_folds)]
    for previous, fold in zip([None] + folds[:-1], folds):
        assert fold.train_indices.max() < fold.eval_indices.min()
        # train is the whole past, eval the contiguous block right after it
        np.testing.assert_array_equal(fold.train_indices, np.arange(fold.eval_indices.min()))
        first, last = fold.eval_indices.min(), fold.eval_indices.max()
        np.testing.assert_array_equal(fold.eval_indices, np.arange(first, last + 1))
        if previous is not None:
            assert fold.eval_indices.min() == previous.eval_indices.max() + 1
    assert folds[-1].eval_indices.max() == n_rows - 1


# ----------------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("strategy", PARTITIONING)
def test_repeats_differ_but_are_reproducible(strategy):
    first, _, _ = split(strategy, n_repeats=3, seed=7)
    again, _, _ = split(strategy, n_repeats=3, seed=7)
    other_seed, _, _ = split(strategy, n_repeats=3, seed=8)
    assert first == again
    assert folds_fingerprint(first) == folds_fingerprint(again)
    assert folds_fingerprint(first) != folds_fingerprint(other_seed)
    per_repeat = [[f.eval_indices.tolist() for f in first if f.repeat == r] for r in range(3)]
    assert per_repeat[0] != per_repeat[1] and per_repeat[1] != per_repeat[2] and per_repeat[0] != per_repeat[2]


def test_first_repeat_matches_sklearn_with_the_seed():
    folds = split_indices(30, "kfold", n_folds=3, n_repeats=2, seed=123)
    expected = KFold(n_splits=3, shuffle=True, random_state=123).split(np.zeros(30))
    for fold, (_, evaluation) in zip(folds[:3], expected):
        np.testing.assert_array_equal(fold.eval_indices, np.sort(evaluation))


def test_seed_and_repeat_do_not_alias():
    # A naive per-repeat seed of seed + repeat would make these two identical.
    a = split_indices(40, "kfold", 4, n_repeats=2, seed=42)
    b = split_indices(40, "kfold", 4, n_repeats=1, seed=43)
    assert [f.eval_indices.tolist() for f in a[4:]] != [f.eval_indices.tolist() for f in b]


@pytest.mark.integration
def test_same_folds_in_another_process():
    # String group ids and a different hash seed: nothing may depend on Python's str hashing.
    code = (
        "import numpy as np; from hf_tlcv.folds import split_indices, folds_fingerprint;"
        "g = [f'p{i // 3}' for i in range(60)]; y = [i % 3 for i in range(60)];"
        "print(folds_fingerprint(split_indices(60, 'stratified_group', 5, 2, 42, labels=y, groups=g)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    groups = [f"p{i // 3}" for i in range(60)]
    labels = [i % 3 for i in range(60)]
    here = split_indices(60, "stratified_group", 5, 2, 42, labels=labels, groups=groups)
    assert out.stdout.strip() == folds_fingerprint(here)


# ----------------------------------------------------------------------------------------------------
# Datasets and "auto"


@pytest.mark.parametrize(
    "label_feature, group_column, expected",
    [
        (ClassLabel(names=["a", "b"]), None, "stratified"),
        (Value("float32"), None, "kfold"),
        (Value("int64"), None, "kfold"),
        (ClassLabel(names=["a", "b"]), "patient", "stratified_group"),
        (Value("float32"), "patient", "group"),
    ],
)
def test_auto_resolution(label_feature, group_column, expected):
    ds = make_dataset([0, 1] * 10, groups=[f"p{i // 2}" for i in range(20)], label_feature=label_feature)
    assert resolve_strategy("auto", ds, "label", group_column) == expected
    assert validate_fold_inputs(ds, "auto", 5, 1, "label", group_column) == expected


def test_auto_without_label_column_uses_plain_kfold():
    ds = Dataset.from_dict({"text": [str(i) for i in range(10)]})
    assert resolve_strategy("auto", ds, "label") == "kfold"
    assert len(make_folds(ds, n_folds=5)) == 5


@pytest.mark.parametrize("strategy", [s for s in FOLD_STRATEGIES if s != "auto"])
def test_explicit_strategy_is_returned_unchanged(strategy):
    ds = make_dataset([0, 1] * 5)
    assert resolve_strategy(strategy, ds, "label") == strategy


def test_make_folds_stratifies_on_the_dataset_as_selected():
    # A select()/shuffle() leaves the Arrow table untouched and adds an index mapping: labels must be
    # read through it, or stratification balances the wrong rows.
    counts = (40, 10)
    base = make_dataset(np.repeat([0, 1], counts))  # rows 0..39 class 0, 40..49 class 1
    reordered = base.select(np.random.default_rng(0).permutation(len(base)))
    labels = np.asarray(reordered["label"])
    folds = make_folds(reordered, strategy="auto", n_folds=5, seed=3)
    for fold in folds:
        np.testing.assert_array_equal(np.bincount(labels[fold.eval_indices], minlength=2), [8, 2])


def test_make_folds_matches_split_indices():
    labels = make_labels([12, 8])
    groups = [f"p{i // 2}" for i in range(20)]
    ds = make_dataset(labels, groups=groups)
    folds = make_folds(ds, "stratified_group", n_folds=4, n_repeats=2, seed=5, group_column="patient")
    assert folds == split_indices(20, "stratified_group", 4, 2, 5, labels=labels, groups=groups)


# ----------------------------------------------------------------------------------------------------
# Persistence and the Fold type


def test_save_load_round_trip(tmp_path):
    folds, _, _ = split("stratified_group", n_repeats=2)
    metadata = {"strategy": "stratified_group", "seed": 42, "n_rows": 60, "dataset_fingerprint": "abc"}
    path = tmp_path / "nested" / "folds.json"
    save_folds(folds, path, metadata)

    loaded, loaded_metadata = load_folds(path)
    assert loaded == folds
    assert loaded_metadata == metadata
    assert folds_fingerprint(loaded) == folds_fingerprint(folds)
    payload = json.loads(path.read_text())
    assert payload["version"] == 1 and payload["seed"] == 42
    assert set(payload["folds"][0]) == {"repeat", "fold", "eval", "train"}
    assert os.listdir(path.parent) == ["folds.json"]  # the temporary file was moved, not left behind


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "folds.json"
    save_folds(split_indices(10, "kfold", 2), path, {"run": 1})
    save_folds(split_indices(12, "kfold", 3), path, {"run": 2})
    folds, metadata = load_folds(path)
    assert metadata == {"run": 2} and len(folds) == 3


def test_save_rejects_reserved_metadata(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_folds(split_indices(10, "kfold", 2), tmp_path / "f.json", {"folds": 1})


def test_load_rejects_other_versions(tmp_path):
    path = tmp_path / "folds.json"
    path.write_text(json.dumps({"version": 99, "folds": []}))
    with pytest.raises(ValueError, match="version 99"):
        load_folds(path)


def test_fold_is_immutable_and_named():
    fold = Fold(repeat=1, fold=3, train_indices=[5, 1, 2], eval_indices=np.array([4, 0], dtype=np.int32))
    assert fold.name == "fold_1_3"
    assert fold.train_indices.tolist() == [1, 2, 5] and fold.eval_indices.dtype == np.int64
    with pytest.raises(ValueError):
        fold.eval_indices[0] = 7
    with pytest.raises(AttributeError):
        fold.repeat = 2
    assert fold == Fold(1, 3, [1, 2, 5], [0, 4]) and fold != Fold(1, 3, [1, 2, 5], [0, 3])
    assert len({fold, Fold(1, 3, [1, 2, 5], [0, 4])}) == 1


# ----------------------------------------------------------------------------------------------------
# Bad inputs: one ValueError, naming the problem and the fix, before anything is split


def _ds():
    return make_dataset(make_labels([6, 6]), groups=[f"p{i // 4}" for i in range(12)])  # 12 rows, 3 groups


BAD_INPUTS = [
    # (id, dataset factory, make_folds kwargs, words the message must contain)
    ("empty", lambda: _ds().select([]), {}, ["empty", "at least"]),
    ("one fold", _ds, {"n_folds": 1}, ["n_folds", "at least 2"]),
    ("more folds than rows", _ds, {"n_folds": 13, "strategy": "kfold"}, ["n_folds=13", "12", "lower n_folds"]),
    ("no repeats", _ds, {"n_repeats": 0}, ["n_repeats", "n_repeats=1"]),
    ("unknown strategy", _ds, {"strategy": "random"}, ["'random'", "'stratified'", "'timeseries'"]),
    (
        "missing label column",
        _ds,
        {"strategy": "stratified", "label_column": "target"},
        ["'target'", "text", "label", "patient", "label_column"],
    ),
    (
        "missing group column",
        _ds,
        {"strategy": "group", "group_column": "subject", "n_folds": 3},
        ["'subject'", "text", "label", "patient", "group_column"],
    ),
    ("group strategy without groups", _ds, {"strategy": "group"}, ["group_column", "'group'"]),
    ("groups ignored", _ds, {"strategy": "kfold", "group_column": "patient"}, ["group_column", "'group'"]),
    (
        "fewer groups than folds",
        _ds,
        {"strategy": "group", "group_column": "patient", "n_folds": 4},
        ["only 3 distinct groups", "n_folds=4", "'patient'"],
    ),
    (
        "rare class",
        lambda: make_dataset(make_labels([10, 10, 2]), names=["cat", "dog", "axolotl"]),
        {"n_folds": 5},
        ["'axolotl'", "only 2 rows", "n_folds=5", "kfold"],
    ),
    (
        "continuous labels",
        lambda: make_dataset([0.5, 1.25] * 6, label_feature=Value("float32")),
        {"strategy": "stratified", "n_folds": 3},
        ["continuous", "kfold", "bin"],
    ),
    ("timeseries repeats", _ds, {"strategy": "timeseries", "n_repeats": 2}, ["timeseries", "n_repeats=1"]),
    (
        "timeseries too short",
        lambda: _ds().select(range(5)),
        {"strategy": "timeseries", "n_folds": 5},
        ["timeseries", "6 rows"],
    ),
]


@pytest.mark.parametrize("dataset_factory, kwargs, words", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_raise_helpful_errors(dataset_factory, kwargs, words):
    dataset = dataset_factory()
    with pytest.raises(ValueError) as info:
        make_folds(dataset, **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    # The same check runs without splitting, e.g. from a config before training.
    with pytest.raises(ValueError):
        validate_fold_inputs(dataset, **kwargs)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n_folds": 1}, "n_folds"),
        ({"n_repeats": 0}, "n_repeats"),
        ({"strategy": "shuffle"}, "'shuffle'"),
        ({"strategy": "timeseries", "n_repeats": 3}, "timeseries"),
        ({"strategy": "stratified_group"}, "group_column"),
    ],
)
def test_settings_are_checked_without_a_dataset(kwargs, word):
    with pytest.raises(ValueError, match=word):
        validate_fold_inputs(None, **kwargs)


def test_valid_settings_without_a_dataset_pass():
    assert validate_fold_inputs(None, strategy="group", n_folds=3, group_column="patient") is None


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"strategy": "auto"}, "resolve_strategy"),
        ({"strategy": "stratified"}, "labels"),
        ({"strategy": "group"}, "groups"),
        ({"strategy": "stratified", "labels": [0, 1] * 4}, "8 labels for 10 rows"),
        ({"strategy": "stratified", "labels": [0.5] * 10}, "continuous"),
    ],
)
def test_split_indices_checks_its_arrays(kwargs, word):
    with pytest.raises(ValueError, match=word):
        split_indices(10, n_folds=2, **kwargs)


# ----------------------------------------------------------------------------------------------------
# Spatial blocks and time gaps (issue 27)


def _haversine_km(a, b):
    """Great-circle distances, written out independently of hf_tlcv (the brute-force reference)."""
    lon1, lat1 = np.radians(a[:, None, 0]), np.radians(a[:, None, 1])
    lon2, lat2 = np.radians(b[None, :, 0]), np.radians(b[None, :, 1])
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(h))


def _points(n=600, seed=0, geographic=False):
    rng = np.random.default_rng(seed)
    if geographic:  # a 4 x 3 degree patch around Lyon: ~300 x 330 km
        return np.column_stack([rng.uniform(3, 7, n), rng.uniform(44, 47, n)])
    return rng.uniform(0, 100, size=(n, 2))


@pytest.mark.parametrize("geographic, block_size, buffer", [(False, 20.0, 7.5), (True, 60.0, 25.0)])
def test_spatial_buffer_keeps_every_eval_row_away_from_training_rows(geographic, block_size, buffer):
    xy = _points(geographic=geographic)
    labels = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
    folds = split_indices(len(xy), "spatial", 5, n_repeats=2, labels=labels, coordinates=xy, geographic=geographic,
                          block_size=block_size, buffer=buffer)
    unbuffered = split_indices(len(xy), "spatial", 5, n_repeats=2, labels=labels, coordinates=xy,
                               geographic=geographic, block_size=block_size)
    dropped = 0
    for fold, plain in zip(folds, unbuffered):
        np.testing.assert_array_equal(fold.eval_indices, plain.eval_indices)  # the buffer only thins training
        a, b = xy[fold.eval_indices], xy[fold.train_indices]
        if geographic:
            distances = _haversine_km(a, b)
        else:
            distances = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
        assert distances.min() >= buffer  # brute force over every (eval, train) pair
        # and nothing was dropped that was far enough: the training rows are exactly those at >= buffer
        removed = np.setdiff1d(plain.train_indices, fold.train_indices)
        if geographic:
            near = _haversine_km(xy[removed], a).min(axis=1) if len(removed) else np.zeros(0)
        else:
            near = np.sqrt(((xy[removed][:, None, :] - a[None, :, :]) ** 2).sum(-1)).min(axis=1)
        assert np.all(near < buffer)
        dropped += len(removed)
    assert dropped > 0


def test_spatial_blocks_are_whole_contiguous_squares_dealt_to_one_fold():
    side, block = 24, 4.0  # a regular 24 x 24 grid of points one unit apart
    yy, xx = np.mgrid[0:side, 0:side]
    xy = np.column_stack([xx.ravel(), yy.ravel()]).astype(float) + 0.5
    folds = split_indices(len(xy), "spatial", 4, n_repeats=2, coordinates=xy, block_size=block)
    for repeat in (0, 1):
        ids = spatial_blocks(xy, block, seed=42, repeat=repeat)
        fold_of = np.full(len(xy), -1)
        for fold in (f for f in folds if f.repeat == repeat):
            fold_of[fold.eval_indices] = fold.fold
        assert np.all(fold_of >= 0)
        for block_id in np.unique(ids):
            rows = np.flatnonzero(ids == block_id)
            assert len(np.unique(fold_of[rows])) == 1  # a block is never split between folds
            span = xy[rows].max(axis=0) - xy[rows].min(axis=0)
            assert np.all(span < block)  # a square of side block_size...
            # ...and contiguous: every grid point inside its bounding box belongs to it
            assert len(rows) == np.prod(span + 1)
    # every repeat re-draws the blocks; the same seed gives the same ones
    assert not np.array_equal(spatial_blocks(xy, block, 42, 0), spatial_blocks(xy, block, 42, 1))
    assert folds == split_indices(len(xy), "spatial", 4, n_repeats=2, coordinates=xy, block_size=block)


def test_spatial_folds_balance_classes_and_sizes_within_tolerance():
    # Stated tolerance: with at least ~20 blocks per fold, each fold's class shares are within 0.05 of the overall
    # shares and its size within 25% of n / k (whole blocks are dealt, so a fold cannot be balanced row by row).
    xy = _points(n=3000, seed=1)
    rng = np.random.default_rng(1)
    labels = np.where(xy[:, 1] > 70, 2, (rng.random(3000) < 0.3).astype(int))  # classes with spatial structure
    overall = np.bincount(labels) / len(labels)
    folds = split_indices(len(xy), "spatial", 5, n_repeats=2, labels=labels, coordinates=xy, block_size=8.0)
    for fold in folds:
        shares = np.bincount(labels[fold.eval_indices], minlength=3) / len(fold.eval_indices)
        assert np.abs(shares - overall).max() <= 0.05, (fold, shares, overall)
        assert abs(len(fold.eval_indices) - len(xy) / 5) <= 0.25 * len(xy) / 5


def test_spatial_blocks_of_a_subset_are_the_blocks_of_the_whole():
    # What lets the inner folds of a nested run use the outer blocks: the grid does not depend on the rows.
    xy = _points(n=400, seed=2)
    subset = np.sort(np.random.default_rng(0).choice(400, 250, replace=False))
    whole, part = spatial_blocks(xy, 15.0), spatial_blocks(xy[subset], 15.0)
    same = whole[subset][:, None] == whole[subset][None, :]
    np.testing.assert_array_equal(same, part[:, None] == part[None, :])


def test_choose_block_size_follows_the_range_of_the_labels():
    xy = _points(n=1500, seed=3)
    fine = ((xy[:, 0] // 5 + xy[:, 1] // 5) % 2).astype(int)  # a 5-unit checkerboard
    coarse = ((xy[:, 0] // 25 + xy[:, 1] // 25) % 2).astype(int)  # a 25-unit one
    small, large = (choose_block_size(xy, labels, 5, categorical=True) for labels in (fine, coarse))
    assert small < large
    assert 2 <= small <= 12 and 10 <= large <= 40


@pytest.mark.parametrize("gap", [0, 1, 7])
def test_fold_gap_leaves_exactly_the_gap(gap):
    folds = split_indices(60, "timeseries", 4, gap=gap)
    for fold in folds:
        assert fold.eval_indices.min() - fold.train_indices.max() - 1 == gap
        np.testing.assert_array_equal(fold.train_indices, np.arange(fold.train_indices.max() + 1))
        np.testing.assert_array_equal(fold.eval_indices, np.arange(fold.eval_indices.min(), fold.eval_indices.max() + 1))
    assert folds[-1].eval_indices.max() == 59


def test_grouped_timeseries_never_splits_a_group_and_gaps_whole_groups():
    sizes = np.random.default_rng(0).integers(1, 6, size=30)  # 30 days with 1-5 rows each, in time order
    groups = np.repeat(np.arange(30), sizes)
    folds = split_indices(len(groups), "timeseries", 4, groups=groups, gap=2)
    for fold in folds:
        train_groups, eval_groups = set(groups[fold.train_indices]), set(groups[fold.eval_indices])
        assert not train_groups & eval_groups
        assert min(eval_groups) - max(train_groups) - 1 == 2  # the gap is two whole groups
        for g in train_groups | eval_groups:  # whole groups only
            assert set(np.flatnonzero(groups == g)) <= set(fold.train_indices) | set(fold.eval_indices)


def _spatial_ds(n=200, seed=0, **columns):
    xy = _points(n=n, seed=seed)
    data = make_dataset(make_labels([n // 2, n - n // 2], seed=seed))
    data = data.add_column("x", xy[:, 0].tolist()).add_column("y", xy[:, 1].tolist())
    for name, values in columns.items():
        data = data.add_column(name, values)
    return data


SPATIAL_BAD_INPUTS = [
    ("spatial without coordinates", _spatial_ds, {"strategy": "spatial"}, ["coordinate_columns", "spatial"]),
    ("one coordinate column", _spatial_ds, {"strategy": "spatial", "coordinate_columns": ["x"]}, ["two columns"]),
    ("missing coordinate column", _spatial_ds, {"strategy": "spatial", "coordinate_columns": ["x", "northing"]},
     ["'northing'", "coordinate_columns"]),
    ("text coordinates", lambda: _spatial_ds(where=["here"] * 200),
     {"strategy": "spatial", "coordinate_columns": ["x", "where"]}, ["'where'", "not numbers"]),
    ("NaN coordinates", lambda: _spatial_ds(z=[float("nan")] + [1.0] * 199),
     {"strategy": "spatial", "coordinate_columns": ["x", "z"]}, ["'z'", "1 missing", "row 0"]),
    ("latitude first", lambda: _spatial_ds(lat=[45.0] * 200, lon=[5.0] * 200),
     {"strategy": "spatial", "coordinate_columns": ["lat", "lon"]}, ["longitude first"]),
    ("degrees out of range", lambda: _spatial_ds(lat=[95.0] * 200, lon=[5.0] * 200),
     {"strategy": "spatial", "coordinate_columns": ["lon", "lat"]}, ["[-90, 90]", "coordinate_system='xy'"]),
    ("blocks larger than the data", _spatial_ds,
     {"strategy": "spatial", "coordinate_columns": ["x", "y"], "block_size": 1000.0}, ["fewer than", "n_folds=5"]),
    ("buffer leaves no training rows", _spatial_ds,
     {"strategy": "spatial", "coordinate_columns": ["x", "y"], "block_size": 30.0, "buffer": 500.0, "n_folds": 2},
     ["spatial_buffer=500", "without training rows", "lower spatial_buffer"]),
    ("negative buffer", _spatial_ds, {"strategy": "spatial", "coordinate_columns": ["x", "y"], "buffer": -1.0},
     ["spatial_buffer", "positive"]),
    ("buffer without spatial folds", _spatial_ds, {"strategy": "kfold", "buffer": 5.0}, ["only applies", "spatial"]),
    ("spatial with groups", lambda: _spatial_ds(patient=["a"] * 200),
     {"strategy": "spatial", "coordinate_columns": ["x", "y"], "group_column": "patient"}, ["group_column"]),
    ("gap without time order", _spatial_ds, {"strategy": "kfold", "gap": 3}, ["fold_gap=3", "timeseries"]),
    ("gap too large", _spatial_ds, {"strategy": "timeseries", "gap": 190}, ["fold_gap", "no training"]),
    ("groups that come back", lambda: _spatial_ds(day=[i % 7 for i in range(200)]),
     {"strategy": "timeseries", "group_column": "day"}, ["contiguous", "sort the dataset"]),
]


@pytest.mark.parametrize("dataset_factory, kwargs, words", [c[1:] for c in SPATIAL_BAD_INPUTS],
                         ids=[c[0] for c in SPATIAL_BAD_INPUTS])
def test_spatial_and_gap_bad_inputs_raise_helpful_errors(dataset_factory, kwargs, words):
    dataset = dataset_factory()
    for check in (make_folds, validate_fold_inputs):  # the data check before training says the same
        with pytest.raises(ValueError) as info:
            check(dataset, **kwargs)
        for word in words:
            assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def test_spatial_folds_from_a_dataset_round_trip_and_default_block_size(tmp_path):
    data = _spatial_ds(n=300)
    folds = make_folds(data, "spatial", n_folds=3, n_repeats=2, coordinate_columns=["x", "y"])
    assert len(folds) == 6
    for repeat in (0, 1):
        evals = np.concatenate([f.eval_indices for f in folds if f.repeat == repeat])
        assert sorted(evals.tolist()) == list(range(300))
    save_folds(folds, tmp_path / "folds.json", {"fold_strategy": "spatial"})
    assert load_folds(tmp_path / "folds.json")[0] == folds
    assert make_folds(data, "spatial", n_folds=3, n_repeats=2, coordinate_columns=["x", "y"]) == folds
