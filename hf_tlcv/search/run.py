"""Hyperparameter search on cross-validation: every trial is a cross-validation on the run's fixed folds.

`transformers.Trainer.hyperparameter_search` scores each trial on one holdout split. [`KFoldTrainer.hyperparameter_search`]
keeps its signature and its `BestRun`, but a trial here is a whole cross-validation on the folds of
`output_dir/folds.json` (the same folds for every trial), and its objective is the cross-validated mean of
`metric_for_best_model` (default: accuracy, or the first metric). Everything else follows from that:

- **Fold-level pruning.** After each fold the trial reports the mean score of its folds so far (step = fold index,
  folds in the same order for every trial), so Optuna's pruners (median, successive halving, Hyperband) stop a trial
  after its first folds when it cannot win. A pruned trial is recorded as pruned, never as scored.
- **The fold job is the unit.** A trial applies its settings to the base config and runs a [`KFoldTrainer`] in its
  own folder, `output_dir/trials/<trial>/`, which resumes as any `cross_validate` run: an interrupted search reruns
  only the missing trials and reuses the trials' finished folds.
- **A study in `output_dir`.** Optuna's storage is `output_dir/search.db` (SQLite) by default, a journal file with
  `storage="journal"` (a shared filesystem for several machines), or any database URL. `n_trials` counts the study's
  trials in total, as `cross_validate` counts folds; after completion the same call returns the same best trial
  without training.
- **Cheap where it can be.** Trials that share a frozen part (same strategy cut) share one on-disk frozen-feature
  cache (`feature_cache="auto"` becomes `"disk"` for trials; see `hf_tlcv.cache`).
- **Nested.** With `nested=True` the search also runs inside every outer fold (inner folds cut from the outer-train
  rows only) and the outer fold scores the winner: the report sets the honest estimate of "tune, then train" against
  the best trial's own, optimistic, cross-validated mean.
- **Ray.** `backend="ray"` runs the trials with Ray Tune (Optuna's sampler, an ASHA scheduler fed by the fold-level
  reports); with `parallel_folds=True` (or `executor=RayExecutor(...)`) a trial's folds run as Ray tasks.

```python
>>> best = trainer.hyperparameter_search(n_trials=20)            # default space: lr, strategy, depth, rank, ...
>>> best.hyperparameters
{'learning_rate': 0.0021, 'finetune_strategy': 'freeze', 'freeze_layers': 8, ...}
>>> best.run_summary.to_markdown()                                # the report, also in output_dir/search_report.md

```
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import socket
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_utils import BestRun
from transformers.utils import logging

from ..config import FINETUNE_STRATEGIES, FOLD_SETTINGS, KFoldConfig, check_setting_names
from ..fold_job import fold_settings
from ..options import option
from ..run_dir import fold_is_complete, read_json, write_json_atomic
from ..utils import to_plain

if TYPE_CHECKING:
    import optuna

    from ..fold_job import FoldJob
    from ..folds import Fold
    from ..trainer import KFoldTrainer, TrainerInputs

logger = logging.get_logger(__name__)

SEARCH_DB = "search.db"
SEARCH_JOURNAL = "search.journal"
TRIALS_DIR = "trials"
NESTED_DIR = "nested"
RAY_DIR = "ray_tune"
TRIAL_FILE = "trial.json"
ROWS_FILE = "rows.json"
WINNER_DIR = "winner"
DEFAULT_STUDY = "hf_tlcv"
BACKENDS = ("optuna", "ray")

# Trial attributes kept in the study (user attributes, so that Optuna's retry callback copies them to a retry).
RUN_ATTR = "hf_tlcv_run"  # the trial's number as users see it and its folder (`trial_run`); a retry keeps it
OWNER_ATTR = "hf_tlcv_owner"  # host, pid and start time of the process running the trial
SETTINGS_ATTR = "hf_tlcv_settings"  # the KFoldConfig overrides the trial ran with
INTERRUPTED_ATTR = "hf_tlcv_interrupted"  # stopped by Ctrl-C: retried (same settings, same folder) on resume
# Keys the Ray trainable receives beside the sampled parameters.
_TRIAL_KEY = "hf_tlcv_trial"
_RUN_KEY = "hf_tlcv_run"
# Settings a trial may not change: the folds are the search's fixed ground, and the folders are the search's.
_FIXED_SETTINGS = (*FOLD_SETTINGS, "output_dir", "overwrite_output_dir")
# A RUNNING trial without an owner (its process died before recording itself) is stale after this long.
_OWNERLESS_GRACE_S = 300
# Heartbeats of a database study: a trial whose process stopped beating is failed (then retried) after the grace.
_HEARTBEAT_S, _GRACE_S = 60, 600


# ---- the search space ----------------------------------------------------------------------------------------------
def default_hp_space(trial: "optuna.Trial", n_blocks: int | None = None, *,
                     learning_rate: tuple[float, float] = (1e-5, 1e-2),
                     num_train_epochs: tuple[int, int] = (1, 5),
                     strategies: tuple[str, ...] = ("linear_probe", "freeze", "lora", "full"),
                     lora_ranks: tuple[int, ...] = (4, 8, 16, 32),
                     layerwise_lr_decay: tuple[float, float] | None = (0.5, 1.0)) -> dict[str, Any]:
    """The default search space: the seed's questions ("what learning rate?", "how many layers to freeze?") and the
    other choices of transfer learning, as `KFoldConfig` overrides.

    - `learning_rate`: log-uniform over `learning_rate`;
    - `finetune_strategy`: one of `strategies` (linear probe, freeze, LoRA, full fine-tuning);
    - `freeze_layers` (with `"freeze"` only): 1 to `n_blocks - 1` frozen blocks, bounded by the model's block count
      (`hf_tlcv.strategies.discover_layout`);
    - `lora_r` (with `"lora"` only): one of `lora_ranks`;
    - `layerwise_lr_decay` (not with the linear probe, which trains the head only): uniform over the range;
    - `num_train_epochs`: an integer in the range.

    Settings a strategy does not use are reset (`freeze_layers=0`, `layerwise_lr_decay=None`), so that every trial is
    a valid `KFoldConfig`. A model without a stack of blocks (`n_blocks=None`) is searched over `full` and `lora` only.

    Args:
        trial (`optuna.Trial`): the trial to sample from.
        n_blocks (`int`, *optional*): the model's number of blocks.
        learning_rate, num_train_epochs, strategies, lora_ranks, layerwise_lr_decay: the ranges and choices
            (`layerwise_lr_decay=None` leaves it out).

    Returns:
        `dict`: `KFoldConfig` overrides, e.g. `{"learning_rate": 3e-4, "finetune_strategy": "freeze",
        "freeze_layers": 6, "layerwise_lr_decay": 0.8, "num_train_epochs": 3}`.

    Example (a narrower space, passed as `hp_space`):
    ```python
    >>> import functools
    >>> space = functools.partial(default_hp_space, n_blocks=12, strategies=("freeze", "lora"), learning_rate=(1e-5, 1e-3))
    >>> best = trainer.hyperparameter_search(hp_space=space, n_trials=30)

    ```
    """
    unknown = sorted(set(strategies) - set(FINETUNE_STRATEGIES))
    if unknown or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {', '.join(FINETUNE_STRATEGIES)} (got "
                         f"{list(strategies)}).")
    usable = [s for s in strategies if n_blocks or s in ("full", "lora")]
    if not n_blocks or n_blocks < 2:
        usable = [s for s in usable if s != "freeze"]
    if not usable:
        raise ValueError(f"None of the strategies {list(strategies)} applies to this model (it has "
                         f"{n_blocks or 'no'} blocks); search 'full' or 'lora'.")
    settings: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", *learning_rate, log=True),
        "finetune_strategy": trial.suggest_categorical("finetune_strategy", usable),
    }
    strategy = settings["finetune_strategy"]
    settings["freeze_layers"] = trial.suggest_int("freeze_layers", 1, n_blocks - 1) if strategy == "freeze" else 0
    if strategy == "lora":
        settings["lora_r"] = trial.suggest_categorical("lora_r", list(lora_ranks))
    settings["layerwise_lr_decay"] = (trial.suggest_float("layerwise_lr_decay", *layerwise_lr_decay)
                                      if layerwise_lr_decay is not None and n_blocks and strategy != "linear_probe"
                                      else None)
    settings["num_train_epochs"] = trial.suggest_int("num_train_epochs", *num_train_epochs)
    return settings


def model_hp_space(trainer: "KFoldTrainer") -> Callable[["optuna.Trial"], dict[str, Any]]:
    """[`default_hp_space`] bounded by the block count of `trainer`'s model (`None` when it has no block stack)."""
    from ..strategies import discover_layout

    source = trainer.model_source
    model = source.template if source.template is not None else source.build(trainer.cv_args.seed)
    try:
        n_blocks = discover_layout(model).n_blocks
    except ValueError as exc:
        logger.info(f"Default search space without freezing or layer-wise decay: {exc}")
        n_blocks = None
    return functools.partial(default_hp_space, n_blocks=n_blocks)


