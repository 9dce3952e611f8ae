"""`ci_method="nested"`: the nested cross-validation interval of a run, from extra fits run as fold jobs.

The interval itself is [`hf_tlcv.stats.nested_cv_interval`] (Bates, Hastie & Tibshirani); this module turns the
fits it needs into jobs a [`KFoldTrainer`] runs like its folds, and turns their saved predictions into the interval.

The interval uses at least `MIN_NESTED_REPEATS` (2) repetitions of the split: a run with `n_repeats=1` gets a
second split from the same splitter (its repeat 1, saved as `nested_folds.json`), whose K fold fits are extra fits
too. For every repetition with K folds and every pair of its folds `j < k`, one extra model is trained on the rows
of the other K - 2 folds and predicts the rows of folds `j` and `k`: K (K - 1) / 2 pair fits per repetition, each
on (K - 2) / (K - 1) of a fold's training rows (25 extra fits in all for K = 5 and one repeat). Every extra fit is
trained exactly as a fold (same settings, seed and frozen-feature cache); each is a [`NestedFit`], a
[`~hf_tlcv.folds.Fold`] with its own folder `nested_<repeat>_...` in the run folder, resumed like a fold. With a
frozen-feature cache (linear probe, freeze) the extra fits only train heads or top blocks on cached features,
which is what makes the interval cheap there.

The per-row values are read from the saved predictions: 1/0 for a right/wrong prediction (accuracy; the interval
stays in [0, 1]) and the cross-entropy of the predicted probabilities (the loss, reported only when their mean
reproduces each fold's own loss, i.e. the model's loss is the plain cross-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


from .folds import Fold
from .row_values import per_row_values, reproduces
from .stats import nested_cv_errors, nested_cv_fits, nested_cv_interval

__all__ = ["MIN_NESTED_REPEATS", "NestedFit", "nested_fits", "nested_summary", "training_seconds"]

# One nested repetition estimates the MSE from K terms only and under-covers (measured: 93.0% in the worst cell
# against 94.8% with two, benchmarks/results/sim_intervals.md); a run with one repeat gets a second split.
MIN_NESTED_REPEATS = 2


@dataclass(frozen=True, eq=False)
class NestedFit(Fold):
    """One extra fit of the nested interval, run like a fold in its own folder `name` of the run folder.

    `pair=(j, k)`: a pair fit, trained on every fold of its repeat but `j` and `k` and predicting both (its `fold`
    is -1), named `nested_<repeat>_<j>_<k>`. `pair=(k,)`: the fold fit of fold `k` of a repeat beyond the
    cross-validation's own (`fold` is `k`), named `nested_<repeat>_<k>`.
    """

    pair: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return "_".join(["nested", str(self.repeat), *map(str, self.pair)])

    @property
    def is_outer(self) -> bool:
        return len(self.pair) == 1

    def __repr__(self) -> str:
        return (f"NestedFit(repeat={self.repeat}, pair={self.pair}, n_train={len(self.train_indices)}, "
                f"n_eval={len(self.eval_indices)})")


def nested_fits(folds: Sequence[Fold], extra_folds: Sequence[Fold] = ()) -> list[NestedFit]:
    """The extra fits the nested interval needs: the fold fits of `extra_folds` (further repeats of the same
    splitter), then the pair fits of every repeat (see [`hf_tlcv.stats.nested_cv_fits`]).

    Raises:
        `ValueError`: If a repeat has fewer than 3 folds or its folds are not a k-fold partition (time-series).
    """
    outer = [NestedFit(repeat=f.repeat, fold=f.fold, train_indices=f.train_indices, eval_indices=f.eval_indices,
                       pair=(f.fold,)) for f in extra_folds]
    pairs = [NestedFit(repeat=fit["repeat"], fold=-1, train_indices=fit["train_indices"],
                       eval_indices=fit["eval_indices"], pair=tuple(fit["folds"]))
             for fit in nested_cv_fits([*folds, *extra_folds])]
    return outer + pairs


def training_seconds(results) -> float:
    """Seconds the given fold results spent in `Trainer.train` (from their log histories)."""
    return float(sum(entry.get("train_runtime", 0.0) for r in results for entry in r.log_history))


def nested_summary(folds: Sequence[Fold], fold_results, fits: Sequence[NestedFit], fit_results,
                   confidence: float = 0.95) -> dict:
    """The nested intervals of accuracy and (when it is the plain cross-entropy) the loss, with their cost.

    Args:
        folds: the cross-validation's folds; fold_results: their [`FoldResult`]s, in the same order.
        fits: the [`NestedFit`]s of [`nested_fits`]; fit_results: their results, in the same order.
        confidence: coverage of the intervals.

    Returns:
        `dict`: `metrics` (per metric, the output of [`hf_tlcv.stats.nested_cv_interval`]), `extra_fits`,
        `fit_seconds` (training time of the extra fits) and `fold_seconds` (of the folds).
    """
    # The outer folds: the cross-validation's own, then the fold fits of the extra repeats.
    outer_folds = [*folds, *(f for f in fits if f.is_outer)]
    outer_results = [*fold_results, *(r for f, r in zip(fits, fit_results) if f.is_outer)]
    pairs = [(f, r) for f, r in zip(fits, fit_results) if not f.is_outer]
    outer_values = {f.name: per_row_values(r.predictions, f.eval_indices) for f, r in zip(outer_folds, outer_results)}
    fit_values = {fit.name: per_row_values(r.predictions, fit.eval_indices) for fit, r in pairs}
    # Without a plain cross-entropy loss there is no per-row loss to use: accuracy only.
    plain = all(reproduces(outer_values[f.name]["loss"], r.eval_metrics.get("loss"))
                for f, r in zip(outer_folds, outer_results))
    metrics = {}
    for what in ("accuracy", "loss") if plain else ("accuracy",):
        inner, outer = nested_cv_errors(outer_folds, {name: v[what] for name, v in outer_values.items()},
                                        {name: v[what] for name, v in fit_values.items()})
        metrics[what] = nested_cv_interval(inner, outer, confidence, bounded=what == "accuracy")
    return {"metrics": metrics, "extra_fits": len(fits), "fit_seconds": training_seconds(fit_results),
            "fold_seconds": training_seconds(fold_results)}
