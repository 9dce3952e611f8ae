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

Three more rules make the answers honest where a good pretrained model meets an easy task (measured by
simulation with known truth in ``benchmarks/sim_intervals.py``; see ``docs/statistics.md``):

- **A floor from the evaluation sample itself.** When every fold scores the same (all folds at accuracy 1.0,
  say), ``s² = 0`` and the corrected interval collapses to a point. But n evaluated rows cannot show an accuracy
  more precisely than a binomial sample of n rows can. Intervals of metrics bounded in [0, 1] therefore never
  get narrower than the Wilson score interval of the n evaluated rows, and paired tests never get more certain
  than McNemar's test on the rows where the two variants disagree.
- **Bounded metrics stay in [0, 1].** Accuracy, precision, recall and F1 get Wilson-type score intervals whose
  variance ``mu (1 - mu) / n_eff`` follows the unknown mean, so the interval bends at 0 and 1 instead of
  leaving the range (the corrected variance sets the effective sample size ``n_eff``); no clipping is involved.
- **What cannot be answered is refused.** A paired test on 2 fold scores (2-fold cross-validation run once) has
  one degree of freedom and is refused with the fix (more folds or repeats).

Accuracy and the loss are also means of per-row values, which gives a sharper interval with no extra fit:
:func:`row_interval` (Bayle, Bayle, Janson & Mackey 2020), the default of ``CVResults.summary`` since issue 26, uses
the variance of the out-of-fold per-row values, widened by the fold spread that the rows do not explain, and reports
signs of an unstable learner, for which the callers keep :func:`corrected_ci`; :func:`row_paired_test` is its paired
form. It covered the expected accuracy at the fold training size in 94.0–98.4% of simulated data sets in every cell
at about the oracle width (``docs/statistics.md``).

For a sharper interval, :func:`nested_cv_interval` implements the nested cross-validation of Bates, Hastie &
Tibshirani (2023), which estimates the variance of the cross-validation estimate from extra fits instead of a
correlation heuristic; :func:`nested_cv_fits` lists those fits.

References:
    - C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine Learning 52(3):239-281, 2003.
    - R. R. Bouckaert and E. Frank, "Evaluating the Replicability of Significance Tests for Comparing
      Learning Algorithms", PAKDD 2004.
    - E. B. Wilson, "Probable Inference, the Law of Succession, and Statistical Inference", JASA 22, 1927.
    - Q. McNemar, "Note on the sampling error of the difference between correlated proportions or percentages",
      Psychometrika 12(2):153-157, 1947.
    - S. Bates, T. Hastie and R. Tibshirani, "Cross-validation: what does it estimate and how well does it do
      it?", Journal of the American Statistical Association 119(546):1434-1445, 2024 (arXiv:2104.00673).
    - P. Bayle, A. Bayle, L. Janson and L. Mackey, "Cross-validation Confidence Intervals for Test Error", NeurIPS
      2020 (arXiv:2007.12671).
    - B. Efron, "The Estimation of Prediction Error: Covariance Penalties and Cross-Validation", JASA 99(467), 2004
      (optimism).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "adjust_pvalues",
    "bayesian_correlated_ttest",
    "corrected_ci",
    "corrected_paired_ttest",
    "is_bounded_metric",
    "nested_cv_errors",
    "nested_cv_fits",
    "nested_cv_interval",
    "OPTIMISM_SE",
    "row_interval",
    "row_paired_test",
    "summarize",
]

# Metrics whose values lie in [0, 1], recognised by name (also with a prefix or suffix: "f1_macro", "top5_accuracy").
BOUNDED_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "auc", "jaccard",
                   "exact_match", "specificity", "sensitivity")
_SPLIT_PREFIXES = ("eval_", "test_", "train_")
# p-values below this are floating-point underflow, not evidence: a finite sample never proves p = 0.
_TINY_P = float(np.finfo(np.float64).tiny)


def _as_scores(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _mean(scores: np.ndarray) -> float:
    # All-equal scores report that exact value (np.mean of [0.1] * 3 is 0.10000000000000002).
    if len(scores) and np.all(scores == scores[0]):
        return float(scores[0])
    return float(np.mean(scores))


def _ci_key(confidence: float) -> str:
    return f"ci{confidence * 100:g}"


def _two_sided(confidence: float) -> float:
    return (1.0 + confidence) / 2.0


def _check_sizes(n_train: float, n_eval: float, confidence: float | None = None) -> None:
    if not (n_train > 0 and n_eval > 0):
        raise ValueError(
            f"n_train and n_eval must be positive row counts, got n_train={n_train!r}, n_eval={n_eval!r}; "
            f"pass the (average) number of training and evaluation rows per fold."
        )
    _check_confidence(confidence)


def _check_confidence(confidence: float | None) -> None:
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}; use e.g. 0.95.")


def _rows(n_rows: float | None, n_train: float, n_eval: float) -> float:
    """Distinct rows evaluated per repeat; k-fold evaluates each of its n_train + n_eval rows once."""
    if n_rows is None:
        return float(n_train) + float(n_eval)
    if not n_rows > 0:
        raise ValueError(f"n_rows must be a positive row count, got {n_rows!r}; pass the number of distinct rows "
                         "evaluated in one repeat (all rows for k-fold), or leave it None.")
    return float(n_rows)


def _check_unit_interval(values: np.ndarray, what: str) -> None:
    if not np.all((values >= 0.0) & (values <= 1.0)):
        raise ValueError(f"bounded=True needs {what} in [0, 1], got values from {np.nanmin(values)!r} to "
                         f"{np.nanmax(values)!r}; pass bounded=False for metrics without that range (the loss).")


def is_bounded_metric(name: str, values: Sequence[float] | None = None) -> bool:
    """Whether the metric called ``name`` takes values in [0, 1] (accuracy, precision, recall, F1, AUC, ...).

    Args:
        name (`str`): A metric name as the Trainer reports it, with or without its ``eval_`` / ``test_`` /
            ``train_`` prefix; variants such as ``"f1_macro"`` or ``"top5_accuracy"`` count as their base metric.
        values (`Sequence[float]`, *optional*): Scores of that metric; when given, they must also all lie in [0, 1]
            (an accuracy reported in percent is then treated as unbounded instead of failing).

    Returns:
        `bool`: ``True`` for the names in ``BOUNDED_METRICS`` (and their variants), ``False`` otherwise (the loss,
        runtimes, correlations in [-1, 1]).

    Example:

    ```python
    >>> [is_bounded_metric(m) for m in ("accuracy", "eval_f1_macro", "loss", "matthews_correlation")]
    [True, True, False, False]

    ```
    """
    key = name.lower()
    for prefix in _SPLIT_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    named = any(key == base or key.startswith(base + "_") or key.endswith("_" + base) for base in BOUNDED_METRICS)
    return named and (values is None or bool(np.all((_as_scores(values) >= 0.0) & (_as_scores(values) <= 1.0))))