def trial_settings(hp_space: Callable, trial: Any) -> dict[str, Any]:
    """`hp_space(trial)`, checked: a dict of `KFoldConfig` fields that leaves the folds and folders alone."""
    settings = hp_space(trial)
    if not isinstance(settings, dict):
        raise TypeError(f"hp_space must return a dict of KFoldConfig settings, got {type(settings).__name__}.")
    check_setting_names(settings, "hp_space returned")
    fixed = sorted(set(settings) & set(_FIXED_SETTINGS))
    if fixed:
        raise ValueError(f"hp_space sets {', '.join(fixed)}: every trial of a search runs on the same folds in its own "
                         "folder, so these cannot vary; set them on the trainer's KFoldConfig instead.")
    return settings


# ---- the objective -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchObjective:
    """What a trial is scored by: the cross-validated mean of `metric`, or `compute_objective` of the means.

    Attributes:
        metric: the metric compared between trials (and in the best-vs-runner-up comparison), without `eval_`.
        direction: `"maximize"` or `"minimize"`.
        compute_objective: `Trainer`'s hook, called with the folds' mean metrics named as `Trainer.evaluate` names
            them (`{"eval_accuracy": ..., "eval_loss": ...}`); `None` for the mean of `metric`.
    """

    metric: str
    direction: str
    compute_objective: Callable[[dict[str, float]], float] | None = None

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def __call__(self, fold_metrics: list[dict[str, Any]]) -> float:
        """The objective of these folds (the folds of a trial so far, in fold order)."""
        keys = [k for k in fold_metrics[0] if all(isinstance(m.get(k), (int, float)) and not isinstance(
            m.get(k), bool) for m in fold_metrics)]
        means = {f"eval_{k}": float(np.mean([m[k] for m in fold_metrics])) for k in keys}
        if self.compute_objective is not None:
            return float(self.compute_objective(means))
        if f"eval_{self.metric}" not in means:
            raise ValueError(f"The search optimises {self.metric!r}, which the folds do not report (they report "
                             f"{', '.join(keys)}); set {option('metric_for_best_model')} to one of them, or pass "
                             "compute_objective.")
        return means[f"eval_{self.metric}"]


