"""F1, as a local `evaluate` metric so that it loads without the Hugging Face Hub.

Same inputs and output as the Hub's `f1` metric (`zero_division` included). Load it with
`evaluate.load("/absolute/path/to/hf_tlcv/metrics/f1")` or `hf_tlcv.metrics.load_metric("f1")`.
"""

import hf_tlcv.metrics._sklearn_metric as _sklearn_metric
from sklearn.metrics import f1_score


class F1(_sklearn_metric.AveragedSklearnMetric):
    SCORE_FUNCTION = f1_score
    DESCRIPTION = _sklearn_metric.averaged_description(
        "F1 is the harmonic mean of precision and recall: 2 * precision * recall / (precision + recall)."
    )
    INPUTS_DESCRIPTION = _sklearn_metric.averaged_inputs_description("f1", example_score=0.6666666666666666)
