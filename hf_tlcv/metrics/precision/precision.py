"""Precision, as a local `evaluate` metric so that it loads without the Hugging Face Hub.

Same inputs and output as the Hub's `precision` metric (`zero_division` included). Load it with
`evaluate.load("/absolute/path/to/hf_tlcv/metrics/precision")` or `hf_tlcv.metrics.load_metric("precision")`.
"""

import hf_tlcv.metrics._sklearn_metric as _sklearn_metric
from sklearn.metrics import precision_score


class Precision(_sklearn_metric.AveragedSklearnMetric):
    SCORE_FUNCTION = precision_score
    DESCRIPTION = _sklearn_metric.averaged_description(
        "Precision is the fraction of predicted positives that are truly positive: TP / (TP + FP)."
    )
    INPUTS_DESCRIPTION = _sklearn_metric.averaged_inputs_description("precision", example_score=0.5)