def resolve_objective(args: KFoldConfig, compute_objective: Callable | None = None,
                      direction: str | None = None) -> SearchObjective:
    """The objective of a search on `args`: `metric_for_best_model` (direction from `greater_is_better`), else
    `accuracy` (or the first of `args.metrics`), maximised; a custom `compute_objective` needs its `direction`."""
    if isinstance(direction, (list, tuple)):
        raise ValueError("hf_tlcv searches one objective (pruning needs a single score per fold); pass direction="
                         "'maximize' or 'minimize' and combine metrics in compute_objective.")
    if direction is not None and direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize' (got {direction!r}).")
    requested = args.metric_for_best_model
    metric = (requested.removeprefix("eval_") if requested
              else "accuracy" if "accuracy" in args.metrics else args.metrics[0])
    natural = ("maximize" if args.greater_is_better else "minimize") if requested else (
        "minimize" if metric.endswith("loss") else "maximize")
    if compute_objective is not None:
        if direction is None:
            raise ValueError("With compute_objective, say which way it improves: direction='maximize' or "
                             "'minimize'.")
        return SearchObjective(metric, direction, compute_objective)
    if direction is not None and direction != natural:
        raise ValueError(f"direction={direction!r} would pick the worst {metric}: the search's objective is the "
                         f"cross-validated mean of {metric!r}, which improves with direction={natural!r}. Drop "
                         f"direction, or pass compute_objective to optimise something else.")
    return SearchObjective(metric, natural)


def owner() -> dict[str, Any]:
    """This process, as a trial's owner: host, pid and start time (a pid alone may be reused)."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _owner_alive(record: dict[str, Any]) -> bool:
    import psutil

    if record.get("host") != socket.gethostname():
        return True  # another machine's process: its heartbeat (database studies) says whether it is alive
    try:
        return abs(psutil.Process(record["pid"]).create_time() - record["started"]) < 1e-3
    except (psutil.Error, KeyError, TypeError):
        return False


class FoldReporter(TrainerCallback):
    """Reports a trial's running objective after each of its folds (`on_fold_end`, in fold order, resumed folds
    included), through `report(step, value, last)`, which may stop the trial by raising (pruning)."""

    def __init__(self, objective: SearchObjective, n_folds: int, report: Callable[[int, float, bool], None],
                 trial_file: Path):
        self.objective, self.n_folds, self.report, self.trial_file = objective, n_folds, report, trial_file
        self.fold_metrics: list[dict] = []
        self.cache_noted = False

    def on_fold_end(self, args, state, control, result=None, resumed=False, trainer=None, **kwargs):
        self.fold_metrics.append(dict(result.eval_metrics))
        if not resumed and not self.cache_noted and trainer is not None:
            self._note_cache(trainer)
        step = len(self.fold_metrics) - 1
        self.report(step, self.objective(self.fold_metrics), step == self.n_folds - 1)

    def _note_cache(self, trainer) -> None:
        """Record in `trial.json` whether this trial computed its frozen-feature cache or reused another's."""
        self.cache_noted = True
        if not trainer.is_world_process_zero():
            return
        cache = trainer.feature_cache if trainer.cv_args.finetune_strategy in ("freeze", "linear_probe") else None
        record = read_json(self.trial_file)
        record["feature_cache"] = None if cache is None else {"reused": bool(cache.reused), "key": cache.key,
                                                              "bytes": int(cache.nbytes)}
        write_json_atomic(self.trial_file, record, indent=2)


