"""Corrected resampled intervals (Nadeau & Bengio 2003) against hand arithmetic."""

import json
import math

import numpy as np
import pytest
from scipy.stats import t, ttest_rel

from hf_tlcv.stats import (
    adjust_pvalues,
    bayesian_correlated_ttest,
    corrected_ci,
    corrected_paired_ttest,
    summarize,
)

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


# --- Paired comparison of two variants on the same folds ------------------------------------------------

PAIR_A = [0.80, 0.82, 0.85, 0.79, 0.84]
PAIR_B = [0.78, 0.80, 0.80, 0.78, 0.81]
# diffs 0.02, 0.02, 0.05, 0.01, 0.03 -> sum 0.13, J = 5, mean 0.026
# deviations (x 0.001): -6, -6, 24, -16, 4 -> squares 36 + 36 + 576 + 256 + 16 = 920 -> 0.00092
# s_d² = 0.00092 / 4 = 0.00023, s_d = 0.0151657...
# var_corr = 0.00023 * (1/5 + 20/80) = 0.00023 * 0.45 = 0.0001035, sqrt = 0.0101734...
# t = 0.026 / 0.0101734 = 2.5557..., df = 4
PAIR_SE = math.sqrt(0.0001035)
PAIR_T = 0.026 / PAIR_SE

# Ten folds (n_train = 900, n_eval = 100), differences in units of 0.01: 3, -1, 2, 1, 0, 2, 1, -1, 2, 1.
TEN_B = [0.80, 0.81, 0.79, 0.80, 0.82, 0.78, 0.80, 0.81, 0.79, 0.80]
TEN_DIFFS = [0.03, -0.01, 0.02, 0.01, 0.00, 0.02, 0.01, -0.01, 0.02, 0.01]
TEN_A = [b + d for b, d in zip(TEN_B, TEN_DIFFS)]


def test_corrected_paired_ttest_by_hand():
    result = corrected_paired_ttest(PAIR_A, PAIR_B, n_train=80, n_eval=20)
    assert set(result) == {"mean_diff", "std_diff", "t", "df", "p_value", "ci95"}
    assert result["mean_diff"] == pytest.approx(0.026, rel=1e-9)
    assert result["std_diff"] == pytest.approx(math.sqrt(0.00023), rel=1e-9)
    assert result["t"] == pytest.approx(PAIR_T, rel=1e-9)
    assert round(result["t"], 4) == 2.5557
    assert result["df"] == 4
    # two-sided p = 2 * (1 - F_t(2.5557; 4)) = 0.0629...
    assert result["p_value"] == pytest.approx(2 * (1 - t.cdf(PAIR_T, 4)), rel=1e-9)
    # ci95 = 0.026 ± t(0.975, 4) * 0.0101734 = 0.026 ± 2.7764 * 0.0101734 = 0.026 ± 0.028246
    half = t.ppf(0.975, 4) * PAIR_SE
    assert result["ci95"] == pytest.approx([0.026 - half, 0.026 + half], rel=1e-9)
    assert result["ci95"][0] < 0 < result["ci95"][1]  # consistent with p > 0.05


def test_corrected_paired_ttest_is_antisymmetric_and_plain_python():
    ab = corrected_paired_ttest(np.array(PAIR_A, dtype=np.float32), PAIR_B, np.int64(80), np.float64(20))
    ba = corrected_paired_ttest(PAIR_B, PAIR_A, 80, 20)
    for key in ("mean_diff", "std_diff", "t", "p_value"):
        assert type(ab[key]) is float
    assert type(ab["df"]) is int and all(type(x) is float for x in ab["ci95"])
    assert json.loads(json.dumps(ab)) == ab
    assert ba["t"] == pytest.approx(-corrected_paired_ttest(PAIR_A, PAIR_B, 80, 20)["t"], rel=1e-12)
    assert ba["p_value"] == pytest.approx(corrected_paired_ttest(PAIR_A, PAIR_B, 80, 20)["p_value"], rel=1e-12)


