"""Coverage of hf_tlcv's intervals and error rates of its paired tests, by simulation with known truth.

The problem: two Gaussian classes ``N(-delta/2, I)`` and ``N(+delta/2, I)`` with equal priors, ``n / 2`` rows of
each; the learner is the nearest-centroid rule fitted on the training rows. With fitted centroids ``m0, m1`` the rule
is "class 1 iff ``w.x > c``" with ``w = m1 - m0`` and ``c = w.(m0 + m1) / 2``, and its accuracy on the population has
a closed form:

    acc(m0, m1) = (Phi((w.delta/2 - c) / |w|) + Phi((c + w.delta/2) / |w|)) / 2

so the true accuracy of every model the simulation fits is known exactly. The Bayes accuracy is
``Phi(|delta| / 2)``. The expected accuracy of the learner trained on ``m`` rows per class is the average of that
closed form over ``m0 ~ N(-delta/2, I/m)``, ``m1 ~ N(+delta/2, I/m)`` (the centroids of ``m`` Gaussian rows are
exactly Gaussian), computed by Monte Carlo with 400,000 draws (standard error below 1e-4).

Targets (see docs/statistics.md for why):
    - ``mu_train``: the expected accuracy of the learner trained on ``n_train = n (k - 1) / k`` rows. This is what the
      mean of the fold scores estimates without bias and what ``CVResults.summary`` reports an interval for.
    - ``mu_n``: the expected accuracy of the learner trained on all ``n`` rows.
    - ``err_xy``: the accuracy of the model trained on this very data set (all ``n`` rows): the target of the nested
      interval of Bates, Hastie & Tibshirani.

What runs, per cell (``n``, ``k``, ``r``, Bayes accuracy) and simulated data set:
    - folds: ``hf_tlcv.folds.make_folds`` on a ``datasets.Dataset`` (stratified; a new fold seed per chunk of 100
      data sets);
    - ``today``: the interval of ``main`` before issue 14 (Nadeau–Bengio corrected t, a point when the fold scores
      are equal), and ``new``: ``CVResults([FoldResult(...)]).summary["accuracy"]["ci95"]``;
    - ``nested``: ``hf_tlcv.stats.nested_cv_interval`` over the per-row results of the fold fits and of the pair fits
      listed by ``hf_tlcv.stats.nested_cv_fits`` (``k >= 3``);
    - paired tests: ``hf_tlcv.stats.corrected_paired_ttest`` and ``bayesian_correlated_ttest`` with the inputs
      ``hf_tlcv.studies.study.compare`` gives them (``bounded=True``, rows per repeat, discordant rows), for null designs
      (two learners with equal expected accuracy) and alternatives (a true gap); ``today`` is the test of ``main``
      before issue 14 (``t = inf, p = 0`` for equal fold differences);
    - selection: four variants (nearest centroid on the first 2, 3, 4, 5 features), the winner named by
      ``hf_tlcv.studies.study.selection_verdict``, its plain and selection-aware intervals, and the nested-CV estimate of the
      select-then-train procedure computed as ``hf_tlcv.studies.selection`` does.
Fitting is vectorised over the data sets of a chunk; the per-data-set statistics are the library's functions. For
every cell, the first data sets of each chunk also go through the heavy public path (``compare`` on ``CVResults``
with ``predictions_frame`` predictions; ``nested_cv_errors``) and the benchmark stops if any number differs.

Usage:
    python benchmarks/sim_intervals.py                   # the full grid (1000 data sets per cell; see the wall time)
    python benchmarks/sim_intervals.py --quick           # a smoke run in seconds (tests/test_stats.py runs it)
    python benchmarks/sim_intervals.py --sims 300 --out /tmp/sim

Results: ``benchmarks/results/sim_intervals.{json,md}`` (``sim_intervals_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
import zlib
from pathlib import Path

import numpy as np

# Run from a checkout without installing: the library is the folder above.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_tlcv.folds import make_folds  # noqa: E402
from hf_tlcv.results import CVResults, FoldResult, fold_sizes, predictions_frame  # noqa: E402
from hf_tlcv.stats import (  # noqa: E402
    bayesian_correlated_ttest,
    corrected_ci,
    corrected_paired_ttest,
    nested_cv_errors,
    nested_cv_fits,
    nested_cv_interval,
    row_interval,
    row_paired_test,
    summarize,
)
from hf_tlcv.studies.study import compare, selection_verdict  # noqa: E402

DIM = 5  # features each learner of the paired and selection designs uses
NESTED_MIN_REPEATS = 2  # one nested repetition under-covers (measured: 0.91 at n=100); see docs/statistics.md
CHUNK = 100  # data sets sharing one fold assignment (a new fold seed per chunk)
CHECKED = 3  # data sets per chunk that also go through the heavy public path
GAP = 0.05  # Bayes-accuracy gap of the alternatives
ALPHA = 0.05
MC_DRAWS = 400_000

FULL = {"n": (100, 300, 1000), "k": (2, 5, 10), "r": (1, 2, 3), "bayes": (0.75, 0.9, 0.99), "dim": (5, 20),
        "sims": 1000,
        "paired_sims": 1000, "power_sims": 500, "selection": {"n": (100, 300, 1000), "bayes": (0.75, 0.9)},
        "unstable": {"learners": ("1nn", "mlp"), "sims": 500,
                     "cells": ((100, 5, 1, 0.9), (300, 5, 1, 0.9), (300, 10, 1, 0.75), (100, 2, 2, 0.9))}}
QUICK = {"n": (100,), "k": (2, 5), "r": (1, 2), "bayes": (0.75, 0.99), "dim": (5,), "sims": 40, "paired_sims": 40,
         "power_sims": 40, "selection": {"n": (100,), "bayes": (0.75,)},
         "unstable": {"learners": ("1nn", "mlp"), "sims": 20, "cells": ((100, 5, 1, 0.9),)}}


# ---- the problem and its closed forms ---------------------------------------------------------------------------
def separation(bayes: float) -> float:
    """|delta| of two unit-variance Gaussian classes with Bayes accuracy `bayes`: Phi(|delta| / 2) = bayes."""
    from scipy.stats import norm

    return 2.0 * float(norm.ppf(bayes))


def population_accuracy(m0: np.ndarray, m1: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Closed-form accuracy of the nearest-centroid rule with centroids m0, m1 (..., p) on N(-+delta/2, I)."""
    from scipy.special import ndtr

    w = m1 - m0
    threshold = np.einsum("...p,...p->...", w, m0 + m1) / 2.0
    half = np.einsum("...p,p->...", w, delta) / 2.0
    norm_w = np.linalg.norm(w, axis=-1)
    return 0.5 * (ndtr((half - threshold) / norm_w) + ndtr((threshold + half) / norm_w))


@functools.lru_cache(maxsize=None)
def expected_accuracy(delta: tuple, per_class: float, seed: int = 12345) -> float:
    """E[acc] of the nearest-centroid rule trained on `per_class` rows of each class (Monte Carlo, 400k draws)."""
    delta_arr = np.asarray(delta, dtype=np.float64)
    rng = np.random.default_rng(seed)
    total, done = 0.0, 0
    while done < MC_DRAWS:
        size = min(100_000, MC_DRAWS - done)
        m0 = -delta_arr / 2 + rng.standard_normal((size, len(delta_arr))) / math.sqrt(per_class)
        m1 = delta_arr / 2 + rng.standard_normal((size, len(delta_arr))) / math.sqrt(per_class)
        total += float(population_accuracy(m0, m1, delta_arr).sum())
        done += size
    return total / MC_DRAWS


def label_dataset(y: np.ndarray):
    from datasets import ClassLabel, Dataset, Features

    return Dataset.from_dict({"label": y.tolist()}, features=Features({"label": ClassLabel(names=["a", "b"])}))