@dataclass
class TrialRunner:
    """Runs one trial: its settings applied to the base config, a [`KFoldTrainer`] in `output_dir/trials/<run>/`,
    a report after each fold. Self-contained, so that a Ray actor can run it too.

    Attributes:
        inputs: what the searched trainer was built from (`KFoldTrainer.inputs`); a trial's trainer is built from
            them with the trial's settings.
        base_settings: the searched trainer's `KFoldConfig` fields.
        output_dir: the search's folder.
        hp_space: `trial -> KFoldConfig overrides`.
        objective: what a trial is scored by.
        n_folds: folds per trial (`n_folds * n_repeats`).
        hp_name: `trial -> run name` (`Trainer`'s `hp_name`), or `None`.
        save_fold_models: whether the trials save their fold models.
        executor: where a trial's folds run (a `RayExecutor`), or `None` for this process.
    """

    inputs: "TrainerInputs"
    base_settings: dict[str, Any]
    output_dir: str
    hp_space: Callable
    objective: SearchObjective
    n_folds: int
    hp_name: Callable | None = None
    save_fold_models: bool = False
    executor: Any = None

    def run_dir(self, run: int) -> Path:
        return Path(self.output_dir) / TRIALS_DIR / str(run)

    def config(self, settings: dict[str, Any], run: int, trial: Any) -> KFoldConfig:
        base = self.base_settings
        name = self.hp_name(trial) if self.hp_name is not None else (
            f"{base.get('run_name') or Path(self.output_dir).name}-trial_{run}")
        # ci_method="nested" would add its extra fits to every trial: an interval's cost, not a choice's (the search
        # compares trials by their means); a space may still set it.
        overrides = {"ci_method": "corrected", **settings, "output_dir": str(self.run_dir(run)),
                     "overwrite_output_dir": False, "push_to_hub": False, "save_fold_models": self.save_fold_models,
                     "run_name": name}
        if base.get("feature_cache") == "auto":
            # On disk, keyed by model, cut and data: every trial with the same frozen part reads one cache.
            overrides["feature_cache"] = "disk"
        return KFoldConfig(**{**base, **overrides})

    def trainer(self, args: KFoldConfig) -> "KFoldTrainer":
        """A trial's trainer: the searched trainer's inputs with the trial's settings. It draws no plots (the search
        report has its own) and leaves the word on an interruption to the search (one line, run_search)."""
        trainer = self.inputs.build(args)
        trainer.save_cv_plots = False
        trainer.say_interrupted = False
        return trainer

    def subset(self, indices) -> "TrainerInputs":
        """The searched inputs on rows `indices` of the training data only, without the held-out test set (a nested
        search's inner searches)."""
        inputs = self.inputs
        return dataclasses.replace(inputs, train_dataset=inputs.train_dataset.select(indices), eval_dataset=None)

    def run(self, trial: Any, run: int, report: Callable[[int, float, bool], None]) -> float:
        """Cross-validate the trial's settings; return its objective. `report` is called after each fold."""
        settings = trial_settings(self.hp_space, trial)
        args = self.config(settings, run, trial)
        trial_file = self.run_dir(run) / TRIAL_FILE
        previous = read_json(trial_file) if trial_file.exists() else {}
        write_json_atomic(trial_file, {"trial": trial.number, "run": run, "params": to_plain(dict(trial.params)),
                                       "settings": to_plain(settings),
                                       "feature_cache": previous.get("feature_cache")}, indent=2)
        trainer = self.trainer(args)
        trainer.fold_line_prefix = f"trial {run}, "  # its folds' console lines say which trial they belong to
        trainer.add_callback(FoldReporter(self.objective, self.n_folds, report, trial_file))
        try:
            results = trainer.cross_validate(executor=self.executor)
        finally:
            del trainer
        return self.objective([f.eval_metrics for f in results.folds])


# ---- the study -----------------------------------------------------------------------------------------------------
def make_storage(storage: Any, output_dir: str | os.PathLike) -> "optuna.storages.BaseStorage":
    """The search's Optuna storage: `None` -> `output_dir/search.db` (SQLite), `"journal"` ->
    `output_dir/search.journal` (a journal file, safe on a shared filesystem), a database URL, or a storage object.
    Database studies record heartbeats, so that a trial whose process died on any machine is retried."""
    import optuna

    out = Path(output_dir)
    if storage is None or storage == "sqlite":
        out.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(f"sqlite:///{(out / SEARCH_DB).resolve()}")
    if storage == "journal":
        out.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(out / SEARCH_JOURNAL)))
    if isinstance(storage, str):
        if "://" not in storage:
            raise ValueError(f"storage={storage!r} is not a database URL; use None (SQLite in output_dir), 'journal' "
                             "(a journal file in output_dir), a URL such as 'postgresql://user@host/db', or an "
                             "optuna storage object.")
        if storage.startswith("sqlite:"):  # one machine: trials of dead processes are found by their pid
            return optuna.storages.RDBStorage(storage)
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5.0; they are what several
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # machines need
            return optuna.storages.RDBStorage(storage, heartbeat_interval=_HEARTBEAT_S, grace_period=_GRACE_S,
                                              heartbeat_stale_trial_callback=retry_trial)
    if not isinstance(storage, optuna.storages.BaseStorage):
        raise TypeError(f"storage must be None, 'journal', a database URL or an optuna storage, got "
                        f"{type(storage).__name__}.")
    return storage


