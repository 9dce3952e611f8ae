"""The per-row interval (issue 26, `ci_method="row"`, the default): recomputed from saved predictions in an
independent way, its fall-backs (an unstable learner, dependent rows, a metric that is not a per-row mean, no
predictions), the method a saved run keeps, the loss above 0, and the per-row paired comparison."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, norm

from hf_tlcv.results import CVResults, FoldResult, predictions_frame
from hf_tlcv.stats import INSTABILITY_P, row_interval, row_paired_test
from hf_tlcv.studies.study import compare

Z = norm.ppf(0.975)


def _run(right, labels, folds, repeats, n_rows, config=None, train=None, loss_scale=1.0, probs=None):
    """CVResults of a classifier whose row `i` in fold `j` is right iff `right[j][i]`, with predicted probability
    0.9 (scaled for the loss) of the predicted class."""
    results = []
    for j, (rows, fold, repeat) in enumerate(zip(folds, range(len(folds)), repeats)):
        y = labels[rows]
        p_right = 0.9 if probs is None else probs[j]
        p1 = np.where(right[j], np.where(y == 1, p_right, 1 - p_right), np.where(y == 1, 1 - p_right, p_right))
        frame = predictions_frame(rows, repeat, fold, y, np.stack([1 - p1, p1], axis=1))
        per_row_loss = -np.log(np.where(y == 1, p1, 1 - p1))
        metrics = {"loss": float(per_row_loss.mean()) * loss_scale, "accuracy": float(np.mean(right[j]))}
        results.append(FoldResult(repeat=repeat, fold=fold, n_train=n_rows - len(rows), n_eval=len(rows),
                                  eval_metrics=metrics, predictions=frame,
                                  train_metrics={} if train is None else {"accuracy": float(train[j])}))
    return CVResults(results, config=config)


def _kfold(n, k, r, rng):
    folds, repeats = [], []
    for repeat in range(r):
        order = rng.permutation(n)
        for j in range(k):
            folds.append(np.sort(order[j::k]))
            repeats.append(repeat)
    return folds, repeats


def _by_hand(oof: pd.DataFrame, n_train: float) -> tuple[float, float]:
    """The per-row Wilson interval from a predictions frame, written out with pandas (no hf_tlcv code)."""
    oof = oof.assign(right=(oof["prediction"] == oof["label"]).astype(float))
    per_fold = oof.groupby(["repeat", "fold"])["right"]
    means, variances, sizes = per_fold.mean(), per_fold.var(ddof=1), per_fold.size()
    m = means.mean()
    row_var = oof.groupby("row")["right"].mean().var(ddof=1) / oof["row"].nunique()
    deviations = means - means.groupby(level="repeat").transform("mean")
    spread = (deviations**2).sum() / (len(means) - means.index.get_level_values("repeat").nunique())
    excess = max(0.0, spread - (variances / sizes).mean())
    variance = row_var + excess * (1 / len(means) + sizes.mean() / n_train)
    n_eff = m * (1 - m) / variance
    # Wilson: the mu with (m - mu)^2 <= Z^2 mu (1 - mu) / n_eff, solved as a quadratic in mu
    a, b, c = 1 + Z**2 / n_eff, -(2 * m + Z**2 / n_eff), m * m
    disc = math.sqrt(b * b - 4 * a * c)
    return ((-b - disc) / (2 * a), (-b + disc) / (2 * a))


@pytest.mark.parametrize("n, k, r, p_right", [(120, 5, 1, 0.8), (90, 3, 2, 0.7), (200, 10, 3, 0.9)])
def test_interval_recomputed_from_saved_predictions(tmp_path, n, k, r, p_right):
    rng = np.random.default_rng(n + k + r)
    labels = rng.integers(0, 2, n)
    folds, repeats = _kfold(n, k, r, rng)
    right = [rng.random(len(rows)) < p_right for rows in folds]
    _run(right, labels, folds, repeats, n).save(tmp_path)
    loaded = CVResults.load(tmp_path)
    summary = loaded.summary["accuracy"]
    assert summary["ci_method"] == "row_wilson" and "fallback" not in summary
    assert summary["ci95"] == pytest.approx(_by_hand(loaded.oof_predictions, n - n / k), abs=1e-10)
    # narrower than the corrected interval of the same folds, which the run would have given before
    corrected = CVResults(loaded.folds, config={"ci_method": "corrected"}).summary["accuracy"]
    assert np.diff(summary["ci95"])[0] < np.diff(corrected["ci95"])[0]
    assert corrected["ci_method"] == "corrected_wilson"


def test_all_rows_right_keeps_the_wilson_width_of_the_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 100)
    folds, repeats = _kfold(100, 5, 1, rng)
    summary = _run([np.ones(len(f), bool) for f in folds], labels, folds, repeats, 100).summary["accuracy"]
    assert summary["ci_method"] == "row_wilson"
    assert summary["ci95"] == pytest.approx([100 / (100 + Z**2), 1.0])


def _one_nn_run(n=120, k=5, seed=0):
    """1-nearest-neighbour on pure noise: every fold model is right on all its training rows and at chance on new
    rows (its fit follows individual rows: the unstable learner of the issue)."""
    rng = np.random.default_rng(seed)
    x, labels = rng.standard_normal((n, 3)), rng.integers(0, 2, n)
    folds, repeats = _kfold(n, k, 1, rng)
    right, train = [], []
    for rows in folds:
        rest = np.setdiff1d(np.arange(n), rows)
        nearest = rest[np.argmin(((x[rows, None] - x[None, rest]) ** 2).sum(-1), axis=1)]
        right.append(labels[nearest] == labels[rows])
        train.append(1.0)  # each training row is its own nearest neighbour
    return right, labels, folds, repeats, train


def test_unstable_learner_falls_back_to_the_corrected_interval_and_says_so(tmp_path):
    right, labels, folds, repeats, train = _one_nn_run()
    unstable = _run(right, labels, folds, repeats, 120, train=train)
    summary = unstable.summary["accuracy"]
    assert summary["ci_method"] == "corrected_wilson" and summary["fallback"].startswith("unstable: ")
    assert summary["instability"]["optimism_se"] > 2.0
    corrected = CVResults(unstable.folds, config={"ci_method": "corrected"}).summary["accuracy"]
    assert summary["ci95"] == corrected["ci95"]
    unstable.save(tmp_path)
    assert CVResults.load(tmp_path).to_dict()["diagnostics"]["interval"]["metrics"]["accuracy"]["fallback"] == \
        summary["fallback"]
    # the same predictions from a learner whose training rows fit no better than new ones keep the per-row interval
    honest = _run(right, labels, folds, repeats, 120, train=[np.mean(r) for r in right]).summary["accuracy"]
    assert honest["ci_method"] == "row_wilson"


def test_fold_scores_spread_beyond_their_rows_falls_back():
    # Folds alternately near-perfect and near-chance: the rows inside a fold cannot explain that spread.
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    folds, repeats = _kfold(200, 5, 1, rng)
    right = [rng.random(len(rows)) < (0.98 if j % 2 else 0.55) for j, rows in enumerate(folds)]
    summary = _run(right, labels, folds, repeats, 200).summary["accuracy"]
    assert summary["instability"]["p_value"] < INSTABILITY_P
    assert "fallback" in summary and "beyond what their rows explain" in summary["fallback"]


@pytest.mark.parametrize("config, diagnostics, word", [
    ({"fold_strategy": "group", "ci_method": "row"}, {}, "group"),
    ({"fold_strategy": "auto", "resolved_fold_strategy": "timeseries", "ci_method": "row"}, {}, "time"),
    ({"fold_strategy": "kfold", "ci_method": "row"},
     {"dependence": {"source": "detected", "kind": "space", "p_value": 0.001, "detail": "errors cluster in space"}},
     "space"),
])
def test_dependent_rows_fall_back(config, diagnostics, word):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 100)
    folds, repeats = _kfold(100, 5, 1, rng)
    right = [rng.random(len(rows)) < 0.8 for rows in folds]
    cv = _run(right, labels, folds, repeats, 100, config=config)
    cv.diagnostics.update(diagnostics)
    for metric in ("accuracy", "loss"):
        assert cv.summary[metric]["ci_method"].startswith("corrected_")
        assert word in cv.summary[metric]["fallback"]


def test_each_run_keeps_the_method_it_was_made_with(tmp_path):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 100)
    folds, repeats = _kfold(100, 5, 1, rng)
    right = [rng.random(len(rows)) < 0.8 for rows in folds]
    methods = {}
    for name, config in (("row", {"ci_method": "row"}), ("corrected", {"ci_method": "corrected"}),
                         ("before", {"n_folds": 5})):  # a config saved before the choice existed
        _run(right, labels, folds, repeats, 100, config=config).save(tmp_path / name)
        methods[name] = CVResults.load(tmp_path / name).summary["accuracy"]["ci_method"]
    assert methods == {"row": "row_wilson", "corrected": "corrected_wilson", "before": "corrected_wilson"}


def test_loss_interval_stays_above_zero():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 100)
    folds, repeats = _kfold(100, 5, 1, rng)
    right = [np.ones(len(rows), bool) for rows in folds]
    # confident right predictions: per-row losses 0.001-0.08, as in the corrected [-0.040, 0.094]
    probs = [rng.uniform(0.923, 0.999, len(rows)) for rows in folds]
    cv = _run(right, labels, folds, repeats, 100, probs=probs)
    row, corrected = cv.summary["loss"], CVResults(cv.folds, config={"ci_method": "corrected"}).summary["loss"]
    assert row["ci_method"] == "row_log" and corrected["ci_method"] == "corrected_log"
    for s in (row, corrected):
        assert 0.0 < s["ci95"][0] < s["mean"] < s["ci95"][1]
    # a loss that is not the plain mean of the per-row cross-entropy (label smoothing) keeps the corrected one
    smoothed = _run(right, labels, folds, repeats, 100, probs=probs, loss_scale=1.3).summary["loss"]
    assert smoothed["ci_method"] == "corrected_log" and "do not reproduce" in smoothed["fallback"]


def test_macro_metrics_keep_the_corrected_interval():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 100)
    folds, repeats = _kfold(100, 5, 1, rng)
    cv = _run([rng.random(len(rows)) < 0.8 for rows in folds], labels, folds, repeats, 100)
    for f in cv.folds:
        f.eval_metrics["f1"] = f.eval_metrics["accuracy"] - 0.01
    assert cv.summary["f1"]["ci_method"] == "corrected_wilson" and "fallback" not in cv.summary["f1"]


def test_row_interval_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 2 folds"):
        row_interval([[1.0, 0.0]])
    with pytest.raises(ValueError, match="fold_rows"):
        row_interval([[1.0, 0.0], [1.0, 1.0]], fold_repeats=[0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        row_interval([[1.0, 2.0], [1.0, 1.0]], bounded=True)


def test_paired_comparison_is_per_row_with_the_mcnemar_floor():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 200)
    folds, repeats = _kfold(200, 5, 1, rng)
    right_b = [rng.random(len(rows)) < 0.8 for rows in folds]
    flip = [rng.random(len(rows)) < 0.1 for rows in folds]
    right_a = [np.where(f, ~b, b) for f, b in zip(flip, right_b)]
    a, b = (_run(r, labels, folds, repeats, 200) for r in (right_a, right_b))
    c = compare(a, b)
    assert c["method"] == "row" and c["df"] is None
    d = np.concatenate([x.astype(float) - y.astype(float) for x, y in zip(right_a, right_b)])
    discordant = int(np.count_nonzero(d))
    # by hand: z-test of the mean difference; its variance is the per-row one plus the fold differences' spread
    # beyond their rows (Nadeau-Bengio factor), the se floored at McNemar's sqrt(N + 1) / n
    per_fold = [x.astype(float) - y.astype(float) for x, y in zip(right_a, right_b)]
    excess = max(0.0, np.var([f.mean() for f in per_fold], ddof=1) - np.mean([f.var(ddof=1) / 40 for f in per_fold]))
    se = max(math.sqrt(d.var(ddof=1) / 200 + excess * (1 / 5 + 40 / 160)), math.sqrt(discordant + 1) / 200)
    wins = int((d > 0).sum())
    p_exact = binomtest(wins, discordant, 0.5).pvalue if discordant else 1.0
    assert c["p_value"] == pytest.approx(max(2 * norm.sf(abs(d.mean()) / se), p_exact), rel=1e-9)
    assert c["ci95"] == pytest.approx([d.mean() - Z * se, d.mean() + Z * se])
    assert c["n_discordant"] == discordant
    # identical predictions: no difference, p = 1, and still an interval of positive width
    same = row_paired_test([np.zeros(40)] * 5, bounded=True)
    assert same["p_value"] == 1.0 and same["ci95"][1] - same["ci95"][0] > 0


def test_simulated_coverage_of_a_stable_learner():
    # Nearest centroid on two Gaussian classes (closed-form truth), 5-fold CV on 100 rows: the per-row interval
    # covers the expected accuracy at the fold training size and is narrower than the corrected one.
    from scipy.special import ndtr

    rng = np.random.default_rng(9)
    n, k, sims, shift = 100, 5, 300, 1.0
    labels = np.repeat([0, 1], n // 2)
    folds, _ = _kfold(n, k, 1, rng)
    draws = rng.standard_normal((200_000, 2, 2)) / math.sqrt(n * (k - 1) / k / 2)
    means = draws + np.array([[-shift, 0.0], [shift, 0.0]])
    w = means[:, 1] - means[:, 0]
    c = (w * (means[:, 0] + means[:, 1])).sum(-1) / 2
    half = w[:, 0] * shift
    norm_w = np.linalg.norm(w, axis=-1)
    truth = float(np.mean(0.5 * (ndtr((half - c) / norm_w) + ndtr((c + half) / norm_w))))
    covered, widths = [], []
    for _ in range(sims):
        x = rng.standard_normal((n, 2)) + np.where(labels[:, None] == 1, [shift, 0.0], [-shift, 0.0])
        right = []
        for rows in folds:
            rest = np.setdiff1d(np.arange(n), rows)
            m0, m1 = x[rest][labels[rest] == 0].mean(0), x[rest][labels[rest] == 1].mean(0)
            right.append((((x[rows] - m1) ** 2).sum(1) < ((x[rows] - m0) ** 2).sum(1)) == (labels[rows] == 1))
        low, high = row_interval([r.astype(float) for r in right], folds, bounded=True)["ci95"]
        covered.append(low <= truth <= high)
        widths.append(high - low)
    # 300 data sets: a coverage of 0.95 lands above 0.91 with probability > 0.999
    assert np.mean(covered) >= 0.91
    assert np.median(widths) < 0.2  # the corrected interval is about 0.28 wide here


def test_per_class_precision_and_recall_follow_the_same_rule():
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 2, 200)
    folds, repeats = _kfold(200, 5, 1, rng)
    right = [rng.random(len(rows)) < 0.8 for rows in folds]
    row, corrected = (_run(right, labels, folds, repeats, 200, config={"ci_method": m}).per_class
                      for m in ("row", "corrected"))
    assert row["interval"].tolist() == ["row", "row"] and corrected["interval"].tolist() == ["corrected"] * 2
    # recall of class 1 by hand: the per-row interval of the right/wrong of the rows labelled 1, fold by fold
    oof = _run(right, labels, folds, repeats, 200).oof_predictions
    ones = [part[part["label"] == 1] for _, part in oof.groupby("fold", sort=True)]
    expected = row_interval([(p["prediction"] == p["label"]).to_numpy(float) for p in ones],
                            [p["row"].to_numpy() for p in ones], bounded=True, n_train=160.0)["ci95"]
    assert row.loc[1, ["recall_low", "recall_high"]].tolist() == pytest.approx(expected)
    assert row.loc[1, ["f1_low", "f1_high"]].tolist() == corrected.loc[1, ["f1_low", "f1_high"]].tolist()
    assert (row["recall_high"] - row["recall_low"] < corrected["recall_high"] - corrected["recall_low"]).all()


def test_per_class_falls_back_with_the_summary():
    right, labels, folds, repeats, train = _one_nn_run()
    table = _run(right, labels, folds, repeats, 120, train=train).per_class
    assert table["interval"].tolist() == ["corrected", "corrected"]


def test_a_default_run_records_its_interval_and_keeps_it_on_load(tmp_path):
    # a real KFoldTrainer run with the default settings: ci_method="row" is saved with the run, the summary's
    # accuracy carries the per-row interval or the corrected one with its reason, and both survive a reload
    from conftest import image_dataset, make_config, tiny_model

    from hf_tlcv import KFoldTrainer

    out = tmp_path / "cv"
    args = make_config(out, num_train_epochs=1, finetune_strategy="linear_probe")
    assert args.ci_method == "row"
    results = KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset()).cross_validate()
    accuracy = results.summary["accuracy"]
    assert accuracy["ci_method"] == "row_wilson" or (accuracy["ci_method"] == "corrected_wilson"
                                                     and accuracy["fallback"])
    assert "optimism" in accuracy["instability"] and accuracy["instability"]["optimism"] is not None
    saved = json.loads((out / "cv_results.json").read_text())
    assert saved["config"]["ci_method"] == "row"
    assert saved["diagnostics"]["interval"]["metrics"]["accuracy"]["ci_method"] == accuracy["ci_method"]
    assert CVResults.load(out).summary["accuracy"] == accuracy