class Batch:
    """`S` simulated data sets (S, n, D) sharing the labels `y`; fits nearest centroids on row complements."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        self.X, self.y = X, y
        self.onehot = np.stack([y == 0, y == 1], axis=1).astype(np.float64)
        self.sums = np.einsum("snp,nc->scp", X, self.onehot)
        self.counts = self.onehot.sum(axis=0)

    def fit_without(self, held_out: np.ndarray, dims: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Centroids (S, p) of the model trained on every row except `held_out`, on features `dims`."""
        sums = (self.sums - np.einsum("snp,nc->scp", self.X[:, held_out], self.onehot[held_out]))[..., dims]
        means = sums / (self.counts - self.onehot[held_out].sum(axis=0))[None, :, None]
        return means[:, 0], means[:, 1]

    def predict(self, m0: np.ndarray, m1: np.ndarray, rows: np.ndarray, dims: list[int]):
        """(right (S, len(rows)) bool, margin (S, len(rows))) of that model on `rows`."""
        w = m1 - m0
        margin = np.einsum("snp,sp->sn", self.X[:, rows][..., dims], w) - np.einsum("sp,sp->s", w, m0 + m1)[:, None] / 2
        return (margin > 0) == (self.y[rows] == 1)[None, :], margin


def sample(rng, sims: int, y: np.ndarray, delta: np.ndarray) -> np.ndarray:
    return (y[None, :, None] - 0.5) * delta[None, None, :] + rng.standard_normal((sims, len(y), len(delta)))


def chunks(sims: int):
    for start in range(0, sims, CHUNK):
        yield start // CHUNK, min(CHUNK, sims - start)


def cell_rng(*key) -> np.random.Generator:
    # crc32, not hash(): str hashes change from one Python process to the next
    return np.random.default_rng(np.random.SeedSequence([zlib.crc32(repr(key).encode()), 2026]))


def fold_results(folds, scores_by_fold: list[float], predictions=None, train_scores=None) -> list[FoldResult]:
    return [FoldResult(repeat=f.repeat, fold=f.fold, n_train=len(f.train_indices), n_eval=len(f.eval_indices),
                       eval_metrics={"accuracy": float(scores_by_fold[j])},
                       train_metrics={} if train_scores is None else {"accuracy": float(train_scores[j])},
                       predictions=None if predictions is None else predictions[j]) for j, f in enumerate(folds)]


def row_default(folds, right: list[np.ndarray], train_scores: np.ndarray | None) -> tuple[float, float, bool]:
    """The default interval (`ci_method="row"`) of one data set from its per-row results: the per-row interval, or
    the corrected one when the run looks unstable, as `CVResults.summary` computes it. (low, high, fell back)."""
    scores = [float(x.mean()) for x in right]
    optimism = None if train_scores is None else float(np.mean(train_scores) - np.mean(scores))
    result = row_interval([x.astype(np.float64) for x in right], [f.eval_indices for f in folds],
                          [f.repeat for f in folds], bounded=True, optimism=optimism,
                          n_train=float(np.mean([len(f.train_indices) for f in folds])))
    if result["instability"]["unstable"]:
        n_train, n_eval, n_rows = fold_sizes(fold_results(folds, scores))
        low, high = corrected_ci(scores, n_train, n_eval, bounded=True, n_rows=n_rows)
        return low, high, True
    return result["ci95"][0], result["ci95"][1], False


def frames_of(folds, right_s: list[np.ndarray], y: np.ndarray) -> list:
    """Predictions frames of one data set whose right/wrong per row is `right_s` (probabilities 0.8 / 0.2)."""
    frames = []
    for f, right in zip(folds, right_s):
        labels = y[f.eval_indices]
        prob_1 = np.where(right, np.where(labels == 1, 0.8, 0.2), np.where(labels == 1, 0.2, 0.8))
        frames.append(predictions_frame(f.eval_indices, f.repeat, f.fold, labels, np.stack([1 - prob_1, prob_1], 1)))
    return frames


# ---- "today": main before issue 14, for comparison ---------------------------------------------------------------
def today_interval(scores: list[float], n_train: float, n_eval: float) -> tuple[float, float]:
    """Nadeau–Bengio corrected t-interval; a point [m, m] when all scores are equal (main before issue 14)."""
    low, high = corrected_ci(scores, n_train, n_eval)
    if math.isnan(low):  # today's code returned the point interval for equal scores
        return (float(np.mean(scores)),) * 2
    return (low, high)


def today_tests(a: np.ndarray, b: np.ndarray, n_train: float, n_eval: float, rope: float = 0.01) -> tuple:
    """(p, P(a better), P(b better)) of the corrected t-test and Bayesian correlated t-test of main before issue 14:
    J >= 2 accepted, equal differences gave t = inf, p = 0 and a point-mass posterior."""
    from scipy.stats import t

    d = a - b
    if np.all(d == d[0]):
        m = float(d[0])
        return (1.0 if m == 0 else 0.0), float(m > rope), float(m < -rope)
    scale = float(np.std(d, ddof=1)) * math.sqrt(1 / len(d) + n_eval / n_train)
    m, df = float(np.mean(d)), len(d) - 1
    return (float(2 * t.sf(abs(m) / scale, df)), float(t.sf(rope, df, loc=m, scale=scale)),
            float(t.cdf(-rope, df, loc=m, scale=scale)))


# ---- intervals -------------------------------------------------------------------------------------------------
def _rates(lows, highs, truths) -> dict:
    lows, highs, truths = map(np.asarray, (lows, highs, truths))
    width = highs - lows
    return {"coverage": float(np.mean((lows <= truths) & (truths <= highs))), "width": float(np.mean(width)),
            "median_width": float(np.median(width)),
            "zero_width": float(np.mean(width <= 0.0)), "outside_01": float(np.mean((lows < 0.0) | (highs > 1.0)))}