@functools.cache
def _seeded_sampler_class():
    import optuna

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        """A sampler whose draws for a trial depend on the seed, the trial's position among the study's trials that
        did not fail, and the trials before it only: a search interrupted and resumed samples what an uninterrupted
        one samples (a fresh `make(seed + position)` sampler serves each trial)."""

        def __init__(self, seed: int, make: Callable[[int], "optuna.samplers.BaseSampler"]):
            self.seed, self._make, self._samplers = seed, make, {}

        def _for(self, study, trial):
            sampler = self._samplers.get(trial.number)
            if sampler is None:
                position = sum(1 for t in study.get_trials(deepcopy=False)
                               if t.number < trial.number and t.state != optuna.trial.TrialState.FAIL)
                sampler = self._samplers[trial.number] = self._make(self.seed + position)
            return sampler

        def infer_relative_search_space(self, study, trial):
            return self._for(study, trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(study, trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(study, trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self._for(study, trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            sampler = self._samplers.pop(trial.number, None)
            if sampler is not None:
                sampler.after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.seed = int(np.random.SeedSequence().generate_state(1)[0])

    return TrialSeededSampler


def seeded_sampler(seed: int, make: Callable[[int], Any] | None = None):
    """The default sampler of a search: TPE (`optuna.samplers.TPESampler(seed=...)`), seeded per trial position, so
    that an interrupted and resumed search samples the same trials as an uninterrupted one."""
    import optuna

    return _seeded_sampler_class()(seed, make or (lambda s: optuna.samplers.TPESampler(seed=s)))


def open_study(storage, name: str, direction: str, sampler=None, pruner=None) -> "optuna.Study":
    """Create the study, or load it to resume; refuse a study that optimises the other way."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ValueError(f"The study {name!r} in this storage was started with direction="
                         f"{study.direction.name.lower()!r}, not {direction!r}; use a new output_dir (or "
                         f"study_name), or {option('overwrite_output_dir', True)} to start the search afresh.")
    return study


def trial_run(study: "optuna.Study", trial) -> int:
    """The number a trial is known by (its folder `trials/<run>/`, the report's and `BestRun`'s "trial N"): its
    position among the study's first attempts, so that it is the number an uninterrupted search gives.

    Optuna's `trial.number` counts attempts: an interrupted trial and its retry are two of them, and every trial after
    an interruption would be one further on than in an uninterrupted search. A retry ([`retry_trial`]) keeps the run
    of the trial it retries (read from its attributes, or computed for the first attempt when that attempt died before
    recording it); a first attempt's position depends only on the trials created before it, so two processes of one
    study never compute the same run for two trials.
    """
    run = trial.user_attrs.get(RUN_ATTR)
    if run is not None:
        return int(run)
    trials = study.get_trials(deepcopy=False)
    # a running `optuna.Trial` has no system attributes of its own: read them from the study's record of it
    record = next((t for t in trials if t.number == trial.number), trial)
    first = getattr(record, "system_attrs", {}).get("failed_trial", trial.number)
    return sum(1 for t in trials if t.number < first and "retry_history" not in t.system_attrs)


def startup_trials(n_trials: int) -> int:
    """The default median pruner's start-up trials for a search of `n_trials`: `max(1, min(5, n_trials // 4))`.

    A trial can only be pruned once this many trials have finished (the median of their running means is the bar), so
    Optuna's default of 5 start-up trials means a search of 5 or 6 trials never prunes. At most a quarter of the
    budget is spent on the reference (at least one trial, a bar to compare with; at most Optuna's 5, which is enough
    for a stable median in a long search), so that three quarters of any search can be stopped after its first folds.
    """
    return max(1, min(5, n_trials // 4))


def default_pruner(n_trials: int) -> "optuna.pruners.BasePruner":
    """The search's pruner when none is given: Optuna's median pruner with [`startup_trials`] sized to the budget."""
    import optuna

    startup = startup_trials(n_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    _PRUNER_NAMES[pruner] = f"MedianPruner(n_startup_trials={startup}, n_warmup_steps=0)"
    return pruner


# How the report names the pruners this module built (their settings are not public attributes of Optuna's pruners).
_PRUNER_NAMES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def describe_pruner(pruner) -> str | None:
    """A pruner as the report names it: the default one with its settings, e.g.
    `"MedianPruner(n_startup_trials=1, n_warmup_steps=0)"`, a user's by its class, e.g. `"HyperbandPruner()"`."""
    if pruner is None:
        return None
    return _PRUNER_NAMES.get(pruner, f"{type(pruner).__name__}()")


def finished_trials(study: "optuna.Study") -> list:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=done)


def recover_trials(study: "optuna.Study") -> list[int]:
    """Retry the trials an earlier run left unfinished: RUNNING trials whose process is gone (killed, the machine
    rebooted) and trials stopped with Ctrl-C. Each is failed (if still RUNNING) and enqueued again with the same
    parameters and the same folder ([`retry_trial`]), so that its finished folds are reused. Returns the numbers of
    the trials retried."""
    import datetime

    import optuna

    State = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    now = datetime.datetime.now()
    again = []
    for t in trials:
        if t.number in retried:
            continue
        if t.state == State.RUNNING:
            record = t.user_attrs.get(OWNER_ATTR)
            stale = (not _owner_alive(record) if record else
                     t.datetime_start is not None and (now - t.datetime_start).total_seconds() > _OWNERLESS_GRACE_S)
            if not stale:
                continue
            study.tell(t.number, state=State.FAIL, skip_if_finished=True)
        elif not (t.state == State.FAIL and t.user_attrs.get(INTERRUPTED_ATTR)):
            continue
        retry_trial(study, next(x for x in study.get_trials(deepcopy=False) if x.number == t.number))
        again.append(t.number)
    return again


def retry_trial(study: "optuna.Study", trial) -> None:
    """Enqueue a failed trial again: same parameters and user attributes (so the same folder, whose finished folds
    are reused), with Optuna's retry records (`failed_trial`, `retry_history` system attributes, as
    `optuna.storages.RetryHeartbeatStaleTrialCallback` writes them). Also the heartbeat callback of database
    studies."""
    import optuna

    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs={**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                      "retry_history": history}))


# ---- the backends --------------------------------------------------------------------------------------------------
@dataclass
class SearchOptions:
    """How a search runs, beside its space and objective (the `**kwargs` of `hyperparameter_search`)."""

    storage: Any = None
    study_name: str = DEFAULT_STUDY
    sampler: Any = None
    pruner: Any = None
    timeout: float | None = None
    catch: tuple = ()
    callbacks: list = field(default_factory=list)
    gc_after_trial: bool = False
    resources_per_trial: dict | None = None
    scheduler: Any = None
    max_concurrent_trials: int | None = None
    ray_address: str | None = None
    executor: Any = None
    save_fold_models: bool = False
    nested: bool = False
    inner_folds: int = 3

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "SearchOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        n_jobs = kwargs.pop("n_jobs", 1)
        if n_jobs != 1:
            raise ValueError(f"n_jobs={n_jobs}: trials of a search run one at a time in this process (each one's "
                             "folds may run on Ray with parallel_folds=True); run several at once with backend='ray'.")
        kwargs.pop("load_if_exists", None)  # always: the study in output_dir is resumed
        for key in ("direction", "directions"):
            if key in kwargs:
                raise TypeError(f"Pass {key} as hyperparameter_search's own argument.")
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"hyperparameter_search got unknown arguments: {', '.join(unknown)}; it takes "
                            f"{', '.join(sorted(names | {'n_jobs'}))}.")
        options = cls(**kwargs)
        if options.inner_folds < 2:
            raise ValueError(f"inner_folds must be at least 2 (got {options.inner_folds}).")
        return options