def _wilson(p: float, n_eff: float, quantile: float) -> tuple[float, float]:
    """Wilson score interval: the ``mu`` in [0, 1] with ``(p - mu)² <= q² mu (1 - mu) / n_eff``."""
    a = quantile * quantile / n_eff
    center = (p + a / 2.0) / (1.0 + a)
    half = quantile / (1.0 + a) * math.sqrt(p * (1.0 - p) / n_eff + a / (4.0 * n_eff))
    # The roots lie in [0, 1], and p = 0 / p = 1 are exact roots; this only removes rounding (1 + 1e-16, 3e-18).
    low = 0.0 if p == 0.0 else max(0.0, center - half)
    high = 1.0 if p == 1.0 else min(1.0, center + half)
    return (low, high)


def _corrected_variance(scores: np.ndarray, n_train: float, n_eval: float) -> float:
    """Nadeau–Bengio variance of the mean of the scores; 0.0 for all-equal scores."""
    if np.all(scores == scores[0]):
        return 0.0
    return float(np.var(scores, ddof=1)) * (1.0 / len(scores) + float(n_eval) / float(n_train))


def corrected_ci(
    values: Sequence[float], n_train: float, n_eval: float, confidence: float = 0.95, *, bounded: bool = False,
    n_rows: float | None = None, positive: bool = False,
) -> tuple[float, float]:
    """Nadeau–Bengio corrected resampled interval for the mean of J cross-validation scores.

    With ``J = len(values)`` scores (k folds × r repeats), mean ``m``, sample variance ``s²`` (ddof=1) and
    ``q_t = t_{(1 + confidence) / 2, J - 1}``:

        var_corr = s² * (1 / J + n_eval / n_train)

    - ``bounded=False`` (any unbounded metric): ``m ± q_t * sqrt(var_corr)``; with ``positive=True`` (the loss)
      ``m * exp(±q_t * sqrt(var_corr) / m)``, the interval of ``log m`` (delta method), which stays above 0.
    - ``bounded=True`` (accuracy, precision, recall, F1): the envelope of two Wilson score intervals, each the set of
      ``mu`` in [0, 1] with ``(m - mu)² <= q² mu (1 - mu) / n``:

          corrected:  q = q_t, n = n_eff = m (1 - m) / var_corr    (the corrected variance as an effective size)
          floor:      q = z_{(1 + confidence) / 2}, n = n_rows      (the binomial sample of the evaluated rows)

      The interval lies in [0, 1] by construction (the variance shrinks with ``mu (1 - mu)`` towards the bounds),
      is never narrower than the Wilson interval of ``n_rows`` binomial rows, and so keeps a positive width when
      every fold scores the same: all folds at 1.0 on 100 rows give ``[100 / (100 + z²), 1] = [0.963, 1]``.

    The naive interval uses ``s² / J`` alone and is too narrow because the training sets of different folds
    overlap, which correlates the scores (Nadeau & Bengio 2003, see the module docstring); Wilson (1927) for the
    score interval.

    Args:
        values (`Sequence[float]`): One score per fold (all repeats together).
        n_train (`float`): Training rows per fold; an average over folds when they differ.
        n_eval (`float`): Evaluation rows per fold; an average over folds when they differ.
        confidence (`float`, defaults to 0.95): Coverage of the interval.
        bounded (`bool`, defaults to `False`): The metric lies in [0, 1] (see [`is_bounded_metric`]).
        n_rows (`float`, *optional*): Distinct rows evaluated in one repeat, for the floor; defaults to
            ``n_train + n_eval`` (k-fold evaluates every row once per repeat).
        positive (`bool`, defaults to `False`): The metric is positive (the loss): the log form, above 0.

    Returns:
        `tuple[float, float]`: ``(low, high)``; ``(nan, nan)`` with fewer than two scores (no variance to
        estimate), and with ``bounded=False`` when all scores are equal (an unbounded metric has no floor: the
        fold scores alone cannot say how uncertain their mean is).

    Raises:
        `ValueError`: If sizes or confidence are out of range, or ``bounded=True`` with scores outside [0, 1].

    Example:

    ```python
    >>> low, high = corrected_ci([0.8, 0.9, 0.85, 0.75, 0.95], n_train=80, n_eval=20)
    >>> round(low, 4), round(high, 4)
    (0.7028, 0.9972)
    >>> [round(x, 4) for x in corrected_ci([1.0] * 5, n_train=80, n_eval=20, bounded=True)]
    [0.963, 1.0]

    ```
    """
    _check_sizes(n_train, n_eval, confidence)
    scores = _as_scores(values)
    n_scores = len(scores)
    if n_scores < 2:
        return (math.nan, math.nan)
    mean = _mean(scores)
    variance = _corrected_variance(scores, n_train, n_eval)
    from scipy.stats import t

    q_t = float(t.ppf(_two_sided(confidence), n_scores - 1))
    if not bounded:
        if variance == 0.0:
            return (math.nan, math.nan)
        if positive:
            return _positive_interval(mean, math.sqrt(variance), q_t)
        half_width = q_t * math.sqrt(variance)
        return (mean - half_width, mean + half_width)
    _check_unit_interval(scores, "scores")
    from scipy.stats import norm

    low, high = _wilson(mean, _rows(n_rows, n_train, n_eval), float(norm.ppf(_two_sided(confidence))))
    if variance > 0.0:  # then 0 < mean < 1: the scores in [0, 1] are not all equal
        corr_low, corr_high = _wilson(mean, mean * (1.0 - mean) / variance, q_t)
        low, high = min(low, corr_low), max(high, corr_high)
    return (low, high)


