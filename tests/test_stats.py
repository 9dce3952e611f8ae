"""Corrected resampled intervals (Nadeau & Bengio 2003) against hand arithmetic."""

import json
import math

import numpy as np
import pytest
from scipy.stats import t

from hf_tlcv.stats import corrected_ci, summarize

FIVE_SCORES = [0.8, 0.9, 0.85, 0.75, 0.95]


def test_five_fold_example_by_hand():
    # J = 5, mean = 4.25 / 5 = 0.85
    # deviations -0.05, 0.05, 0.00, -0.10, 0.10 -> squares 0.0025 + 0.0025 + 0 + 0.01 + 0.01 = 0.025
    # s² = 0.025 / (5 - 1) = 0.00625
    # var_corr = 0.00625 * (1/5 + 20/80) = 0.00625 * 0.45 = 0.0028125
    # half width = t(0.975, 4) * sqrt(0.0028125) = 2.7764... * 0.053033... = 0.14724...
    half = t.ppf(0.975, 4) * math.sqrt(0.0028125)
    low, high = corrected_ci(FIVE_SCORES, n_train=80, n_eval=20)
    assert low == pytest.approx(0.85 - half, rel=1e-12)
    assert high == pytest.approx(0.85 + half, rel=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.7028, 0.9972)


def test_repeated_cv_example_by_hand():
    # 5 folds x 2 repeats, 90% interval, fractional average fold sizes (n_eval / n_train = 22.5 / 90 = 0.25).
    scores = [0.70, 0.72, 0.68, 0.75, 0.71, 0.69, 0.73, 0.74, 0.70, 0.68]
    # sum = 3.56 + 3.54 = 7.10, mean = 0.71
    # deviations (x 0.01): -1, 1, -3, 4, 0, -2, 2, 3, -1, -3 -> squares sum 54 x 1e-4 = 0.0054
    # s² = 0.0054 / 9 = 0.0006;  var_corr = 0.0006 * (1/10 + 0.25) = 0.00021
    # half width = t(0.95, 9) * sqrt(0.00021) = 1.8331... * 0.014491... = 0.026564...
    half = t.ppf(0.95, 9) * math.sqrt(0.00021)
    low, high = corrected_ci(scores, n_train=90.0, n_eval=22.5, confidence=0.90)
    assert low == pytest.approx(0.71 - half, rel=1e-12)
    assert high == pytest.approx(0.71 + half, rel=1e-12)


@pytest.mark.parametrize(
    "n_folds, n_repeats",
    [(5, 1), (10, 1), (5, 2), (10, 10)],
)
def test_corrected_interval_is_wider_than_naive(n_folds, n_repeats):
    rng = np.random.default_rng(n_folds * 100 + n_repeats)
    scores = rng.normal(0.8, 0.03, size=n_folds * n_repeats)
    n_rows = 1000
    n_eval = n_rows / n_folds
    n_train = n_rows - n_eval
    J = len(scores)
    low, high = corrected_ci(scores, n_train, n_eval)

    naive_half = t.ppf(0.975, J - 1) * np.std(scores, ddof=1) / math.sqrt(J)
    corrected_half = (high - low) / 2
    assert corrected_half > naive_half
    # The ratio is exactly sqrt((1/J + n_eval/n_train) / (1/J)) = sqrt(1 + J / (k - 1)): for 5-fold CV
    # run once that is sqrt(1 + 5/4) = 1.5, and it keeps growing with repeats, which the naive interval hides.
    assert corrected_half / naive_half == pytest.approx(math.sqrt(1 + J / (n_folds - 1)), rel=1e-9)


def test_higher_confidence_gives_wider_interval():
    widths = [np.diff(corrected_ci(FIVE_SCORES, 80, 20, confidence=c))[0] for c in (0.8, 0.9, 0.95, 0.99)]
    assert widths == sorted(widths) and len(set(widths)) == 4


@pytest.mark.parametrize("value", [0.1, 0.85, 1.0])
def test_zero_variance_gives_a_point_interval(value):
    # np.mean([0.1] * 4) is 0.10000000000000002: the reported mean must still be the score itself.
    assert corrected_ci([value] * 4, 80, 20) == (value, value)
    assert summarize([value] * 4, 80, 20) == {"mean": value, "std": 0.0, "ci95": [value, value]}


@pytest.mark.parametrize("values", [[], [0.9]])
def test_fewer_than_two_scores_have_no_interval(values):
    low, high = corrected_ci(values, 80, 20)
    assert math.isnan(low) and math.isnan(high)


def test_single_score_summary():
    summary = summarize(np.array([0.9], dtype=np.float32), 80, 20)
    assert summary["mean"] == pytest.approx(0.9)
    assert math.isnan(summary["std"])
    assert all(math.isnan(x) for x in summary["ci95"])


def test_summary_is_plain_python_and_serialises():
    summary = summarize(np.array(FIVE_SCORES, dtype=np.float32), n_train=np.float64(80), n_eval=np.int64(20))
    assert set(summary) == {"mean", "std", "ci95"}
    for value in [summary["mean"], summary["std"], *summary["ci95"]]:
        assert type(value) is float
    assert isinstance(summary["ci95"], list) and len(summary["ci95"]) == 2
    # sample std (ddof=1): sqrt(0.00625) = 0.0790569...
    assert summary["std"] == pytest.approx(math.sqrt(0.00625), rel=1e-6)
    assert summary["mean"] == pytest.approx(0.85, rel=1e-6)
    assert json.loads(json.dumps(summary)) == summary


def test_summary_interval_key_follows_confidence():
    summary = summarize(FIVE_SCORES, 80, 20, confidence=0.9)
    assert "ci90" in summary and "ci95" not in summary
    assert summary["ci90"] == list(corrected_ci(FIVE_SCORES, 80, 20, confidence=0.9))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n_train": 0, "n_eval": 20}, "n_train"),
        ({"n_train": 80, "n_eval": -1}, "n_eval"),
        ({"n_train": 80, "n_eval": 20, "confidence": 1.0}, "confidence"),
        ({"n_train": 80, "n_eval": 20, "confidence": 95}, "confidence"),
    ],
)
def test_invalid_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        corrected_ci(FIVE_SCORES, **kwargs)
    with pytest.raises(ValueError, match=word):
        summarize(FIVE_SCORES, **kwargs)


def test_summarize_needs_a_score():
    with pytest.raises(ValueError, match="at least one"):
        summarize([], 80, 20)