def _optuna_objective(runner: TrialRunner):
    import optuna

    def objective(trial: "optuna.Trial") -> float:
        run = trial_run(trial.study, trial)
        trial.set_user_attr(RUN_ATTR, run)
        trial.set_user_attr(OWNER_ATTR, owner())
        trial.set_user_attr(SETTINGS_ATTR, to_plain(trial_settings(runner.hp_space, trial)))

        def report(step: int, value: float, last: bool) -> None:
            trial.report(value, step)
            if not last and trial.should_prune():
                raise optuna.TrialPruned(f"{runner.objective.metric} {value:.4f} after {step + 1} of "
                                         f"{runner.n_folds} folds")

        try:
            return runner.run(trial, run, report)
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED_ATTR, True)  # failed, then retried with its folds on resume
            # Optuna records the trial as failed and logs it with the interrupt's traceback; the search's own line
            # (run_search) says what was kept instead. Its warnings are off until optimize returns (_run_optuna).
            optuna.logging.set_verbosity(optuna.logging.ERROR)
            raise

    return objective


def _run_optuna(study: "optuna.Study", runner: TrialRunner, n_trials: int, remaining: int,
                options: SearchOptions) -> None:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    verbosity = optuna.logging.get_verbosity()
    try:
        study.optimize(_optuna_objective(runner), n_trials=remaining, timeout=options.timeout, catch=options.catch,
                       gc_after_trial=options.gc_after_trial,
                       callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=done), *options.callbacks])
    finally:
        optuna.logging.set_verbosity(verbosity)  # an interrupted trial lowered it (_optuna_objective)


def _ray_trial(config: dict[str, Any], blob: bytes) -> None:
    """A Ray Tune trial: the runner (unpickled in the trial's actor) cross-validates the sampled parameters and
    reports the running objective after each fold, which the scheduler may stop it on."""
    import cloudpickle
    import optuna
    from ray import tune

    runner: TrialRunner = cloudpickle.loads(blob)
    params = {k: v for k, v in config.items() if k not in (_TRIAL_KEY, _RUN_KEY)}
    trial = optuna.trial.FixedTrial(params, config[_TRIAL_KEY])
    runner.run(trial, config[_RUN_KEY], lambda step, value, last: tune.report({"objective": value, "folds": step + 1}))


class _DefineByRun:
    """Ray's Optuna searcher samples through this (define-by-run, in the driver): the search space, plus the trial's
    number and folder, which the trainable receives beside the parameters."""

    def __init__(self, runner: TrialRunner):
        self.runner = runner

    def __call__(self, trial) -> dict[str, Any]:
        settings = trial_settings(self.runner.hp_space, trial)
        run = trial_run(trial.study, trial)
        trial.set_user_attr(RUN_ATTR, run)
        trial.set_user_attr(OWNER_ATTR, owner())
        trial.set_user_attr(SETTINGS_ATTR, to_plain(settings))
        return {_TRIAL_KEY: trial.number, _RUN_KEY: run}


def _fold_searcher(n_folds: int, **kwargs):
    """Ray Tune's `OptunaSearch` on the search's own study, with the trials the scheduler stopped before their last
    fold recorded as PRUNED (Ray records their last running mean as a final value), and no checkpoint of its own
    (the study in the storage is the search's state)."""
    from ray.tune.search.optuna import OptunaSearch

    class FoldSearch(OptunaSearch):
        def on_trial_complete(self, trial_id, result=None, error=False):
            if result and not error and result.get("folds", 0) < n_folds:
                result = None  # stopped early: pruned, never scored
            super().on_trial_complete(trial_id, result, error)

        def save(self, checkpoint_path):
            pass

        def restore(self, checkpoint_path):
            pass

    return FoldSearch(**kwargs)


