"""Preprocessing, once per dataset: image transforms or tokenisation before any fold is cut.

Folds are row selections of the preprocessed dataset (`dataset.select(indices)`), so k folds and r repeats
cost one pass of the image processor or tokenizer, not k * r.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref

import numpy as np
import pyarrow as pa
from datasets import Array3D, ClassLabel, Dataset, Image, Value
from pyarrow import ArrowInvalid

MODEL_INPUT_COLUMNS = ("pixel_values", "input_ids", "inputs_embeds")


def find_column(dataset: Dataset, kind: str, requested: str | None) -> str | None:
    """The image (`kind="image"`) or text (`kind="text"`) column: `requested` when given (checked), else the
    first column of that type."""
    if requested is not None:
        if requested not in dataset.column_names:
            raise ValueError(
                f"{kind}_column={requested!r} is not a column of the dataset; its columns are "
                f"{dataset.column_names}."
            )
        return requested
    for name, feature in dataset.features.items():
        if kind == "image" and isinstance(feature, Image):
            return name
        if kind == "text" and isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
            return name
    return None


def label_names(dataset: Dataset, label_column: str) -> list[str] | None:
    feature = dataset.features.get(label_column)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


_CATEGORICAL_DTYPES = ("string", "large_string", "bool")


def encode_labels(dataset: Dataset, label_column: str) -> Dataset:
    """Turn a label column of strings (or booleans) into a `ClassLabel` whose names are the sorted distinct values, so
    that a CSV or pandas dataset trains as it is. `ClassLabel` and integer columns are returned unchanged.

    Raises:
        ValueError: the column has missing labels.
    """
    feature = dataset.features.get(label_column)
    if not (isinstance(feature, Value) and feature.dtype in _CATEGORICAL_DTYPES) or not len(dataset):
        return dataset
    values = dataset.with_format(None)[label_column]
    missing = sum(v is None for v in values)
    if missing:
        raise ValueError(f"label_column {label_column!r} has {missing} missing label(s); drop or fill those rows "
                         "(dataset.filter(lambda row: row[label_column] is not None)) before cross-validating.")
    if feature.dtype == "bool":
        dataset = dataset.cast_column(label_column, Value("string"))
    return dataset.class_encode_column(label_column)


def num_labels(dataset: Dataset, label_column: str) -> int:
    names = label_names(dataset, label_column)
    if names is not None:
        return len(names)
    values = np.asarray(dataset[label_column])
    return int(values.max()) + 1


def needs_preprocessing(dataset: Dataset) -> bool:
    """Whether the rows still have to be turned into model inputs (no `pixel_values` / `input_ids` column yet)."""
    return not any(c in dataset.column_names for c in MODEL_INPUT_COLUMNS)


def describe_dataset(dataset: Dataset) -> dict:
    """What a run records about its data, as the user named it: the name (a builtin or Hub id, or the path
    `hf_tlcv.load_data` or a recipe loaded), the configuration, the revision and the remote data files `datasets`
    downloaded, the row count and a fingerprint of the rows' contents ([`rows_fingerprint`]), the same wherever the
    rows are stored.

    No path of the machine that ran is recorded as the data: not `datasets`' cache files
    (`~/.cache/huggingface/datasets/csv/default-.../*.arrow`), not hf_tlcv's own cache (a builtin dataset is
    recorded by its name, `builtin:animal-mnist`, however it was loaded), not a local file `datasets` resolved. A
    dataset read by one of `datasets`' file builders (`load_dataset("csv", data_files=...)`) keeps no trace of its file
    names; it is recorded by its format (`"format": "csv"`) and fingerprint, and `hf_tlcv.load_data("reviews.csv")`
    records the path as the user gave it.
    """
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    info = dataset.info
    files = [url for url in (info.download_checksums or {}) if "://" in str(url)]
    revision = None
    for url in files:  # hf://datasets/<id>@<revision>/... records the exact Hub revision
        if "@" in url and url.startswith("hf://"):
            revision = url.split("@", 1)[1].split("/", 1)[0]
            break
    name, config, fmt = info.dataset_name or _source_of_rows(dataset), info.config_name or None, None
    if name is not None and name == info.builder_name and name in _PACKAGED_DATASETS_MODULES:
        # "csv" / "imagefolder" names the reader, not the data: say which format was read, and no name.
        name, fmt = None, info.builder_name
        config = None if config == "default" else config
    record = {"name": name, "config": config, "revision": revision,
              "split": str(dataset.split) if dataset.split is not None else None, "data_files": files[:50],
              "n_rows": len(dataset), "fingerprint": rows_fingerprint(dataset)}
    if fmt is not None:
        record["format"] = fmt
    return record


_HASH_BATCH_BYTES = 64 * 2**20
_ROWS_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rows_fingerprint(dataset: Dataset) -> str:
    """A fingerprint of the rows' contents, in order, and of their features: the same wherever the rows are stored.

    `datasets.fingerprint.Hasher.hash(dataset)` hashes a memory-mapped dataset by the paths of its Arrow files, so
    the same rows read from another cache folder (`$HF_TLCV_CACHE`, `$HF_DATASETS_CACHE`, another machine) hash
    differently, and a run could not be resumed there. This hashes what is in the rows instead, once per dataset
    object: one pass over the data (about 0.6 GB/s on one core). Images are hashed as they are stored: their bytes,
    not decoded; an image stored only as a file path (`datasets`' imagefolder) as its path.

    >>> from datasets import Dataset
    >>> rows = Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]})
    >>> larger = Dataset.from_dict({"text": ["z", "a", "b", "c"], "label": [1, 0, 1, 0]})
    >>> rows_fingerprint(rows) == rows_fingerprint(larger.select([1, 2, 3]))
    True
    >>> rows_fingerprint(rows) == rows_fingerprint(larger.select([1, 3, 2]))  # another order: other rows
    False
    """
    try:
        return _ROWS_FINGERPRINTS[dataset]
    except KeyError:
        pass
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps(dataset.features.to_dict(), sort_keys=True).encode())
    n, rows = len(dataset), dataset.with_format("arrow")
    # Batches of about _HASH_BATCH_BYTES, sized from the first rows' values (not from how they are stored, which
    # would move the batch boundaries and so the hash).
    head = _values_bytes(rows[:64]) if n else b""
    step = max(1, int(_HASH_BATCH_BYTES * min(n, 64) // max(len(head), 1)))
    for start in range(0, n, step):
        digest.update(_values_bytes(rows[start:start + step]))
    _ROWS_FINGERPRINTS[dataset] = value = digest.hexdigest()
    return value


def _values_bytes(table: pa.Table) -> pa.Buffer:
    """The table as one Arrow IPC record batch without the schema's metadata, its values copied into fresh buffers
    (`take`): the bytes depend only on the values, not on how the table was chunked, sliced or annotated (a slice
    of a larger in-memory array is written with other padding than the same values read from a file)."""
    table = table.replace_schema_metadata(None).take(pa.array(np.arange(table.num_rows))).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def recorded_for(dataset: Dataset, fingerprint: str | None) -> bool:
    """Whether `fingerprint`, as a run recorded it, names these rows: [`rows_fingerprint`], or the
    `datasets.fingerprint.Hasher` fingerprint that hf_tlcv 0.2 to 0.4 recorded (which holds only where the rows are
    stored in the same place, so it is tried second)."""
    if not fingerprint:
        return False
    if fingerprint == rows_fingerprint(dataset):
        return True
    from datasets.fingerprint import Hasher

    return fingerprint == Hasher.hash(dataset)


def _source_of_rows(dataset: Dataset) -> str | None:
    """The source's name of the files the rows are read from (`builtin:animal-mnist` for a builtin dataset, however
    sliced), when they all belong to one; `None` otherwise. The dataset's info is not touched: it is part of the
    fingerprint that runs already recorded."""
    from .sources import source_name

    names = {source_name(entry["filename"]) for entry in dataset.cache_files if entry.get("filename")}
    names = {name for name in names if name and not os.path.isabs(name)}
    return names.pop() if len(names) == 1 else None


def preprocess(dataset: Dataset, processing_class=None, *, label_column: str = "label",
               image_column: str | None = None, text_column: str | None = None, image_size: int | None = None,
               max_length: int | None = None, desc: str = "Preprocessing (once for all folds)") -> Dataset:
    """Turn raw images or text into model inputs once, and name the label column `label`.

    A dataset that already holds model inputs (`pixel_values`, `input_ids`) is only renamed. Images go through
    the image processor (converted to RGB, resized to `image_size` when given); text through the tokenizer
    (truncated, not padded: the collator pads each batch to its longest row). Columns other than the model
    inputs and the label are dropped.

    Args:
        dataset: the full dataset; its row order is the one fold indices refer to.
        processing_class: an image processor or a tokenizer.
        label_column: the label column, renamed to `label` for the Trainer's collators.
        image_column / text_column: the input column, found automatically when `None`.
        image_size: square size images are resized to.
        max_length: maximum number of tokens.
        desc: the progress bar's description (the default says what a cross-validation does with the rows).
    """
    if label_column != "label":
        if "label" in dataset.column_names:
            dataset = dataset.remove_columns("label")
        dataset = dataset.rename_column(label_column, "label")
    if not needs_preprocessing(dataset):
        return dataset
    image_col = find_column(dataset, "image", image_column) if text_column is None else None
    text_col = None if image_col else find_column(dataset, "text", text_column)
    if image_col is None and text_col is None:
        raise ValueError(
            f"The dataset has no model inputs (pixel_values / input_ids) and no image or text column to "
            f"preprocess; its columns are {dataset.column_names}. Set image_column or text_column."
        )
    if processing_class is None:
        raise ValueError(
            f"Column {image_col or text_col!r} needs preprocessing: pass processing_class (an image processor or "
            "tokenizer), or a model name from which hf_tlcv can load one."
        )
    remove = [c for c in dataset.column_names if c != "label"]
    if image_col is not None:
        size_kwargs = {"size": {"height": image_size, "width": image_size}} if image_size else {}

        def transform(batch):
            images = [img.convert("RGB") for img in batch[image_col]]
            out = processing_class(images=images, return_tensors="np", **size_kwargs)
            return {"pixel_values": out["pixel_values"].astype(np.float32)}
    else:
        def transform(batch):
            return processing_class(batch[text_col], truncation=True, max_length=max_length)

    processed = dataset.map(transform, batched=True, batch_size=64, remove_columns=remove,
                            desc=desc)
    return _fixed_shape_pixels(processed).with_format("torch") if image_col is not None else processed


def _fixed_shape_pixels(dataset: Dataset) -> Dataset:
    """Store `pixel_values` as a fixed-shape `Array3D` when every image has the same size.

    `map` stores arrays as nested lists, which the torch formatter rebuilds element by element: reading one
    128 px image took 3.6 ms that way and 0.32 ms as an `Array3D` (measured), the same values either way. Images of
    different sizes (no `image_size`, a processor that keeps aspect ratios) stay nested lists.
    """
    if not len(dataset):
        return dataset
    shape = np.asarray(dataset[0]["pixel_values"]).shape
    if len(shape) != 3:
        return dataset
    try:
        return dataset.cast_column("pixel_values", Array3D(shape=shape, dtype="float32"))
    except (ValueError, TypeError, ArrowInvalid):
        return dataset


def subsample(dataset: Dataset, n: int | None, label_column: str = "label", seed: int = 0) -> Dataset:
    """A random subset of `n` rows (all rows when `n` is 0/None or not smaller), stratified by class when the
    labels are a `ClassLabel`, so a small subset keeps every class in proportion."""
    if not n or n >= len(dataset):
        return dataset
    stratify = label_column if isinstance(dataset.features.get(label_column), ClassLabel) else None
    return dataset.train_test_split(train_size=n, stratify_by_column=stratify, seed=seed)["train"]
