"""Recall, as a local `evaluate` metric so that it loads without the Hugging Face Hub.

Same inputs and output as the Hub's `recall` metric (`zero_division` included). Load it with
`evaluate.load("/absolute/path/to/hf_tlcv/metrics/recall")` or `hf_tlcv.metrics.load_metric("recall")`.
"""

import hf_tlcv.metrics._sklearn_metric as _sklearn_metric
from sklearn.metrics import recall_score


class Recall(_sklearn_metric.AveragedSklearnMetric):
    SCORE_FUNCTION = recall_score
    DESCRIPTION = _sklearn_metric.averaged_description(
        "Recall is the fraction of actual positives that were predicted positive: TP / (TP + FN)."
    )
    INPUTS_DESCRIPTION = _sklearn_metric.averaged_inputs_description("recall", example_score=1.0)