def _run_ray_tune(study: "optuna.Study", storage, runner: TrialRunner, remaining: int, options: SearchOptions) -> None:
    """Run `remaining` trials as Ray Tune trials: sampled by the study's sampler (`OptunaSearch`), each one's folds in
    its own actor, stopped by an ASHA scheduler (successive halving on the fold-level reports) unless `scheduler`
    says otherwise."""
    import cloudpickle
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from ..execution import evaluate_modules_by_value, in_memory

    mode = "max" if runner.objective.maximize else "min"
    started = not ray.is_initialized()
    if started:
        address = options.ray_address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, **({} if address else {"include_dashboard": False}))
    try:
        trial_runner = dataclasses.replace(runner, executor=None)  # inside an actor, a trial's folds run one by one
        if len(ray.nodes()) > 1:  # rows memory-mapped from this machine's files are not on the others
            trial_runner.inputs = dataclasses.replace(
                trial_runner.inputs, train_dataset=in_memory(trial_runner.inputs.train_dataset),
                eval_dataset=in_memory(trial_runner.inputs.eval_dataset))
        with evaluate_modules_by_value():
            blob = cloudpickle.dumps(trial_runner)
        import torch

        resources = options.resources_per_trial or {"cpu": 1, **({"gpu": 1} if torch.cuda.is_available() else {})}
        searcher = _fold_searcher(runner.n_folds, space=_DefineByRun(runner), metric="objective", mode=mode,
                                  sampler=study.sampler, storage=storage, study_name=study.study_name)
        scheduler = options.scheduler or ASHAScheduler(metric="objective", mode=mode, time_attr="training_iteration",
                                                       max_t=runner.n_folds, grace_period=1, reduction_factor=2)
        if options.scheduler is not None:
            scheduler.set_search_properties("objective", mode)  # a user's scheduler without a metric gets ours
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_ray_trial, blob=blob), resources),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                        max_concurrent_trials=options.max_concurrent_trials),
            run_config=tune.RunConfig(name=f"{study.study_name.replace('/', '_')}_{len(study.trials)}",
                                      storage_path=str((Path(runner.output_dir) / RAY_DIR).resolve()), verbose=0),
        )
        grid = tuner.fit()
        if grid.errors:
            raise RuntimeError(f"{len(grid.errors)} Ray Tune trial(s) failed (the finished trials and folds are kept "
                               f"in {runner.output_dir}); the first error: {grid.errors[0]}")
    finally:
        if started:
            ray.shutdown()


def _search(runner: TrialRunner, storage, study_name: str, n_trials: int, options: SearchOptions, backend: str,
            seed: int) -> "optuna.Study":
    """Run (or resume) one study until it holds `n_trials` finished trials; return it."""
    sampler = options.sampler if options.sampler is not None else seeded_sampler(seed)
    pruner = options.pruner if options.pruner is not None else default_pruner(n_trials)
    study = open_study(storage, study_name, runner.objective.direction, sampler, pruner)
    retried = recover_trials(study)
    finished = finished_trials(study)
    remaining = n_trials - len(finished)
    if finished or retried:
        pruned = sum(t.state.name == "PRUNED" for t in finished)
        logger.warning(f"Resuming the search {study_name!r} in {runner.output_dir}: {len(finished)} finished trial(s) "
                       f"({pruned} pruned) read back"
                       + (f"; trial(s) {', '.join(map(str, retried))} were interrupted and run again with the same "
                          "settings, reusing their finished folds" if retried else "")
                       + f"; {max(remaining, 0)} to run.")
    if remaining <= 0:
        return study
    if backend == "ray":
        _run_ray_tune(study, storage, runner, remaining, options)
    else:
        _run_optuna(study, runner, n_trials, remaining, options)
    return study


def best_trial(study: "optuna.Study"):
    """The best COMPLETE trial (pruned and failed trials are never scored), or `None`."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    key = (lambda t: t.value) if study.direction == optuna.study.StudyDirection.MAXIMIZE else (lambda t: -t.value)
    return max(complete, key=key)  # ties: the first trial


# ---- nested search -------------------------------------------------------------------------------------------------
def _nested(runner: TrialRunner, folds: list["Fold"], storage, n_trials: int, options: SearchOptions, backend: str,
            seed: int) -> dict[str, Any]:
    """The search inside every outer fold (inner folds cut from the outer-train rows only), the outer fold scoring
    the winner. Returns the numbers of the nested part of the report."""
    from tqdm.auto import tqdm

    from ..execution import InProcessExecutor, run_fold_jobs

    out = Path(runner.output_dir) / NESTED_DIR
    rows = []
    bar = tqdm(folds, desc="Nested search: outer folds", unit="fold",
               disable=runner.base_settings.get("disable_tqdm", False))
    for outer in bar:
        folder = out / outer.name
        inner = dataclasses.replace(
            runner, inputs=runner.subset(outer.train_indices), output_dir=str(folder),
            base_settings={**runner.base_settings, "n_folds": options.inner_folds, "n_repeats": 1},
            n_folds=options.inner_folds, executor=runner.executor)
        study = _search(inner, storage, f"{options.study_name}/{NESTED_DIR}/{outer.name}", n_trials, options, backend,
                        seed)
        winner = best_trial(study)
        if winner is None:
            raise RuntimeError(f"Every trial of the nested search in {outer.name} was pruned or failed; nothing to "
                               "score on its outer eval rows. Use more trials or a gentler pruner.")
        settings = winner.user_attrs[SETTINGS_ATTR]
        winner_dir = folder / WINNER_DIR

        def winner_job(fold: "Fold") -> "FoldJob":
            # The winner trained on the outer-train rows and scored on the outer-eval rows, which no trial saw.
            args = dataclasses.replace(runner.config(settings, trial_run(study, winner), winner),
                                       output_dir=str(winner_dir))
            (job,) = runner.trainer(args).fold_jobs([fold])
            return job

        with InProcessExecutor() as executor:
            ((_, result, _),) = run_fold_jobs([outer], [fold_is_complete(winner_dir / outer.name)], winner_dir,
                                              winner_job, executor)
        seen = _rows_seen(folder, outer)
        rows.append({"fold": outer.name, "best_trial": trial_run(study, winner), "settings": settings,
                     "inner_best": float(winner.value), "outer_score": runner.objective([result.eval_metrics]),
                     "n_train": result.n_train, "n_eval": result.n_eval, "isolated": seen["isolated"]})
    bar.close()
    return {"inner_folds": options.inner_folds, "outer_folds": rows}


def _rows_seen(folder: Path, outer: "Fold") -> dict[str, Any]:
    """The rows (indices of the full dataset) every trial of an outer fold's inner search trained and evaluated on,
    from the trials' own `folds.json` (whose indices refer to the outer-train rows); written to `rows.json`."""
    from ..folds import load_folds

    outer_train = np.asarray(outer.train_indices)
    outer_eval = {int(i) for i in outer.eval_indices}
    trials = {}
    for run_dir in sorted((folder / TRIALS_DIR).glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else -1):
        if not (run_dir / "folds.json").exists():
            continue
        inner_folds, _ = load_folds(run_dir / "folds.json")
        local = np.unique(np.concatenate([np.concatenate([f.train_indices, f.eval_indices]) for f in inner_folds]))
        trials[run_dir.name] = sorted(int(i) for i in outer_train[local])
    isolated = all(not outer_eval.intersection(seen) for seen in trials.values())
    record = {"outer_fold": outer.name, "outer_train": sorted(int(i) for i in outer_train),
              "outer_eval": sorted(outer_eval), "trials": trials, "isolated": isolated}
    write_json_atomic(folder / ROWS_FILE, record)
    return record