def summarize(
    values: Sequence[float], n_train: float, n_eval: float, confidence: float = 0.95, *, bounded: bool = False,
    n_rows: float | None = None, positive: bool = False,
) -> dict:
    """Mean, sample standard deviation and corrected interval of cross-validation scores.

    Args:
        values (`Sequence[float]`): One score per fold (all repeats together); at least one.
        n_train (`float`): Training rows per fold (average over folds when they differ).
        n_eval (`float`): Evaluation rows per fold (average over folds when they differ).
        confidence (`float`, defaults to 0.95): Coverage of the interval.
        bounded (`bool`, defaults to `False`): The metric lies in [0, 1]: Wilson-type interval with the
            evaluation-sample floor (see [`corrected_ci`]).
        n_rows (`float`, *optional*): Distinct rows evaluated in one repeat (default ``n_train + n_eval``).
        positive (`bool`, defaults to `False`): A positive metric (the loss): the interval stays above 0.

    Returns:
        `dict`: ``{"mean": float, "std": float, "ci95": [low, high], "ci_method": str}`` of plain Python values,
        ready for JSON or YAML. ``std`` uses ddof=1 and is nan for a single score; the interval is
        :func:`corrected_ci`, and ``ci_method`` names it: ``"corrected_wilson"`` (bounded), ``"corrected_log"``
        (positive) or ``"corrected_t"``.
        The interval key follows ``confidence``: ``"ci95"`` by default, ``"ci90"`` for 0.9, ``"ci99.5"`` for 0.995.

    Example:

    ```python
    >>> summary = summarize([0.8, 0.9, 0.85, 0.75, 0.95], n_train=80, n_eval=20)
    >>> sorted(summary), round(summary["mean"], 4), [round(x, 4) for x in summary["ci95"]]
    (['ci95', 'ci_method', 'mean', 'std'], 0.85, [0.7028, 0.9972])

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
    positive = positive and not bounded and bool(np.all(scores > 0.0))
    low, high = corrected_ci(scores, n_train, n_eval, confidence, bounded=bounded, n_rows=n_rows, positive=positive)
    return {"mean": _mean(scores), "std": std, _ci_key(confidence): [float(low), float(high)],
            "ci_method": "corrected_wilson" if bounded else "corrected_log" if positive else "corrected_t"}


# --- Comparing two variants evaluated on the same folds -------------------------------------------------

_MIN_PAIRS = 3


def _paired_differences(scores_a: Sequence[float], scores_b: Sequence[float]) -> np.ndarray:
    """``scores_a - scores_b`` as float64, after checking the two are paired and can carry a variance."""
    a, b = _as_scores(scores_a), _as_scores(scores_b)
    if len(a) != len(b):
        raise ValueError(
            f"scores_a and scores_b must be paired (one score per fold for each, on the same folds), "
            f"got {len(a)} and {len(b)} scores."
        )
    if len(a) < _MIN_PAIRS:
        raise ValueError(
            f"a paired test needs at least {_MIN_PAIRS} pairs of fold scores (n_folds x n_repeats >= {_MIN_PAIRS}) "
            f"to estimate the variance of their difference, got {len(a)}; run 3 or more folds, or repeat 2-fold "
            f"cross-validation (n_repeats=2 or more)."
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("scores_a and scores_b must be finite numbers (no nan or inf).")
    return a - b


def _mcnemar_p(n_discordant: float, n_rows: float, mean_diff: float) -> float:
    """Exact two-sided McNemar p-value: ``2 P(Bin(N, 1/2) <= min(b, c))`` with ``b + c = N``, ``b - c = n m``.

    ``P(Bin(N, 1/2) <= x) = I_{1/2}(N - x, x + 1)`` (regularized incomplete beta), which also serves the
    non-integer counts of an average over repeats.
    """
    if n_discordant <= 0.0:
        return 1.0
    from scipy.special import betainc

    smaller = max(0.0, (n_discordant - n_rows * abs(mean_diff)) / 2.0)
    return min(1.0, 2.0 * float(betainc(n_discordant - smaller, smaller + 1.0, 0.5)))


def _paired_scale(
    scores_a: Sequence[float], scores_b: Sequence[float], n_train: float, n_eval: float, bounded: bool,
    n_rows: float | None, n_discordant: float | None,
) -> tuple[np.ndarray, float, float, float, float, float]:
    """Paired differences, their mean, sample sd (ddof=1), corrected and floor standard errors, McNemar p-value.

    The corrected standard error is Nadeau–Bengio's. For bounded metrics the floor is the McNemar standard error
    ``sqrt(N + 1) / n`` of a mean difference over ``n`` rows of which ``N`` are discordant (Jeffreys' half count on
    each discordant cell, so that ``N = 0`` still leaves ``1 / n``: n rows cannot show two models never disagree).
    Without per-row predictions ``N`` is its smallest value the fold scores allow, ``n * mean|d_j|`` (an accuracy
    difference ``d_j`` over ``n_eval`` rows needs at least ``n_eval |d_j|`` discordant rows). Unbounded metrics
    have no floor (0.0) and a McNemar p-value of 0.0 (no constraint).
    """
    _check_sizes(n_train, n_eval)
    diffs = _paired_differences(scores_a, scores_b)
    if np.all(diffs == diffs[0]):
        mean, std, corrected = float(diffs[0]), 0.0, 0.0
    else:
        mean, std = _mean(diffs), float(np.std(diffs, ddof=1))
        corrected = std * math.sqrt(1.0 / len(diffs) + float(n_eval) / float(n_train))
    if not bounded:
        return diffs, mean, std, corrected, 0.0, 0.0
    _check_unit_interval(np.concatenate([_as_scores(scores_a), _as_scores(scores_b)]), "scores")
    rows = _rows(n_rows, n_train, n_eval)
    discordant = rows * float(np.mean(np.abs(diffs)))
    if n_discordant is not None:
        if not (math.isfinite(n_discordant) and n_discordant >= 0):
            raise ValueError(f"n_discordant must be a non-negative row count, got {n_discordant!r}.")
        discordant = max(discordant, float(n_discordant))
    return diffs, mean, std, corrected, math.sqrt(discordant + 1.0) / rows, _mcnemar_p(discordant, rows, mean)


def corrected_paired_ttest(
    scores_a: Sequence[float], scores_b: Sequence[float], n_train: float, n_eval: float, *, bounded: bool = False,
    n_rows: float | None = None, n_discordant: float | None = None,
) -> dict:
    """Nadeau–Bengio corrected resampled paired t-test of two variants scored on the same folds.

    With the J = k × r paired fold scores (k folds × r repeats), differences ``d_j = a_j - b_j``, their
    mean ``m`` and sample variance ``s_d²`` (ddof=1):

        se_corr  = sqrt(s_d² * (1 / J + n_eval / n_train))
        t        = m / se_corr,   df = J - 1
        p        = 2 * (1 - F_t(|t|; J - 1))
        ci95     = m ± t_{0.975, J - 1} * se_corr

    The naive paired t-test (``scipy.stats.ttest_rel``) uses ``s_d² / J`` and, because overlapping
    training sets correlate the fold scores, rejects far too often (Nadeau & Bengio 2003); its type I error
    also grows with the number of repeats, the corrected one does not (Bouckaert & Frank 2004).

    For metrics bounded in [0, 1] (``bounded=True``) the evaluated rows add a floor (McNemar 1947). With ``n``
    rows per repeat (``n_rows``) of which ``N`` are discordant (exactly one variant right: ``n_discordant``, or
    without it the smallest count the fold scores allow, ``n * mean|d_j|``), ``b - c = n m`` and ``b + c = N``:

        se_floor = sqrt(N + 1) / n                        (McNemar's, with a half count added to b and c)
        p        = max(p of the corrected t-test, 2 * P(Bin(N, 1/2) <= min(b, c)))     (exact McNemar)
        ci95     = m ± max(t_{0.975, J - 1} * se_corr, z_{0.975} * se_floor),  within [-1, 1]
        t        = m / max(se_corr, se_floor)

    The test rejects only when both the corrected t-test and McNemar's exact test on the evaluated rows reject,
    so identical fold differences (``s_d = 0``) no longer give ``t = inf`` and ``p = 0``: five folds that each
    favour A by one row of 20 give ``p = 2 / 2^5 = 0.0625``.

    References:
        - C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine Learning 52(3), 2003.
        - R. R. Bouckaert and E. Frank, "Evaluating the Replicability of Significance Tests for Comparing
          Learning Algorithms", PAKDD 2004.
        - Q. McNemar, "Note on the sampling error of the difference between correlated proportions or
          percentages", Psychometrika 12(2), 1947.

    Args:
        scores_a (`Sequence[float]`): Variant A's score on each fold (all repeats together).
        scores_b (`Sequence[float]`): Variant B's score on the same folds, in the same order.
        n_train (`float`): Training rows per fold; an average over folds when they differ.
        n_eval (`float`): Evaluation rows per fold; an average over folds when they differ.
        bounded (`bool`, defaults to `False`): The metric lies in [0, 1]: apply the McNemar floor.
        n_rows (`float`, *optional*): Distinct rows evaluated in one repeat (default ``n_train + n_eval``).
        n_discordant (`float`, *optional*): Rows per repeat (averaged over repeats) on which exactly one of the two
            variants is right, from their out-of-fold predictions; the smallest count consistent with the fold
            scores is used when it is smaller or missing.

    Returns:
        `dict`: ``{"mean_diff", "std_diff", "t", "df", "p_value", "ci95"}`` of plain Python floats
        (``df`` an int, ``ci95`` a ``[low, high]`` list for the mean of ``a - b``). The p-value is never exactly 0
        (underflow is reported as the smallest positive float). With ``bounded=False`` and all differences equal
        (no variance and no floor) the test cannot be answered: ``t``, ``p_value`` and ``ci95`` are nan, except
        that a zero difference gives ``t = 0`` and ``p_value = 1``.

    Raises:
        `ValueError`: If the score lists differ in length, hold fewer than 3 pairs (refused: see above) or
        non-finite values, if ``n_train`` / ``n_eval`` are not positive, or ``bounded=True`` with scores outside
        [0, 1].

    Example:

    ```python
    >>> result = corrected_paired_ttest(
    ...     [0.80, 0.82, 0.85, 0.79, 0.84], [0.78, 0.80, 0.80, 0.78, 0.81], n_train=80, n_eval=20
    ... )
    >>> round(result["mean_diff"], 4), round(result["t"], 4), result["df"], round(result["p_value"], 4)
    (0.026, 2.5557, 4, 0.0629)
    >>> result = corrected_paired_ttest([0.95] * 5, [0.9] * 5, n_train=80, n_eval=20, bounded=True)
    >>> round(result["p_value"], 4)
    0.0625

    ```
    """
    diffs, mean, std, corrected, floor, p_floor = _paired_scale(scores_a, scores_b, n_train, n_eval, bounded,
                                                                n_rows, n_discordant)
    df = len(diffs) - 1
    scale = max(corrected, floor)
    if scale == 0.0:  # unbounded metric, all differences equal: no variance and no floor to test with
        t_stat, p_value = (0.0, 1.0) if mean == 0.0 else (math.nan, math.nan)
        return {"mean_diff": mean, "std_diff": std, "t": t_stat, "df": df, "p_value": p_value,
                "ci95": [math.nan, math.nan]}
    from scipy.stats import norm, t

    if corrected > 0.0:
        p_corrected = float(2.0 * t.sf(abs(mean) / corrected, df))
    else:  # equal differences: the t-test alone would claim certainty, McNemar's p decides
        p_corrected = 1.0 if mean == 0.0 else 0.0
    p_value = max(p_corrected, p_floor, _TINY_P)
    half = max(float(t.ppf(0.975, df)) * corrected, float(norm.ppf(0.975)) * floor)
    low, high = mean - half, mean + half
    if bounded:  # a difference of two [0, 1] scores lies in [-1, 1]
        low, high = max(-1.0, low), min(1.0, high)
    return {
        "mean_diff": mean,
        "std_diff": std,
        "t": float(mean / scale),
        "df": df,
        "p_value": min(1.0, p_value),
        "ci95": [float(low), float(high)],
    }


def bayesian_correlated_ttest(
    scores_a: Sequence[float], scores_b: Sequence[float], n_train: float, n_eval: float, rope: float = 0.01, *,
    bounded: bool = False, n_rows: float | None = None, n_discordant: float | None = None,
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

    With ``bounded=True`` the scale is floored at the McNemar standard error ``sqrt(N + 1) / n`` of the evaluated
    rows (see :func:`corrected_paired_ttest`), so equal fold differences no longer make the posterior a point
    mass with probability 1 on one side. Above the floor the result equals ``baycomp.two_on_single``.

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
        bounded, n_rows, n_discordant: As in :func:`corrected_paired_ttest`.

    Returns:
        `dict`: ``{"p_a_better", "p_equivalent", "p_b_better"}`` of plain Python floats summing to 1; all nan when
        ``bounded=False`` and every difference is equal (no variance and no floor: no posterior to report).

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
    diffs, mean, _, corrected, floor, _ = _paired_scale(scores_a, scores_b, n_train, n_eval, bounded, n_rows,
                                                        n_discordant)
    scale = max(corrected, floor)
    if scale == 0.0:
        return {"p_a_better": math.nan, "p_equivalent": math.nan, "p_b_better": math.nan}
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


# --- Nested cross-validation (Bates, Hastie & Tibshirani) -----------------------------------------------


def _repeats(folds: Sequence) -> dict[int, list]:
    """Folds grouped by repeat, each repeat in fold order, after checking they can carry a nested CV."""
    by_repeat: dict[int, list] = {}
    for fold in folds:
        by_repeat.setdefault(int(fold.repeat), []).append(fold)
    if not by_repeat:
        raise ValueError("nested cross-validation needs the folds of at least one repeat, got none.")
    for repeat, members in by_repeat.items():
        members.sort(key=lambda f: f.fold)
        if len(members) < 3:
            raise ValueError(
                f"nested cross-validation needs at least 3 folds per repeat (the inner cross-validation of each "
                f"outer fold runs on the other folds), repeat {repeat} has {len(members)}; use n_folds >= 3."
            )
        evals = [np.asarray(f.eval_indices) for f in members]
        rows = np.concatenate(evals)
        every = np.union1d(np.asarray(members[0].train_indices), evals[0])
        if len(np.unique(rows)) != len(rows) or not np.array_equal(np.sort(rows), every) or any(
                not np.array_equal(np.union1d(np.asarray(f.train_indices), e), every)
                for f, e in zip(members, evals)):
            raise ValueError(
                f"nested cross-validation needs k-fold-style folds (each row evaluated once per repeat and trained "
                f"on in every other fold), which repeat {repeat} is not (time-series folds are not); use a 'kfold', "
                f"'stratified', 'group' or 'stratified_group' fold strategy."
            )
    return dict(sorted(by_repeat.items()))


def nested_cv_fits(folds: Sequence) -> list[dict]:
    """The extra model fits that :func:`nested_cv_interval` needs, beyond the cross-validation's own folds.

    For every repeat with K folds and every pair of its folds ``j < k``, one model is trained on all rows except
    the rows of folds ``j`` and ``k`` (``n (K - 2) / K`` rows) and predicts the rows of both (``2 n / K`` rows).
    Its predictions on fold ``j`` serve the inner cross-validation of outer fold ``k`` (and vice versa): the inner
    cross-validation of outer fold ``k`` uses the other K - 1 folds as its inner folds, so its fits are exactly
    the pair fits ``{j, k}``, ``j != k``. The outer fits (all rows but fold ``k``, predicting fold ``k``) are the
    cross-validation's own fold models, which already ran.

    Per repeat: ``K (K - 1) / 2`` new fits (10 for K = 5, 45 for K = 10) on top of the K fold fits, each training
    on ``(K - 2) / (K - 1)`` of a fold fit's rows; r repeats need r times as many. A pair fit must be trained
    exactly as a fold fit is (same settings and seed), only on its own rows.

    Args:
        folds (`Sequence[Fold]`): The cross-validation's folds (all repeats), e.g. from
            [`hf_tlcv.folds.make_folds`]; each repeat must be a partition of the rows into at least 3 folds.

    Returns:
        `list[dict]`: One dict per fit, in repeat then pair order: ``name`` (``"nested_{repeat}_{j}_{k}"``),
        ``repeat``, ``folds`` (``(j, k)``), ``train_indices`` and ``eval_indices`` (sorted ``int64`` arrays of row
        positions: train on the first, predict the second).

    Raises:
        `ValueError`: If a repeat has fewer than 3 folds or its folds are not a k-fold partition.

    Example:

    ```python
    >>> from hf_tlcv.folds import split_indices
    >>> fits = nested_cv_fits(split_indices(20, "kfold", n_folds=5))
    >>> len(fits), fits[0]["name"], len(fits[0]["train_indices"]), len(fits[0]["eval_indices"])
    (10, 'nested_0_0_1', 12, 8)

    ```
    """
    fits = []
    for repeat, members in _repeats(folds).items():
        for position, first in enumerate(members):
            for second in members[position + 1:]:
                train = np.intersect1d(first.train_indices, second.train_indices).astype(np.int64)
                held_out = np.union1d(first.eval_indices, second.eval_indices).astype(np.int64)
                fits.append({"name": f"nested_{repeat}_{first.fold}_{second.fold}", "repeat": repeat,
                             "folds": (first.fold, second.fold), "train_indices": train, "eval_indices": held_out})
    return fits


def _values_for(values: dict, name: str, expected: int, kind: str) -> np.ndarray:
    if name not in values:
        raise ValueError(f"no per-row values for {kind} {name!r}; pass one array per {kind}, keyed by its name.")
    array = _as_scores(values[name])
    if len(array) != expected:
        raise ValueError(f"{kind} {name!r} has {len(array)} per-row values for {expected} evaluated rows; pass one "
                         f"value per row of its eval_indices, in their (sorted) order.")
    return array


def nested_cv_errors(
    folds: Sequence, fold_values: dict[str, Sequence[float]], fit_values: dict[str, Sequence[float]]
) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Arrange the per-row values of the fold fits and the nested fits into the input of :func:`nested_cv_interval`.

    Args:
        folds (`Sequence[Fold]`): The cross-validation's folds (all repeats).
        fold_values (`dict[str, Sequence[float]]`): Per fold name (``"fold_0_3"``), the per-row values of that fold's
            model on its eval rows, in the order of ``fold.eval_indices``: 1/0 for right/wrong (accuracy) or the
            per-row loss.
        fit_values (`dict[str, Sequence[float]]`): Per nested fit name (from :func:`nested_cv_fits`), the same
            values of that fit's model on its ``eval_indices``.

    Returns:
        `tuple`: ``(inner, outer)``, each indexed ``[repeat][outer fold]``: ``outer`` holds the fold model's values
        on the outer fold's rows, ``inner`` the inner cross-validation's values on all other rows (for each other
        fold ``j``, the pair fit ``{j, k}``'s values on fold ``j``).

    Raises:
        `ValueError`: If a fold or fit has no values or the wrong number of them.
    """
    fits = {fit["name"]: fit for fit in nested_cv_fits(folds)}
    inner, outer = [], []
    for repeat, members in _repeats(folds).items():
        inner.append([])
        outer.append([])
        for held in members:
            outer[-1].append(_values_for(fold_values, held.name, len(held.eval_indices), "fold"))
            parts = []
            for other in members:
                if other is held:
                    continue
                pair = sorted((held.fold, other.fold))
                fit = fits[f"nested_{repeat}_{pair[0]}_{pair[1]}"]
                values = _values_for(fit_values, fit["name"], len(fit["eval_indices"]), "nested fit")
                parts.append(values[np.isin(fit["eval_indices"], other.eval_indices)])
            inner[-1].append(np.concatenate(parts))
    return inner, outer


def nested_cv_interval(
    inner: Sequence[Sequence[Sequence[float]]], outer: Sequence[Sequence[Sequence[float]]], confidence: float = 0.95,
    *, bounded: bool = False,
) -> dict:
    """Nested cross-validation interval of Bates, Hastie & Tibshirani (2024) for a per-row metric.

    Cross-validation estimates the error of a model trained on the data at hand badly in one respect: its
    variance. The fold scores are correlated, and the naive standard error ``sd(e) / sqrt(n)`` of the n per-row
    values is too small by an unknown factor. Nested cross-validation measures it. In repeat ``r`` with K folds,
    for every outer fold ``k`` with ``n_k`` rows:

        a_k = mean(inner values of k) - mean(outer values of k)   (inner CV on the other folds vs the fold model)
        b_k = var(outer values of k) / n_k                        (the holdout noise inside a_k)

    ``E[a_k² - b_k]`` is the mean squared error of a cross-validation estimate on ``n (K - 1) / K`` rows
    (their holdout identity), so with ``e`` all inner values (every row K - 1 times per repeat):

        MSE          = max(0, mean_k(a_k² - b_k))                             (over all repeats and outer folds)
        inflation    = sqrt(MSE) / (sd(e) / sqrt(n (K - 1) / K)),  clipped to [1, sqrt(K)]
        se           = inflation * sd(e) / sqrt(n)                            (the same inflation at n rows)
        bias         = (mean(e) - mean(outer)) * (1 + ((K - 2) / K) ** 1.5)
        estimate     = mean(e) - bias
        interval     = estimate ± z_{(1 + confidence) / 2} * se               (bounded=False)

    The bias term extrapolates from the inner fits (trained on ``n (K - 2) / K`` rows) and the fold fits
    (``n (K - 1) / K`` rows) to a model trained on all n rows, as the authors' reference implementation does, so
    the estimate and interval target the accuracy (or loss) of the model trained on all the data. The authors
    estimate the bias with separate cross-validation runs; here the outer values are the cross-validation's own
    fold predictions, which cost no extra fit.

    With ``bounded=True`` (per-row values in [0, 1], e.g. 1 for a right prediction and 0 for a wrong one) the
    interval is the Wilson score interval around the estimate (clipped to [0, 1]) at the effective size
    ``n / inflation²``: the same width where the Wilson and normal intervals agree, inside [0, 1] always, and of
    positive width when every prediction is right (``[n / (n + z²), 1]``).

    Args:
        inner (`Sequence[Sequence[Sequence[float]]]`): ``inner[r][k]``: in repeat ``r``, the per-row values on all
            rows outside outer fold ``k``, each predicted by the model trained without fold ``k`` and the row's own
            fold (see :func:`nested_cv_errors`).
        outer (`Sequence[Sequence[Sequence[float]]]`): ``outer[r][k]``: the per-row values on outer fold ``k``'s rows
            of the model trained on all rows but fold ``k`` (the cross-validation's fold model).
        confidence (`float`, defaults to 0.95): Coverage of the interval.
        bounded (`bool`, defaults to `False`): The per-row values lie in [0, 1]; the interval stays in [0, 1].

    Returns:
        `dict`: plain Python values: ``mean`` (the bias-corrected estimate), ``std`` (``sd(e)``), ``ci95`` (key
        follows ``confidence``), ``ci_method`` (``"nested"``), ``se``, ``inflation``, ``mse``, ``nested_mean``
        (``mean(e)``), ``cv_mean`` (``mean(outer)``), ``bias``, ``n_rows``, ``n_folds``, ``n_repeats``. With
        ``bounded=False`` and no spread at all (``sd(e) = 0``) the interval is ``[nan, nan]``.

    Raises:
        `ValueError`: For fewer than 3 outer folds, inconsistent shapes (a repeat's outer folds must cover the same
        n rows, each inner array holding the other ``n - n_k`` rows), non-finite values, or ``bounded=True`` with
        values outside [0, 1].

    References:
        - S. Bates, T. Hastie and R. Tibshirani, "Cross-validation: what does it estimate and how well does it do
          it?", JASA 119(546):1434-1445, 2024; R package ``nestedcv`` (github.com/stephenbates19/nestedcv).

    Example:

    ```python
    >>> rng = np.random.default_rng(0)
    >>> outer = [[rng.binomial(1, 0.8, 20).astype(float) for _ in range(5)]]
    >>> inner = [[rng.binomial(1, 0.78, 80).astype(float) for _ in range(5)]]
    >>> result = nested_cv_interval(inner, outer, bounded=True)
    >>> result["ci_method"], result["n_rows"], result["n_folds"], 1.0 <= result["inflation"] <= 5 ** 0.5
    ('nested', 100, 5, True)

    ```
    """
    _check_confidence(confidence)
    if len(outer) == 0 or len(inner) != len(outer):
        raise ValueError(f"inner and outer need one entry per repeat, got {len(inner)} and {len(outer)}.")
    n_folds = len(outer[0])
    terms, inner_all, outer_all, n_rows = [], [], [], None
    for repeat, (inner_r, outer_r) in enumerate(zip(inner, outer)):
        if len(outer_r) != n_folds or len(inner_r) != n_folds:
            raise ValueError(f"repeat {repeat} has {len(outer_r)} outer and {len(inner_r)} inner folds; every repeat "
                             f"needs the same number of folds ({n_folds}) in both.")
        if n_folds < 3:
            raise ValueError(f"nested cross-validation needs at least 3 outer folds, got {n_folds}; use n_folds >= 3.")
        outer_r = [_as_scores(values) for values in outer_r]
        inner_r = [_as_scores(values) for values in inner_r]
        rows = sum(len(values) for values in outer_r)
        if n_rows is not None and rows != n_rows:
            raise ValueError(f"repeat {repeat} covers {rows} rows, repeat 0 covers {n_rows}: every repeat must "
                             "evaluate the same rows once.")
        n_rows = rows
        for k, (e_in, e_out) in enumerate(zip(inner_r, outer_r)):
            if len(e_out) < 2 or len(e_in) != rows - len(e_out):
                raise ValueError(f"repeat {repeat}, outer fold {k}: {len(e_out)} outer and {len(e_in)} inner values; "
                                 f"an outer fold needs at least 2 rows and its inner values cover the other "
                                 f"{rows - len(e_out)} rows.")
            terms.append((e_in.mean() - e_out.mean()) ** 2 - e_out.var(ddof=1) / len(e_out))
        inner_all.extend(inner_r)
        outer_all.extend(outer_r)
    e_in, e_out = np.concatenate(inner_all), np.concatenate(outer_all)
    if not (np.all(np.isfinite(e_in)) and np.all(np.isfinite(e_out))):
        raise ValueError("inner and outer values must be finite numbers (no nan or inf).")
    if bounded:
        _check_unit_interval(np.concatenate([e_in, e_out]), "per-row values")
    mse = max(0.0, float(np.mean(terms)))
    sd = float(np.std(e_in, ddof=1))
    n_sub = n_rows * (n_folds - 1) / n_folds
    inflation = math.sqrt(mse) / (sd / math.sqrt(n_sub)) if sd > 0.0 else 1.0
    inflation = min(max(inflation, 1.0), math.sqrt(n_folds))
    se = inflation * sd / math.sqrt(n_rows)
    nested_mean, cv_mean = float(e_in.mean()), float(e_out.mean())
    bias = (nested_mean - cv_mean) * (1.0 + ((n_folds - 2) / n_folds) ** 1.5)
    estimate = nested_mean - bias
    from scipy.stats import norm

    z = float(norm.ppf(_two_sided(confidence)))
    if bounded:
        estimate = min(1.0, max(0.0, estimate))
        low, high = _wilson(estimate, n_rows / inflation**2, z)
    elif se > 0.0:
        low, high = estimate - z * se, estimate + z * se
    else:
        low = high = math.nan
    return {"mean": estimate, "std": sd, _ci_key(confidence): [float(low), float(high)], "ci_method": "nested",
            "se": float(se), "inflation": float(inflation), "mse": mse, "nested_mean": nested_mean,
            "cv_mean": cv_mean, "bias": float(bias), "n_rows": int(n_rows), "n_folds": n_folds,
            "n_repeats": len(outer)}


# --- The per-row interval (Bayle, Bayle, Janson & Mackey) ------------------------------------------------

# Fold scores that spread beyond what their rows explain at this significance make the run "unstable": the per-row
# interval then falls back to the corrected one (the widening below already covers a milder excess).
INSTABILITY_P = 0.01
# Fold models that score better on their own training rows than on new rows by more than this many standard errors
# of the per-row mean follow their individual rows (1-nearest-neighbour, a network that memorises): unstable too.
OPTIMISM_SE = 2.0


def _row_variance(fold_values: Sequence, fold_rows: Sequence | None, fold_repeats: Sequence | None,
                  n_train: float | None) -> dict:
    """The pieces of the per-row variance: the mean, the rows' variance of that mean, the fold spread and its excess."""
    values = [_as_scores(v) for v in fold_values]
    if len(values) < 2 or any(len(v) == 0 for v in values):
        raise ValueError(f"the per-row interval needs the per-row values of at least 2 folds, each with a row, got "
                         f"{[len(v) for v in values]} values per fold.")
    every = np.concatenate(values)
    if not np.all(np.isfinite(every)):
        raise ValueError("per-row values must be finite numbers (no nan or inf).")
    repeats = np.zeros(len(values), dtype=np.int64) if fold_repeats is None else np.asarray(fold_repeats, np.int64)
    if len(repeats) != len(values):
        raise ValueError(f"fold_repeats needs one repeat per fold ({len(values)}), got {len(repeats)}.")
    if fold_rows is None:  # every value is its own row, one repeat
        if len(set(repeats.tolist())) > 1:
            raise ValueError("with several repeats, pass fold_rows (the row of every value) so that a row's values "
                             "from different repeats are averaged, not counted as new rows.")
        row_means = every
    else:
        rows = np.concatenate([np.asarray(r, dtype=np.int64).reshape(-1) for r in fold_rows])
        if len(rows) != len(every):
            raise ValueError(f"fold_rows holds {len(rows)} row ids for {len(every)} per-row values; pass one row id "
                             "per value, fold by fold.")
        _, inverse, counts = np.unique(rows, return_inverse=True, return_counts=True)
        row_means = np.bincount(inverse, weights=every) / counts
    n_rows = len(row_means)
    means = np.array([v.mean() for v in values])
    sizes = np.array([len(v) for v in values], dtype=np.float64)
    # What the rows explain of each fold mean's variance, and what the fold means show (within each repeat).
    explained = float(np.mean([v.var(ddof=1) / len(v) if len(v) > 1 else 0.0 for v in values]))
    df = len(values) - len(set(repeats.tolist()))
    spread = sum(float(((means[repeats == r] - means[repeats == r].mean()) ** 2).sum()) for r in set(repeats.tolist()))
    spread = spread / df if df > 0 else 0.0
    n_eval = float(sizes.mean())
    n_train = float(n_rows - n_eval) if n_train is None else float(n_train)
    excess = max(0.0, spread - explained)
    if explained > 0.0:
        from scipy.stats import f as f_dist

        p_value = float(f_dist.sf(spread / explained, df, max(1, len(every) - len(values)))) if df > 0 else 1.0
    else:  # every fold constant within itself: any spread between folds is beyond the rows
        p_value = 0.0 if spread > 0.0 else 1.0
    row_var = float(row_means.var(ddof=1)) / n_rows if n_rows > 1 else 0.0
    factor = 1.0 / len(values) + (n_eval / n_train if n_train > 0 else 1.0)
    return {"mean": _mean(means), "fold_means": means, "n_rows": n_rows, "row_variance": row_var,
            "fold_variance": spread, "explained_variance": explained, "excess_variance": excess,
            "variance": row_var + factor * excess, "df": df, "p_value": p_value}


def _positive_interval(mean: float, se: float, quantile: float) -> tuple[float, float]:
    """``mean * exp(±q se / mean)``: the normal interval of ``log(mean)`` (delta method), so it stays above 0."""
    if not (mean > 0.0 and se > 0.0):
        return (math.nan, math.nan)
    spread = math.exp(quantile * se / mean)
    return (mean / spread, mean * spread)


def row_interval(
    fold_values: Sequence[Sequence[float]], fold_rows: Sequence[Sequence[int]] | None = None,
    fold_repeats: Sequence[int] | None = None, confidence: float = 0.95, *, bounded: bool = False,
    positive: bool = False, n_train: float | None = None, optimism: float | None = None,
) -> dict:
    """Per-row interval of a cross-validated mean (Bayle, Bayle, Janson & Mackey 2020), widened by fold instability.

    Accuracy and the loss are means of per-row values ``e_i`` (1/0 for a right/wrong prediction, the per-row
    cross-entropy), each row predicted by the fold model that did not train on it. For learners whose fitted model
    changes little when a few training rows change, the cross-validation CLT of Bayle et al. makes the mean of the
    ``e_i`` normal around the mean test score of the run's fold models, with the variance of the ``e_i`` over
    ``n``: no extra fits, and as narrow as the rows allow. With J folds in R repeats, ``ē_i`` the mean of row
    ``i``'s values over the repeats (n distinct rows), ``S_j`` the mean of fold ``j`` (``n_j`` rows, within-fold
    variance ``v_j``):

        row variance   = var(ē_i) / n
        fold spread    s² = sum over repeats of sum_j (S_j - mean of its repeat)² / (J - R)
        rows explain   mean_j(v_j / n_j)        (what s² would be if only the rows varied)
        excess         = max(0, s² - rows explain)
        variance       = row variance + excess * (1 / J + n_eval / n_train)     (Nadeau–Bengio factor on the excess)
        instability    p = P(F_{J-R, N-J} >= s² / rows explain)

    The excess is the part of the fold models' disagreement that their rows do not explain (a learner whose fit
    depends on which rows it saw); it gets the Nadeau–Bengio correlation factor of fold scores. The interval is

    - ``bounded=True`` (0/1 or [0, 1] values): the Wilson score interval around the mean at ``n_eff = m (1 - m) /
      variance`` (``n`` when the mean is 0 or 1, or nothing varies), inside [0, 1] and of positive width;
    - ``positive=True`` (the loss): ``m * exp(±z sqrt(variance) / m)``, the normal interval of ``log m``: above 0;
    - otherwise ``m ± z sqrt(variance)``.

    The mean ``m`` is the mean of the fold means (what the summary reports). Its target is the mean test score of
    the run's own fold models (Bayle et al.'s k-fold test error); for stable learners that is also the expected
    score of a model trained on a fold's rows (measured in ``benchmarks/sim_intervals.py``).

    Two signs that the learner is not stable enough for the CLT are reported as ``instability["unstable"]`` (a
    sentence; callers then fall back to :func:`corrected_ci`, see ``hf_tlcv.results``): fold scores that spread
    beyond their rows (``p_value < INSTABILITY_P``), and fold models that score better on their own training rows than
    on new rows by more than ``OPTIMISM_SE`` standard errors (``optimism``: Efron's optimism, large for a learner
    whose fit follows individual rows, such as 1-nearest-neighbour, whose fold spread can look perfectly ordinary).

    References:
        - P. Bayle, A. Bayle, L. Janson and L. Mackey, "Cross-validation Confidence Intervals for Test Error",
          NeurIPS 2020 (arXiv:2007.12671); mlr3inferr's ``ci.wald_cv``.

    Args:
        fold_values (`Sequence[Sequence[float]]`): Per fold (all repeats), the per-row values of its eval rows.
        fold_rows (`Sequence[Sequence[int]]`, *optional*): Per fold, the row id of every value (needed with repeats:
            a row's values from different repeats are averaged). Without it every value is its own row.
        fold_repeats (`Sequence[int]`, *optional*): The repeat of every fold (default: all 0).
        confidence (`float`, defaults to 0.95): Coverage of the interval.
        bounded (`bool`, defaults to `False`): Values in [0, 1]: Wilson form.
        positive (`bool`, defaults to `False`): Values of a positive metric (the loss): log form, above 0.
        n_train (`float`, *optional*): Training rows per fold (default: rows minus evaluation rows per fold).
        optimism (`float`, *optional*): The fold models' mean score on their own training rows minus on their eval
            rows, in the direction of better (the eval loss minus the train loss); unknown when `None`.

    Returns:
        `dict`: plain Python values: ``mean``, ``ci95`` (key follows ``confidence``), ``ci_method``
        (``"row_wilson"``, ``"row_log"`` or ``"row_normal"``), ``se`` (square root of the variance), ``row_se``,
        ``n_rows``, and ``instability``: ``fold_variance``, ``explained_variance``, ``excess_variance``, ``ratio``
        (fold spread / what the rows explain; ``None`` when the rows explain nothing), ``df``, ``p_value``,
        ``widening`` (se / row_se), ``optimism``, ``optimism_se`` (optimism / row_se) and ``unstable`` (``None``, or
        why the learner looks unstable).

    Raises:
        `ValueError`: Fewer than 2 folds, an empty fold, non-finite values, inconsistent row ids, or
        ``bounded=True`` with values outside [0, 1].

    Example:

    ```python
    >>> rng = np.random.default_rng(0)
    >>> right = [rng.binomial(1, 0.85, 40).astype(float) for _ in range(5)]
    >>> result = row_interval(right, bounded=True)
    >>> result["ci_method"], result["n_rows"], 0.0 < result["ci95"][0] < result["mean"] < result["ci95"][1] < 1.0
    ('row_wilson', 200, True)

    ```
    """
    _check_confidence(confidence)
    parts = _row_variance(fold_values, fold_rows, fold_repeats, n_train)
    if bounded:
        _check_unit_interval(np.concatenate([_as_scores(v) for v in fold_values]), "per-row values")
    from scipy.stats import norm

    z = float(norm.ppf(_two_sided(confidence)))
    mean, variance, n_rows = parts["mean"], parts["variance"], parts["n_rows"]
    se = math.sqrt(variance)
    if bounded:
        n_eff = mean * (1.0 - mean) / variance if variance > 0.0 and 0.0 < mean < 1.0 else float(n_rows)
        low, high = _wilson(mean, n_eff, z)
        method = "row_wilson"
    elif positive:
        low, high = _positive_interval(mean, se, z)
        method = "row_log"
    else:
        low, high = (mean - z * se, mean + z * se) if se > 0.0 else (math.nan, math.nan)
        method = "row_normal"
    row_se = math.sqrt(parts["row_variance"])
    explained = parts["explained_variance"]
    ratio = parts["fold_variance"] / explained if explained > 0.0 else None
    optimism_se = None if optimism is None else (
        optimism / row_se if row_se > 0.0 else (math.inf if optimism > 0.0 else 0.0))
    unstable = None
    if parts["p_value"] < INSTABILITY_P:
        unstable = (f"the fold scores spread {'far' if ratio is None else f'{ratio:.1f}x'} beyond what their rows "
                    f"explain (p = {parts['p_value']:.2g} < {INSTABILITY_P})")
    elif optimism_se is not None and optimism_se > OPTIMISM_SE:
        unstable = (f"the fold models score {optimism:.3g} better on their own training rows than on new rows, "
                    f"{optimism_se:.1f} standard errors (> {OPTIMISM_SE:g}): their fit follows individual rows")
    return {"mean": mean, _ci_key(confidence): [float(low), float(high)], "ci_method": method, "se": se,
            "row_se": row_se, "n_rows": int(n_rows),
            "instability": {"fold_variance": parts["fold_variance"], "explained_variance": explained,
                            "excess_variance": parts["excess_variance"], "ratio": ratio, "df": parts["df"],
                            "p_value": parts["p_value"], "widening": se / row_se if row_se > 0.0 else 1.0,
                            "optimism": optimism, "optimism_se": optimism_se, "unstable": unstable}}


def row_paired_test(
    fold_differences: Sequence[Sequence[float]], fold_rows: Sequence[Sequence[int]] | None = None,
    fold_repeats: Sequence[int] | None = None, *, bounded: bool = False, n_train: float | None = None,
) -> dict:
    """Per-row paired test of two variants on the same folds: :func:`row_interval` of the per-row differences.

    With ``d_i = a_i - b_i`` the difference of the two variants' per-row values on row ``i`` (for accuracy: +1, 0 or
    -1, nonzero on McNemar's discordant rows), mean ``m`` (of the fold means) and ``se`` from :func:`row_interval`
    (the rows' variance of the mean difference, widened by the excess spread of the fold differences):

        z        = m / se,   p = 2 (1 - Phi(|z|))
        ci95     = m ± z_{0.975} se

    With ``bounded=True`` (differences of values in [0, 1]) McNemar's exact test on the ``N`` discordant rows per
    repeat (``N = sum |d_i| / R``, exactly the discordant count for 0/1 values) is a floor, as in
    :func:`corrected_paired_ttest`: ``p = max(p, exact McNemar p)``, ``se >= sqrt(N + 1) / n``, interval within
    [-1, 1]; equal predictions therefore never give ``p = 0`` or a zero-width interval.

    Args:
        fold_differences (`Sequence[Sequence[float]]`): Per fold, the per-row differences ``a_i - b_i``.
        fold_rows, fold_repeats, n_train: As in :func:`row_interval`.
        bounded (`bool`, defaults to `False`): Differences of values in [0, 1]: the McNemar floor.

    Returns:
        `dict`: ``mean_diff``, ``std_diff`` (sample sd of the fold mean differences), ``t`` (the z statistic),
        ``df`` (``None``: normal reference), ``p_value``, ``ci95``, ``se``, ``n_discordant`` (bounded only) and
        ``instability`` (of the differences, see :func:`row_interval`).

    Example:

    ```python
    >>> a = [np.array([1, 1, 0, 1, 1, 1, 0, 1.0])] * 5
    >>> b = [np.array([1, 0, 0, 1, 1, 0, 0, 1.0])] * 5
    >>> result = row_paired_test([x - y for x, y in zip(a, b)], bounded=True)
    >>> round(result["mean_diff"], 3), result["n_discordant"], round(result["p_value"], 4)
    (0.25, 10.0, 0.0026)

    ```
    """
    result = row_interval(fold_differences, fold_rows, fold_repeats, n_train=n_train)
    repeats = 1 if fold_repeats is None else len(set(np.asarray(fold_repeats).tolist()))
    mean, se, n_rows = result["mean"], result["se"], result["n_rows"]
    fold_means = [float(np.mean(_as_scores(v))) for v in fold_differences]
    std = float(np.std(fold_means, ddof=1)) if len(set(fold_means)) > 1 else 0.0
    from scipy.stats import norm

    z = float(norm.ppf(0.975))
    out = {"mean_diff": mean, "std_diff": std, "df": None, "instability": result["instability"]}
    p_floor = 0.0
    if bounded:
        values = np.concatenate([_as_scores(v) for v in fold_differences])
        if not np.all(np.abs(values) <= 1.0):
            raise ValueError("bounded=True needs per-row differences in [-1, 1] (differences of values in [0, 1]).")
        discordant = float(np.abs(values).sum()) / repeats
        se = max(se, math.sqrt(discordant + 1.0) / n_rows)
        p_floor = _mcnemar_p(discordant, n_rows, mean)
        out["n_discordant"] = discordant
    if se == 0.0:
        out.update(t=0.0 if mean == 0.0 else math.nan, p_value=1.0 if mean == 0.0 else math.nan, se=0.0,
                   ci95=[math.nan, math.nan])
        return out
    low, high = mean - z * se, mean + z * se
    if bounded:
        low, high = max(-1.0, low), min(1.0, high)
    p_value = max(float(2.0 * norm.sf(abs(mean) / se)), p_floor, _TINY_P)
    out.update(t=float(mean / se), p_value=min(1.0, p_value), se=float(se), ci95=[float(low), float(high)])
    return out
