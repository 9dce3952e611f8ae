"""Small helpers every module shares: JSON-safe values, probabilities from logits, number formatting, and the task of
a run."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Iterator

import numpy as np

IMAGE_TASK = "image-classification"
TEXT_TASK = "text-classification"
IMAGE_INPUTS = ("pixel_values",)
TEXT_INPUTS = ("input_ids", "inputs_embeds")


def to_plain(value: Any) -> Any:
    """numpy / torch scalars and arrays, tuples and dicts -> JSON-safe Python values (dict keys as strings)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def log_softmax(logits: Any) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable for large logits)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: Any) -> np.ndarray:
    """Row-wise class probabilities in float64."""
    return np.exp(log_softmax(logits))


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number, else `None`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt(value: Any, digits: int = 4, missing: str = "n/a") -> str:
    """A number with `digits` decimals, `missing` for missing or non-finite values, other values as text."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    number = finite(value)
    if number is not None:
        return f"{number:.{digits}f}"
    return missing if value is None or isinstance(value, (float, np.floating)) else str(value)


def task_of_columns(columns: list[str]) -> str:
    """`"image-classification"` when the model inputs are pixels, else `"text-classification"`."""
    return IMAGE_TASK if any(c in columns for c in IMAGE_INPUTS) else TEXT_TASK


@contextlib.contextmanager
def timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    """Record the wall-clock seconds of the `with` block in `seconds[part]` (when the block finishes)."""
    start = time.perf_counter()
    yield
    seconds[part] = time.perf_counter() - start
