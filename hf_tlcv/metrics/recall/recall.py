"""Recall, as a local `evaluate` metric so that it loads without the Hugging Face Hub.

Same inputs and output as the Hub's `recall` metric (`zero_division` included). Load it with
`evaluate.load("/absolute/path/to/hf_tlcv/metrics/recall")` or `hf_tlcv.metrics.load_metric("recall")`.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import recall_score

_DESCRIPTION = """
Recall is the fraction of actual positives that were predicted positive: TP / (TP + FN).
For more than two classes, `average` says how the per-class scores (each class taken in turn as the
positive one) are combined. With `config_name="multilabel"` each row is a vector of 0/1 labels.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class ids.
    references (`list` of `int`): True class ids.
    labels (`list` of `int`, *optional*): Classes to include (and their order when `average=None`).
    pos_label (`int` or `str`, defaults to 1): The positive class when `average="binary"`.
    average (`str` or `None`, defaults to `"binary"`): `"binary"` (score of `pos_label` only), `"micro"`
        (pool all decisions), `"macro"` (unweighted mean over classes), `"weighted"` (mean weighted by
        class support), `"samples"` (multilabel only), or `None` (one score per class).
    sample_weight (`list` of `float`, *optional*): One weight per row.
    zero_division (`"warn"`, `0`, `1` or `nan`, defaults to `"warn"`): Value used when the score divides
        by zero (a class never predicted or never present); `"warn"` means 0 plus a warning.

Returns:
    recall (`float`, or `list` of `float` when `average=None`): Between 0 and 1.

Example:
    >>> metric = evaluate.load("path/to/hf_tlcv/metrics/recall")
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'recall': 1.0}
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


class Recall(evaluate.Metric):
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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.recall_score.html"],
        )

    def _compute(
        self,
        predictions,
        references,
        labels=None,
        pos_label=1,
        average="binary",
        sample_weight=None,
        zero_division="warn",
    ):
        score = recall_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        # Plain Python floats, so the result goes straight into JSON, YAML or Trainer logs.
        score = np.asarray(score, dtype=float)
        return {"recall": float(score) if score.ndim == 0 else score.tolist()}
