"""Hyperparameter search on cross-validation (`KFoldTrainer.hyperparameter_search`).

- `run`: every trial is a cross-validation on the run's folds, derived from the searched trainer
  (`KFoldTrainer.derive`); Optuna or Ray Tune, pruning on the folds' running mean, resumable;
- `report`: [`SearchReport`], the best settings, the trial table and the best vs. the runner-up.

A feature on top of the core: it reaches `hf_tlcv` only through the core's public API (docs/concepts.md).
"""

from .report import PLOT_FILES, REPORT_JSON, REPORT_MD, SearchReport
from .run import (
    BACKENDS,
    FoldReporter,
    SearchObjective,
    SearchOptions,
    TrialRunner,
    best_trial,
    clear_search,
    default_hp_space,
    default_pruner,
    describe_pruner,
    make_storage,
    model_hp_space,
    open_study,
    recover_trials,
    resolve_objective,
    run_search,
    seeded_sampler,
    startup_trials,
    trial_run,
    trial_settings,
)

__all__ = ["BACKENDS", "FoldReporter", "PLOT_FILES", "REPORT_JSON", "REPORT_MD", "SearchObjective", "SearchOptions",
           "SearchReport", "TrialRunner", "best_trial", "clear_search", "default_hp_space", "default_pruner",
           "describe_pruner", "make_storage", "model_hp_space", "open_study", "recover_trials", "resolve_objective",
           "run_search", "seeded_sampler", "startup_trials", "trial_run", "trial_settings"]