# ---- the entry point -----------------------------------------------------------------------------------------------
def clear_search(output_dir: str | os.PathLike) -> None:
    """Delete a search's study, trial folders, nested searches and report from `output_dir` (`overwrite_output_dir`)."""
    from .report import REPORT_JSON, REPORT_MD

    out = Path(output_dir)
    for item in (out / SEARCH_DB, out / SEARCH_JOURNAL, out / TRIALS_DIR, out / NESTED_DIR, out / RAY_DIR,
                 out / REPORT_JSON, out / REPORT_MD):
        if item.is_dir():
            shutil.rmtree(item)
        elif item.exists():
            item.unlink()


def run_search(trainer: "KFoldTrainer", folds: list["Fold"], hp_space: Callable | None = None,
               compute_objective: Callable | None = None, n_trials: int = 20, direction: str | None = None,
               backend: Any = "optuna", hp_name: Callable | None = None, **kwargs) -> BestRun:
    """[`KFoldTrainer.hyperparameter_search`]'s implementation (see its docstring); `folds` are the run's folds."""
    backend = getattr(backend, "value", backend) or "optuna"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported here; use 'optuna' or 'ray' (Ray Tune).")
    _require(backend)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer: the study's total number of trials (got {n_trials!r}).")
    args = trainer.cv_args
    if args.world_size > 1:
        raise ValueError(f"hyperparameter_search runs its trials from one process, but this is one of {args.world_size} "
                         "processes of a launch: run the script with plain python, and use "
                         f"{option('parallel_folds', True)} (each trial's folds as Ray tasks) or backend='ray' (trials "
                         "as Ray Tune trials) to use several devices or machines.")
    options = SearchOptions.from_kwargs(dict(kwargs))
    objective = resolve_objective(args, compute_objective, direction)
    out = Path(args.output_dir)
    if args.overwrite_output_dir:
        clear_search(out)
    executor, own_executor = options.executor, False
    if executor is None and args.parallel_folds:
        from ..execution import RayExecutor, ray_available

        if ray_available():
            executor, own_executor = RayExecutor(), True
        else:
            logger.warning(f"{option('parallel_folds', True)}: the trials' folds would run as Ray tasks, but Ray is not "
                           "installed (pip install 'hf_tlcv[ray]'); they run here, one at a time.")
    runner = TrialRunner(inputs=trainer.inputs, base_settings=fold_settings(args),
                         output_dir=str(out), hp_space=hp_space if hp_space is not None else model_hp_space(trainer),
                         objective=objective, n_folds=len(folds), hp_name=hp_name,
                         save_fold_models=options.save_fold_models, executor=executor)
    storage = make_storage(options.storage, out)
    started = time.time()
    try:
        study = _search(runner, storage, options.study_name, n_trials, options, backend, args.seed)
        nested = _nested(runner, folds, storage, n_trials, options, backend, args.seed) if options.nested else None
    except KeyboardInterrupt:
        logger.warning(f"Interrupted: the finished trials and folds are kept in {out}; run the same search again to "
                       "resume from there.")
        raise
    finally:
        if own_executor:
            executor.close()
    from .report import SearchReport

    report = SearchReport.from_study(study, runner, folds, backend=backend, nested=nested,
                                     seconds=time.time() - started)
    report.save(out)
    best = best_trial(study)
    if best is None:
        raise RuntimeError(f"No trial of the search in {out} finished unpruned (see {out}/search_report.md); run more "
                           "trials or use a gentler pruner.")
    return BestRun(str(trial_run(study, best)), float(best.value), dict(best.user_attrs[SETTINGS_ATTR]), report)


def _require(backend: str) -> None:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise ImportError("hyperparameter_search needs Optuna: pip install 'hf_tlcv[tune]' (or 'hf_tlcv[ray]' for "
                          "backend='ray').")
    if backend == "ray" and importlib.util.find_spec("ray.tune") is None:
        raise ImportError("backend='ray' needs Ray Tune: pip install 'hf_tlcv[ray]'.")


__all__ = ["BACKENDS", "FoldReporter", "SearchObjective", "SearchOptions", "TrialRunner",
           "best_trial", "clear_search", "default_hp_space", "default_pruner", "describe_pruner", "make_storage",
           "model_hp_space", "open_study", "recover_trials", "resolve_objective", "run_search", "seeded_sampler",
           "startup_trials", "trial_run", "trial_settings"]