def test_naive_ttest_significant_but_corrected_not():
    # d (x 0.01) = 3, -1, 2, 1, 0, 2, 1, -1, 2, 1: sum 10, mean 0.01, J = 10
    # deviations (x 0.01): 2, -2, 1, 0, -1, 1, 0, -2, 1, 0 -> squares 16 -> s_d² = 16e-4 / 9 = 1.7778e-4
    # naive:     t = 0.01 / sqrt(1.7778e-4 / 10) = 0.01 / 0.0042164 = 2.3717 > t(0.975, 9) = 2.2622 -> p ~ 0.042
    # corrected: var_corr = 1.7778e-4 * (1/10 + 100/900) = 1.7778e-4 * 0.21111 = 3.7531e-5
    #            t = 0.01 / 0.0061262 = 1.6323 -> p ~ 0.137
    naive = ttest_rel(TEN_A, TEN_B)
    assert float(naive.statistic) == pytest.approx(0.01 / math.sqrt(16e-4 / 9 / 10), rel=1e-6)
    assert naive.pvalue < 0.05
    result = corrected_paired_ttest(TEN_A, TEN_B, n_train=900, n_eval=100)
    t_hand = 0.01 / math.sqrt(16e-4 / 9 * (1 / 10 + 100 / 900))
    assert result["t"] == pytest.approx(t_hand, rel=1e-6)
    assert result["p_value"] == pytest.approx(2 * (1 - t.cdf(t_hand, 9)), rel=1e-6)
    assert result["p_value"] > 0.05
    assert result["ci95"][0] < 0 < result["ci95"][1]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_corrected_paired_ttest_zero_variance_nonzero_mean(sign):
    b = [0.5, 0.25, 0.75, 0.5]
    a = [x + sign * 0.03125 for x in b]  # a power-of-two shift keeps every difference exactly equal
    result = corrected_paired_ttest(a, b, 80, 20)
    assert result["mean_diff"] == sign * 0.03125 and result["std_diff"] == 0.0
    assert result["t"] == sign * math.inf and result["p_value"] == 0.0 and result["df"] == 3
    assert result["ci95"] == [sign * 0.03125, sign * 0.03125]


def test_corrected_paired_ttest_identical_scores():
    result = corrected_paired_ttest(PAIR_A, PAIR_A, 80, 20)
    assert result == {"mean_diff": 0.0, "std_diff": 0.0, "t": 0.0, "df": 4, "p_value": 1.0, "ci95": [0.0, 0.0]}


def test_bayesian_correlated_ttest_by_hand():
    # posterior: Student t, df = 4, location 0.026, scale = sqrt((1/5 + 0.2/0.8) * 0.00023) = sqrt(0.0001035)
    # (rho = 20 / (80 + 20) = 0.2, rho / (1 - rho) = 0.25 = n_eval / n_train)
    probs = bayesian_correlated_ttest(PAIR_A, PAIR_B, n_train=80, n_eval=20, rope=0.01)
    assert list(probs) == ["p_a_better", "p_equivalent", "p_b_better"]
    # P(diff < -0.01) = F_t((-0.01 - 0.026) / 0.0101734; 4) = F_t(-3.5386; 4)
    p_b = t.cdf((-0.01 - 0.026) / PAIR_SE, 4)
    # P(diff > 0.01) = 1 - F_t((0.01 - 0.026) / 0.0101734; 4) = 1 - F_t(-1.5727; 4)
    p_a = 1 - t.cdf((0.01 - 0.026) / PAIR_SE, 4)
    assert probs["p_b_better"] == pytest.approx(p_b, rel=1e-9)
    assert probs["p_a_better"] == pytest.approx(p_a, rel=1e-9)
    assert probs["p_equivalent"] == pytest.approx(1 - p_a - p_b, rel=1e-9)
    assert all(type(v) is float for v in probs.values())


@pytest.mark.parametrize(
    "a, b, n_train, n_eval",
    [(PAIR_A, PAIR_B, 80, 20), (PAIR_B, PAIR_A, 80, 20), (TEN_A, TEN_B, 900, 100), (TEN_B, TEN_A, 900, 100)],
)
def test_bayesian_sums_to_one_and_agrees_with_frequentist(a, b, n_train, n_eval):
    frequentist = corrected_paired_ttest(a, b, n_train, n_eval)
    for rope in (0.0, 0.005, 0.01, 0.05):
        probs = bayesian_correlated_ttest(a, b, n_train, n_eval, rope=rope)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
        assert all(0.0 <= v <= 1.0 for v in probs.values())
        assert (probs["p_a_better"] > probs["p_b_better"]) == (frequentist["t"] > 0)
    # With rope = 0 the smaller posterior tail equals the one-sided p-value of the corrected test.
    probs = bayesian_correlated_ttest(a, b, n_train, n_eval, rope=0.0)
    assert probs["p_equivalent"] == pytest.approx(0.0, abs=1e-12)
    assert min(probs["p_a_better"], probs["p_b_better"]) == pytest.approx(frequentist["p_value"] / 2, rel=1e-9)


