"""Nested cross-validation of a selection: an honest estimate of "pick the best variant, then train it".

Reading the best mean off a sweep (best freeze depth, best learning rate) and reporting it as the winner's score
is optimistic: the same folds chose the winner and scored it (Cawley & Talbot 2010, "On Over-fitting in Model
Selection and Subsequent Selection Bias in Performance Evaluation", JMLR 11). Nested cross-validation keeps the
two apart. For every outer fold of the study:

1. an inner k-fold cross-validation of every candidate runs on the outer-train rows only, and the candidate with
   the best inner mean is selected;
2. the selected candidate is trained on the outer-train rows and scored on the outer-eval rows, which the
   selection never saw.

The mean of those outer scores estimates the whole select-then-train procedure. Step 2 needs no new training:
the study already cross-validated every candidate on exactly these outer folds with the same seed, and a
`KFoldTrainer` fold is a deterministic function of (settings, train rows, seed), so the selected candidate's
study fold *is* the model step 2 would train. Only the inner cross-validations are new runs, in
`output_dir/nested/<question>/<outer fold>/<variant>/` (resumable like any `KFoldTrainer` run).
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from ..folds import load_folds
from ..results import CVResults, fold_sizes
from ..stats import is_bounded_metric, summarize

__all__ = ["nested_selection"]


def nested_selection(study, question: str, results: dict[str, CVResults]) -> dict:
    """Run the inner cross-validations of `question`'s candidates on every outer-train part and score the
    selection on the outer-eval parts.

    Args:
        study ([`TransferStudy`]): the study whose runs provide the outer folds and outer scores.
        question (`str`): a selection question of the study (`"freeze"`, `"lr"` or `"custom"`).
        results (`dict[str, CVResults]`): the study's results per run.

    Returns:
        `dict` with `inner_folds`, `metric`, `outer_folds` (per outer fold: `fold`, `inner_means` per candidate,
        `selected`, `outer_score`, `n_train`, `n_eval`), `estimate` (`mean`, `std`, `ci95` of the outer scores,
        as `CVResults.summary` computes them), `naive_best` and `naive_mean` (the best mean read off the study's own
        folds).
    """
    names = study.question_variants[question]
    metric = study.metric_name
    out = Path(study.args.output_dir)
    folds, saved = load_folds(out / study.runs[names[0]] / "folds.json")
    # Inner folds are cut like the outer ones (fold_gap, buffer and coordinates come with the study's settings); spatial
    # blocks of the size the outer folds used, whose grid does not depend on the rows, so inner blocks are outer blocks.
    same_blocks = {"spatial_block_size": saved["spatial_block_size"]} if "spatial_block_size" in saved else {}
    rows, outer_folds = [], []
    bar = tqdm(folds, desc=f"Nested CV ({question}): outer folds", unit="fold", disable=study.args.disable_tqdm)
    for fold in bar:
        # Only the outer-train rows reach the inner runs; their fold indices refer to this subset.
        outer_train = study.train_dataset.select(fold.train_indices)
        inner_by_run: dict[str, float] = {}
        for name in names:
            run = study.runs[name]
            if run not in inner_by_run:
                trainer = study.make_trainer(
                    study.variants[run], dataset=outer_train, output_dir=out / "nested" / question / fold.name / run,
                    n_folds=study.inner_folds, n_repeats=1, save_fold_models=False, eval_strategy="no", **same_blocks,
                )
                inner_by_run[run] = trainer.cross_validate().summary[metric]["mean"]
                del trainer
        inner_means = {name: inner_by_run[study.runs[name]] for name in names}
        selected = max(names, key=lambda n: inner_means[n])  # ties: the first in the question's order
        outer = next(f for f in results[study.runs[selected]].folds if (f.repeat, f.fold) == (fold.repeat, fold.fold))
        outer_folds.append(outer)
        rows.append({"fold": fold.name, "inner_means": inner_means, "selected": selected,
                     "outer_score": float(outer.eval_metrics[metric]), "n_train": outer.n_train,
                     "n_eval": outer.n_eval})
    bar.close()
    scores = [r["outer_score"] for r in rows]
    n_train, n_eval, n_rows = fold_sizes(outer_folds)
    naive = {name: results[study.runs[name]].summary[metric]["mean"] for name in names}
    naive_best = max(names, key=lambda n: naive[n])
    return {"question": question, "inner_folds": study.inner_folds, "metric": metric, "outer_folds": rows,
            "estimate": summarize(scores, n_train=n_train, n_eval=n_eval, bounded=is_bounded_metric(metric, scores),
                                   n_rows=n_rows),
            "naive_best": naive_best, "naive_mean": naive[naive_best]}
