"""Accuracy, as a local `evaluate` metric so that it loads without the Hugging Face Hub.

Same inputs and output as the Hub's `accuracy` metric. Load it with
`evaluate.load("/absolute/path/to/hf_tlcv/metrics/accuracy")` or `hf_tlcv.metrics.load_metric("accuracy")`.
"""

import hf_tlcv.metrics._sklearn_metric as _sklearn_metric
from sklearn.metrics import accuracy_score

_DESCRIPTION = """
Accuracy is the fraction of predictions that equal their reference:
(number of correct predictions) / (number of predictions).
With `config_name="multilabel"` a row counts as correct only when its whole label vector matches.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class ids.
    references (`list` of `int`): True class ids.
    normalize (`bool`, defaults to `True`): Return the fraction of correct rows; `False` returns their count.
    sample_weight (`list` of `float`, *optional*): One weight per row.

Returns:
    accuracy (`float`): Between 0 and 1 (or a count when `normalize=False`).

Example:
    >>> metric = evaluate.load("path/to/hf_tlcv/metrics/accuracy")
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
"""


class Accuracy(_sklearn_metric.SklearnMetric):
    SCORE_FUNCTION = accuracy_score
    DESCRIPTION = _DESCRIPTION
    INPUTS_DESCRIPTION = _KWARGS_DESCRIPTION

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return self._score(predictions, references, normalize=normalize, sample_weight=sample_weight)