def test_bayesian_equivalence_grows_with_rope():
    ropes = [0.0, 0.002, 0.005, 0.01, 0.02, 0.05]
    equivalent = [bayesian_correlated_ttest(PAIR_A, PAIR_B, 80, 20, rope=r)["p_equivalent"] for r in ropes]
    assert equivalent == sorted(equivalent) and len(set(equivalent)) == len(ropes)
    assert equivalent[-1] > 0.5


@pytest.mark.parametrize(
    "shift, rope, expected",
    [
        (0.03125, 0.01, {"p_a_better": 1.0, "p_equivalent": 0.0, "p_b_better": 0.0}),
        (-0.03125, 0.01, {"p_a_better": 0.0, "p_equivalent": 0.0, "p_b_better": 1.0}),
        (0.03125, 0.05, {"p_a_better": 0.0, "p_equivalent": 1.0, "p_b_better": 0.0}),
        (0.0, 0.0, {"p_a_better": 0.0, "p_equivalent": 1.0, "p_b_better": 0.0}),
    ],
)
def test_bayesian_zero_variance_is_a_point_mass(shift, rope, expected):
    b = [0.5, 0.25, 0.75, 0.5]
    a = [x + shift for x in b]  # a power-of-two shift keeps every difference exactly equal
    assert bayesian_correlated_ttest(a, b, 80, 20, rope=rope) == expected


@pytest.mark.parametrize("test", [corrected_paired_ttest, bayesian_correlated_ttest])
@pytest.mark.parametrize(
    "a, b, n_train, n_eval, word",
    [
        ([0.8, 0.9, 0.7], [0.8, 0.9], 80, 20, "paired"),
        ([0.8], [0.7], 80, 20, "at least 2"),
        ([], [], 80, 20, "at least 2"),
        ([0.8, math.nan], [0.7, 0.8], 80, 20, "finite"),
        (PAIR_A, PAIR_B, 0, 20, "n_train"),
        (PAIR_A, PAIR_B, 80, -5, "n_eval"),
    ],
)
def test_paired_tests_reject_bad_input(test, a, b, n_train, n_eval, word):
    with pytest.raises(ValueError, match=word):
        test(a, b, n_train, n_eval)


@pytest.mark.parametrize("rope", [-0.01, math.nan, math.inf])
def test_bayesian_rejects_bad_rope(rope):
    with pytest.raises(ValueError, match="rope"):
        bayesian_correlated_ttest(PAIR_A, PAIR_B, 80, 20, rope=rope)


def test_holm_by_hand():
    # sorted: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06); back in input order
    assert adjust_pvalues([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06], rel=1e-12)
    assert adjust_pvalues([0.01, 0.04, 0.03], method="holm") == adjust_pvalues([0.01, 0.04, 0.03])


def test_holm_caps_at_one_and_stays_monotone():
    raw = [0.2, 0.001, 0.6, 0.02, 0.5]
    # sorted: 0.001 x5 = 0.005, 0.02 x4 = 0.08, 0.2 x3 = 0.6, 0.5 x2 = 1.0, 0.6 x1 = 0.6 -> max 1.0
    adjusted = adjust_pvalues(raw)
    assert adjusted == pytest.approx([0.6, 0.005, 1.0, 0.08, 1.0], rel=1e-12)
    order = np.argsort(raw)
    assert list(np.array(adjusted)[order]) == sorted(adjusted)
    assert all(a >= p for a, p in zip(adjusted, raw))
    assert all(type(x) is float for x in adjusted)


def test_bonferroni_caps_at_one():
    # m = 3: 0.01 x3 = 0.03, 0.04 x3 = 0.12, 0.5 x3 = 1.5 -> 1.0
    assert adjust_pvalues([0.01, 0.04, 0.5], method="bonferroni") == pytest.approx([0.03, 0.12, 1.0], rel=1e-12)
    # Holm is never larger than Bonferroni
    raw = [0.01, 0.04, 0.03, 0.2]
    assert all(h <= b for h, b in zip(adjust_pvalues(raw), adjust_pvalues(raw, "bonferroni")))


def test_adjust_pvalues_edge_cases():
    assert adjust_pvalues([]) == []
    assert adjust_pvalues([0.3]) == [0.3]
    assert adjust_pvalues(np.array([0.02, 0.02])) == [0.04, 0.04]


def test_adjust_pvalues_rejects_bad_input():
    with pytest.raises(ValueError, match="holm.*bonferroni"):
        adjust_pvalues([0.01], method="fdr_bh")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([0.01, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([math.nan])
