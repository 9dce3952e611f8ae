"""Accuracy, as a local `evaluate` metric so that it loads without the Hugging Face Hub.

Same inputs and output as the Hub's `accuracy` metric. Load it with
`evaluate.load("/absolute/path/to/hf_tlcv/metrics/accuracy")` or `hf_tlcv.metrics.load_metric("accuracy")`.
"""

import datasets
import evaluate
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

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        if self.config_name == "multilabel":
            column = datasets.List(datasets.Value("int32"))
        else:
            column = datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": column, "references": column}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
