"""Corrected resampled intervals (Nadeau & Bengio 2003) against hand arithmetic; the evaluation-sample floors,
bounded intervals and refusals of issue 14; the nested interval (Bates, Hastie & Tibshirani) against a brute-force
recomputation; small simulations with known truth; the simulation benchmark's quick mode."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm, t, ttest_rel

from hf_tlcv.folds import split_indices
from hf_tlcv.results import CVResults, FoldResult
from hf_tlcv.stats import (
    adjust_pvalues,
    bayesian_correlated_ttest,
    corrected_ci,
    corrected_paired_ttest,
    is_bounded_metric,
    nested_cv_errors,
    nested_cv_fits,
    nested_cv_interval,
    summarize,
)

Z = norm.ppf(0.975)

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


@pytest.mark.parametrize("value", [0.0, 0.1, 0.85, 1.0])
def test_zero_variance_keeps_a_width_from_the_evaluated_rows(value):
    # Issue 14: equal fold scores used to give the point [value, value]. A bounded metric now gets the Wilson
    # interval of the n = 80 + 20 = 100 evaluated rows: (p - mu)² <= z² mu (1 - mu) / 100, solved for mu.
    low, high = corrected_ci([value] * 4, 80, 20, bounded=True)
    a = Z**2 / 100
    center = (value + a / 2) / (1 + a)
    half = Z / (1 + a) * math.sqrt(value * (1 - value) / 100 + Z**2 / (4 * 100**2))
    assert (low, high) == pytest.approx((max(0.0, center - half), min(1.0, center + half)), abs=1e-12)
    assert 0.0 <= low < high <= 1.0 and low <= value <= high
    # np.mean([0.1] * 4) is 0.10000000000000002: the reported mean must still be the score itself.
    summary = summarize([value] * 4, 80, 20, bounded=True)
    assert summary["mean"] == value and summary["std"] == 0.0 and summary["ci95"] == [low, high]
    assert summary["ci_method"] == "corrected_wilson"
    # An unbounded metric has no floor: its fold scores alone cannot say how uncertain their mean is.
    assert all(math.isnan(x) for x in corrected_ci([value] * 4, 80, 20))
    assert all(math.isnan(x) for x in summarize([value] * 4, 80, 20)["ci95"])


def test_all_folds_perfect_gives_the_wilson_bound_of_the_rows():
    # 5 folds at accuracy 1.0 on 100 rows: [100 / (100 + z²), 1] = [0.963, 1]; 500 rows: [0.9924, 1]
    assert corrected_ci([1.0] * 5, 80, 20, bounded=True) == pytest.approx((100 / (100 + Z**2), 1.0), abs=1e-12)
    assert corrected_ci([1.0] * 5, 400, 100, bounded=True) == pytest.approx((500 / (500 + Z**2), 1.0), abs=1e-12)
    # n_rows overrides n_train + n_eval (e.g. folds that do not evaluate every row)
    assert corrected_ci([1.0] * 5, 80, 20, bounded=True, n_rows=50)[0] == pytest.approx(50 / (50 + Z**2), abs=1e-12)


def test_bounded_interval_is_the_envelope_of_two_wilson_intervals_by_hand():
    # FIVE_SCORES: m = 0.85, var_corr = 0.0028125 (see the first test), so n_eff = 0.85 * 0.15 / 0.0028125 = 45.33
    # corrected Wilson with q = t(0.975, 4) at n_eff; floor Wilson with q = z at n = 100 rows. The first is wider.
    def wilson(p, n, q):
        a = q * q / n
        center, half = (p + a / 2) / (1 + a), q / (1 + a) * math.sqrt(p * (1 - p) / n + q * q / (4 * n * n))
        return center - half, center + half

    corrected = wilson(0.85, 0.85 * 0.15 / 0.0028125, t.ppf(0.975, 4))
    floor = wilson(0.85, 100, Z)
    expected = (min(corrected[0], floor[0]), max(corrected[1], floor[1]))
    assert expected == pytest.approx(corrected)  # the fold spread dominates here
    assert corrected_ci(FIVE_SCORES, 80, 20, bounded=True) == pytest.approx(expected, rel=1e-12)
    # Inside [0, 1] and asymmetric towards the bound; the unbounded interval reached 0.9972.
    low, high = corrected_ci(FIVE_SCORES, 80, 20, bounded=True)
    assert 0.85 - low > high - 0.85
    # scores near 1 that the t-interval pushes past 1 stay inside with the Wilson form
    near = [1.0, 1.0, 0.95, 1.0, 0.9]
    assert corrected_ci(near, 80, 20)[1] > 1.0
    assert corrected_ci(near, 80, 20, bounded=True)[1] <= 1.0


@pytest.mark.parametrize("seed", range(6))
def test_bounded_intervals_stay_in_range_with_positive_width(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        k, r = int(rng.integers(2, 11)), int(rng.integers(1, 4))
        n_eval = int(rng.integers(5, 200))
        p = float(rng.choice([0.0, 0.01, 0.5, 0.9, 0.99, 1.0]))
        scores = rng.binomial(n_eval, p, size=k * r) / n_eval
        low, high = corrected_ci(scores, n_eval * (k - 1), n_eval, bounded=True)
        assert 0.0 <= low < high <= 1.0
        assert low <= float(np.mean(scores)) <= high


def test_bounded_refuses_scores_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"bounded=False"):
        corrected_ci([0.5, 1.2, 0.9], 80, 20, bounded=True)
    with pytest.raises(ValueError, match="n_rows"):
        corrected_ci(FIVE_SCORES, 80, 20, bounded=True, n_rows=0)


@pytest.mark.parametrize("name, bounded", [
    ("accuracy", True), ("eval_accuracy", True), ("f1", True), ("f1_macro", True), ("precision", True),
    ("recall", True), ("top5_accuracy", True), ("roc_auc", True), ("loss", False), ("eval_loss", False),
    ("matthews_correlation", False), ("runtime", False), ("f10", False),
])
def test_is_bounded_metric(name, bounded):
    assert is_bounded_metric(name) is bounded
    if bounded:  # a bounded name with values off [0, 1] (an accuracy in percent) is treated as unbounded
        assert is_bounded_metric(name, [0.5, 0.9]) and not is_bounded_metric(name, [50.0, 90.0])


def test_cvresults_summary_uses_the_bounded_interval_and_rows_per_repeat():
    # 2 repeats x 5 folds of 20 rows: 100 distinct rows, each evaluated twice -> the floor counts 100 rows, not 200
    folds = [FoldResult(repeat=r, fold=f, n_train=80, n_eval=20, eval_metrics={"accuracy": 1.0, "loss": 0.01})
             for r in range(2) for f in range(5)]
    summary = CVResults(folds).summary
    assert summary["accuracy"]["ci95"] == pytest.approx([100 / (100 + Z**2), 1.0], abs=1e-12)
    # without saved predictions the per-row default falls back to the corrected interval and says so
    assert summary["accuracy"]["ci_method"] == "corrected_wilson" and summary["loss"]["ci_method"] == "corrected_log"
    assert "predictions" in summary["accuracy"]["fallback"]
    assert all(math.isnan(x) for x in summary["loss"]["ci95"])
    assert json.loads(json.dumps(CVResults(folds).to_dict()))["summary"]["accuracy"]["mean"] == 1.0


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
    assert set(summary) == {"mean", "std", "ci95", "ci_method"} and summary["ci_method"] == "corrected_t"
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
    # Issue 14: equal differences used to give t = ±inf and p = 0. Four folds of 32 rows, each favouring one side
    # by exactly one row: n = 96 + 32 = 128 rows, at least N = 128 * 1/32 = 4 discordant rows, all one way.
    b = [0.5, 0.25, 0.75, 0.5]
    a = [x + sign * 0.03125 for x in b]  # a power-of-two shift keeps every difference exactly equal
    result = corrected_paired_ttest(a, b, 96, 32, bounded=True)
    assert result["mean_diff"] == sign * 0.03125 and result["std_diff"] == 0.0 and result["df"] == 3
    # exact McNemar: 2 * P(Bin(4, 1/2) <= 0) = 2 / 16; the floor se is sqrt(4 + 1) / 128
    assert result["p_value"] == pytest.approx(2 / 16, rel=1e-12)
    assert result["p_value"] == pytest.approx(binomtest(4, 4).pvalue, rel=1e-12)
    assert result["t"] == pytest.approx(sign * 0.03125 / (math.sqrt(5) / 128), rel=1e-12)
    half = Z * math.sqrt(5) / 128
    assert result["ci95"] == pytest.approx([sign * 0.03125 - half, sign * 0.03125 + half], rel=1e-12)
    # an unbounded metric (the loss) has no floor: the test cannot be answered, and says so with nan
    unbounded = corrected_paired_ttest(a, b, 96, 32)
    assert all(math.isnan(unbounded[key]) for key in ("t", "p_value")) and math.isnan(unbounded["ci95"][0])


def test_corrected_paired_ttest_identical_scores():
    unbounded = corrected_paired_ttest(PAIR_A, PAIR_A, 80, 20)
    assert {k: unbounded[k] for k in ("mean_diff", "std_diff", "t", "df", "p_value")} == {
        "mean_diff": 0.0, "std_diff": 0.0, "t": 0.0, "df": 4, "p_value": 1.0}
    assert all(math.isnan(x) for x in unbounded["ci95"])  # no zero-width [0, 0]
    # bounded: no discordant row among 100 still leaves ±z * sqrt(0 + 1) / 100 (n rows never prove equality)
    bounded = corrected_paired_ttest(PAIR_A, PAIR_A, 80, 20, bounded=True)
    assert bounded["p_value"] == 1.0 and bounded["ci95"] == pytest.approx([-Z / 100, Z / 100], rel=1e-12)


def test_mcnemar_floor_with_counted_discordant_rows():
    # n = 100 rows; A right and B wrong on 7 rows, the reverse on 2: N = 9, mean difference 5 / 100.
    # Fold differences consistent with that (5 folds of 20 rows): +1, +2, 0, +1, +1 rows.
    b = [0.80, 0.75, 0.85, 0.80, 0.90]
    a = [0.85, 0.85, 0.85, 0.85, 0.95]
    counted = corrected_paired_ttest(a, b, 80, 20, bounded=True, n_discordant=9)
    p_t = corrected_paired_ttest(a, b, 80, 20)["p_value"]
    assert counted["p_value"] == pytest.approx(max(p_t, binomtest(7, 9).pvalue), rel=1e-12)
    # 2 * (1 + 9 + 36) / 512 = 0.18: McNemar decides here, the fold spread alone would claim p = 0.10
    assert binomtest(7, 9).pvalue == pytest.approx(2 * 46 / 512) and p_t < counted["p_value"]
    # fewer discordant rows than the fold scores need are raised to the smallest consistent count, 5
    assert corrected_paired_ttest(a, b, 80, 20, bounded=True, n_discordant=1)["p_value"] == pytest.approx(
        max(p_t, binomtest(5, 5).pvalue), rel=1e-12)
    # averages over repeats are not integers: the regularized incomplete beta interpolates monotonically
    ps = [corrected_paired_ttest(a, b, 80, 20, bounded=True, n_discordant=x)["p_value"] for x in (9, 9.5, 10, 11)]
    assert ps == sorted(ps) and len(set(ps)) == 4
    with pytest.raises(ValueError, match="n_discordant"):
        corrected_paired_ttest(a, b, 80, 20, bounded=True, n_discordant=-1)


def test_p_value_is_never_exactly_zero():
    # 10 folds, A always right and B always wrong on a million rows: the exact p underflows, the reported one does not
    a, b = [1.0] * 10, [0.0] * 10
    result = corrected_paired_ttest(a, b, 900_000, 100_000, bounded=True)
    assert 0.0 < result["p_value"] < 1e-300
    bayes = bayesian_correlated_ttest(a, b, 900_000, 100_000, bounded=True)
    assert bayes["p_a_better"] <= 1.0 and bayes["p_b_better"] >= 0.0
    jittered = [1.0 - 1e-9 * i for i in range(10)]
    assert corrected_paired_ttest(jittered, b, 900_000, 100_000)["p_value"] > 0.0


def test_two_fold_scores_are_refused_with_the_fix():
    for test in (corrected_paired_ttest, bayesian_correlated_ttest):
        with pytest.raises(ValueError, match=r"at least 3 pairs.*n_repeats=2"):
            test([0.8, 0.9], [0.7, 0.8], 50, 50)


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


@pytest.mark.parametrize("shift, rope", [(0.03125, 0.01), (-0.03125, 0.01), (0.03125, 0.05), (0.0, 0.0)])
def test_bayesian_zero_variance_is_no_longer_a_point_mass(shift, rope):
    # Issue 14: equal differences used to put probability 1 on one region. Bounded metrics now get the McNemar
    # floor as the posterior scale: Student t, df 3, location m, scale sqrt(N + 1) / n with N = n |m|.
    b = [0.5, 0.25, 0.75, 0.5]
    a = [x + shift for x in b]  # a power-of-two shift keeps every difference exactly equal
    probs = bayesian_correlated_ttest(a, b, 96, 32, rope=rope, bounded=True)
    scale = math.sqrt(128 * abs(shift) + 1) / 128
    assert probs["p_a_better"] == pytest.approx(t.sf(rope, 3, loc=shift, scale=scale), rel=1e-12)
    assert probs["p_b_better"] == pytest.approx(t.cdf(-rope, 3, loc=shift, scale=scale), rel=1e-12)
    assert max(probs.values()) < 1.0 and sum(probs.values()) == pytest.approx(1.0)
    if shift == 0.0:  # a zero difference with rope 0: no side is favoured
        assert probs["p_a_better"] == pytest.approx(0.5) and probs["p_b_better"] == pytest.approx(0.5)
    # unbounded: no variance and no floor, no posterior
    assert all(math.isnan(v) for v in bayesian_correlated_ttest(a, b, 96, 32, rope=rope).values())


def test_bayesian_floor_does_not_touch_a_spread_that_exceeds_it():
    # With many rows the floor sqrt(N + 1) / n is below the corrected scale: the result is the reference test's.
    for bounded in (False, True):
        probs = bayesian_correlated_ttest(TEN_A, TEN_B, 9000, 1000, bounded=bounded, n_discordant=500)
        assert probs == pytest.approx(bayesian_correlated_ttest(TEN_A, TEN_B, 9000, 1000), rel=1e-14)


@pytest.mark.parametrize("test", [corrected_paired_ttest, bayesian_correlated_ttest])
@pytest.mark.parametrize(
    "a, b, n_train, n_eval, word",
    [
        ([0.8, 0.9, 0.7], [0.8, 0.9], 80, 20, "paired"),
        ([0.8], [0.7], 80, 20, "at least 3"),
        ([], [], 80, 20, "at least 3"),
        ([0.8, 0.9], [0.7, 0.8], 80, 20, "at least 3"),
        ([0.8, math.nan, 0.9], [0.7, 0.8, 0.9], 80, 20, "finite"),
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


# --- Nested cross-validation (Bates, Hastie & Tibshirani) -------------------------------------------------


def _ridge_losses(x, y, train, rows):
    """Squared errors on `rows` of a 1-D least-squares line fitted on `train` (a learner with continuous losses)."""
    design = np.stack([np.ones(len(train)), x[train]], axis=1)
    coef = np.linalg.lstsq(design, y[train], rcond=None)[0]
    return (y[rows] - coef[0] - coef[1] * x[rows]) ** 2


def _brute_force_nested(x, y, folds, confidence=0.95):
    """The algorithm written out with its own loops over fold ids (the reference implementation's structure)."""
    n = len(y)
    terms, pair_errors, outer_errors = [], [], []
    for repeat in sorted({f.repeat for f in folds}):
        fold_id = np.empty(n, dtype=int)
        for f in folds:
            if f.repeat == repeat:
                fold_id[f.eval_indices] = f.fold
        n_folds = fold_id.max() + 1
        held = {}
        for f1 in range(n_folds):
            for f2 in range(f1 + 1, n_folds):
                train = np.flatnonzero((fold_id != f1) & (fold_id != f2))
                held[f1, f2] = _ridge_losses(x, y, train, np.flatnonzero(fold_id == f1))
                held[f2, f1] = _ridge_losses(x, y, train, np.flatnonzero(fold_id == f2))
        for f1 in range(n_folds):
            e_out = _ridge_losses(x, y, np.flatnonzero(fold_id != f1), np.flatnonzero(fold_id == f1))
            e_in = np.concatenate([held[f2, f1] for f2 in range(n_folds) if f2 != f1])
            terms.append((e_in.mean() - e_out.mean()) ** 2 - e_out.var(ddof=1) / len(e_out))
            outer_errors.append(e_out)
        pair_errors += [held[key] for key in sorted(held)]
    ho, cv = np.concatenate(pair_errors), np.concatenate(outer_errors)
    mse = max(0.0, np.mean(terms))
    inflation = np.sqrt(mse) / (ho.std(ddof=1) / np.sqrt(n * (n_folds - 1) / n_folds))
    inflation = min(max(inflation, 1.0), np.sqrt(n_folds))
    estimate = ho.mean() - (ho.mean() - cv.mean()) * (1 + ((n_folds - 2) / n_folds) ** 1.5)
    half = norm.ppf((1 + confidence) / 2) * ho.std(ddof=1) / np.sqrt(n) * inflation
    return estimate, (estimate - half, estimate + half), inflation, mse


@pytest.mark.parametrize("n, n_folds, n_repeats", [(40, 4, 1), (53, 5, 2), (31, 3, 3)])
def test_nested_interval_matches_a_brute_force_recomputation(n, n_folds, n_repeats):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = 0.5 * x + rng.standard_t(3, size=n)  # heavy tails: uneven per-row losses
    folds = split_indices(n, "kfold", n_folds=n_folds, n_repeats=n_repeats, seed=n)
    # the library's way: the fits nested_cv_fits lists, their per-row losses, nested_cv_errors, nested_cv_interval
    fits = nested_cv_fits(folds)
    assert len(fits) == n_repeats * n_folds * (n_folds - 1) // 2
    fit_values = {fit["name"]: _ridge_losses(x, y, fit["train_indices"], fit["eval_indices"]) for fit in fits}
    fold_values = {f.name: _ridge_losses(x, y, f.train_indices, f.eval_indices) for f in folds}
    result = nested_cv_interval(*nested_cv_errors(folds, fold_values, fit_values), confidence=0.9)
    estimate, (low, high), inflation, mse = _brute_force_nested(x, y, folds, confidence=0.9)
    assert result["mean"] == pytest.approx(estimate, rel=1e-12)
    assert result["ci90"] == pytest.approx([low, high], rel=1e-12)
    assert result["inflation"] == pytest.approx(inflation, rel=1e-12) and result["mse"] == pytest.approx(mse, rel=1e-12)
    assert result["n_rows"] == n and result["n_folds"] == n_folds and result["n_repeats"] == n_repeats
    assert json.loads(json.dumps(result)) == result and type(result["se"]) is float


def test_nested_fits_train_on_all_but_two_folds():
    folds = split_indices(23, "kfold", n_folds=5, n_repeats=2, seed=0)
    fits = nested_cv_fits(folds)
    assert [fit["name"] for fit in fits[:3]] == ["nested_0_0_1", "nested_0_0_2", "nested_0_0_3"]
    by = {(f.repeat, f.fold): f for f in folds}
    for fit in fits:
        j, k = fit["folds"]
        held = np.union1d(by[fit["repeat"], j].eval_indices, by[fit["repeat"], k].eval_indices)
        assert np.array_equal(fit["eval_indices"], held)
        assert np.array_equal(fit["train_indices"], np.setdiff1d(np.arange(23), held))
    assert len(fits) == 2 * 10  # K (K - 1) / 2 per repeat


@pytest.mark.parametrize("folds, match", [
    (split_indices(20, "kfold", n_folds=2), "at least 3 folds"),
    (split_indices(20, "timeseries", n_folds=4), "k-fold-style"),
    ([], "at least one repeat"),
])
def test_nested_fits_refuse_what_cannot_carry_a_nested_cv(folds, match):
    with pytest.raises(ValueError, match=match):
        nested_cv_fits(folds)


def test_nested_errors_name_what_is_missing():
    folds = split_indices(12, "kfold", n_folds=3)
    fold_values = {f.name: np.zeros(len(f.eval_indices)) for f in folds}
    fit_values = {fit["name"]: np.zeros(len(fit["eval_indices"])) for fit in nested_cv_fits(folds)}
    with pytest.raises(ValueError, match="no per-row values for nested fit 'nested_0_0_1'"):
        nested_cv_errors(folds, fold_values, {})
    with pytest.raises(ValueError, match="fold 'fold_0_0' has 3 per-row values for 4"):
        nested_cv_errors(folds, {**fold_values, "fold_0_0": np.zeros(3)}, fit_values)


def test_nested_interval_of_perfect_predictions_keeps_a_width():
    # Every prediction right: the nested estimate is 1 and sd = 0; bounded gives the Wilson bound of n rows.
    inner = [[np.ones(80) for _ in range(5)]] * 2
    outer = [[np.ones(20) for _ in range(5)]] * 2
    result = nested_cv_interval(inner, outer, bounded=True)
    assert result["mean"] == 1.0 and result["inflation"] == 1.0
    assert result["ci95"] == pytest.approx([100 / (100 + Z**2), 1.0], abs=1e-12)
    assert all(math.isnan(x) for x in nested_cv_interval(inner, outer)["ci95"])  # unbounded: no spread, no interval


def test_nested_interval_bounded_is_wilson_at_the_inflated_size():
    rng = np.random.default_rng(3)
    outer = [[rng.binomial(1, 0.8, 20).astype(float) for _ in range(5)] for _ in range(2)]
    inner = [[rng.binomial(1, 0.75, 80).astype(float) for _ in range(5)] for _ in range(2)]
    plain, bounded = nested_cv_interval(inner, outer), nested_cv_interval(inner, outer, bounded=True)
    n_eff = 100 / plain["inflation"] ** 2
    a = Z**2 / n_eff
    p = plain["mean"]
    center, half = (p + a / 2) / (1 + a), Z / (1 + a) * math.sqrt(p * (1 - p) / n_eff + a / (4 * n_eff))
    assert bounded["ci95"] == pytest.approx([center - half, center + half], rel=1e-12)
    assert 0.0 <= bounded["ci95"][0] < bounded["ci95"][1] <= 1.0


@pytest.mark.parametrize("inner, outer, match", [
    ([[np.ones(10)] * 2], [[np.ones(10)] * 2], "at least 3 outer folds"),
    ([[np.ones(8)] * 3], [[np.ones(4)] * 2], "same number of folds"),
    ([[np.ones(7)] * 3], [[np.ones(4)] * 3], "inner values cover the other 8"),
    ([[np.full(8, 2.0)] * 3], [[np.ones(4)] * 3], "bounded=False"),
    ([], [], "one entry per repeat"),
])
def test_nested_interval_rejects_bad_input(inner, outer, match):
    with pytest.raises(ValueError, match=match):
        nested_cv_interval(inner, outer, bounded=True)


# --- Small simulations with known truth -------------------------------------------------------------------


def test_simulated_near_perfect_folds_are_covered():
    # Known truth p = 0.99; 5 folds of 20 rows: about 1 error in 100 rows, 37% of runs have none at all
    # (and used to get the zero-width interval [1, 1], which misses 0.99).
    rng = np.random.default_rng(0)
    scores = rng.binomial(20, 0.99, size=(2000, 5)) / 20
    bounds = np.array([corrected_ci(row, 80, 20, bounded=True) for row in scores])
    assert np.mean(np.all(scores == 1.0, axis=1)) > 0.3
    covered = (bounds[:, 0] <= 0.99) & (0.99 <= bounds[:, 1])
    assert covered.mean() >= 0.95 and np.all(bounds[:, 1] > bounds[:, 0])
    assert np.all((bounds >= 0.0) & (bounds <= 1.0))


def test_simulated_null_comparisons_keep_their_level():
    # Two variants that disagree on each row with probability 0.04, each way equally often: no true difference.
    # 5 folds of 20 rows. The corrected t-test alone (p = 0 whenever the fold differences are all equal) rejects
    # too often; with McNemar's floor on the counted discordant rows the level holds.
    rng = np.random.default_rng(1)
    discordant = rng.random((2000, 100)) < 0.04
    sign = np.where(rng.random((2000, 100)) < 0.5, 1, -1) * discordant
    diffs = sign.reshape(2000, 5, 20).sum(axis=2) / 20
    b = np.full(5, 0.5)
    rejected, degenerate = 0, 0
    for d, n_disc in zip(diffs, discordant.sum(axis=1)):
        result = corrected_paired_ttest(b + d, b, 80, 20, bounded=True, n_discordant=float(n_disc))
        rejected += result["p_value"] < 0.05
        degenerate += bool(np.all(d == d[0]) and d[0] != 0)
    assert rejected / 2000 <= 0.05
    assert degenerate > 0  # the regime that used to give p = 0 does occur


# --- The simulation benchmark's quick mode ---------------------------------------------------------------


@pytest.mark.integration
def test_simulation_benchmark_quick_mode(tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sim_intervals.py"
    from conftest import load_script

    bench = load_script(path, "sim_intervals")
    report = bench.main(["--quick", "--out", str(tmp_path / "sim")])
    saved = json.loads((tmp_path / "sim.json").read_text())
    assert saved["goals"] == report["goals"]
    goals = report["goals"]
    assert goals["new_zero_width"] == 0.0 and goals["new_outside_01"] == 0.0
    assert goals["nested_zero_width"] == 0.0 and goals["nested_outside_01"] == 0.0 and goals["new_p_zero"] == 0.0
    # today's interval collapses where the model is near-perfect; the paired test of k x r = 2 is refused
    assert goals["today_zero_width"] > 0.1
    assert {c["new"] == "refused" for c in report["paired"] if c["k"] * c["r"] == 2} == {True}
    # the default per-row interval (issue 26): bounded, never of zero width, and the unstable learners are reported
    assert goals["row_zero_width"] == 0.0 and goals["row_outside_01"] == 0.0 and goals["row_cells"] > 0
    assert {c["learner"] for c in report["unstable"]} == {"1nn", "mlp"}
    assert all(c["row_fallback"] > 0.5 for c in report["unstable"] if c["learner"] == "1nn")  # optimism trigger
    markdown = (tmp_path / "sim.md").read_text()
    assert "## Intervals" in markdown and "## Paired tests" in markdown and "## Selection" in markdown
