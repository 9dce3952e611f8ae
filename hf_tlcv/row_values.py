"""Per-row values of out-of-fold predictions: what the per-row and nested intervals are computed from.

Accuracy and the loss are means of per-row values: 1 for a right prediction and 0 for a wrong one, and the
cross-entropy of the predicted probabilities. A fold's reported score is the mean of its rows' values only when the
metric is that plain mean (the loss of a model with label smoothing or class weights is not), so each use first
checks that the rows reproduce the fold's own score ([`reproduces`]).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ROW_METRICS", "per_row_values", "reproduces"]

# The metrics that are means of per-row values of a predictions frame.
ROW_METRICS = ("accuracy", "loss")
# A fold's score is reproduced by its rows when their mean is this close to it (relative, above 1).
_MATCH = 1e-6


def per_row_values(frame: pd.DataFrame, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-row `accuracy` (1.0 right, 0.0 wrong) and `loss` (cross-entropy of the predicted probabilities) of a
    predictions frame (`hf_tlcv.results.predictions_frame`), in the order of `rows` (default: the frame's order)."""
    if rows is not None:
        frame = frame.set_index("row").loc[rows]
    labels = frame["label"].to_numpy(dtype=np.int64)
    picked = frame.filter(like="prob_").to_numpy(dtype=np.float64)[np.arange(len(labels)), labels]
    return {"accuracy": (frame["prediction"].to_numpy() == labels).astype(np.float64),
            "loss": -np.log(np.maximum(picked, np.finfo(np.float64).tiny))}


def reproduces(values: np.ndarray, score: float | None) -> bool:
    """Whether the mean of the per-row `values` is the fold's reported `score` (the metric is their plain mean)."""
    return score is not None and len(values) > 0 and abs(float(np.mean(values)) - score) <= _MATCH * max(1.0,
                                                                                                        abs(score))
