"""Metrics: `evaluate` modules shipped with hf_tlcv, and the `compute_metrics` factory for the Trainer.

`evaluate.load("accuracy")` fetches its script from the Hugging Face Hub, which fails offline and on
locked-down clusters. hf_tlcv therefore ships `accuracy`, `precision`, `recall` and `f1` as ordinary
local `evaluate.Metric` modules (one folder each, beside this file) with the Hub's input and output names.
[`load_metric`] serves those four from disk and hands every other name or path to `evaluate.load`
unchanged, so Hub metrics and your own scripts keep working as usual.

Example:

```python
>>> import numpy as np
>>> from transformers import EvalPrediction
>>> compute_metrics = build_compute_metrics()  # accuracy, precision, recall, f1 (macro)
>>> logits = np.array([[2.0, 0.1], [0.3, 1.5], [1.2, 0.4], [0.2, 0.9]])
>>> compute_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 1, 1])))["accuracy"]
0.75

```
"""

from __future__ import annotations

import numbers
import os
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np

from ..utils import to_plain

if TYPE_CHECKING:
    import evaluate
    from transformers import EvalPrediction

__all__ = ["BUILTIN_METRICS", "build_compute_metrics", "builtin_metric_path", "load_metric",
           "metrics_from_probabilities"]

BUILTIN_METRICS = ("accuracy", "precision", "recall", "f1")
"""Metrics shipped with hf_tlcv; they load without network access."""

# The metrics that take `average`/`zero_division`; only the shipped versions are known to accept both.
_AVERAGED_METRICS = ("precision", "recall", "f1")
_AVERAGES = ("macro", "micro", "weighted", "binary")

_METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


def builtin_metric_path(name: str) -> str:
    """Absolute path of the folder holding the shipped metric `name` (one of `BUILTIN_METRICS`)."""
    if name not in BUILTIN_METRICS:
        raise ValueError(f"{name!r} is not a builtin metric; use one of {', '.join(BUILTIN_METRICS)}.")
    return os.path.join(_METRICS_DIR, name)


def load_metric(name: str, **kwargs) -> "evaluate.EvaluationModule":
    """Load an `evaluate` module, from hf_tlcv's own files for the builtin names.

    Args:
        name (`str`): One of `BUILTIN_METRICS` (loaded from the absolute path of the shipped module, never
            from the Hub), or anything `evaluate.load` accepts: a Hub name such as `"matthews_correlation"`
            or a path to a local metric folder or script.
        **kwargs: Passed to `evaluate.load` (`config_name`, `keep_in_memory`, `experiment_id`...).

    Returns:
        `evaluate.EvaluationModule`: The loaded metric.

    Example:

    ```python
    >>> load_metric("f1").compute(predictions=[0, 1, 1], references=[0, 1, 0], average="macro")
    {'f1': 0.6666666666666666}

    ```
    """
    import evaluate

    path = builtin_metric_path(name) if name in BUILTIN_METRICS else name
    return evaluate.load(path, **kwargs)


def _class_ids(predictions: Any) -> np.ndarray:
    if isinstance(predictions, (tuple, list)) and predictions and not np.isscalar(predictions[0]):
        # Models that also return hidden states or attentions: the logits come first.
        predictions = predictions[0]
    predictions = np.asarray(predictions)
    if predictions.ndim == 1:
        if predictions.dtype.kind == "f":
            if not np.all(predictions == np.round(predictions)):
                raise ValueError(
                    "1-D predictions hold non-integer values (regression outputs or single-logit scores?); "
                    "pass logits of shape (n_samples, num_labels) or class ids."
                )
        return predictions.astype(np.int64)
    if predictions.shape[-1] == 1:
        raise ValueError(
            f"Predictions of shape {predictions.shape} have a single column, so argmax is always 0; "
            f"give the classifier num_labels >= 2 outputs (one logit per class)."
        )
    return np.argmax(predictions, axis=-1).reshape(-1)


