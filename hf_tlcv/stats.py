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

__all__ = ["adjust_pvalues", "bayesian_correlated_ttest", "corrected_ci", "corrected_paired_ttest", "summarize"]


def _as_scores(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _mean(scores: np.ndarray) -> float:
    # All-equal scores report that exact value (np.mean of [0.1] * 3 is 0.10000000000000002).
    if len(scores) and np.all(scores == scores[0]):
        return float(scores[0])
    return float(np.mean(scores))


def _check_sizes(n_train: float, n_eval: float, confidence: float | None = None) -> None:
    if not (n_train > 0 and n_eval > 0):
        raise ValueError(
            f"n_train and n_eval must be positive row counts, got n_train={n_train!r}, n_eval={n_eval!r}; "
            f"pass the (average) number of training and evaluation rows per fold."
        )
    if confidence is not None and not 0 < confidence < 1:
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


# --- Comparing two variants evaluated on the same folds -------------------------------------------------


def _paired_differences(scores_a: Sequence[float], scores_b: Sequence[float]) -> np.ndarray:
    """``scores_a - scores_b`` as float64, after checking the two are paired and can carry a variance."""
    a, b = _as_scores(scores_a), _as_scores(scores_b)
    if len(a) != len(b):
        raise ValueError(
            f"scores_a and scores_b must be paired (one score per fold for each, on the same folds), "
            f"got {len(a)} and {len(b)} scores."
        )
    if len(a) < 2:
        raise ValueError(
            f"a paired comparison needs at least 2 pairs of fold scores to estimate a variance, got {len(a)}."
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores_a and scores_b must be finite numbers (no nan or inf).")
    return a - b


def _corrected_difference(
    scores_a: Sequence[float], scores_b: Sequence[float], n_train: float, n_eval: float
) -> tuple[np.ndarray, float, float, float]:
    """Paired differences, their mean, sample sd (ddof=1) and Nadeau–Bengio corrected standard error."""
    _check_sizes(n_train, n_eval)
    diffs = _paired_differences(scores_a, scores_b)
    if np.all(diffs == diffs[0]):
        return diffs, float(diffs[0]), 0.0, 0.0
    std = float(np.std(diffs, ddof=1))
    scale = std * math.sqrt(1.0 / len(diffs) + float(n_eval) / float(n_train))
    return diffs, _mean(diffs), std, scale


def corrected_paired_ttest(
    scores_a: Sequence[float], scores_b: Sequence[float], n_train: float, n_eval: float
) -> dict:
    """Nadeau–Bengio corrected resampled paired t-test of two variants scored on the same folds.

    With the J = k × r paired fold scores (k folds × r repeats), differences ``d_j = a_j - b_j``, their
    mean ``m`` and sample variance ``s_d²`` (ddof=1):

        var_corr = s_d² * (1 / J + n_eval / n_train)
        t        = m / sqrt(var_corr),   df = J - 1
        p        = 2 * (1 - F_t(|t|; J - 1))
        ci95     = m ± t_{0.975, J - 1} * sqrt(var_corr)

    The naive paired t-test (``scipy.stats.ttest_rel``) uses ``s_d² / J`` and, because overlapping
    training sets correlate the fold scores, rejects far too often (Nadeau & Bengio 2003); its type I error
    also grows with the number of repeats, the corrected one does not (Bouckaert & Frank 2004).

    References:
        - C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine Learning 52(3), 2003.
        - R. R. Bouckaert and E. Frank, "Evaluating the Replicability of Significance Tests for Comparing
          Learning Algorithms", PAKDD 2004.

    Args:
        scores_a (`Sequence[float]`): Variant A's score on each fold (all repeats together).
        scores_b (`Sequence[float]`): Variant B's score on the same folds, in the same order.
        n_train (`float`): Training rows per fold; an average over folds when they differ.
        n_eval (`float`): Evaluation rows per fold; an average over folds when they differ.

    Returns:
        `dict`: ``{"mean_diff", "std_diff", "t", "df", "p_value", "ci95"}`` of plain Python floats
        (``df`` an int, ``ci95`` a ``[low, high]`` list for the mean of ``a - b``). When all differences
        are equal (zero variance) the test is degenerate: a nonzero mean gives ``t = ±inf`` and
        ``p_value = 0.0``, a zero mean gives ``t = 0.0`` and ``p_value = 1.0``; ``ci95`` is then
        ``[mean_diff, mean_diff]``.

    Raises:
        `ValueError`: If the score lists differ in length, hold fewer than 2 pairs or non-finite values,
        or if ``n_train`` / ``n_eval`` are not positive.

    Example:

    ```python
    >>> result = corrected_paired_ttest(
    ...     [0.80, 0.82, 0.85, 0.79, 0.84], [0.78, 0.80, 0.80, 0.78, 0.81], n_train=80, n_eval=20
    ... )
    >>> round(result["mean_diff"], 4), round(result["t"], 4), result["df"], round(result["p_value"], 4)
    (0.026, 2.5557, 4, 0.0629)

    ```
    """
    diffs, mean, std, scale = _corrected_difference(scores_a, scores_b, n_train, n_eval)
    df = len(diffs) - 1
    if scale == 0.0:
        t_stat = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p_value = 1.0 if mean == 0.0 else 0.0
    else:
        from scipy.stats import t

        t_stat = mean / scale
        p_value = float(2.0 * t.sf(abs(t_stat), df))
    low, high = corrected_ci(diffs, n_train, n_eval, 0.95)
    return {
        "mean_diff": mean,
        "std_diff": std,
        "t": float(t_stat),
        "df": df,
        "p_value": min(1.0, p_value),
        "ci95": [float(low), float(high)],
    }


def bayesian_correlated_ttest(
    scores_a: Sequence[float], scores_b: Sequence[float], n_train: float, n_eval: float, rope: float = 0.01
) -> dict:
    """Bayesian correlated t-test (Corani & Benavoli 2015) of two variants scored on the same folds.

    The posterior of the mean difference ``a - b`` (under the Jeffreys-type prior of the paper) is a Student
    t distribution with

        df       = J - 1
        location = m                                   (mean of the J paired differences)
        scale    = sqrt((1 / J + rho / (1 - rho)) * s_d²),   rho = n_eval / (n_train + n_eval)

    where ``rho`` is the Nadeau–Bengio correlation heuristic, so ``rho / (1 - rho) = n_eval / n_train`` and
    the scale equals the frequentist corrected standard error of :func:`corrected_paired_ttest`. With a
    region of practical equivalence (ROPE) ``[-rope, rope]``:

        p_a_better   = P(diff > rope)
        p_b_better   = P(diff < -rope)
        p_equivalent = 1 - p_a_better - p_b_better

    When all differences are equal (zero variance) the posterior is a point mass at ``m``: the probability
    1 goes to whichever of the three regions holds ``m`` (``|m| <= rope`` counts as equivalent).

    References:
        - G. Corani and A. Benavoli, "A Bayesian approach for comparing cross-validated algorithms on multiple
          data sets", Machine Learning 100(2-3):285-304, 2015.
        - A. Benavoli, G. Corani, J. Demšar and M. Zaffalon, "Time for a Change: a Tutorial for Comparing
          Multiple Classifiers Through Bayesian Analysis", JMLR 18(77), 2017.

    Args:
        scores_a (`Sequence[float]`): Variant A's score on each fold (all repeats together).
        scores_b (`Sequence[float]`): Variant B's score on the same folds, in the same order.
        n_train (`float`): Training rows per fold; an average over folds when they differ.
        n_eval (`float`): Evaluation rows per fold; an average over folds when they differ.
        rope (`float`, defaults to 0.01): Half-width of the region of practical equivalence, in score units.

    Returns:
        `dict`: ``{"p_a_better", "p_equivalent", "p_b_better"}`` of plain Python floats summing to 1.

    Raises:
        `ValueError`: As :func:`corrected_paired_ttest`, and if ``rope`` is negative or not finite.

    Example:

    ```python
    >>> probs = bayesian_correlated_ttest(
    ...     [0.80, 0.82, 0.85, 0.79, 0.84], [0.78, 0.80, 0.80, 0.78, 0.81], n_train=80, n_eval=20
    ... )
    >>> {key: round(value, 3) for key, value in probs.items()}
    {'p_a_better': 0.905, 'p_equivalent': 0.083, 'p_b_better': 0.012}

    ```
    """
    if not (math.isfinite(rope) and rope >= 0):
        raise ValueError(f"rope must be a finite non-negative score difference, got {rope!r}; use e.g. 0.01.")
    diffs, mean, _, scale = _corrected_difference(scores_a, scores_b, n_train, n_eval)
    if scale == 0.0:
        p_a, p_b = float(mean > rope), float(mean < -rope)
    else:
        from scipy.stats import t

        df = len(diffs) - 1
        p_a = float(t.sf(rope, df, loc=mean, scale=scale))
        p_b = float(t.cdf(-rope, df, loc=mean, scale=scale))
    return {"p_a_better": p_a, "p_equivalent": max(0.0, 1.0 - p_a - p_b), "p_b_better": p_b}


_PVALUE_METHODS = ("holm", "bonferroni")


def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjust p-values of m tests for multiple comparisons (family-wise error rate control).

    With ``p_(1) <= ... <= p_(m)`` the sorted p-values:

        bonferroni: p_adj_i   = min(1, m * p_i)
        holm:       p_adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))

    Holm's step-down procedure (Holm 1979) controls the family-wise error rate as Bonferroni does, is never
    less powerful, and its running maximum keeps the adjusted values monotone in the raw ones. Ties keep
    their input order; the result is in the input's order.

    References:
        - S. Holm, "A Simple Sequentially Rejective Multiple Test Procedure", Scandinavian Journal of
          Statistics 6(2):65-70, 1979.

    Args:
        p_values (`Sequence[float]`): Raw p-values in ``[0, 1]``, one per comparison.
        method (`str`, defaults to `"holm"`): ``"holm"`` or ``"bonferroni"``.

    Returns:
        `list[float]`: Adjusted p-values (plain Python floats, capped at 1), in the order given.

    Raises:
        `ValueError`: If ``method`` is unknown or a p-value lies outside ``[0, 1]``.

    Example:

    ```python
    >>> [round(p, 4) for p in adjust_pvalues([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]

    ```
    """
    if method not in _PVALUE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(map(repr, _PVALUE_METHODS))}.")
    p = _as_scores(p_values)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must lie in [0, 1] (and not be nan), got {p.tolist()!r}.")
    m = len(p)
    if method == "bonferroni":
        return [float(x) for x in np.minimum(1.0, m * p)]
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return [float(x) for x in adjusted]
