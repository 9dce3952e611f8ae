"""What the `evaluate` metrics shipped in ``hf_tlcv/metrics/<name>/<name>.py`` have in common.

Each of those scripts is a small subclass of :class:`SklearnMetric` that names its `sklearn.metrics` function
and its texts; the features, the info, the argument handling and the conversion of the result live here, once.

The scripts import this module as ``import hf_tlcv.metrics._sklearn_metric as _sklearn_metric``:
`evaluate.load` copies a script alone into its modules cache and takes an absolute import for a library
dependency, imported from the installed package, whereas a relative import would have to name a file beside
the script. They import the module rather than its classes because `evaluate.load` instantiates the first
`evaluate.Metric` subclass it finds in the script's namespace, which must be the script's own class.
"""

import datasets
import evaluate
import numpy as np

SKLEARN_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

_AVERAGING_NOTE = """For more than two classes, `average` says how the per-class scores (each class taken in turn as the
positive one) are combined. With `config_name="multilabel"` each row is a vector of 0/1 labels.
"""

_AVERAGED_INPUTS_DESCRIPTION = """
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
    {name} (`float`, or `list` of `float` when `average=None`): Between 0 and 1.

Example:
    >>> metric = evaluate.load("path/to/hf_tlcv/metrics/{name}")
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {example}
"""


def averaged_description(definition: str) -> str:
    """The description of an :class:`AveragedSklearnMetric` whose score is defined by the sentence ``definition``."""
    return f"\n{definition}\n{_AVERAGING_NOTE}"


def averaged_inputs_description(name: str, example_score: float) -> str:
    """The inputs description of an :class:`AveragedSklearnMetric`, whose example scores ``example_score``."""
    return _AVERAGED_INPUTS_DESCRIPTION.format(name=name, example=repr({name: example_score}))


class SklearnMetric(evaluate.Metric):
    """An `evaluate.Metric` computed by one `sklearn.metrics` function on class ids.

    Inputs are ``predictions`` and ``references``, int32 class ids (0/1 label vectors with
    ``config_name="multilabel"``). The result is ``{<module name>: score}`` with plain Python floats (a list of
    floats for per-class scores), so it goes straight into JSON, YAML or Trainer logs.

    Subclasses set `SCORE_FUNCTION`, `DESCRIPTION`, `INPUTS_DESCRIPTION` (and `CITATION` if not sklearn's),
    and define ``_compute(self, predictions, references, <keyword arguments>)`` passing those keyword
    arguments on to :meth:`_score`.
    """

    SCORE_FUNCTION = None
    """`sklearn.metrics` function called as ``SCORE_FUNCTION(references, predictions, **kwargs)``."""
    DESCRIPTION = ""
    INPUTS_DESCRIPTION = ""
    CITATION = SKLEARN_CITATION

    @classmethod
    def _score_function(cls):
        # Read from the class: a plain function read from the instance would be bound to it as a method.
        return cls.SCORE_FUNCTION

    def _info(self):
        if self.config_name == "multilabel":
            column = datasets.List(datasets.Value("int32"))
        else:
            column = datasets.Value("int32")
        function_name = self._score_function().__name__
        url = f"https://scikit-learn.org/stable/modules/generated/sklearn.metrics.{function_name}.html"
        return evaluate.MetricInfo(
            description=self.DESCRIPTION,
            citation=self.CITATION,
            inputs_description=self.INPUTS_DESCRIPTION,
            features=datasets.Features({"predictions": column, "references": column}),
            reference_urls=[url],
        )

    def _score(self, predictions, references, **kwargs):
        score = self._score_function()(references, predictions, **kwargs)
        # Plain Python floats, so the result goes straight into JSON, YAML or Trainer logs.
        score = np.asarray(score, dtype=float)
        return {self.name: float(score) if score.ndim == 0 else score.tolist()}


class AveragedSklearnMetric(SklearnMetric):
    """A :class:`SklearnMetric` over per-class scores (precision, recall, f1), taking sklearn's ``labels``,
    ``pos_label``, ``average``, ``sample_weight`` and ``zero_division`` with sklearn's defaults."""

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
        return self._score(
            predictions,
            references,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
