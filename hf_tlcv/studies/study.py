"""`TransferStudy`: answer transfer-learning questions by cross-validating variants of one setup on shared folds.

Every variant is a [`KFoldTrainer`] run in `output_dir/<variant>` with the same data, the same fold settings
(so the same `folds.json` indices) and the same training seed (so every fold of every variant starts from the
same seeded head and data order); only the overrides that define the variant differ. Paired per-fold differences
then go through the statistics of [`hf_tlcv.stats`]: the Nadeau-Bengio corrected resampled t-test (p-values
adjusted for multiple comparisons within a question), its confidence interval, and the Bayesian correlated
t-test with a region of practical equivalence.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import datasets
import numpy as np
from tqdm.auto import tqdm
from transformers.trainer_utils import set_seed

from ..config import FOLD_SETTINGS, KFoldConfig, check_setting_names
from ..folds import folds_fingerprint, load_folds
from ..modeling import load_classifier, load_processor
from .overfitting import diagnose_fold
from .report import StudyReport, Verdict
from ..results import CVResults, fold_sizes
from ..row_values import ROW_METRICS
from ..stats import (
    adjust_pvalues,
    bayesian_correlated_ttest,
    corrected_ci,
    corrected_paired_ttest,
    is_bounded_metric,
    row_paired_test,
)
from ..strategies import discover_layout
from ..validation import validate_dataset

QUESTIONS = ("pretrained", "baseline", "freeze", "lr", "overfitting")
SELECTION_QUESTIONS = ("freeze", "lr", "custom")
# Settings that decide the folds or the training seed: a variant that changed them would not be paired.
_PAIRING_FIELDS = (*FOLD_SETTINGS, "seed", "data_seed", "output_dir")
_RESERVED_NAMES = ("plots", "nested")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class Variant:
    """One configuration of a study.

    Attributes:
        name: folder-safe name, e.g. `"freeze_8"`.
        overrides: `KFoldConfig` fields that differ from the study's `args`; `"pretrained": False` means the same
            architecture with random initial weights.
        question: the question it belongs to.
        label: a readable description for tables.
        x: its position on the question's curve (frozen blocks, learning rate), `None` off the curve.
        tick: the tick label at `x`.
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    question: str = "custom"
    label: str = ""
    x: float | None = None
    tick: str | None = None

    @property
    def pretrained(self) -> bool:
        return bool(self.overrides.get("pretrained", True))

    # ---- classical baseline (issue 15) ----
    @property
    def classical(self) -> str | None:
        """The [`hf_tlcv.studies.baselines`] kind when this variant is a classical baseline instead of a `KFoldTrainer`
        run."""
        return self.overrides.get("baseline")


def _parse_questions(questions) -> tuple[str, ...]:
    if isinstance(questions, str):
        questions = [q for q in questions.split(",")]
    out = []
    for q in questions or ():
        q = q.strip().lower()
        if not q:
            continue
        if q not in QUESTIONS:
            raise ValueError(f"Unknown study question {q!r}; choose from {', '.join(QUESTIONS)} "
                             "(or pass variants={name: overrides}).")
        if q not in out:
            out.append(q)
    return tuple(out)


def _lr_name(lr: float) -> str:
    return f"lr_{lr:.2g}"


