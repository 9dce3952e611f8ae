"""Known defects injected into a dataset, to measure how well the audit finds them (`hf_tlcv.audit`).

- [`inject_label_noise`] flips a known fraction of labels to another class;
- [`inject_near_duplicates`] appends augmented copies of known rows (images: small shifts, a horizontal flip,
  pixel noise; text: punctuation, a dropped word, a typo), which is how near-duplicates arise in real data;
- [`detection_scores`] and [`leakage_truth`] turn what was injected into precision and recall.

The benchmark `benchmarks/bench_audit.py` and the tests use them; so can anyone who wants to know how well the
audit works on their own data before trusting it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Hashable, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    import datasets

__all__ = ["IMAGE_AUGMENTATIONS", "TEXT_AUGMENTATIONS", "detection_scores", "inject_label_noise",
           "inject_near_duplicates", "leakage_truth"]


# ---- augmentations ---------------------------------------------------------------------------------------------
def _shift(image, rng: np.random.Generator):
    from PIL import Image

    array = np.asarray(image)
    dy, dx = rng.choice([-2, -1, 1, 2], size=2)
    shifted = np.zeros_like(array)
    h, w = array.shape[:2]
    shifted[max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = \
        array[max(-dy, 0): h + min(-dy, 0), max(-dx, 0): w + min(-dx, 0)]
    return Image.fromarray(shifted)


def _flip(image, rng: np.random.Generator):
    from PIL import ImageOps

    return ImageOps.mirror(image)


def _noise(image, rng: np.random.Generator):
    from PIL import Image

    array = np.asarray(image).astype(np.float32)
    return Image.fromarray(np.clip(array + rng.normal(0.0, 12.0, array.shape), 0, 255).astype(np.uint8))


def _punctuation(text: str, rng: np.random.Generator) -> str:
    stripped = text.rstrip(" ?!.")
    return stripped + str(rng.choice([" !", "...", " ?!", ""])) if stripped != text else text + str(
        rng.choice([" !", "...", " ?"]))


def _drop_word(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    if len(words) < 4:
        return _punctuation(text, rng)
    del words[int(rng.integers(1, len(words)))]
    return " ".join(words)


def _typo(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not candidates:
        return _punctuation(text, rng)
    i = int(rng.choice(candidates))
    w = words[i]
    j = int(rng.integers(1, len(w) - 2))
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


IMAGE_AUGMENTATIONS: dict[str, Callable] = {"shift": _shift, "flip": _flip, "noise": _noise}
"""Image augmentations: a shift by 1-2 pixels each way, a horizontal flip, Gaussian pixel noise (sd 12 of 255)."""
TEXT_AUGMENTATIONS: dict[str, Callable] = {"punctuation": _punctuation, "drop_word": _drop_word, "typo": _typo}
"""Text augmentations: changed end punctuation, one word dropped (not the first), two letters swapped."""


# ---- injection ---------------------------------------------------------------------------------------------------
def inject_label_noise(dataset: "datasets.Dataset", rate: float = 0.05, *, label_column: str = "label",
                       seed: int = 0) -> tuple["datasets.Dataset", np.ndarray]:
    """Flip the labels of `round(rate * len(dataset))` random rows to another class, drawn uniformly.

    Args:
        dataset: a dataset with a `ClassLabel` label column.
        rate: the fraction of rows to flip.
        label_column: the label column.
        seed: seed of the draw.

    Returns:
        `(noisy_dataset, flipped_rows)`: the same rows and features with the flipped labels, and the flipped row
        indices (sorted).
    """
    import datasets

    feature = dataset.features.get(label_column)
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(f"inject_label_noise needs a ClassLabel column {label_column!r}.")
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}.")
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset[label_column], dtype=np.int64)
    flipped = np.sort(rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, feature.num_classes, size=len(flipped))) % feature.num_classes
    out = dataset.remove_columns(label_column).add_column(label_column, noisy.tolist(), feature=feature)
    return out.select_columns(dataset.column_names), flipped


def inject_near_duplicates(dataset: "datasets.Dataset", n_copies: int, *, column: str,
                           augmentations: dict[str, Callable] | None = None, seed: int = 0,
                           ) -> tuple["datasets.Dataset", np.ndarray, list[str]]:
    """Append augmented copies of `n_copies` random rows (each copied once, same label).

    The augmentations take turns: copy `i` uses augmentation `i mod len(augmentations)`.

    Args:
        dataset: the rows.
        n_copies: how many rows get a copy.
        column: the image or text column to augment.
        augmentations: name -> `f(value, rng) -> value`; default [`IMAGE_AUGMENTATIONS`] for an `Image` column,
            [`TEXT_AUGMENTATIONS`] otherwise.
        seed: seed of the draw and of the augmentations.

    Returns:
        `(dataset_with_copies, source, augmentation)`: the original rows followed by the copies; `source[i]` is the
        original row of row `i` (itself for an original); `augmentation[j]` names how copy `j` was made.
    """
    import datasets

    if column not in dataset.column_names:
        raise ValueError(f"{column!r} is not a column of the dataset ({dataset.column_names}).")
    if not 0 < n_copies <= len(dataset):
        raise ValueError(f"n_copies must be in 1..{len(dataset)}, got {n_copies}.")
    if augmentations is None:
        image = isinstance(dataset.features[column], datasets.Image)
        augmentations = IMAGE_AUGMENTATIONS if image else TEXT_AUGMENTATIONS
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(len(dataset), size=n_copies, replace=False))
    names = list(augmentations)
    originals = dataset.select(sources)
    copied = [augmentations[names[i % len(names)]](value, rng) for i, value in enumerate(originals[column])]
    columns = {name: copied if name == column else originals[name] for name in dataset.column_names}
    copies = datasets.Dataset.from_dict(columns, features=dataset.features)  # encodes images as the dataset does
    combined = datasets.concatenate_datasets([dataset, copies])
    source = np.concatenate([np.arange(len(dataset)), sources])
    return combined, source, [names[i % len(names)] for i in range(n_copies)]


# ---- scoring -----------------------------------------------------------------------------------------------------
def detection_scores(flagged: Iterable[Hashable], truth: Iterable[Hashable]) -> dict[str, float]:
    """Precision and recall of a set of flagged items (rows, `(repeat, fold, row)` evaluations...) against the
    injected ones.

    Example:
    ```python
    >>> detection_scores([1, 2, 3, 4], [2, 4, 6])
    {'n_flagged': 4, 'n_true': 3, 'n_found': 2, 'precision': 0.5, 'recall': 0.6666666666666666}

    ```
    """
    flagged = {int(x) if isinstance(x, (int, np.integer)) else x for x in flagged}
    truth = {int(x) if isinstance(x, (int, np.integer)) else x for x in truth}
    found = len(flagged & truth)
    return {"n_flagged": len(flagged), "n_true": len(truth), "n_found": found,
            "precision": found / len(flagged) if flagged else float("nan"),
            "recall": found / len(truth) if truth else float("nan")}


def leakage_truth(folds: Sequence, source: np.ndarray) -> set[tuple[int, int, int]]:
    """The evaluations that truly leak: `(repeat, fold, row)` for every eval row with a copy of the same source row
    (see [`inject_near_duplicates`]) in that fold's training part."""
    source = np.asarray(source)
    by_source: dict[int, list[int]] = {}
    for row, s in enumerate(source):
        by_source.setdefault(int(s), []).append(row)
    leaked = set()
    for fold in folds:
        train = set(fold.train_indices.tolist())
        for row in fold.eval_indices.tolist():
            if any(other != row and other in train for other in by_source[int(source[row])]):
                leaked.add((fold.repeat, fold.fold, row))
    return leaked