def _plain(value: Any) -> Any:
    """Metric values as JSON-ready Python values: real numbers as floats, arrays as lists."""
    if isinstance(value, (numbers.Real, np.number)) and not isinstance(value, bool):
        return float(value)
    return to_plain(value)


def metrics_from_probabilities(probs: np.ndarray, labels: np.ndarray,
                               compute_metrics: Callable[["EvalPrediction"], dict]) -> dict[str, float]:
    """`compute_metrics` on class probabilities (given as log-probabilities, which it reads as logits), e.g. the
    pooled out-of-fold predictions or the mean of a fold ensemble's probabilities."""
    from transformers import EvalPrediction

    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=np.asarray(labels)))
    return {k: _plain(v) for k, v in metrics.items()}


def build_compute_metrics(
    metric_names: Union[str, Sequence[str]] = BUILTIN_METRICS, average: str = "macro"
) -> Callable[["EvalPrediction"], dict[str, float]]:
    """Build a `compute_metrics` function for `transformers.Trainer` from `evaluate` modules.

    The modules are loaded once, here (so a missing metric fails before training, not after the first
    epoch). The returned function takes an `EvalPrediction`, turns logits into class ids with an argmax over
    the last axis (1-D predictions are taken as class ids already), computes every metric and merges their
    results into one dict of plain floats.

    Args:
        metric_names (`str` or `Sequence[str]`, defaults to `BUILTIN_METRICS`): Metrics to compute; builtin
            names load offline, other names and paths go through `evaluate.load` (see [`load_metric`]).
        average (`str`, defaults to `"macro"`): How precision, recall and f1 combine classes: `"macro"`,
            `"micro"`, `"weighted"` or `"binary"`. Binary problems also use it, so the default scores
            both classes equally rather than class 1 only. Those three metrics also get `zero_division=0`;
            other metrics get no extra arguments.

    Returns:
        `Callable[[EvalPrediction], dict[str, float]]`: e.g. ``{"accuracy": 0.9, "precision": 0.88,
        "recall": 0.87, "f1": 0.87}``.
    """
    names = (metric_names,) if isinstance(metric_names, str) else tuple(metric_names)
    if not names:
        raise ValueError("metric_names is empty; pass at least one metric, e.g. metric_names=('accuracy',).")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"metric_names lists {repeated} more than once; list each metric once.")
    if average not in _AVERAGES:
        raise ValueError(
            f"average={average!r} is not supported here; use one of {', '.join(map(repr, _AVERAGES))} "
            f"(average=None gives one score per class, which Trainer cannot log)."
        )
    # keep_in_memory: no Arrow cache files or file locks, which several ranks on one machine would share.
    modules = [(name, load_metric(name, keep_in_memory=True)) for name in names]

    def compute_metrics(eval_pred: "EvalPrediction") -> dict[str, float]:
        if hasattr(eval_pred, "predictions"):
            predictions, label_ids = eval_pred.predictions, eval_pred.label_ids
        else:
            predictions, label_ids = eval_pred[0], eval_pred[1]
        if isinstance(label_ids, (tuple, list)) and label_ids and not np.isscalar(label_ids[0]):
            label_ids = label_ids[0]
        references = np.asarray(label_ids).astype(np.int64).reshape(-1)
        class_ids = _class_ids(predictions)
        if len(class_ids) != len(references):
            raise ValueError(
                f"Got {len(class_ids)} predictions for {len(references)} labels; compute_metrics expects one "
                f"single-label prediction per example (multi-label outputs need a custom compute_metrics)."
            )

        results: dict[str, Any] = {}
        source: dict[str, str] = {}
        for name, module in modules:
            kwargs = {"average": average, "zero_division": 0} if name in _AVERAGED_METRICS else {}
            output = module.compute(predictions=class_ids, references=references, **kwargs) or {}
            for key, value in output.items():
                if key in results:
                    raise ValueError(
                        f"Metrics {source[key]!r} and {name!r} both return {key!r}; drop one of them from metric_names."
                    )
                results[key] = _plain(value)
                source[key] = name
        return results

    return compute_metrics