def interval_cell(n: int, k: int, r: int, bayes: float, dim: int, sims: int, nested: bool = True) -> dict:
    """Coverage of today's, the new and the nested interval in one cell; the learner sees `dim` features."""
    delta = np.zeros(dim)
    delta[0] = separation(bayes)
    dims = list(range(dim))
    y = np.repeat([0, 1], n // 2)
    mu_train = expected_accuracy(tuple(delta), n * (k - 1) / (2 * k))
    mu_n = expected_accuracy(tuple(delta), n / 2)
    rng = cell_rng("interval", n, k, r, bayes, dim)
    nested_repeats = max(r, NESTED_MIN_REPEATS)
    nested = nested and k >= 3
    out = {m: {"low": [], "high": []} for m in ("today", "new", "row", "nested", "nested_1")}
    err_xy, inflation, r_n, cv_means, fell_back = [], [], [], [], []
    for chunk, size in chunks(sims):
        # The CV's folds are the first r repeats; the nested interval also uses the next ones (repeat 0 is the same
        # split whatever n_repeats is, so a CV run once extends to 2 nested repetitions with one new split).
        all_folds = make_folds(label_dataset(y), strategy="stratified", n_folds=k, n_repeats=nested_repeats,
                               seed=chunk)
        folds = [f for f in all_folds if f.repeat < r]
        batch = Batch(sample(rng, size, y, delta), y)
        full = batch.sums / batch.counts[None, :, None]
        err_xy.extend(population_accuracy(full[:, 0], full[:, 1], delta).tolist())
        models = [batch.fit_without(f.eval_indices, dims) for f in all_folds]
        right = [batch.predict(*m, f.eval_indices, dims)[0] for m, f in zip(models, all_folds)]
        scores = np.stack([x.mean(axis=1) for x in right[:len(folds)]], axis=1)  # (S, J)
        train_scores = np.stack([batch.predict(*m, f.train_indices, dims)[0].mean(axis=1)
                                 for m, f in zip(models, folds)], axis=1)
        # R_n: the mean population accuracy of this run's own fold models (the per-row interval's target)
        r_n.extend(np.mean([population_accuracy(*m, delta) for m in models[:len(folds)]], axis=0).tolist())
        cv_means.extend(scores.mean(axis=1).tolist())
        n_train, n_eval, n_rows = fold_sizes(fold_results(folds, scores[0]))
        if nested:
            fits = nested_cv_fits(all_folds)
            fit_right = {fit["name"]: batch.predict(*batch.fit_without(fit["eval_indices"], dims),
                                                    fit["eval_indices"], dims)[0] for fit in fits}
            inner, outer = _nested_arrays(all_folds, right, fit_right, fits)
        for s in range(size):
            low, high = CVResults(fold_results(folds, scores[s]), config={"ci_method": "corrected"}
                                  ).summary["accuracy"]["ci95"]
            out["new"]["low"].append(low), out["new"]["high"].append(high)
            right_s = [x[s] for x in right[:len(folds)]]
            low, high, back = row_default(folds, right_s, train_scores[s])
            out["row"]["low"].append(low), out["row"]["high"].append(high), fell_back.append(back)
            if s < CHECKED:  # the public path: CVResults with predictions and training scores gives the same interval
                public = CVResults(fold_results(folds, scores[s], frames_of(folds, right_s, y), train_scores[s]))
                if public.summary["accuracy"]["ci95"] != [low, high]:
                    raise AssertionError(f"CVResults.summary disagrees with row_default: n={n} k={k} r={r}")
            low, high = today_interval(scores[s].tolist(), n_train, n_eval)
            out["today"]["low"].append(low), out["today"]["high"].append(high)
            if nested:
                inner_s = [[part[s].astype(np.float64) for part in repeat] for repeat in inner]
                outer_s = [[part[s].astype(np.float64) for part in repeat] for repeat in outer]
                if s < CHECKED:  # the public arrangement of the per-row values gives the same input
                    values = {f.name: right[j][s].astype(np.float64) for j, f in enumerate(all_folds)}
                    public = nested_cv_errors(all_folds, values, {name: v[s].astype(np.float64)
                                                                  for name, v in fit_right.items()})
                    _check_same(public, (inner_s, outer_s), f"nested_cv_errors n={n} k={k} r={r}")
                result = nested_cv_interval(inner_s, outer_s, bounded=True)
                out["nested"]["low"].append(result["ci95"][0]), out["nested"]["high"].append(result["ci95"][1])
                inflation.append(result["inflation"])
                low, high = nested_cv_interval(inner_s[:1], outer_s[:1], bounded=True)["ci95"]
                out["nested_1"]["low"].append(low), out["nested_1"]["high"].append(high)
    cell = {"n": n, "k": k, "r": r, "bayes": bayes, "dim": dim, "sims": sims, "mu_train": mu_train, "mu_n": mu_n,
            "err_xy_mean": float(np.mean(err_xy)), "oracle_width": 2 * 1.959964 * float(np.std(cv_means)),
            "row_fallback": float(np.mean(fell_back)),
            "nested_repeats": nested_repeats if nested else None,
            "nested_extra_fits": nested_repeats * k * (k + 1) // 2 - r * k if nested else None}
    for method, bounds in out.items():
        if not bounds["low"]:
            cell[method] = None
            continue
        cell[method] = {target: _rates(bounds["low"], bounds["high"], truth) for target, truth in
                        (("mu_train", [mu_train] * sims), ("mu_n", [mu_n] * sims), ("err_xy", err_xy),
                         ("r_n", r_n))}
    if inflation:
        cell["nested"]["mean_inflation"] = float(np.mean(inflation))
    return cell


def _nested_arrays(folds, right, fit_right, fits):
    """inner[r][k] (S, n - n_k) and outer[r][k] (S, n_k) from the fold and pair fits, vectorised over data sets."""
    by_name = {fit["name"]: fit for fit in fits}
    repeats = sorted({f.repeat for f in folds})
    inner, outer = [], []
    for repeat in repeats:
        members = [(j, f) for j, f in enumerate(folds) if f.repeat == repeat]
        inner.append([]), outer.append([])
        for j, held in members:
            outer[-1].append(right[j])
            parts = []
            for _, other in members:
                if other is held:
                    continue
                a, b = sorted((held.fold, other.fold))
                fit = by_name[f"nested_{repeat}_{a}_{b}"]
                parts.append(fit_right[fit["name"]][:, np.isin(fit["eval_indices"], other.eval_indices)])
            inner[-1].append(np.concatenate(parts, axis=1))
    return inner, outer


def _check_same(first, second, what: str) -> None:
    flat = [np.asarray(x) for rep in first[0] + first[1] for x in rep]
    other = [np.asarray(x) for rep in second[0] + second[1] for x in rep]
    if len(flat) != len(other) or any(not np.array_equal(a, b) for a, b in zip(flat, other)):
        raise AssertionError(f"{what}: the public path and the vectorised path disagree")


# ---- paired tests ----------------------------------------------------------------------------------------------
def paired_design(design: str, bayes: float) -> tuple[np.ndarray, list[int], list[int]]:
    """delta over all features, and the features learner A and learner B use.

    independent: A and B see disjoint features with the same signal (errors nearly independent).
    correlated:  A and B share 4 features holding 90% of the squared signal and differ in one private feature each
                 (their predictions mostly agree: few discordant rows, often equal fold differences).
    ...+gap:     the same layouts with B's Bayes accuracy GAP lower (A is truly better).
    """
    full = separation(bayes)
    weaker = separation(bayes - GAP) if design.endswith("gap") else full
    if design.startswith("independent"):
        delta = np.zeros(2 * DIM)
        delta[0], delta[DIM] = full, weaker
        return delta, list(range(DIM)), list(range(DIM, 2 * DIM))
    delta = np.zeros(DIM + 1)
    if design.endswith("gap"):  # shared signal = B's; A's private feature adds the rest
        delta[0], delta[DIM - 1] = weaker, math.sqrt(full**2 - weaker**2)
    else:
        delta[0], delta[DIM - 1], delta[DIM] = math.sqrt(0.9) * full, math.sqrt(0.1) * full, math.sqrt(0.1) * full
    return delta, list(range(DIM)), list(range(DIM - 1)) + [DIM]


def paired_cell(n: int, k: int, r: int, bayes: float, design: str, sims: int) -> dict:
    delta, dims_a, dims_b = paired_design(design, bayes)
    y = np.repeat([0, 1], n // 2)
    per_class = n * (k - 1) / (2 * k)
    gap = (expected_accuracy(tuple(delta[dims_a]), per_class) - expected_accuracy(tuple(delta[dims_b]), per_class))
    rng = cell_rng("paired", n, k, r, bayes, design)
    today, new, row, refused = [], [], [], False
    for chunk, size in chunks(sims):
        folds = make_folds(label_dataset(y), strategy="stratified", n_folds=k, n_repeats=r, seed=chunk)
        batch = Batch(sample(rng, size, y, delta), y)
        fits_a = [batch.predict(*batch.fit_without(f.eval_indices, dims_a), f.eval_indices, dims_a) for f in folds]
        fits_b = [batch.predict(*batch.fit_without(f.eval_indices, dims_b), f.eval_indices, dims_b) for f in folds]
        scores_a = np.stack([x[0].mean(axis=1) for x in fits_a], axis=1)
        scores_b = np.stack([x[0].mean(axis=1) for x in fits_b], axis=1)
        # compare() counts the rows where exactly one variant is right, per repeat
        discordant = sum((fa[0] != fb[0]).sum(axis=1) for fa, fb in zip(fits_a, fits_b)) / r
        n_train, n_eval, n_rows = fold_sizes(fold_results(folds, scores_a[0]))
        for s in range(size):
            a, b = scores_a[s], scores_b[s]
            today.append(today_tests(a, b, n_train, n_eval))
            floor = {"bounded": True, "n_rows": n_rows, "n_discordant": float(discordant[s])}
            try:
                test = corrected_paired_ttest(a.tolist(), b.tolist(), n_train, n_eval, **floor)
                bayes_test = bayesian_correlated_ttest(a.tolist(), b.tolist(), n_train, n_eval, **floor)
            except ValueError as error:  # k x r = 2 is refused with a message
                if "at least 3" not in str(error):
                    raise
                refused = True
                continue
            new.append((test["p_value"], bayes_test["p_a_better"], bayes_test["p_b_better"], test["mean_diff"]))
            # the default (ci_method="row"): the per-row test of the differences, the corrected one when unstable
            row_test = row_paired_test([fa[0][s].astype(float) - fb[0][s].astype(float)
                                        for fa, fb in zip(fits_a, fits_b)], [f.eval_indices for f in folds],
                                       [f.repeat for f in folds], bounded=True, n_train=n_train)
            # compare() also keeps the corrected test when either variant's own per-row interval falls back
            back = bool(row_test["instability"]["unstable"]) or any(
                row_interval([x[0][s].astype(np.float64) for x in fits], [f.eval_indices for f in folds],
                             [f.repeat for f in folds], bounded=True, n_train=n_train)["instability"]["unstable"]
                for fits in (fits_a, fits_b))
            row_p = test["p_value"] if back else row_test["p_value"]
            row.append((row_p, test["mean_diff"], back))
            if s < CHECKED:  # the study's comparison of two CVResults with predictions gives the same numbers
                public = compare(_with_predictions(folds, a, fits_a, y, s), _with_predictions(folds, b, fits_b, y, s))
                if not (public["p_value"] == row_p and public["p_a_better"] == bayes_test["p_a_better"]
                        and public["n_discordant"] == floor["n_discordant"]):
                    raise AssertionError(f"compare() disagrees with the stats functions: n={n} k={k} r={r} {design}")
    today = np.asarray(today)
    cell = {"n": n, "k": k, "r": r, "bayes": bayes, "design": design, "sims": sims, "true_gap": gap,
            "today": {"reject": float(np.mean(today[:, 0] < ALPHA)),
                      "reject_a_better": float(np.mean((today[:, 0] < ALPHA) & (today[:, 1] > today[:, 2]))),
                      "bayes_decides": float(np.mean(np.maximum(today[:, 1], today[:, 2]) > 0.95)),
                      "bayes_a_better": float(np.mean(today[:, 1] > 0.95)), "p_zero": float(np.mean(today[:, 0] == 0))}}
    if refused:
        cell["new"] = "refused"
    else:
        new = np.asarray(new)
        cell["new"] = {"reject": float(np.mean(new[:, 0] < ALPHA)),
                       "reject_a_better": float(np.mean((new[:, 0] < ALPHA) & (new[:, 3] > 0))),
                       "bayes_decides": float(np.mean(np.maximum(new[:, 1], new[:, 2]) > 0.95)),
                       "bayes_a_better": float(np.mean(new[:, 1] > 0.95)), "p_zero": float(np.mean(new[:, 0] == 0))}
        row = np.asarray(row, dtype=np.float64)
        cell["row"] = {"reject": float(np.mean(row[:, 0] < ALPHA)),
                       "reject_a_better": float(np.mean((row[:, 0] < ALPHA) & (row[:, 1] > 0))),
                       "p_zero": float(np.mean(row[:, 0] == 0)), "fallback": float(np.mean(row[:, 2]))}
    return cell


def _with_predictions(folds, scores, fits, y, s) -> CVResults:
    frames = []
    for f, (_, margin) in zip(folds, fits):
        prob_1 = 1.0 / (1.0 + np.exp(-margin[s]))
        frames.append(predictions_frame(f.eval_indices, f.repeat, f.fold, y[f.eval_indices],
                                        np.stack([1.0 - prob_1, prob_1], axis=1)))
    return CVResults(fold_results(folds, scores, frames))


# ---- unstable learners: 1-nearest-neighbour and a small MLP trained by SGD --------------------------------------
TEST_ROWS = 20_000  # the truth of every fold model: its accuracy on a fresh test sample of this many rows per chunk
UNSTABLE_CHUNK = 50


def knn_right(X_train: np.ndarray, y_train: np.ndarray, X_query: np.ndarray, y_query: np.ndarray) -> np.ndarray:
    """1-nearest-neighbour: right (S, q) of the models on (S, m, D) training rows, for (S, q, D) query rows."""
    d = (np.einsum("sqd,sqd->sq", X_query, X_query)[:, :, None] - 2.0 * np.matmul(X_query, X_train.transpose(0, 2, 1))
         + np.einsum("smd,smd->sm", X_train, X_train)[:, None, :])
    return y_train[d.argmin(axis=-1)] == y_query[None, :]


def mlp_fit(X_train: np.ndarray, y_train: np.ndarray, hidden: int = 16, epochs: int = 30, batch: int = 16,
            lr: float = 0.5, seed: int = 0) -> tuple:
    """One tanh layer of `hidden` units and a logistic output, trained by minibatch SGD on the log loss, for S data
    sets at once; the same initial weights and batch order (seed) for every data set and fold, as a fixed seed gives."""
    n_sets, m, dim = X_train.shape
    g = np.random.default_rng(seed)
    w1 = np.broadcast_to(g.standard_normal((dim, hidden)) / math.sqrt(dim), (n_sets, dim, hidden)).copy()
    b1 = np.zeros((n_sets, hidden))
    w2 = np.broadcast_to(g.standard_normal(hidden) / math.sqrt(hidden), (n_sets, hidden)).copy()
    b2 = np.zeros(n_sets)
    target = np.broadcast_to(y_train.astype(np.float64), (n_sets, m))
    for _ in range(epochs):
        order = g.permutation(m)
        for start in range(0, m, batch):
            idx = order[start:start + batch]
            x, t = X_train[:, idx], target[:, idx]
            h = np.tanh(np.matmul(x, w1) + b1[:, None])
            grad_o = (1.0 / (1.0 + np.exp(-(np.einsum("sbh,sh->sb", h, w2) + b2[:, None]))) - t) / len(idx)
            grad_h = grad_o[:, :, None] * w2[:, None, :] * (1.0 - h * h)
            w2 -= lr * np.einsum("sbh,sb->sh", h, grad_o)
            b2 -= lr * grad_o.sum(axis=1)
            w1 -= lr * np.matmul(x.transpose(0, 2, 1), grad_h)
            b1 -= lr * grad_h.sum(axis=1)
    return w1, b1, w2, b2


def mlp_right(params: tuple, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    w1, b1, w2, b2 = params
    h = np.tanh(np.matmul(X, w1) + b1[:, None])
    return (np.einsum("sqh,sh->sq", h, w2) + b2[:, None] > 0) == (y[None, :] == 1)


def unstable_cell(learner: str, n: int, k: int, r: int, bayes: float, sims: int, dim: int = DIM) -> dict:
    """Coverage of the default and the corrected interval for an unstable learner, truth from test samples."""
    from scipy.spatial import cKDTree

    started = time.perf_counter()
    delta = np.zeros(dim)
    delta[0] = separation(bayes)
    y = np.repeat([0, 1], n // 2)
    y_test = np.repeat([0, 1], TEST_ROWS // 2)
    rng = cell_rng("unstable", learner, n, k, r, bayes, dim)
    bounds, test_acc, cv_means, fell_back = {"row": [], "row_no_fallback": [], "corrected": []}, [], [], []
    for chunk in range(0, sims, UNSTABLE_CHUNK):
        size = min(UNSTABLE_CHUNK, sims - chunk)
        folds = make_folds(label_dataset(y), strategy="stratified", n_folds=k, n_repeats=r, seed=chunk)
        X = sample(rng, size, y, delta)
        X_test = (y_test[:, None] - 0.5) * delta[None] + rng.standard_normal((TEST_ROWS, dim))
        right, train_acc, truth = [], [], []
        for f in folds:
            tr, ev = f.train_indices, f.eval_indices
            if learner == "1nn":
                right.append(knn_right(X[:, tr], y[tr], X[:, ev], y[ev]))
                train_acc.append(knn_right(X[:, tr], y[tr], X[:, tr], y[tr]).mean(axis=1))
                truth.append(np.array([np.mean(y[tr][cKDTree(X[s, tr]).query(X_test)[1]] == y_test)
                                       for s in range(size)]))
            else:
                params = mlp_fit(X[:, tr], y[tr])
                right.append(mlp_right(params, X[:, ev], y[ev]))
                train_acc.append(mlp_right(params, X[:, tr], y[tr]).mean(axis=1))
                truth.append(mlp_right(params, np.broadcast_to(X_test, (size, *X_test.shape)), y_test).mean(axis=1))
        scores, train_acc, truth = (np.stack(x, axis=1) for x in ([x.mean(axis=1) for x in right], train_acc, truth))
        n_train, n_eval, n_rows = fold_sizes(fold_results(folds, scores[0]))
        for s in range(size):
            right_s = [x[s] for x in right]
            low, high, back = row_default(folds, right_s, train_acc[s])
            bounds["row"].append((low, high)), fell_back.append(back)
            plain = row_interval([x.astype(np.float64) for x in right_s], [f.eval_indices for f in folds],
                                 [f.repeat for f in folds], bounded=True, n_train=n_train)
            bounds["row_no_fallback"].append(tuple(plain["ci95"]))
            bounds["corrected"].append(corrected_ci(scores[s].tolist(), n_train, n_eval, bounded=True, n_rows=n_rows))
        test_acc.append(truth)
        cv_means.extend(scores.mean(axis=1).tolist())
    truth = np.concatenate(test_acc)  # (sims, J): every fold model's accuracy on its test sample
    mu_train, r_n = float(truth.mean()), truth.mean(axis=1)
    cell = {"learner": learner, "n": n, "k": k, "r": r, "bayes": bayes, "sims": sims, "mu_train": mu_train,
            "oracle_width": 2 * 1.959964 * float(np.std(cv_means)), "row_fallback": float(np.mean(fell_back)),
            "cv_bias": float(np.mean(cv_means) - mu_train), "seconds": time.perf_counter() - started}
    for method, pairs in bounds.items():
        pairs = np.asarray(pairs)
        cell[method] = {"mu_train": _rates(pairs[:, 0], pairs[:, 1], [mu_train] * len(pairs)),
                        "r_n": _rates(pairs[:, 0], pairs[:, 1], r_n)}
    return cell


# ---- selection: the winner's curse and the nested estimate -----------------------------------------------------
INNER_FOLDS = 3
N_TIED = 6


def selection_design(design: str, bayes: float) -> tuple[np.ndarray, dict[str, list[int]]]:
    """delta over all features and the features of each candidate.

    sweep: the signal spread evenly over 5 features; candidates use the first 2, 3, 4, 5 (more features help and cost).
    ties:  6 candidates on disjoint blocks of 5 features with the same signal: equal expected accuracies and nearly
           independent errors, the worst case of the winner's curse.
    """
    if design == "sweep":
        return np.full(DIM, separation(bayes) / math.sqrt(DIM)), {f"first_{d}": list(range(d)) for d in (2, 3, 4, 5)}
    delta = np.zeros(N_TIED * DIM)
    delta[::DIM] = separation(bayes)
    return delta, {f"block_{j}": list(range(j * DIM, (j + 1) * DIM)) for j in range(N_TIED)}


def selection_cell(n: int, k: int, bayes: float, design: str, sims: int) -> dict:
    delta, candidates = selection_design(design, bayes)
    y = np.repeat([0, 1], n // 2)
    per_class = n * (k - 1) / (2 * k)
    mu = {name: expected_accuracy(tuple(delta[dims]), per_class) for name, dims in candidates.items()}
    rng = cell_rng("selection", n, k, bayes, design)
    plain, simultaneous, winners, nested_bounds, procedure_acc, optimism = [], [], [], [], [], []
    for chunk, size in chunks(sims):
        folds = make_folds(label_dataset(y), strategy="stratified", n_folds=k, n_repeats=1, seed=chunk)
        batch = Batch(sample(rng, size, y, delta), y)
        scores, accs = {}, {}
        for name, dims in candidates.items():
            cols, true = [], []
            for f in folds:
                m0, m1 = batch.fit_without(f.eval_indices, dims)
                cols.append(batch.predict(m0, m1, f.eval_indices, dims)[0].mean(axis=1))
                true.append(population_accuracy(m0, m1, delta[dims]))
            scores[name], accs[name] = np.stack(cols, axis=1), np.stack(true, axis=1)
        # nested selection as hf_tlcv.studies.selection does it: inner CV of every candidate on each outer-train part
        selected = []
        for j, f in enumerate(folds):
            inner_folds = make_folds(label_dataset(y[f.train_indices]), strategy="stratified", n_folds=INNER_FOLDS,
                                     seed=chunk)
            inner_means = []
            for dims in candidates.values():
                fold_means = []
                for g in inner_folds:
                    held = np.union1d(f.eval_indices, f.train_indices[g.eval_indices])
                    rows = f.train_indices[g.eval_indices]
                    fold_means.append(batch.predict(*batch.fit_without(held, dims), rows, dims)[0].mean(axis=1))
                inner_means.append(np.mean(fold_means, axis=0))
            selected.append(np.argmax(np.stack(inner_means, axis=1), axis=1))  # ties: the first, as in nested.py
        selected = np.stack(selected, axis=1)  # (S, k)
        names = list(candidates)
        n_train, n_eval, n_rows = fold_sizes(fold_results(folds, scores[names[0]][0]))
        for s in range(size):
            results = {name: CVResults(fold_results(folds, scores[name][s])) for name in names}
            verdict = selection_verdict("custom", results, "accuracy")
            best = verdict.numbers["best"]
            winners.append(best)
            plain.append((*verdict.numbers["best_ci95"], mu[best]))
            simultaneous.append((*verdict.numbers["best_ci95_selection"], mu[best]))
            outer = [scores[names[c]][s, j] for j, c in enumerate(selected[s])]
            estimate = summarize(outer, n_train, n_eval, bounded=True, n_rows=n_rows)
            nested_bounds.append(estimate["ci95"])
            procedure_acc.append(np.mean([accs[names[c]][s, j] for j, c in enumerate(selected[s])]))
            optimism.append(verdict.numbers["means"][best] - mu[best])
    target = float(np.mean(procedure_acc))  # E[accuracy of select-then-train on n_train rows], MC over all data sets
    plain, simultaneous, nested_bounds = map(np.asarray, (plain, simultaneous, nested_bounds))
    return {"n": n, "k": k, "bayes": bayes, "design": design, "sims": sims, "mu": mu, "procedure_target": target,
            "winner_share": {name: winners.count(name) / len(winners) for name in candidates},
            "winner_optimism": float(np.mean(optimism)),
            "plain": _rates(plain[:, 0], plain[:, 1], plain[:, 2]),
            "selection_aware": _rates(simultaneous[:, 0], simultaneous[:, 1], simultaneous[:, 2]),
            "nested": _rates(nested_bounds[:, 0], nested_bounds[:, 1], [target] * len(nested_bounds))}


# ---- the run and its report ------------------------------------------------------------------------------------
PARTS = ("intervals", "paired", "selection", "unstable")


def run(grid: dict, parts=PARTS, log=print, partial: Path | None = None) -> dict:
    """The cells of `parts`, each with its own seeded generator (a part run alone gives the numbers of a full run)."""
    started = time.perf_counter()
    report = {"grid": dict(grid), "intervals": [], "paired": [], "selection": [], "unstable": []}
    cells = [(n, k, r, b) for n in grid["n"] for k in grid["k"] for r in grid["r"] for b in grid["bayes"]]
    for i, (n, k, r, b) in enumerate(cells if {"intervals", "paired"} & set(parts) else []):
        t0 = time.perf_counter()
        if "intervals" in parts:
            for dim in grid["dim"]:
                report["intervals"].append(interval_cell(n, k, r, b, dim, grid["sims"], grid.get("nested", True)))
        if "paired" in parts:
            for design in ("independent", "correlated"):
                report["paired"].append(paired_cell(n, k, r, b, design, grid["paired_sims"]))
                report["paired"].append(paired_cell(n, k, r, b, design + "+gap", grid["power_sims"]))
        log(f"[{i + 1}/{len(cells)}] n={n} k={k} r={r} bayes={b}: {time.perf_counter() - t0:.1f} s")
        if partial is not None:  # what a run cut short leaves: every finished cell
            partial.write_text(json.dumps(report))
    if "selection" in parts:
        for design in ("sweep", "ties"):
            for n in grid["selection"]["n"]:
                for b in grid["selection"]["bayes"]:
                    report["selection"].append(selection_cell(n, 5, b, design, grid["sims"]))
                    log(f"selection {design} n={n} bayes={b} done")
    if "unstable" in parts:
        for learner in grid["unstable"]["learners"]:
            for n, k, r, b in grid["unstable"]["cells"]:
                report["unstable"].append(unstable_cell(learner, n, k, r, b, grid["unstable"]["sims"]))
                log(f"unstable {learner} n={n} k={k} r={r} bayes={b}: {report['unstable'][-1]['seconds']:.0f} s")
                if partial is not None:
                    partial.write_text(json.dumps(report))
    report["wall_time_s"] = {"+".join(parts): time.perf_counter() - started}
    report["machine"] = machine()
    return report


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def goals(report: dict) -> dict:
    cells = report["intervals"]
    nested = [c for c in cells if c["nested"] is not None]
    nulls = [c for c in report["paired"] if not c["design"].endswith("gap") and c["new"] != "refused"]
    ratios = [{"n": c["n"], "bayes": c["bayes"], "dim": c["dim"],
               "nested_over_today": c["nested"]["err_xy"]["width"] / c["today"]["mu_train"]["width"],
               "nested_over_new": c["nested"]["err_xy"]["width"] / c["new"]["mu_train"]["width"],
               "today_coverage": c["today"]["mu_train"]["coverage"], "new_coverage": c["new"]["mu_train"]["coverage"],
               "nested_coverage_err_xy": c["nested"]["err_xy"]["coverage"],
               "nested_coverage_mu_n": c["nested"]["mu_n"]["coverage"],
               "nested_1_coverage_err_xy": c["nested_1"]["err_xy"]["coverage"],
               "nested_1_over_today": c["nested_1"]["err_xy"]["width"] / c["today"]["mu_train"]["width"]}
              for c in nested if c["k"] == 5 and c["r"] == 1]

    def worst(rows, pick, best=min):
        values = [pick(row) for row in rows]
        return best(values) if values else None

    return {
        "new_min_coverage_mu_train": worst(cells, lambda c: c["new"]["mu_train"]["coverage"]),
        "new_zero_width": worst(cells, lambda c: c["new"]["mu_train"]["zero_width"], max),
        "new_outside_01": worst(cells, lambda c: c["new"]["mu_train"]["outside_01"], max),
        "today_min_coverage_mu_train": worst(cells, lambda c: c["today"]["mu_train"]["coverage"]),
        "today_zero_width": worst(cells, lambda c: c["today"]["mu_train"]["zero_width"], max),
        "today_outside_01": worst(cells, lambda c: c["today"]["mu_train"]["outside_01"], max),
        "nested_min_coverage_err_xy": worst(nested, lambda c: c["nested"]["err_xy"]["coverage"]),
        "nested_min_coverage_mu_n": worst(nested, lambda c: c["nested"]["mu_n"]["coverage"]),
        "nested_zero_width": worst(nested, lambda c: c["nested"]["err_xy"]["zero_width"], max),
        "nested_outside_01": worst(nested, lambda c: c["nested"]["err_xy"]["outside_01"], max),
        "nested_1_min_coverage_err_xy": worst(nested, lambda c: c["nested_1"]["err_xy"]["coverage"]),
        "new_max_type1": worst(nulls, lambda c: c["new"]["reject"], max),
        "new_max_bayes_false_decision": worst(nulls, lambda c: c["new"]["bayes_decides"], max),
        "new_p_zero": worst([c for c in report["paired"] if c["new"] != "refused"], lambda c: c["new"]["p_zero"], max),
        "today_max_type1": worst([c for c in report["paired"] if not c["design"].endswith("gap")],
                                 lambda c: c["today"]["reject"], max),
        "nested_width_ratio_k5_r1": ratios,
        **row_goals(report),
    }


def band(sims: int, low: float = 0.93, high: float = 0.975, z: float = 2.576) -> tuple[float, float]:
    """The coverage a cell of `sims` data sets may show while its true coverage lies in [low, high] (99% binomial)."""
    return (low - z * math.sqrt(low * (1 - low) / sims), high + z * math.sqrt(high * (1 - high) / sims))


def row_goals(report: dict) -> dict:
    """Issue 26: the default (`row`) interval in every cell, its width against the oracle, the paired tests and the
    unstable learners."""
    cells = [c for c in report["intervals"] if c.get("row")]
    out = {}
    if cells:
        lo, hi = band(cells[0]["sims"])
        cov = [c["row"]["mu_train"]["coverage"] for c in cells]
        ratio = [c["row"]["mu_train"]["median_width"] / c["oracle_width"] for c in cells if c["k"] >= 5 and c["r"] == 1]
        out.update({"row_band": [lo, hi], "row_cells": len(cells), "row_min_coverage": min(cov),
                    "row_max_coverage": max(cov),
                    "row_cells_outside_band": [(c["n"], c["k"], c["r"], c["bayes"], c["row"]["mu_train"]["coverage"])
                                               for c in cells if not lo <= c["row"]["mu_train"]["coverage"] <= hi],
                    "row_max_width_over_oracle_k5_r1": max(ratio) if ratio else None,
                    "row_cells_over_1.3x_k5_r1": [(c["n"], c["k"], c["r"], c["bayes"],
                                                   c["row"]["mu_train"]["median_width"] / c["oracle_width"])
                                                  for c in cells if c["k"] >= 5 and c["r"] == 1
                                                  and c["row"]["mu_train"]["median_width"] > 1.3 * c["oracle_width"]],
                    "row_zero_width": max(c["row"]["mu_train"]["zero_width"] for c in cells),
                    "row_outside_01": max(c["row"]["mu_train"]["outside_01"] for c in cells),
                    "row_max_fallback": max(c["row_fallback"] for c in cells)})
    nulls = [c for c in report["paired"] if not c["design"].endswith("gap") and c.get("row")]
    if nulls:
        out["row_max_type1"] = max(c["row"]["reject"] for c in nulls)
    if report.get("unstable"):
        out["unstable_min_coverage_mu_train"] = min(c["row"]["mu_train"]["coverage"] for c in report["unstable"])
        out["unstable_min_coverage_r_n"] = min(c["row"]["r_n"]["coverage"] for c in report["unstable"])
    return out


def row_markdown(report: dict) -> list[str]:
    """The sections of issue 26: the default interval per cell, the paired tests, the unstable learners."""
    g = report["goals"]
    lines = []
    cells = [c for c in report["intervals"] if c.get("row")]
    if cells:
        lo, hi = g["row_band"]
        lines += [
            "## The default interval (`ci_method=\"row\"`, issue 26)", "",
            f"Coverage of mu_train by the default interval of `CVResults.summary` (per-row, falling back to the "
            f"corrected one when the run looks unstable) in {len(cells)} cells, {cells[0]['sims']} data sets each: "
            f"**{_pct(g['row_min_coverage'])}–{_pct(g['row_max_coverage'])}%**; cells outside the 99% binomial band "
            f"[{_pct(lo)}, {_pct(hi)}]% around the target 93–97.5%: {g['row_cells_outside_band'] or 'none'}. Median width "
            f"/ oracle width (2 x 1.96 x the true spread of the CV mean over data sets) at k >= 5, r = 1: at most "
            f"**{g['row_max_width_over_oracle_k5_r1']:.2f}x**; cells above 1.3x: "
            f"{[c[:4] for c in g['row_cells_over_1.3x_k5_r1']] or 'none'}. Zero width {_pct(g['row_zero_width'])}%, "
            f"outside [0, 1] {_pct(g['row_outside_01'])}%, fell back (unstable) in at most "
            f"{_pct(g['row_max_fallback'])}% of a cell's runs. `corrected`: the interval of `ci_method=\"corrected\"` "
            "(the default before); R_n: the mean accuracy of the run's own fold models (the per-row interval's target).",
            "",
            "| n | k | r | Bayes | mu_train | oracle width | row cov mu_train | row cov R_n | row median width | "
            "row / oracle | fell back | corrected cov | corrected / oracle |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in cells:
            rw, cw = c["row"]["mu_train"], c["new"]["mu_train"]
            flag = "" if lo <= rw["coverage"] <= hi else " (!)"
            lines.append(f"| {c['n']} | {c['k']} | {c['r']} | {c['bayes']} | {c['mu_train']:.4f} | "
                         f"{c['oracle_width']:.4f} | **{_pct(rw['coverage'])}**{flag} | {_pct(c['row']['r_n']['coverage'])} | "
                         f"{rw['median_width']:.4f} | **{rw['median_width'] / c['oracle_width']:.2f}** | "
                         f"{_pct(c['row_fallback'])} | {_pct(cw['coverage'])} | "
                         f"{cw['median_width'] / c['oracle_width']:.2f} |")
        lines.append("")
    paired = [c for c in report["paired"] if c.get("row")]
    if paired:
        lines += [
            "## Paired tests: per-row (default) against corrected", "",
            f"Worst type-I error of the per-row test over the null cells: **{_pct(g.get('row_max_type1'))}%**. "
            "Rejection rates at alpha = 0.05 (under a gap: rejections with A ahead); `fell back`: share of comparisons "
            "that kept the corrected test (a variant or the differences looked unstable).", "",
            "| n | k | r | Bayes | design | true gap | corrected (before) | per-row (default) | fell back |",
            "|---|---|---|---|---|---|---|---|---|"]
        for c in paired:
            key = "reject_a_better" if c["design"].endswith("gap") else "reject"
            lines.append(f"| {c['n']} | {c['k']} | {c['r']} | {c['bayes']} | {c['design']} | {c['true_gap']:+.4f} | "
                         f"{_pct(c['new'][key])} | **{_pct(c['row'][key])}** | {_pct(c['row']['fallback'])} |")
        lines.append("")
    if report.get("unstable"):
        lines += [
            "## Unstable learners", "",
            "1-nearest-neighbour and a 16-unit tanh MLP trained by SGD (30 epochs, batch 16, learning rate 0.5, the same "
            f"seed for every fit), 5 features; truth: every fold model's accuracy on a fresh test sample of {TEST_ROWS} "
            "rows per chunk of 50 data sets (mu_train: their mean over all data sets; R_n: the mean of one run's fold "
            "models). `default`: the summary's interval (falls back to the corrected one when the run looks unstable), "
            "`per-row only`: the per-row interval without the fall-back.", "",
            "| learner | n | k | r | Bayes | data sets | seconds | mu_train | oracle width | default cov mu_train | "
            "default cov R_n | default / oracle | fell back | per-row only cov mu_train | per-row only cov R_n | "
            "per-row only / oracle | corrected cov mu_train | corrected / oracle |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in report["unstable"]:
            o = c["oracle_width"]
            d, p, q = c["row"], c["row_no_fallback"], c["corrected"]
            lines.append(f"| {c['learner']} | {c['n']} | {c['k']} | {c['r']} | {c['bayes']} | {c['sims']} | "
                         f"{c['seconds']:.0f} | {c['mu_train']:.4f} | {o:.4f} | **{_pct(d['mu_train']['coverage'])}** | "
                         f"{_pct(d['r_n']['coverage'])} | {d['mu_train']['median_width'] / o:.2f} | "
                         f"{_pct(c['row_fallback'])} | {_pct(p['mu_train']['coverage'])} | {_pct(p['r_n']['coverage'])} | "
                         f"{p['mu_train']['median_width'] / o:.2f} | {_pct(q['mu_train']['coverage'])} | "
                         f"{q['mu_train']['median_width'] / o:.2f} |")
        lines.append("")
    return lines


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _scope(report: dict) -> list[str]:
    """What a merged report ran: each part's grid, the carried nested columns, and the command of the full grid."""
    if not report.get("grids"):
        return []
    lines = ["**Scope.** This report merges runs of parts on subsets of the full grid (`--merge`):"]
    for part, grid in ((part, grid) for part, grids in report["grids"].items() for grid in grids):
        if part == "unstable":
            u = grid["unstable"]
            lines.append(f"- unstable: {', '.join(u['learners'])} on cells (learner, n, k, r, Bayes) "
                         f"{', '.join(map(str, map(tuple, u['cells'])))}, {u['sims']} data sets each;")
        else:
            sims = grid["sims"] if part == "intervals" else f"{grid['paired_sims']} (null) / {grid['power_sims']} (gap)"
            lines.append(f"- {part}: n {list(grid['n'])}, k {list(grid['k'])}, r {list(grid['r'])}, Bayes "
                         f"{list(grid['bayes'])}, features {list(grid['dim'])}, {sims} data sets per cell"
                         + ("; nested intervals not recomputed" if part == "intervals" and not grid.get("nested", True)
                            else "") + ";")
    if report.get("nested_carried_cells"):
        lines.append(f"- the nested columns of {report['nested_carried_cells']} cells come from the earlier full run of "
                     "the same cells (same seeds, hence the same data sets: the corrected interval's coverage agrees "
                     "cell by cell); the selection part was not rerun.")
    lines += ["", "The full grid: `python benchmarks/sim_intervals.py` (every part, 1000 data sets per cell).", ""]
    return lines


def to_markdown(report: dict) -> str:
    g, grid = report["goals"], report["grid"]
    lines = [
        "# Coverage of the intervals and error rates of the paired tests (simulation with known truth)",
        "",
        f"`benchmarks/sim_intervals.py`: {grid['sims']} simulated data sets per interval and selection cell, "
        f"{grid['paired_sims']} per null comparison cell, {grid['power_sims']} per power cell; wall time "
        + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in report["wall_time_s"].items())
        + f" (one process on {report['machine']['cpus']} shared CPUs, OMP_NUM_THREADS="
        f"{report['machine']['omp_num_threads']}). Two Gaussian classes, nearest-centroid learner, stratified folds "
        "from `make_folds`; all rates in percent.",
        "",
        *_scope(report),
        "## Goals",
        "",
        f"- `new` (`CVResults.summary`) coverage of mu_train, lowest cell: **{_pct(g['new_min_coverage_mu_train'])}%** "
        f"(today {_pct(g['today_min_coverage_mu_train'])}%); zero-width intervals, worst cell: "
        f"{_pct(g['new_zero_width'])}% (today {_pct(g['today_zero_width'])}%); partly outside [0, 1], worst cell: "
        f"{_pct(g['new_outside_01'])}% (today {_pct(g['today_outside_01'])}%).",
        f"- `nested` coverage, lowest cell: of Err_XY **{_pct(g['nested_min_coverage_err_xy'])}%**, of mu_n "
        f"{_pct(g['nested_min_coverage_mu_n'])}%; zero width {_pct(g['nested_zero_width'])}%, outside [0, 1] "
        f"{_pct(g['nested_outside_01'])}%. With a single nested repetition: "
        f"{_pct(g['nested_1_min_coverage_err_xy'])}% (why the library runs at least {NESTED_MIN_REPEATS}).",
        f"- paired test type-I error, worst null cell: new **{_pct(g['new_max_type1'])}%** (today "
        f"{_pct(g['today_max_type1'])}%); Bayesian test naming a winner under the null, worst cell: "
        f"{_pct(g['new_max_bayes_false_decision'])}%; p = 0 exactly: {_pct(g['new_p_zero'])}% of tests.",
        "- width of the nested interval / today's at k = 5, r = 1 (coverage: today of mu_train / new of mu_train / "
        "nested of Err_XY / nested of mu_n); nested / new in the last column:",
    ]
    for row in g["nested_width_ratio_k5_r1"]:
        lines.append(f"  - n={row['n']}, Bayes {row['bayes']}, {row['dim']} features: "
                     f"**{row['nested_over_today']:.2f}x** ({_pct(row['today_coverage'])} / "
                     f"{_pct(row['new_coverage'])} / {_pct(row['nested_coverage_err_xy'])} / "
                     f"{_pct(row['nested_coverage_mu_n'])}); nested / new {row['nested_over_new']:.2f}x")
    lines += ["", *row_markdown(report)]
    lines += [
        "",
        "## Intervals",
        "",
        "Coverage of mu_train (the expected accuracy of the learner trained on n_train rows) for `today` (main before "
        "issue 14: Nadeau–Bengio t, a point when folds agree) and `new` (`CVResults.summary`, corrected Wilson); "
        "coverage of Err_XY (the model trained on all n rows of this data set), mu_n and mu_train for `nested` "
        f"(Bates–Hastie–Tibshirani with max(r, {NESTED_MIN_REPEATS}) nested repetitions, k >= 3; `nested 1 rep`: the "
        "first repetition alone). Width = mean width; 0w = zero-width rate; out = partly outside [0, 1]; extra fits = "
        "model fits the nested interval adds to the k x r of the cross-validation.",
        "",
        "| n | k | r | Bayes | features | mu_train | today cov | today width | today 0w | today out | new cov | "
        "new width | new 0w | new out | nested cov Err_XY | nested cov mu_n | nested cov mu_train | nested width | "
        "nested/today | nested 1 rep cov Err_XY | extra fits |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["intervals"]:
        t, w = c["today"]["mu_train"], c["new"]["mu_train"]
        row = (f"| {c['n']} | {c['k']} | {c['r']} | {c['bayes']} | {c['dim']} | {c['mu_train']:.4f} | "
               f"{_pct(t['coverage'])} | {t['width']:.4f} | {_pct(t['zero_width'])} | {_pct(t['outside_01'])} | "
               f"**{_pct(w['coverage'])}** | {w['width']:.4f} | {_pct(w['zero_width'])} | {_pct(w['outside_01'])} |")
        if c["nested"] is None:
            row += " – | – | – | – | – | – | – |"
        else:
            nx = c["nested"]
            row += (f" **{_pct(nx['err_xy']['coverage'])}** | {_pct(nx['mu_n']['coverage'])} | "
                    f"{_pct(nx['mu_train']['coverage'])} | {nx['err_xy']['width']:.4f} | "
                    f"{nx['err_xy']['width'] / t['width']:.2f} | {_pct(c['nested_1']['err_xy']['coverage'])} | "
                    f"{c['nested_extra_fits']} |")
        lines.append(row)
    lines += [
        "",
        "## Paired tests",
        "",
        "Rejection rates at alpha = 0.05. Null designs (`independent`: disjoint features, `correlated`: shared features, "
        "mostly equal predictions) have no true difference: the rate is the type-I error. `+gap` designs give A a "
        f"Bayes accuracy {GAP} higher; the true gap in expected accuracy at n_train is shown, and the rate is the "
        "power (rejections with A ahead). `bayes` = the Bayesian correlated t-test (rope 0.01) names a winner with "
        "probability > 0.95 (under the null: either one; with a gap: A). `refused`: k x r = 2, the new test refuses "
        "(today's ran). 5 features per learner.",
        "",
        "| n | k | r | Bayes | design | true gap | today reject | today bayes | today p=0 | new reject | new bayes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["paired"]:
        alt = c["design"].endswith("gap")
        key = "reject_a_better" if alt else "reject"
        bkey = "bayes_a_better" if alt else "bayes_decides"
        new = c["new"]
        new_cells = "refused | refused" if new == "refused" else f"**{_pct(new[key])}** | {_pct(new[bkey])}"
        lines.append(f"| {c['n']} | {c['k']} | {c['r']} | {c['bayes']} | {c['design']} | {c['true_gap']:+.4f} | "
                     f"{_pct(c['today'][key])} | {_pct(c['today'][bkey])} | {_pct(c['today']['p_zero'])} | "
                     f"{new_cells} |")
    lines += [
        "",
        "## Selection (winner's curse)",
        "",
        "k = 5, r = 1. `sweep`: four variants, nearest centroid on the first 2, 3, 4, 5 features (the signal spread "
        f"over 5); `ties`: {N_TIED} variants on disjoint features with the same signal (equal expected accuracy: the "
        "worst case). The winner is the variant with the best mean (`selection_verdict`). `plain`: the winner's own "
        "95% interval (its `CVResults.summary`) against its mu_train; `selection-aware`: `selection_verdict`'s "
        "`best_ci95_selection` (Bonferroni over the candidates); `nested`: the nested-CV estimate of "
        "select-then-train (3 inner folds, as `hf_tlcv.studies.selection`) against that procedure's expected accuracy. "
        "Optimism = the winner's mean minus its mu_train, averaged.",
        "",
        "| design | n | Bayes | winner optimism | plain cov | plain width | selection-aware cov | "
        "selection-aware width | nested cov | nested width |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["selection"]:
        lines.append(f"| {c['design']} | {c['n']} | {c['bayes']} | {c['winner_optimism']:+.4f} | "
                     f"{_pct(c['plain']['coverage'])} | "
                     f"{c['plain']['width']:.4f} | **{_pct(c['selection_aware']['coverage'])}** | "
                     f"{c['selection_aware']['width']:.4f} | **{_pct(c['nested']['coverage'])}** | "
                     f"{c['nested']['width']:.4f} |")
    return "\n".join(lines) + "\n"


def carry_nested(report: dict, previous: dict) -> int:
    """Copy the nested columns of `previous`'s interval cells into `report`'s cells run without them (the same cell
    seeds draw the same data sets, so the numbers are those of these very data sets). Returns how many cells."""
    keys = ("nested", "nested_1", "nested_repeats", "nested_extra_fits")
    old = {(c["n"], c["k"], c["r"], c["bayes"], c["dim"], c["sims"]): c for c in previous.get("intervals", [])}
    carried = 0
    for cell in report["intervals"]:
        match = old.get((cell["n"], cell["k"], cell["r"], cell["bayes"], cell["dim"], cell["sims"]))
        if cell.get("nested") is None and match is not None and match.get("nested") is not None:
            cell.update({k: match[k] for k in keys})
            cell["nested_from_previous_run"] = True
            carried += 1
    return carried


def merge(reports: list[dict]) -> dict:
    """One report from runs of different parts: each part's cells, grid (under `grids`) and wall time."""
    out = {"grid": {}, "grids": {}, "wall_time_s": {}, "machine": reports[0].get("machine") or machine()}
    for report in reports:
        for part in PARTS:
            if report.get(part):
                out.setdefault(part, []).extend(report[part])
                out["grids"].setdefault(part, []).append(report["grid"])  # one grid per run of the part
        for part, seconds in report.get("wall_time_s", {}).items():
            out["wall_time_s"][part] = out["wall_time_s"].get(part, 0.0) + seconds
        if not report.get("wall_time_s") and report.get("unstable"):  # a run cut short: its cells' own times
            out["wall_time_s"]["unstable"] = (out["wall_time_s"].get("unstable", 0.0)
                                              + sum(c["seconds"] for c in report["unstable"]))
    if out.get("unstable"):  # the unstable cells of every run, whichever learner each ran
        out["grids"]["unstable"] = [{"unstable": {
            "learners": sorted({c["learner"] for c in out["unstable"]}),
            "cells": [(c["learner"], c["n"], c["k"], c["r"], c["bayes"]) for c in out["unstable"]],
            "sims": sorted({c["sims"] for c in out["unstable"]})}}]
    for part in PARTS:
        out.setdefault(part, [])
    first = (out["grids"].get("intervals") or [reports[0]["grid"]])[0]
    out["grid"] = {**first, **{k: (out["grids"].get("paired") or [first])[0].get(k) for k in ("paired_sims", "power_sims")}}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    parser.add_argument("--sims", type=int, help="data sets per cell (all kinds)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="write one report from the outputs of runs of different parts (each with its own grid, "
                             "named in the report) instead of running anything")
    parser.add_argument("--nested-from", metavar="JSON",
                        help="with --merge: take the nested columns of cells run without them from this earlier report "
                             "of the same cells (same seeds, same data sets)")
    parser.add_argument("--grid", help="JSON object of grid entries to override, e.g. '{\"dim\": [5], \"nested\": "
                                       "false}' (a subset of the full grid; the report names the grid it ran)")
    parser.add_argument("--out", help="output path without extension (default benchmarks/results/sim_intervals)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated subset of intervals,paired,selection; with an existing output of the same "
                             "grid, only these parts are replaced (each cell has its own seed, so the numbers equal a "
                             "full run's)")
    args = parser.parse_args(argv)
    grid = dict(QUICK if args.quick else FULL)
    if args.sims:
        grid.update(sims=args.sims, paired_sims=args.sims, power_sims=args.sims)
    if args.grid:
        grid.update(json.loads(args.grid))
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts takes a comma-separated subset of {','.join(PARTS)}, got {args.parts!r}")
    default = "sim_intervals_quick" if args.quick else "sim_intervals"
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / default
    if args.merge:
        report = merge([json.loads(Path(path).read_text()) for path in args.merge])
        if args.nested_from:
            report["nested_carried_cells"] = carry_nested(report, json.loads(Path(args.nested_from).read_text()))
    else:
        report = run(grid, parts, log=lambda msg: print(msg, flush=True), partial=out.with_suffix(".partial.json"))
    previous = out.with_suffix(".json")
    if set(parts) != set(PARTS) and previous.exists() and not args.merge:
        old = json.loads(previous.read_text())
        if old["grid"] != json.loads(json.dumps(grid)):
            parser.error(f"{previous} was computed on another grid; rerun every part (drop --parts).")
        for part in set(PARTS) - set(parts):
            report[part] = old[part]
        report["wall_time_s"] = {**old["wall_time_s"], **report["wall_time_s"]}
    report["goals"] = goals(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(report))
    out.with_suffix(".md").write_text(to_markdown(report))
    print(json.dumps(report["goals"], indent=1))
    print(f"wrote {out.with_suffix('.md')} and .json")
    return report


if __name__ == "__main__":
    main()