def default_freeze_depths(n_blocks: int) -> list[int]:
    """0, n/4, n/2, 3n/4 frozen blocks (distinct values); the linear probe and layer-wise decay are added apart."""
    return sorted({0, n_blocks // 4, n_blocks // 2, (3 * n_blocks) // 4})


def default_learning_rates(learning_rate: float, n: int = 5, span: float = 10.0) -> list[float]:
    """`n` log-spaced learning rates from `learning_rate / span` to `learning_rate * span` (2 significant digits)."""
    return [float(f"{lr:.2g}") for lr in np.geomspace(learning_rate / span, learning_rate * span, n)]


# ---- comparisons (pure functions of CVResults) -------------------------------------------------------------
def paired_scores(a: CVResults, b: CVResults, metric: str) -> tuple[list[float], list[float]]:
    """The two variants' per-fold scores in the same fold order, after checking they ran on the same folds."""
    key_a = [(f.repeat, f.fold, f.n_train, f.n_eval) for f in a.folds]
    key_b = [(f.repeat, f.fold, f.n_train, f.n_eval) for f in b.folds]
    if key_a != key_b:
        raise ValueError("The two results were not computed on the same folds (fold ids or sizes differ); a paired "
                         "comparison needs both variants cross-validated on identical folds.")
    for fa, fb in zip(a.folds, b.folds):
        if fa.predictions is not None and fb.predictions is not None and not np.array_equal(
                np.sort(fa.predictions["row"].to_numpy()), np.sort(fb.predictions["row"].to_numpy())):
            raise ValueError(f"fold_{fa.repeat}_{fa.fold} evaluated different rows in the two results: the folds "
                             "are not identical, so the comparison would not be paired.")
    for cv in (a, b):
        if any(metric not in f.eval_metrics for f in cv.folds):
            raise ValueError(f"Metric {metric!r} is missing from some folds; available: {sorted(a.summary)}.")
    return [float(f.eval_metrics[metric]) for f in a.folds], [float(f.eval_metrics[metric]) for f in b.folds]


def discordant_rows(a: CVResults, b: CVResults, metric: str = "accuracy") -> float | None:
    """Rows per repeat on which the two variants disagree, from their out-of-fold predictions.

    For an accuracy, the rows where exactly one of the two is right (McNemar's discordant pairs); for other metrics,
    the rows where their predicted classes differ. `None` when a fold of either lacks predictions. The two results
    must have been checked to evaluate the same rows per fold ([`paired_scores`]).
    """
    total = 0
    for fa, fb in zip(a.folds, b.folds):
        if fa.predictions is None or fb.predictions is None or fa.predictions.empty or fb.predictions.empty:
            return None
        pa = fa.predictions.iloc[np.argsort(fa.predictions["row"].to_numpy(), kind="stable")]
        pb = fb.predictions.iloc[np.argsort(fb.predictions["row"].to_numpy(), kind="stable")]
        if "accuracy" in metric.lower():
            total += int(np.count_nonzero((pa["prediction"].to_numpy() == pa["label"].to_numpy())
                                          != (pb["prediction"].to_numpy() == pb["label"].to_numpy())))
        else:
            total += int(np.count_nonzero(pa["prediction"].to_numpy() != pb["prediction"].to_numpy()))
    return total / len({f.repeat for f in a.folds})


def row_paired(a: CVResults, b: CVResults, metric: str) -> dict | str:
    """The per-row paired test of `a - b` (`hf_tlcv.stats.row_paired_test` on the per-row differences), or why the
    comparison keeps the corrected test: a run made with another `ci_method`, a metric that is not a per-row mean,
    no predictions, dependent rows, or fold differences that spread beyond their rows."""
    if a.ci_method != "row" or b.ci_method != "row":
        return f"the runs were made with ci_method={a.ci_method!r} / {b.ci_method!r}"
    if metric not in ROW_METRICS:
        return f"{metric} is not a mean of per-row values"
    found_a, found_b = a.row_values(metric), b.row_values(metric)
    for found in (found_a, found_b):
        if isinstance(found, str):
            return found
    for cv in (a, b):  # a learner unstable on its own is unstable in a comparison too
        if "fallback" in cv.summary.get(metric, {}):
            return cv.summary[metric]["fallback"]
    (values_a, rows), (values_b, rows_b) = found_a, found_b
    if any(not np.array_equal(x, y) for x, y in zip(rows, rows_b)):
        return "the two runs' folds evaluated different rows"
    test = row_paired_test([x - y for x, y in zip(values_a, values_b)], rows, [f.repeat for f in a.folds],
                           bounded=metric == "accuracy", n_train=fold_sizes(a.folds)[0])
    if test["instability"]["unstable"]:
        return f"unstable: {test['instability']['unstable']}"
    return test


def compare(a: CVResults, b: CVResults, metric: str = "accuracy", rope: float = 0.01) -> dict:
    """Paired comparison of two variants on the same folds: mean difference `a - b`, its corrected 95% interval,
    the corrected resampled t-test and the Bayesian correlated t-test.

    With runs made with `ci_method="row"` (the default), accuracy and the loss are compared row by row
    ([`row_paired`]: the per-row interval of the differences, floored by McNemar's exact test for accuracy), unless
    its conditions fail, which `fallback` then says. Otherwise, and for the other metrics, the corrected test: for
    metrics in [0, 1] (accuracy, precision, recall, F1) with the floor of the evaluated rows
    (`hf_tlcv.stats.corrected_paired_ttest` with `bounded=True`): McNemar's test on the rows where the variants
    disagree, counted from the out-of-fold predictions when both results have them. The Bayesian probabilities are
    always the corrected ones. For the loss (lower is better) pass the negated direction yourself: the difference is
    always `a - b`.

    Returns:
        `dict` with `mean_a`, `mean_b`, `mean_diff`, `ci95`, `t`, `df` (`None` for the per-row test), `p_value`,
        `p_a_better`, `p_equivalent`, `p_b_better`, `rope`, `fold_diffs`, `n_discordant` (rows per repeat the variants
        disagree on, `None` without predictions), `method` (`"row"` or `"corrected"`) and, when the per-row test was
        wanted but not used, `fallback` (why).

    Raises:
        `ValueError`: If the results were not computed on the same folds, or hold fewer than 3 folds (a paired test
            needs `n_folds * n_repeats >= 3`).
    """
    scores_a, scores_b = paired_scores(a, b, metric)
    n_train, n_eval, n_rows = fold_sizes(a.folds)
    discordant = discordant_rows(a, b, metric)
    floor = {"bounded": is_bounded_metric(metric, scores_a + scores_b), "n_rows": n_rows, "n_discordant": discordant}
    test = row_paired(a, b, metric)
    method = {"method": "row"} if isinstance(test, dict) else {"method": "corrected"}
    if isinstance(test, str):
        if a.ci_method == "row" and metric in ROW_METRICS:
            method["fallback"] = test
        test = corrected_paired_ttest(scores_a, scores_b, n_train, n_eval, **floor)
    bayes = bayesian_correlated_ttest(scores_a, scores_b, n_train, n_eval, rope=rope, **floor)
    return {
        "metric": metric,
        "mean_a": float(np.mean(scores_a)),
        "mean_b": float(np.mean(scores_b)),
        **{k: test[k] for k in ("mean_diff", "ci95", "t", "df", "p_value")},
        **bayes,
        "rope": rope,
        "fold_diffs": [x - y for x, y in zip(scores_a, scores_b)],
        "n_discordant": discordant,
        **method,
    }


def degenerate_predictions(cv: CVResults) -> list | None:
    """The one class each fold predicts, when every fold's out-of-fold predictions are a single class; else `None`.

    A model that predicts one class for every row learned nothing: its accuracy is the majority-class rate of each
    eval fold (a scratch network at chance, loss ln 2 on two classes). A comparison with it measures the other
    variant against a constant, not the setting that differs between them. `None` too when a fold has no saved
    predictions (nothing to judge from).

    Example:
    ```python
    >>> degenerate_predictions(scratch_results)   # predicted class 1 on every row of all 5 folds
    [1, 1, 1, 1, 1]

    ```
    """
    if not cv.folds:
        return None
    constant = []
    for f in cv.folds:
        if f.predictions is None or f.predictions.empty or "prediction" not in f.predictions:
            return None
        classes = f.predictions["prediction"].unique()
        if len(classes) != 1:
            return None
        constant.append(classes[0].item() if hasattr(classes[0], "item") else classes[0])
    return constant


# What a comparison with a model that learned nothing fails to say, per question.
_DEGENERATE_TOPIC = {"pretrained": "pretraining", "baseline": "pretraining", "freeze": "freeze depth",
                     "lr": "the learning rate"}


def degenerate_warning(name: str, question: str) -> str:
    """The line that calls out a variant that predicts one class on every fold."""
    topic = _DEGENERATE_TOPIC.get(question, "its settings")
    return (f"{name} predicts one class on every fold: it learned nothing; its comparison says nothing about "
            f"{topic}.")


def _degenerate(results: dict[str, CVResults]) -> dict[str, list]:
    found = {name: degenerate_predictions(cv) for name, cv in results.items()}
    return {name: classes for name, classes in found.items() if classes is not None}


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def test_name(comparison: dict) -> str:
    """The test a comparison's p-value comes from, in words (see [`compare`]'s `method`)."""
    return "per-row paired test" if comparison.get("method") == "row" else "corrected t-test"


def pairwise_verdict(question: str, name_a: str, name_b: str, a: CVResults, b: CVResults, metric: str,
                     rope: float = 0.01, alpha: float = 0.05, context: str = "") -> Verdict:
    """A verdict in words on `a` vs `b`: who wins and by how much, or that they cannot be told apart."""
    c = compare(a, b, metric, rope)
    lo, hi = c["ci95"]
    d = c["mean_diff"]
    stats_text = (f"95% interval of the difference [{lo:+.3f}, {hi:+.3f}], {test_name(c)} p={c['p_value']:.3g}, "
                  f"P({name_a} better) = {c['p_a_better']:.2f}, P(equivalent within ±{rope:g}) = "
                  f"{c['p_equivalent']:.2f}, P({name_b} better) = {c['p_b_better']:.2f}; "
                  f"{len(c['fold_diffs'])} paired folds")
    means = f"{name_a} {c['mean_a']:.3f} vs {name_b} {c['mean_b']:.3f}"
    if c["p_value"] < alpha and d != 0:
        winner, loser = (name_a, name_b) if d > 0 else (name_b, name_a)
        text = f"{winner} beats {loser} by {abs(d):+.3f} {metric} ({means}; {stats_text})."
        headline = f"{winner} beats {loser} by {abs(d):+.3f} {metric} ({means})."
        c["winner"] = winner
    elif c["p_equivalent"] >= 1 - alpha:
        text = f"{name_a} and {name_b} are practically equivalent in {metric} ({means}; {stats_text})."
        headline = f"{name_a} and {name_b} are practically equivalent in {metric} ({means})."
        c["winner"] = None
    else:
        text = (f"no clear winner: {name_a} - {name_b} = {_signed(d)} {metric} ({means}; {stats_text}); the folds "
                "cannot tell them apart at this size.")
        headline = f"no clear winner: {name_a} - {name_b} = {_signed(d)} {metric} ({means})."
        c["winner"] = None
    degenerate = _degenerate({name_a: a, name_b: b})
    warnings = [degenerate_warning(name, question) for name in degenerate]
    details = warnings + ([context.strip().rstrip(":")] if context else []) + [
        f"difference {_signed(d)}, 95% interval [{lo:+.3f}, {hi:+.3f}]; {test_name(c)} p={c['p_value']:.3g}; "
        f"{len(c['fold_diffs'])} paired folds",
        f"P({name_a} better) = {c['p_a_better']:.2f}, P(equivalent within ±{rope:g}) = {c['p_equivalent']:.2f}, "
        f"P({name_b} better) = {c['p_b_better']:.2f}"]
    if warnings:
        text += " " + " ".join(w[0].upper() + w[1:] for w in warnings)
    c.update(a=name_a, b=name_b, alpha=alpha, degenerate=degenerate)
    return Verdict(question=question, text=(context + text) if context else text[0].upper() + text[1:], numbers=c,
                   headline=headline[0].upper() + headline[1:], details=details, degenerate=list(degenerate))


def selection_interval(cv: CVResults, metric: str, n_candidates: int, confidence: float = 0.95) -> list[float]:
    """The interval of a variant that was selected as the best of `n_candidates`, valid despite the selection.

    The winner of a sweep is the variant whose folds happened to favour it most, so its plain 95% interval covers its
    true score less often than 95% of the time (the winner's curse). Each of the `n_candidates` intervals at
    confidence `1 - (1 - confidence) / n_candidates` covers its own variant, so all of them cover at once with
    probability at least `confidence` (Bonferroni), whichever variant the selection then picks.

    Args:
        cv ([`CVResults`]): the selected variant's results.
        metric (`str`): the metric that selected it.
        n_candidates (`int`): how many variants the selection chose among.
        confidence (`float`, defaults to 0.95): the coverage kept after the selection.

    Returns:
        `list[float]`: `[low, high]`, plain floats.
    """
    n_train, n_eval, n_rows = fold_sizes(cv.folds)
    scores = [float(f.eval_metrics[metric]) for f in cv.folds]
    low, high = corrected_ci(scores, n_train, n_eval, 1.0 - (1.0 - confidence) / max(1, n_candidates),
                             bounded=is_bounded_metric(metric, scores), n_rows=n_rows)
    return [float(low), float(high)]


def selection_verdict(question: str, results: dict[str, CVResults], metric: str, labels: dict[str, str] | None = None,
                      rope: float = 0.01, alpha: float = 0.05, p_adjust: str = "holm",
                      nested: dict | None = None) -> Verdict:
    """Name the best of several variants and say whether it is distinguishable from the runner-up (and the rest).

    The best variant (highest mean `metric`) is compared with every other one on the shared folds; the p-values of
    these `m - 1` comparisons are adjusted with `p_adjust` (Holm by default). The best variant's own mean is
    optimistic (the same folds chose it and score it), so the verdict leads with a selection-aware estimate: the
    nested cross-validation estimate when `nested` is given (the output of
    [`hf_tlcv.studies.selection.nested_selection`]),
    otherwise the best's mean with the interval of [`selection_interval`] (Bonferroni over the `m` candidates).
    """
    if len(results) < 2:
        raise ValueError(f"Question {question!r} needs at least two variants to compare, got {list(results)}.")
    labels = labels or {}
    means = {n: float(np.mean([f.eval_metrics[metric] for f in cv.folds])) for n, cv in results.items()}
    order = sorted(means, key=lambda n: -means[n])
    best, rest = order[0], order[1:]
    rows = []
    for name in rest:
        c = compare(results[best], results[name], metric, rope)
        rows.append({"variant": name, "mean": means[name], "mean_diff": c["mean_diff"], "ci95": c["ci95"],
                     "p_value": c["p_value"], "p_best_better": c["p_a_better"], "p_equivalent": c["p_equivalent"],
                     "method": c["method"], **({"fallback": c["fallback"]} if "fallback" in c else {})})
    for row, p in zip(rows, adjust_pvalues([r["p_value"] for r in rows], method=p_adjust)):
        row["p_adjusted"] = p
    runner = rows[0]
    lo, hi = results[best].summary[metric]["ci95"]
    s_lo, s_hi = selection_interval(results[best], metric, len(results))
    distinct = sum(r["p_adjusted"] < alpha for r in rows)

    def describe(name):
        return f"{name} ({labels[name]})" if labels.get(name) else name

    separable = runner["p_adjusted"] < alpha
    est = n_lo = n_hi = None
    if nested is not None:
        est = nested["estimate"]
        n_lo, n_hi = est["ci95"]
        lead = (f"choosing the best of {len(results)} variants and training it scores {metric} {est['mean']:.3f} "
                f"(nested cross-validation, 95% interval [{n_lo:.3f}, {n_hi:.3f}]: this estimate accounts for the "
                f"selection). On the shared folds the best is {describe(best)} with {means[best]:.3f} (optimistic by "
                f"{means[best] - est['mean']:+.3f}; 95% interval over the selection [{s_lo:.3f}, {s_hi:.3f}]). ")
    else:
        lead = (f"best is {describe(best)} with {metric} {means[best]:.3f} (95% interval [{s_lo:.3f}, {s_hi:.3f}] "
                f"accounting for the selection among {len(results)} variants; the winner's mean is optimistic, "
                f"nested=True estimates it without the selection's bias). ")
    better_than = [r["variant"] for r in rows if r["p_adjusted"] < alpha]
    not_better = [r["variant"] for r in rows if r["p_adjusted"] >= alpha]
    degenerate = _degenerate(results)
    warnings = [degenerate_warning(name, question) for name in degenerate]
    text = (lead + f"Runner-up {describe(runner['variant'])} {runner['mean']:.3f}: difference "
            f"{runner['mean_diff']:+.3f} (95% interval [{runner['ci95'][0]:+.3f}, {runner['ci95'][1]:+.3f}]), "
            f"{test_name(runner)} p={runner['p_value']:.3g}, {p_adjust}-adjusted over {len(rows)} comparisons with "
            f"the best p={runner['p_adjusted']:.3g}, P(best better) = {runner['p_best_better']:.2f} -> "
            + ("the best is distinguishable from the runner-up." if separable
               else "the best is NOT distinguishable from the runner-up.")
            + f" The best is significantly better than {distinct} of the {len(rows)} other variants "
              f"(adjusted p < {alpha:g})" + (f": {', '.join(better_than)}." if better_than else ".")
            + "".join(" " + w[0].upper() + w[1:] for w in warnings))
    headline = (f"best is {best} ({metric} {means[best]:.3f}), "
                + ("distinguishable from" if separable else "NOT distinguishable from")
                + f" the runner-up {runner['variant']} ({runner['mean']:.3f}).")
    adjusted = {r["variant"]: r["p_adjusted"] for r in rows}
    details = list(warnings)
    if labels.get(best):
        details.append(f"{best}: {labels[best]}")
    if nested is not None:
        details.append(f"nested CV estimate of choosing the best of {len(results)} and training it: "
                       f"{est['mean']:.3f} [{n_lo:.3f}, {n_hi:.3f}]; {best}'s own mean is optimistic by "
                       f"{means[best] - est['mean']:+.3f}")
    else:
        details.append(f"95% interval over the selection among {len(results)} variants: [{s_lo:.3f}, {s_hi:.3f}] "
                       "(nested=True removes the winner's optimism)")
    details += [
        f"runner-up {runner['variant']}: difference {runner['mean_diff']:+.3f} [{runner['ci95'][0]:+.3f}, "
        f"{runner['ci95'][1]:+.3f}], p={runner['p_value']:.3g}, {p_adjust} p={runner['p_adjusted']:.3g}, "
        f"P(best better) = {runner['p_best_better']:.2f}",
        f"significantly better ({p_adjust} p < {alpha:g}) than {distinct} of {len(rows)}: "
        + (", ".join(f"{n} (p={adjusted[n]:.2g})" for n in better_than) if better_than else "none")]
    if better_than and not_better:
        details.append("not distinguishable from the best: " + ", ".join(not_better))
    numbers = {"metric": metric, "best": best, "runner_up": runner["variant"], "distinguishable": separable,
               "n_distinguishable": distinct, "better_than": better_than, "means": means, "comparisons": rows,
               "p_adjust": p_adjust, "alpha": alpha, "rope": rope, "best_ci95": [lo, hi],
               "best_ci95_selection": [s_lo, s_hi], "estimate": nested["estimate"] if nested is not None else None,
               "degenerate": degenerate}
    return Verdict(question=question, text=text[0].upper() + text[1:], numbers=numbers,
                   headline=headline[0].upper() + headline[1:], details=details, degenerate=list(degenerate))


def overfitting_verdict(diagnoses: dict[str, list], metric: str, gap_threshold: float, loss_rise: float) -> Verdict:
    """Summarise per-fold overfitting diagnoses of every run in one verdict."""
    flat = [(run, d) for run, ds in diagnoses.items() for d in ds]
    flagged = [(run, d) for run, d in flat if d.overfitting]
    has_curves = any(d.best_epoch is not None for _, d in flat)
    gaps = [(d.gap, run, d.fold) for run, d in flat if d.gap is not None]
    largest = max(gaps) if gaps else None
    rules = (f"a fold is flagged when its eval loss ends more than {loss_rise:.0%} above its minimum while the train "
             f"loss falls, or when train {metric} exceeds eval {metric} by more than {gap_threshold:g}")
    if not has_curves:
        rules += " (no per-epoch eval loss was logged, so only the gap was checked; use eval_strategy='epoch')"
    if not flagged:
        text = f"no overfitting in any of the {len(flat)} folds of {len(diagnoses)} variant(s) ({rules})"
        headline = f"no overfitting in any of the {len(flat)} folds of {len(diagnoses)} variant(s)."
        details = []
        if largest is not None:
            text += f"; the largest train-eval gap is {largest[0]:+.3f} ({largest[1]} {largest[2]})"
            details.append(f"largest train-eval {metric} gap: {largest[0]:+.3f} ({largest[1]} {largest[2]})")
        text += "."
        details.append(f"rule: {rules}")
    else:
        parts = [f"{run} {d.fold}: {'; '.join(d.reasons)}" for run, d in flagged[:6]]
        more = f"; and {len(flagged) - 6} more (see the table)" if len(flagged) > 6 else ""
        per_run = ", ".join(f"{run} {sum(d.overfitting for d in ds)}/{len(ds)}" for run, ds in diagnoses.items())
        n_rising = sum(d.onset_epoch is not None for _, d in flagged)
        n_gap = sum(d.gap is not None and d.gap > gap_threshold for _, d in flagged)
        text = (f"{len(flagged)} of {len(flat)} folds flagged ({n_rising} with a rising eval loss, {n_gap} with a "
                f"train-eval {metric} gap > {gap_threshold:g}; per variant: {per_run}). " + ". ".join(parts) + more
                + f". Rule: {rules}.")
        headline = (f"{len(flagged)} of {len(flat)} folds flagged: {n_rising} with a rising eval loss, {n_gap} with "
                    f"a train-eval {metric} gap > {gap_threshold:g}.")
        details = [f"per variant: {per_run}"] + parts + ([f"and {len(flagged) - 6} more (see the table)"]
                                                         if len(flagged) > 6 else []) + [f"rule: {rules}"]
    numbers = {"n_folds": len(flat), "n_flagged": len(flagged), "gap_threshold": gap_threshold,
               "n_rising_eval_loss": sum(d.onset_epoch is not None for _, d in flagged),
               "loss_rise": loss_rise, "flagged": [{"variant": run, **d.to_dict()} for run, d in flagged],
               "largest_gap": None if largest is None else {"gap": largest[0], "variant": largest[1],
                                                            "fold": largest[2]}}
    return Verdict(question="overfitting", text=text[0].upper() + text[1:], numbers=numbers,
                   headline=headline[0].upper() + headline[1:], details=details)


# ---- the study ---------------------------------------------------------------------------------------------
class TransferStudy:
    r"""
    Cross-validate variants of one fine-tuning setup on identical folds and answer transfer-learning questions.

    Questions (any combination):
        - `"pretrained"`: the pretrained model against the same architecture with random initial weights.
        - `"baseline"`: the pretrained model against a classical baseline fitted on the same folds (TF-IDF + logistic
          regression for text, a logistic regression on raw pixels for images; see [`hf_tlcv.studies.baselines`]).
        - `"freeze"`: freezing the embeddings and the bottom 0, n/4, n/2, 3n/4 of the n blocks, the linear probe
          (everything but the head frozen) and, as the alternative to freezing, layer-wise learning-rate decay.
        - `"lr"`: a log-spaced learning-rate grid around `args.learning_rate`.
        - `"overfitting"`: per fold of every variant, train vs. eval metrics and per-epoch loss curves (the study
          sets `eval_strategy="epoch"`); flags folds whose eval loss rises while their train loss falls, or whose
          train-eval gap is large, and says from which epoch.

    Args:
        model (`str` or `PreTrainedModel`): a Hub id, local folder or `builtin:` name, or a built classifier.
        train_dataset (`datasets.Dataset`): all the labelled rows.
        args ([`KFoldConfig`]): the base setup; every variant copies it, changing only its own overrides, and runs
            in `args.output_dir/<variant>`. The report goes to `args.output_dir`.
        questions (`str` or `Iterable[str]`): e.g. `("pretrained", "freeze", "lr")` or `"pretrained,overfitting"`.
        variants (`dict[str, dict]`, *optional*): your own variants, `{name: KFoldConfig overrides}` (`"pretrained":
            False` for random init), compared as the `"custom"` question.
        freeze_depths (`list[int]`, *optional*): frozen-block counts of the freeze sweep (default 0, n/4, n/2, 3n/4).
        learning_rates (`list[float]`, *optional*): the learning-rate grid (default 5 values, lr/10 to lr*10).
        layerwise_lr_decay (`float`, defaults to 0.8): decay of the layer-wise variant of the freeze sweep.
        nested (`bool`, defaults to `False`): estimate the selected freeze depth / learning rate by nested
            cross-validation (see [`hf_tlcv.studies.selection`]).
        inner_folds (`int`, defaults to 3): folds of the inner cross-validation with `nested=True`.
        metric (`str`, *optional*): the score compared (default `accuracy` when computed, else the first metric).
        rope (`float`, defaults to 0.01): half-width of the region of practical equivalence (score units).
        alpha (`float`, defaults to 0.05): significance level of the verdicts.
        p_adjust (`str`, defaults to `"holm"`): multiple-comparison adjustment, `"holm"` or `"bonferroni"`.
        gap_threshold, loss_rise: thresholds of the overfitting detector ([`detect_overfitting`]).
        callbacks (`list[TrainerCallback]`, *optional*): given to every variant's (and inner) `KFoldTrainer`.
        processing_class: image processor or tokenizer (loaded with the model when `model` is a name).
        trainer_kwargs: more keyword arguments for every `KFoldTrainer` (`compute_metrics`, `data_collator`, ...).

    Example:
    ```python
    >>> from hf_tlcv import KFoldConfig, TransferStudy
    >>> from hf_tlcv import load_data
    >>> ds = load_data("builtin:animal-mnist").shuffle(seed=0).select(range(400))
    >>> args = KFoldConfig(output_dir="study", n_folds=5, image_size=64, num_train_epochs=3, learning_rate=1e-3)
    >>> report = TransferStudy("builtin:efficientnet-lite0", ds, args, questions=("pretrained", "freeze")).run()
    >>> print(report.verdicts[0].text)

    ```
    """

    def __init__(self, model, train_dataset: datasets.Dataset, args: KFoldConfig,
                 questions: str | Iterable[str] = (), variants: dict[str, dict] | None = None,
                 freeze_depths: list[int] | None = None, learning_rates: list[float] | None = None,
                 layerwise_lr_decay: float = 0.8, nested: bool = False, inner_folds: int = 3,
                 metric: str | None = None, rope: float = 0.01, alpha: float = 0.05, p_adjust: str = "holm",
                 gap_threshold: float = 0.1, loss_rise: float = 0.1, callbacks: list | None = None,
                 processing_class=None, **trainer_kwargs):
        if not isinstance(args, KFoldConfig):
            raise TypeError(f"args must be a KFoldConfig, got {type(args).__name__}.")
        if model is None:
            raise ValueError("TransferStudy needs a model: a Hub id, a local folder, a builtin: name or a built "
                             "classifier.")
        if p_adjust not in ("holm", "bonferroni"):
            raise ValueError(f"p_adjust must be 'holm' or 'bonferroni', got {p_adjust!r}.")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
        if inner_folds < 2:
            raise ValueError(f"inner_folds must be at least 2, got {inner_folds}.")
        self.questions = _parse_questions(questions)
        if not self.questions and not variants:
            raise ValueError("Give the study something to answer: questions=('pretrained', 'freeze', 'lr', "
                             "'overfitting') and/or variants={name: overrides}.")
        if nested and not (set(self.questions) & {"freeze", "lr"} or variants):
            raise ValueError("nested=True estimates a selected winner: ask 'freeze' or 'lr' (or give variants).")
        paired = set(self.questions) & {"pretrained", "baseline", "freeze", "lr"} or variants
        if paired and args.n_folds * args.n_repeats < 3:
            raise ValueError(f"The study's paired tests need at least 3 fold scores per variant to estimate the "
                             f"variance of a difference, and n_folds={args.n_folds} x n_repeats={args.n_repeats} gives "
                             f"{args.n_folds * args.n_repeats}; set n_folds=3 or more, or n_repeats=2 or more.")
        # The data is checked (and string labels encoded, once for every variant) before any model is loaded.
        checked = validate_dataset(train_dataset, args, name="train_dataset", checked=True)
        self.model, self.train_dataset, self.args = model, checked.dataset, args
        self.freeze_depths, self.learning_rates = freeze_depths, learning_rates
        self.layerwise_lr_decay, self.nested, self.inner_folds = layerwise_lr_decay, nested, inner_folds
        self.metric, self.rope, self.alpha, self.p_adjust = metric, rope, alpha, p_adjust
        self.gap_threshold, self.loss_rise = gap_threshold, loss_rise
        self.callbacks, self.processing_class, self.trainer_kwargs = callbacks, processing_class, trainer_kwargs
        self.model_name = model if isinstance(model, str) else type(model).__name__
        self.class_names, self.n_labels = checked.class_names, checked.n_labels
        self._n_blocks: int | None = None
        self._base_trainer = None
        # Everything that can be wrong with the plan is found now, before hours of training.
        self.variants: dict[str, Variant] = {}
        self.question_variants: dict[str, list[str]] = {}
        self._plan(variants or {})

    # ---- plan --------------------------------------------------------------------------------------------
    def _layout_blocks(self) -> int:
        if self._n_blocks is None:
            if isinstance(self.model, str):
                set_seed(self.args.seed)
                built = load_classifier(self.model, self.class_names, self.n_labels,
                                        text_pooling=self.args.text_pooling)
            else:
                built = self.model
            self._n_blocks = discover_layout(built).n_blocks
            del built
        return self._n_blocks

    def _add(self, question: str, variant: Variant) -> None:
        if not _NAME.match(variant.name) or variant.name in _RESERVED_NAMES:
            raise ValueError(f"Variant name {variant.name!r} cannot be a folder name here: use letters, digits, "
                             f"'_', '-', '.' (and not {', '.join(_RESERVED_NAMES)}).")
        bad = sorted(set(variant.overrides) & set(_PAIRING_FIELDS))
        if bad:
            raise ValueError(f"Variant {variant.name!r} overrides {', '.join(bad)}, which decide the folds or the "
                             "training seed; every variant must share them to be compared on identical folds. Set "
                             "them in the study's args instead.")
        self._config_for(variant)  # invalid overrides fail here, with KFoldConfig's own message
        known = self.variants.get(variant.name)
        if known is not None and known.overrides != variant.overrides:
            raise ValueError(f"Two different variants are called {variant.name!r}; rename one.")
        self.variants.setdefault(variant.name, variant)
        self.question_variants.setdefault(question, [])
        if variant.name not in self.question_variants[question]:
            self.question_variants[question].append(variant.name)

    def _plan(self, custom: dict[str, dict]) -> None:
        args = self.args
        base_label = f"pretrained, finetune_strategy={args.finetune_strategy}"
        if "pretrained" in self.questions:
            self._add("pretrained", Variant("pretrained", {}, "pretrained", base_label))
            self._add("pretrained", Variant("scratch", {"pretrained": False}, "pretrained",
                                            f"random init, finetune_strategy={args.finetune_strategy}"))
        if "baseline" in self.questions:
            from .baselines import baseline_kind

            baseline_kind(self.train_dataset, "auto", args.text_column, args.image_column)  # no raw column: now
            self._add("baseline", Variant("pretrained", {}, "baseline", base_label))
            self._add("baseline", Variant("baseline", {"baseline": "auto"}, "baseline",
                                          "classical baseline: TF-IDF + logistic regression (text) or logistic "
                                          "regression on raw pixels (images), same folds"))
        if "freeze" in self.questions:
            n = self._layout_blocks()
            depths = default_freeze_depths(n) if self.freeze_depths is None else sorted(set(self.freeze_depths))
            for d in depths:
                if not 0 <= int(d) <= n:
                    raise ValueError(f"freeze_depths must lie in 0..{n} (the model has {n} blocks), got {d}.")
            full = {"finetune_strategy": "full", "freeze_layers": 0, "layerwise_lr_decay": None}
            for d in depths:
                overrides = full if d == 0 else {"finetune_strategy": "freeze", "freeze_layers": int(d),
                                                 "layerwise_lr_decay": None}
                label = "nothing frozen" if d == 0 else f"embeddings + {d} of {n} blocks frozen"
                self._add("freeze", Variant(f"freeze_{d}", dict(overrides), "freeze", label, float(d), str(d)))
            self._add("freeze", Variant("linear_probe", {"finetune_strategy": "linear_probe", "freeze_layers": 0,
                                                         "layerwise_lr_decay": None}, "freeze",
                                        "whole backbone frozen, head only", float(n + 1), "head only"))
            decay = self.layerwise_lr_decay
            self._add("freeze", Variant(f"llrd_{decay:g}", {**full, "layerwise_lr_decay": decay}, "freeze",
                                        f"nothing frozen, layer-wise lr decay {decay:g}"))
        if "lr" in self.questions:
            lrs = (default_learning_rates(args.learning_rate) if self.learning_rates is None
                   else sorted({float(x) for x in self.learning_rates}))
            if len(lrs) < 2 or any(not (math.isfinite(x) and x > 0) for x in lrs):
                raise ValueError(f"learning_rates needs at least two positive values, got {lrs}.")
            for lr in lrs:
                self._add("lr", Variant(_lr_name(lr), {"learning_rate": lr}, "lr", f"learning rate {lr:g}", lr,
                                        f"{lr:.2g}"))
        for name, overrides in custom.items():
            if not isinstance(overrides, dict):
                raise TypeError(f"variants[{name!r}] must be a dict of KFoldConfig overrides, got "
                                f"{type(overrides).__name__}.")
            label = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the base setup"
            self._add("custom", Variant(name, dict(overrides), "custom", label))
        if "custom" in self.question_variants and len(self.question_variants["custom"]) < 2:
            raise ValueError("variants= needs at least two variants to compare.")
        if "overfitting" in self.questions:
            if not self.variants:
                self._add("overfitting", Variant("base", {}, "overfitting", base_label))
            self.question_variants["overfitting"] = list(self.variants)
        # Variants with identical effective settings (e.g. 'pretrained' and 'freeze_0' when the base setup is full
        # fine-tuning) are one run: same folds, seeds and settings give the same results.
        self.runs: dict[str, str] = {}
        seen: dict[str, str] = {}
        for name, variant in self.variants.items():
            key = json.dumps([variant.pretrained, variant.classical,
                              self._config_for(variant).result_fingerprint_dict()],
                             sort_keys=True, default=str)
            self.runs[name] = seen.setdefault(key, name)

    def _base_overrides(self) -> dict:
        # Per-epoch eval losses for the overfitting question, for every variant so they stay comparable.
        return {"eval_strategy": "epoch"} if "overfitting" in self.questions else {}

    def _overrides_for(self, variant: Variant, output_dir: str | Path | None = None, **extra) -> dict:
        """The settings of `variant` that differ from the base setup's (`base_trainer`'s), its folder included."""
        overrides = {k: v for k, v in variant.overrides.items() if k not in ("pretrained", "baseline")}
        check_setting_names(overrides, f"Variant {variant.name!r} sets")
        out = output_dir if output_dir is not None else Path(self.args.output_dir) / variant.name
        return {**overrides, **extra, "output_dir": str(out)}

    def _config_for(self, variant: Variant, output_dir: str | Path | None = None, **extra) -> KFoldConfig:
        return self.args.derive(**self._base_overrides()).derive(**self._overrides_for(variant, output_dir, **extra))

    # ---- run ---------------------------------------------------------------------------------------------
    def _model_for(self, variant: Variant, config: KFoldConfig):
        """The model argument and processing class of one variant's KFoldTrainer."""
        processing_class = self.processing_class
        if variant.pretrained:
            return self.model, processing_class
        # Same architecture, random weights, drawn from the training seed as the pretrained head is.
        set_seed(config.seed)
        if isinstance(self.model, str):
            if processing_class is None:
                processing_class = load_processor(self.model)
            return load_classifier(self.model, self.class_names, self.n_labels, pretrained=False,
                                   text_pooling=config.text_pooling), processing_class
        return type(self.model)(copy.deepcopy(self.model.config)), processing_class

    @property
    def base_trainer(self):
        """The `KFoldTrainer` of the study's base setup (built once, on first use: the model loaded, the rows
        preprocessed); every variant's trainer is derived from it (`KFoldTrainer.derive`)."""
        if self._base_trainer is None:
            from ..trainer import KFoldTrainer

            self._base_trainer = KFoldTrainer(
                model=self.model, args=self.args.derive(**self._base_overrides()), train_dataset=self.train_dataset,
                processing_class=self.processing_class, callbacks=self.callbacks, **self.trainer_kwargs)
        return self._base_trainer

    def make_trainer(self, variant: Variant, dataset: datasets.Dataset | None = None,
                     output_dir: str | Path | None = None, **config_overrides):
        """The `KFoldTrainer` of one variant (on `dataset`, default the study's, in `output_dir`), derived from
        [`base_trainer`]."""
        overrides = self._overrides_for(variant, output_dir, **config_overrides)
        rows = {} if dataset is None else {"train_dataset": dataset}
        if variant.pretrained:
            return self.base_trainer.derive(**rows, **overrides)
        model, processing_class = self._model_for(variant, self._config_for(variant, output_dir, **config_overrides))
        return self.base_trainer.derive(model=model, processing_class=processing_class, **rows, **overrides)

    def run(self) -> StudyReport:
        """Cross-validate every variant (resuming finished folds), answer the questions, save and return the
        [`StudyReport`] (`output_dir/report.md`, `output_dir/study_report.json`, `output_dir/plots/`)."""
        out = Path(self.args.output_dir)
        unique = list(dict.fromkeys(self.runs.values()))
        results: dict[str, CVResults] = {}
        is_main = True
        bar = tqdm(unique, desc="Study variants", unit="variant", disable=self.args.disable_tqdm)
        for run in bar:
            bar.set_postfix({"variant": run})
            if self.variants[run].classical:
                continue  # fitted below, on the folds the trained variants wrote
            trainer = self.make_trainer(self.variants[run])
            results[run] = trainer.cross_validate()
            is_main = trainer.is_world_process_zero()
            del trainer  # the trainer released its fold models already; drop the template before the next one
        bar.close()
        for run in unique:
            if self.variants[run].classical:
                results[run] = self._run_baseline(self.variants[run], out / next(r for r in results), is_main)
        fingerprints = {run: folds_fingerprint(load_folds(out / run / "folds.json")[0]) for run in unique} \
            if is_main else {}
        if len(set(fingerprints.values())) > 1:  # cannot happen unless a variant changed the fold settings
            raise RuntimeError(f"The variants ran on different folds: {fingerprints}.")
        report = self.analyze(results, folds_fingerprint=next(iter(fingerprints.values()), None))
        if self.nested:
            from .selection import nested_selection

            for question in ("freeze", "lr", "custom"):
                if question in self.question_variants:
                    nested = report.nested[question] = nested_selection(self, question, results)
                    # The selection's verdict now leads with the nested estimate, which accounts for the selection.
                    report.verdicts = [self._selection_verdict(question, report.variants, nested)
                                       if v.question == question else v for v in report.verdicts]
                    report.verdicts.append(nested_verdict(question, nested, self.metric_name))
        if is_main:
            report.save(out)
        return report

    def _run_baseline(self, variant: Variant, trained_run: Path, is_main: bool) -> CVResults:
        """The classical baseline fitted on the folds of `trained_run` (its `folds.json`, copied beside it)."""
        from .baselines import classical_baseline
        from ..folds import save_folds

        folds, metadata = load_folds(trained_run / "folds.json")
        args = self.args
        cv = classical_baseline(self.train_dataset, folds, kind=variant.classical, label_column=args.label_column,
                                text_column=args.text_column, image_column=args.image_column, metrics=args.metrics,
                                metric_average=args.metric_average, seed=args.seed,
                                compute_metrics=self.trainer_kwargs.get("compute_metrics"))
        if is_main:
            directory = Path(args.output_dir) / variant.name
            save_folds(folds, directory / "folds.json", metadata)
            cv.save(directory)
        return cv

    # ---- analysis ----------------------------------------------------------------------------------------
    def _resolve_metric(self, results: dict[str, CVResults]) -> str:
        summary = next(iter(results.values())).summary
        if self.metric is not None:
            if self.metric not in summary:
                raise ValueError(f"metric {self.metric!r} was not computed; available: {sorted(summary)}.")
            return self.metric
        return "accuracy" if "accuracy" in summary else next(m for m in summary if m != "loss")

    def _selection_verdict(self, question: str, variants: dict[str, CVResults], nested: dict | None = None) -> Verdict:
        labels = {name: v.label for name, v in self.variants.items()}
        return selection_verdict(question, {n: variants[n] for n in self.question_variants[question]},
                                 self.metric_name, labels, self.rope, self.alpha, self.p_adjust, nested=nested)

    def analyze(self, results: dict[str, CVResults], folds_fingerprint: str | None = None) -> StudyReport:
        """Turn the runs' results (`{run name: CVResults}`) into verdicts and a [`StudyReport`]."""
        metric = self.metric_name = self._resolve_metric(results)
        variants = {name: results[self.runs[name]] for name in self.variants}
        verdicts = []
        for question in self.questions + (("custom",) if "custom" in self.question_variants else ()):
            if question == "pretrained":
                verdicts.append(pairwise_verdict(
                    "pretrained", "pretrained", "scratch", variants["pretrained"], variants["scratch"], metric,
                    self.rope, self.alpha,
                    context=f"With finetune_strategy={self.args.finetune_strategy}: "))
            elif question == "baseline":
                verdicts.append(pairwise_verdict(
                    "baseline", "pretrained", "baseline", variants["pretrained"], variants["baseline"], metric,
                    self.rope, self.alpha,
                    context=f"Pretrained with finetune_strategy={self.args.finetune_strategy} against the classical "
                            f"baseline ({variants['baseline'].config.get('baseline')}) on the same folds: "))
            elif question in SELECTION_QUESTIONS:
                verdicts.append(self._selection_verdict(question, variants))
        diagnoses = {}
        if "overfitting" in self.questions:
            for run in dict.fromkeys(self.runs.values()):
                diagnoses[run] = [diagnose_fold(f, metric=metric, gap_threshold=self.gap_threshold,
                                                loss_rise=self.loss_rise) for f in results[run].folds]
            verdicts.append(overfitting_verdict(diagnoses, metric, self.gap_threshold, self.loss_rise))
        args = self.args
        info = {name: {"overrides": v.overrides, "label": v.label, "x": v.x, "tick": v.tick, "question": v.question,
                       "run": self.runs[name]} for name, v in self.variants.items()}
        settings = {"model": self.model_name, "n_rows": len(self.train_dataset), "n_folds": args.n_folds,
                    "n_repeats": args.n_repeats, "fold_seed": args.fold_seed, "seed": args.seed,
                    "folds_fingerprint": folds_fingerprint, "p_adjust": self.p_adjust, "rope": self.rope,
                    "alpha": self.alpha, "finetune_strategy": args.finetune_strategy,
                    "learning_rate": args.learning_rate, "num_train_epochs": args.num_train_epochs,
                    "n_blocks": self._n_blocks}
        return StudyReport(verdicts, variants, dict(self.question_variants), info, metric,
                           {run: [d.to_dict() for d in ds] for run, ds in diagnoses.items()}, {}, settings)


def nested_verdict(question: str, nested: dict, metric: str) -> Verdict:
    """The verdict of a nested selection: what was selected per outer fold and the unbiased estimate."""
    picks: dict[str, int] = {}
    for row in nested["outer_folds"]:
        picks[row["selected"]] = picks.get(row["selected"], 0) + 1
    chosen = ", ".join(f"{name} in {k} of {len(nested['outer_folds'])}" for name, k in
                       sorted(picks.items(), key=lambda kv: -kv[1]))
    est = nested["estimate"]
    lo, hi = est["ci95"]
    interval = f"[{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else "(needs at least 2 outer folds)"
    text = (f"Nested cross-validation ({nested['inner_folds']}-fold inner CV on each outer-train part) selected "
            f"{chosen} outer folds; the unbiased estimate of selecting then training is {metric} {est['mean']:.3f} "
            f"(95% interval {interval}), against {nested['naive_mean']:.3f} for the best variant read off the same "
            f"folds ({nested['naive_best']}; optimism {nested['naive_mean'] - est['mean']:+.3f}).")
    headline = f"Selecting then training scores {metric} {est['mean']:.3f} (95% interval {interval}), unbiased."
    details = [f"selected {chosen} outer folds ({nested['inner_folds']}-fold inner CV on each outer-train part)",
               f"the best read off the same folds: {nested['naive_best']} {nested['naive_mean']:.3f} "
               f"(optimism {nested['naive_mean'] - est['mean']:+.3f})"]
    return Verdict(question=f"{question} (nested)", text=text, numbers=nested, headline=headline, details=details)


__all__ = ["QUESTIONS", "TransferStudy", "Variant", "compare", "default_freeze_depths", "default_learning_rates",
           "pairwise_verdict", "selection_interval", "selection_verdict"]
