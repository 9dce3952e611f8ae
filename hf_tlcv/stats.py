"""Statistics of cross-validated scores (pure functions, plain Python floats out).

Why not the textbook interval? The usual t-interval ``mean ± t * s / sqrt(J)`` treats the J fold scores
as independent. They are not: in k-fold cross-validation any two training sets share a fraction
``(k - 2) / (k - 1)`` of their rows, so the fold scores are positively correlated and ``s² / J``
underestimates the variance of their mean. The naive interval is therefore too narrow, and the more
folds or repeats are run, the more confidently it is wrong.

Nadeau & Bengio (2003) model that correlation as ``rho = n_eval / (n_train + n_eval)``, which leads to the
corrected resampled variance

    var_corr = s² * (1 / J + n_eval / n_train)

with ``s²`` the sample variance of the J scores. Bouckaert & Frank (2004) applied it to ``r`` repeats of
k-fold cross-validation (J = k * r), which is what this module does. The ``n_eval / n_train`` term does not
shrink as J grows: more repeats cannot buy certainty that the data themselves do not hold.

References:
    - C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine Learning 52(3):239-281, 2003.
    - R. R. Bouckaert and E. Frank, "Evaluating the Replicability of Significance Tests for Comparing
      Learning Algorithms", PAKDD 2004.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["corrected_ci", "summarize"]


def _as_scores(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _mean(scores: np.ndarray) -> float:
    # All-equal scores report that exact value (np.mean of [0.1] * 3 is 0.10000000000000002).
    if len(scores) and np.all(scores == scores[0]):
        return float(scores[0])
    return float(np.mean(scores))


def _check_sizes(n_train: float, n_eval: float, confidence: float) -> None:
    if not (n_train > 0 and n_eval > 0):
        raise ValueError(
            f"n_train and n_eval must be positive row counts, got n_train={n_train!r}, n_eval={n_eval!r}; "
            f"pass the (average) number of training and evaluation rows per fold."
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}; use e.g. 0.95.")


def corrected_ci(
    values: Sequence[float], n_train: float, n_eval: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Nadeau–Bengio corrected resampled t-interval for the mean of J cross-validation scores.

    With ``J = len(values)`` scores (k folds × r repeats), mean ``m`` and sample variance ``s²`` (ddof=1):

        var_corr = s² * (1 / J + n_eval / n_train)
        interval = m ± t_{(1 + confidence) / 2, J - 1} * sqrt(var_corr)

    The naive interval uses ``s² / J`` alone and is too narrow because the training sets of different
    folds overlap, which correlates the scores (Nadeau & Bengio 2003, "Inference for the Generalization
    Error", Machine Learning 52; see the module docstring).

    Args:
        values (`Sequence[float]`): One score per fold (all repeats together).
        n_train (`float`): Training rows per fold; an average over folds when they differ.
        n_eval (`float`): Evaluation rows per fold; an average over folds when they differ.
        confidence (`float`, defaults to 0.95): Coverage of the interval.

    Returns:
        `tuple[float, float]`: ``(low, high)``; ``(nan, nan)`` with fewer than two scores (no variance to
        estimate) and ``(mean, mean)`` when all scores are equal.

    Example:

    ```python
    >>> low, high = corrected_ci([0.8, 0.9, 0.85, 0.75, 0.95], n_train=80, n_eval=20)
    >>> round(low, 4), round(high, 4)
    (0.7028, 0.9972)

    ```
    """
    _check_sizes(n_train, n_eval, confidence)
    scores = _as_scores(values)
    n_scores = len(scores)
    if n_scores < 2:
        return (math.nan, math.nan)
    mean = _mean(scores)
    if np.all(scores == scores[0]):
        return (mean, mean)
    from scipy.stats import t

    variance = float(np.var(scores, ddof=1)) * (1.0 / n_scores + float(n_eval) / float(n_train))
    half_width = float(t.ppf((1.0 + confidence) / 2.0, n_scores - 1)) * math.sqrt(variance)
    return (mean - half_width, mean + half_width)


def summarize(
    values: Sequence[float], n_train: float, n_eval: float, confidence: float = 0.95
) -> dict:
    """Mean, sample standard deviation and corrected interval of cross-validation scores.

    Args:
        values (`Sequence[float]`): One score per fold (all repeats together); at least one.
        n_train (`float`): Training rows per fold (average over folds when they differ).
        n_eval (`float`): Evaluation rows per fold (average over folds when they differ).
        confidence (`float`, defaults to 0.95): Coverage of the interval.

    Returns:
        `dict`: ``{"mean": float, "std": float, "ci95": [low, high]}`` of plain Python floats, ready for
        JSON or YAML. ``std`` uses ddof=1 and is nan for a single score; the interval is
        :func:`corrected_ci`. The interval key follows ``confidence``: ``"ci95"`` by default, ``"ci90"``
        for 0.9, ``"ci99.5"`` for 0.995.

    Example:

    ```python
    >>> summary = summarize([0.8, 0.9, 0.85, 0.75, 0.95], n_train=80, n_eval=20)
    >>> sorted(summary), round(summary["mean"], 4), [round(x, 4) for x in summary["ci95"]]
    (['ci95', 'mean', 'std'], 0.85, [0.7028, 0.9972])

    ```
    """
    _check_sizes(n_train, n_eval, confidence)
    scores = _as_scores(values)
    if len(scores) == 0:
        raise ValueError("summarize needs at least one score; pass one value per evaluated fold.")
    if len(scores) == 1:
        std = math.nan
    elif np.all(scores == scores[0]):
        std = 0.0
    else:
        std = float(np.std(scores, ddof=1))
    low, high = corrected_ci(scores, n_train, n_eval, confidence)
    return {"mean": _mean(scores), "std": std, f"ci{confidence * 100:g}": [float(low), float(high)]}
