"""`KFoldConfig`: `TrainingArguments` plus the settings of a cross-validation of fine-tuning."""

from __future__ import annotations

import dataclasses
import warnings
from enum import Enum
from dataclasses import dataclass, field
from typing import Any, Iterable

from transformers import TrainingArguments
from transformers.trainer_utils import SaveStrategy

from .folds import COORDINATE_SYSTEMS, FOLD_STRATEGIES, fold_kwargs, validate_fold_inputs
from .options import option
from .pooling import TEXT_POOLING_CHOICES

FINETUNE_STRATEGIES = ("full", "freeze", "linear_probe", "lora")
FEATURE_CACHE_MODES = ("auto", "memory", "disk", "off")
PUSH_FOLD_MODELS = ("none", "trainable", "full")
METRIC_AVERAGES = ("macro", "micro", "weighted")
CI_METHODS = ("row", "corrected", "nested")

# The settings that change what a run computes: a run folder can be resumed only by a run that agrees on all of them.
# An allow-list, so that a transformers release that adds or drops a TrainingArguments field never makes finished runs
# impossible to resume (fields missing from the installed transformers are simply not recorded).
TRAINING_RESULT_SETTINGS = (
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "num_train_epochs",
    "max_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed", "full_determinism", "fp16",
    "bf16", "optim", "optim_args", "label_smoothing_factor", "group_by_length", "length_column_name",
    "dataloader_drop_last", "eval_strategy", "eval_steps", "load_best_model_at_end", "metric_for_best_model",
    "greater_is_better", "neftune_noise_alpha",
)
# The settings that cut the folds: a study's variants and a search's trials share them (so their scores pair fold by
# fold), and none of them may change them.
FOLD_SETTINGS = ("n_folds", "n_repeats", "fold_seed", "fold_strategy", "group_column", "label_column",
                 "coordinate_columns", "coordinate_system", "spatial_block_size", "spatial_buffer", "fold_gap")
CV_RESULT_SETTINGS = (
    "n_folds", "fold_strategy", "n_repeats", "fold_seed", "label_column", "group_column", "coordinate_columns",
    "coordinate_system", "spatial_block_size", "spatial_buffer", "fold_gap", "finetune_strategy",
    "freeze_layers", "layerwise_lr_decay", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "metrics",
    "metric_average", "eval_on_train", "image_column", "text_column", "image_size", "max_length", "text_pooling",
)
RESULT_SETTINGS = TRAINING_RESULT_SETTINGS + CV_RESULT_SETTINGS


@dataclass
class KFoldConfig(TrainingArguments):
    r"""
    Configuration of [`KFoldTrainer`]: every [`~transformers.TrainingArguments`] field, plus how folds are made,
    what part of the pretrained model trains, which metrics are reported and how the data is preprocessed.

    Parse it from the command line with `HfArgumentParser(KFoldConfig)`, as any `TrainingArguments`.

    Folds:
        n_folds (`int`, defaults to `5`): number of folds k.
        fold_strategy (`str`, defaults to `"auto"`): `"auto"` (stratified when the label column is a
            `ClassLabel`, plain k-fold otherwise), `"kfold"`, `"stratified"`, `"group"`, `"stratified_group"`
            `"timeseries"` (rows in time order; training rows always precede evaluation rows) or `"spatial"` (square
            blocks of space dealt to folds; see `coordinate_columns` and docs/dependence.md).
        n_repeats (`int`, defaults to `1`): repeated k-fold; every repeat reshuffles.
        fold_seed (`int`, defaults to `42`): seed of the fold shuffles (independent of `seed`, which seeds training).
        label_column (`str`, defaults to `"label"`): column holding the class labels.
        group_column (`str`, *optional*): column whose groups must never be split between train and eval (with
            `"timeseries"`: no group straddles a fold boundary).
        coordinate_columns (`list[str]`, *optional*): two columns with each row's position (x, y, or longitude,
            latitude). Needed by `fold_strategy="spatial"`, which deals square blocks of space to folds, balanced and
            stratified where classes allow; with random folds they let the run measure whether its out-of-fold
            errors are autocorrelated in space (see docs/dependence.md).
        coordinate_system (`str`, defaults to `"auto"`): `"xy"` (planar, Euclidean distance in the columns' unit),
            `"lonlat"` (degrees; great-circle distance, block size and buffer in km) or `"auto"` (`"lonlat"` when the
            columns are named like longitude then latitude).
        spatial_block_size (`float`, *optional*): side of the spatial blocks; default: the distance at which the
            labels stop being autocorrelated, recorded in `folds.json`.
        spatial_buffer (`float`, defaults to `0`): training rows closer than this to a fold's evaluation rows are
            left out of that fold's training.
        fold_gap (`int`, defaults to `0`): with `"timeseries"`, rows (groups, with `group_column`) left out between
            training and evaluation.
        time_column (`str`, *optional*): a column with each row's time; with random folds the run measures whether
            its out-of-fold errors are autocorrelated in time. Found by name (`time`, `timestamp`, `date`...) when unset.
        check_dependence (`bool`, defaults to `False`): when the run's errors are dependent in space or time, also
            cross-validate with blocked folds (spatial blocks, or time-series folds) and report both estimates.

    Fine-tuning strategy:
        finetune_strategy (`str`, defaults to `"full"`): `"full"`, `"freeze"`, `"linear_probe"` or `"lora"`.
        freeze_layers (`int`, defaults to `0`): with `"freeze"`, the embeddings and this many bottom blocks get no
            gradient and run in eval mode.
        layerwise_lr_decay (`float`, *optional*): train block `i` (0 = bottom) of `n` at
            `learning_rate * decay**(n - i)`, the embeddings at `learning_rate * decay**(n + 1)`, the rest at
            `learning_rate`: a very low learning rate for early layers instead of freezing them.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: LoRA settings used with `"lora"` when no
            `peft_config` is given (the default targets are chosen per architecture).

    Metrics:
        metrics (`list[str]`): `evaluate` modules; `accuracy`, `precision`, `recall`, `f1` ship with hf_tlcv and
            work offline, any other name or path is loaded with `evaluate.load`.
        metric_average (`str`, defaults to `"macro"`): average of precision, recall and F1.
        eval_on_train (`bool`, defaults to `True`): also report the metrics on each fold's training part, to
            expose overfitting.
        ci_method (`str`, defaults to `"row"`): the 95% interval of the summary. `"row"`: for accuracy and the loss,
            the per-row interval of Bayle et al. from the out-of-fold predictions (about half as wide as the corrected
            one at 95% coverage, docs/statistics.md); no extra training; it falls back to `"corrected"` for dependent
            rows (group, time-series folds) or fold scores that spread beyond their rows. `"corrected"`: the
            Nadeau–Bengio corrected interval of the fold scores (Wilson-type in [0, 1] for bounded metrics), for the
            expected score of a model trained on a fold's rows; no extra training; what other metrics always get. `"nested"`: for accuracy and the
            loss, the nested cross-validation interval of Bates, Hastie & Tibshirani (about 0.65x as wide at the same
            coverage, measured in docs/statistics.md), for the model trained on all rows; it needs extra fits
            (25 for 5 folds and one repeat, see `hf_tlcv.nested_interval`), each trained like a fold, cheap with the
            frozen-feature cache. Needs k-fold-style folds with `n_folds >= 3`.

    Data:
        image_column, text_column (`str`, *optional*): the input column; found automatically when unset.
        image_size (`int`, *optional*): resize images to this square size instead of the processor's default.
        max_length (`int`, *optional*): truncate tokenised text to this length.
        text_pooling (`str`, defaults to `"auto"`): how a text classifier loaded by name reads the encoder's token
            states (see `hf_tlcv.pooling`): `"auto"` (the pooling a sentence-transformers folder declares, e.g. mean
            for all-MiniLM-L6-v2; else the model's own head), `"pooler"` (the head transformers builds: BERT's
            `[CLS]` pooler), or a mode: `"mean"`, `"cls"`, `"max"`, `"mean_sqrt_len"`, `"weightedmean"`,
            `"lasttoken"`.
        feature_cache (`str`, defaults to `"auto"`): with `freeze` / `linear_probe`, compute the frozen layers'
            output once for the whole dataset and train every fold on it (see `hf_tlcv.cache`): `"auto"` (in memory
            when small, else an on-disk Arrow cache), `"memory"`, `"disk"` or `"off"`. Results are the same either
            way; the cache turns itself off, saying why, where it could not be exact.

    Output:
        save_strategy (`str`, defaults to `"no"`): Trainer checkpoints within a fold; off by default, since each
            fold's final model is saved anyway and an interrupted fold is re-run from its start.
        save_fold_models (`bool`, defaults to `True`): save each fold's final model (adapters only for LoRA).
        push_fold_models (`str`, defaults to `"trainable"`): the part of each fold's model that is saved in its fold
            folder and pushed to the Hub: `"trainable"` (LoRA adapters, or the trained parameters of `freeze` /
            `linear_probe`; full weights when everything trains or there is no pretrained model to restore the
            rest from), `"full"` (full weights) or `"none"` (no fold model is pushed). With `push_to_hub=True` each
            fold is pushed as it finishes, then the summary and model card (see [`KFoldTrainer.push_to_hub`]).
        overwrite_output_dir (`bool`, defaults to `False`): discard the results already in `output_dir` instead of
            resuming them.
        trainer_console_output (`bool`, defaults to `False`): also print each fold Trainer's own console output
            (its step progress bar and a log dictionary every `logging_steps`) and the libraries' progress bars
            (weight loading, `datasets` maps). Off, a run shows one progress bar over the folds (the running fold's
            step as its postfix), one line per finished fold and the summary; the step logs are kept either way in
            each fold's log history and go to `report_to`. See `hf_tlcv.console`.

    Several processes:
        parallel_folds (`bool`, defaults to `False`): under `accelerate launch` / `torchrun` with several processes,
            give each process whole folds (trained alone, with the full per-device batch, no gradient communication)
            instead of splitting every fold across the processes with DDP. The results equal those of a one-process
            run. In one process (plain `python`), the folds run as Ray tasks when Ray is installed (`hf_tlcv[ray]`; a
            local cluster, or `RAY_ADDRESS`), as many at once as its CPUs allow, else one at a time here (see
            docs/tuning.md). Not compatible with DeepSpeed, FSDP or model parallelism.

    Example:
    ```python
    >>> from hf_tlcv import KFoldConfig
    >>> config = KFoldConfig(output_dir="cv", n_folds=5, finetune_strategy="freeze", freeze_layers=8)

    ```
    """

    # Folds
    n_folds: int = field(default=5, metadata={"help": "Number of folds k."})
    fold_strategy: str = field(
        default="auto",
        metadata={
            "help": "How rows are split into folds: 'auto' (stratified for a ClassLabel label column, else kfold), "
            "'kfold', 'stratified', 'group', 'stratified_group', 'timeseries' or 'spatial' (blocks of space, with "
            "coordinate_columns).",
            "choices": list(FOLD_STRATEGIES),
        },
    )
    n_repeats: int = field(default=1, metadata={"help": "Repeated k-fold: number of reshuffled repeats."})
    fold_seed: int = field(default=42, metadata={"help": "Seed of the fold shuffles (training uses `seed`)."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class labels."})
    group_column: str | None = field(
        default=None, metadata={"help": "Column of groups that must never be split between train and eval folds."}
    )
    coordinate_columns: list[str] | None = field(
        default=None,
        metadata={"help": "Two columns with each row's position (x y, or longitude latitude): required by "
                  "fold_strategy='spatial'; with random folds they let the run test its errors for spatial dependence."},
    )
    coordinate_system: str = field(
        default="auto",
        metadata={"help": "'xy' (planar), 'lonlat' (degrees; great-circle distances, sizes in km) or 'auto' (lonlat "
                  "when the columns are named like longitude, latitude).", "choices": list(COORDINATE_SYSTEMS)},
    )
    spatial_block_size: float | None = field(
        default=None,
        metadata={"help": "Side of the square blocks of fold_strategy='spatial' (the coordinates' unit, km for "
                  "lonlat); default: the distance at which the labels stop being autocorrelated."},
    )
    spatial_buffer: float = field(
        default=0.0,
        metadata={"help": "With 'spatial': training rows closer than this to a fold's evaluation rows are left out "
                  "of that fold's training."},
    )
    fold_gap: int = field(
        default=0,
        metadata={"help": "With 'timeseries': rows (groups, with group_column) left out between training and "
                  "evaluation."},
    )
    time_column: str | None = field(
        default=None,
        metadata={"help": "Column with each row's time: with random folds the run tests its errors for dependence in "
                  "time (found by name, e.g. 'timestamp', when unset)."},
    )
    check_dependence: bool = field(
        default=False,
        metadata={"help": "When the out-of-fold errors are dependent in space or time, also cross-validate with "
                  "blocked folds and report both estimates."},
    )

    # Fine-tuning strategy
    finetune_strategy: str = field(
        default="full",
        metadata={
            "help": "What trains: 'full', 'freeze' (bottom blocks frozen), 'linear_probe' (head only) or 'lora'.",
            "choices": list(FINETUNE_STRATEGIES),
        },
    )
    freeze_layers: int = field(
        default=0,
        metadata={"help": "With 'freeze': the embeddings and this many bottom blocks get no gradient (eval mode)."},
    )
    layerwise_lr_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay d in (0, 1]: block i of n trains at lr * d**(n - i), embeddings "
            "at lr * d**(n + 1), the head at lr. The 'very low learning rate for early layers' alternative to freezing."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (used when no peft_config is given)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (used when no peft_config is given)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout (used when no peft_config is given)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "LoRA target module names; default: chosen per architecture (e.g. attention query/value)."},
    )

    # Metrics
    metrics: list[str] = field(
        default_factory=lambda: ["accuracy", "precision", "recall", "f1"],
        metadata={"help": "evaluate modules to report; accuracy, precision, recall and f1 ship with hf_tlcv."},
    )
    metric_average: str = field(
        default="macro",
        metadata={"help": "Average for precision, recall and F1.", "choices": list(METRIC_AVERAGES)},
    )
    eval_on_train: bool = field(
        default=True, metadata={"help": "Also compute the metrics on each fold's training part (overfitting)."}
    )

    ci_method: str = field(
        default="row",
        metadata={
            "help": "The summary's 95%% interval: 'row' (per-row interval of accuracy and loss from the out-of-fold "
            "predictions, Bayle et al.), 'corrected' (Nadeau-Bengio corrected, no extra training) or 'nested' "
            "(Bates-Hastie-Tibshirani nested CV for accuracy and loss: narrower, targets the model trained on all "
            "rows, needs extra fits: 25 for 5 folds).",
            "choices": list(CI_METHODS),
        },
    )

    # Data
    image_column: str | None = field(default=None, metadata={"help": "Image column (found automatically if unset)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column (found automatically if unset)."})
    image_size: int | None = field(
        default=None, metadata={"help": "Resize images to this square size (default: the image processor's size)."}
    )
    max_length: int | None = field(default=None, metadata={"help": "Truncate tokenised text to this many tokens."})
    text_pooling: str = field(
        default="auto",
        metadata={
            "help": "How a text model loaded by name is read: 'auto' (the pooling its sentence-transformers folder "
            "declares, e.g. mean for all-MiniLM-L6-v2; else its own head), 'pooler' (the head transformers builds, "
            "BERT's [CLS] pooler), or 'mean', 'cls', 'max', 'mean_sqrt_len', 'weightedmean', 'lasttoken'.",
            "choices": list(TEXT_POOLING_CHOICES),
        },
    )
    feature_cache: str = field(
        default="auto",
        metadata={
            "help": "With 'freeze' / 'linear_probe': run the frozen layers once for all folds and epochs and train on "
            "their cached output. 'auto' (memory when small, else disk), 'memory', 'disk' or 'off'. Same results.",
            "choices": list(FEATURE_CACHE_MODES),
        },
    )

    # Output
    save_strategy: SaveStrategy | str = field(
        default="no",
        metadata={
            "help": "Trainer checkpoints inside each fold: 'no' (default), 'epoch', 'steps' or 'best'. hf_tlcv saves "
            "each fold's final model itself (save_fold_models) and re-runs an interrupted fold from its start, so "
            "intermediate checkpoints are only needed for your own inspection."
        },
    )
    save_fold_models: bool = field(
        default=True, metadata={"help": "Save each fold's final model in its fold folder (adapters only for LoRA)."}
    )
    push_fold_models: str = field(
        default="trainable",
        metadata={
            "help": "Which part of each fold's model is saved and pushed to the Hub: 'trainable' (LoRA adapters or "
            "the trained parameters, megabytes; full weights when everything trains or there is no pretrained base), "
            "'full' (full weights) or 'none' (no fold models on the Hub).",
            "choices": list(PUSH_FOLD_MODELS),
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh, deleting the fold results already in output_dir, instead of resuming them."},
    )
    trainer_console_output: bool = field(
        default=False,
        metadata={
            "help": "Also print each fold Trainer's own output (its step bar and log dictionaries) and the libraries' "
            "progress bars. Off: one bar over the folds, one line per finished fold, then the summary; the step logs "
            "stay in each fold's log history and still go to report_to."
        },
    )

    # Several processes
    parallel_folds: bool = field(
        default=False,
        metadata={
            "help": "With several processes (accelerate launch / torchrun), each process trains whole folds on its "
            "own device, with no gradient communication, instead of every fold being split across the processes "
            "with DDP: faster for small models and data. Results equal a one-process run. In one process: the folds run as "
            "Ray tasks when Ray is installed, else one at a time."
        },
    )

    def __post_init__(self):
        # One set of fold checks, shared with the data-aware checks KFoldTrainer runs on the dataset.
        if isinstance(self.coordinate_columns, str):
            self.coordinate_columns = [self.coordinate_columns]
        if self.coordinate_columns is not None:
            self.coordinate_columns = list(self.coordinate_columns)
        validate_fold_inputs(**fold_kwargs(self))
        if self.finetune_strategy not in FINETUNE_STRATEGIES:
            raise ValueError(f"Unknown {option('finetune_strategy', self.finetune_strategy)}; choose one of "
                             f"{', '.join(FINETUNE_STRATEGIES)}.")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0 (got {option('freeze_layers', self.freeze_layers)}).")
        if self.freeze_layers and self.finetune_strategy != "freeze":
            raise ValueError(
                f"{option('freeze_layers', self.freeze_layers)} only applies with "
                f"{option('finetune_strategy', 'freeze')} (got {self.finetune_strategy!r}); set "
                f"{option('finetune_strategy', 'freeze')} or drop {option('freeze_layers')}."
            )
        if self.layerwise_lr_decay is not None and not 0 < self.layerwise_lr_decay <= 1:
            raise ValueError(f"layerwise_lr_decay must be in (0, 1] (got {self.layerwise_lr_decay}), e.g. "
                             f"{option('layerwise_lr_decay', 0.75)}.")
        if self.metric_average not in METRIC_AVERAGES:
            raise ValueError(f"metric_average must be one of {', '.join(METRIC_AVERAGES)} (got "
                             f"{option('metric_average', self.metric_average)}).")
        if self.ci_method not in CI_METHODS:
            raise ValueError(f"ci_method must be one of {', '.join(CI_METHODS)} (got "
                             f"{option('ci_method', self.ci_method)}).")
        if self.ci_method == "nested" and (self.n_folds < 3 or self.fold_strategy == "timeseries"):
            raise ValueError(
                f"{option('ci_method', 'nested')} needs k-fold-style folds with n_folds >= 3 (its inner "
                f"cross-validation of each fold runs on the other folds); got {option('n_folds', self.n_folds)} and "
                f"{option('fold_strategy', self.fold_strategy)}. Use {option('ci_method', 'corrected')} here.")
        if self.ci_method == "nested" and self.spatial_buffer:
            # With a buffer a fold trains on fewer rows than the other folds hold: its folds are no partition.
            raise ValueError(
                f"{option('ci_method', 'nested')} trains on unions of whole folds, which a "
                f"{option('spatial_buffer', self.spatial_buffer)} would have to thin differently for every pair of "
                f"folds; use {option('ci_method', 'corrected')} with a buffer, or spatial blocks without one.")
        if not self.metrics:
            raise ValueError(f"metrics is empty: name at least one evaluate module, e.g. {option('metrics', ['accuracy'])}.")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels (got {option('image_size', self.image_size)}).")
        if self.feature_cache not in FEATURE_CACHE_MODES:
            raise ValueError(f"feature_cache must be one of {', '.join(FEATURE_CACHE_MODES)} "
                             f"(got {self.feature_cache!r}); use {option('feature_cache', 'off')} to train without the "
                             "frozen-feature cache.")
        if self.text_pooling not in TEXT_POOLING_CHOICES:
            raise ValueError(f"text_pooling must be one of {', '.join(TEXT_POOLING_CHOICES)} (got "
                             f"{option('text_pooling', self.text_pooling)}); 'auto' reads the pooling the model "
                             "declares, 'pooler' keeps BERT's [CLS] pooler.")
        if self.push_fold_models not in PUSH_FOLD_MODELS:
            raise ValueError(f"push_fold_models must be one of {', '.join(PUSH_FOLD_MODELS)} (got "
                             f"{self.push_fold_models!r}); {option('push_fold_models', 'trainable')} pushes adapters "
                             "or trained heads, 'full' full weights, 'none' no fold models.")
        if self.parallel_folds and (self.deepspeed or self.fsdp or self.parallelism_config is not None):
            raise ValueError(
                "parallel_folds trains each fold whole on one process, which cannot be combined with DeepSpeed, "
                f"FSDP or a parallelism_config (they shard one model across processes); drop {option('parallel_folds')} "
                "to train each fold with them, or drop them to train folds in parallel."
            )
        super().__post_init__()
        if self.load_best_model_at_end:
            warnings.warn(
                "load_best_model_at_end=True picks each fold's checkpoint on that fold's eval rows, so the "
                "cross-validated scores are optimistically biased; leave it off for an honest estimate.",
                stacklevel=2,
            )

    def result_fingerprint_dict(self) -> dict[str, Any]:
        """The settings that change results (`RESULT_SETTINGS`): what a resumed run must share with the run it
        resumes."""
        names = {f.name for f in dataclasses.fields(self)}
        return {name: _jsonable(getattr(self, name)) for name in RESULT_SETTINGS if name in names}

    def derive(self, **overrides) -> "KFoldConfig":
        """These settings with `overrides` (`KFoldConfig` field names), checked again as a new config is: the one way a
        study's variant, a search's trial or a derived trainer (`KFoldTrainer.derive`) changes settings.

        Example:
        ```python
        >>> KFoldConfig(output_dir="cv").derive(learning_rate=1e-4, output_dir="cv/lr").learning_rate
        0.0001
        >>> KFoldConfig(output_dir="cv").derive(lr=1e-4)
        Traceback (most recent call last):
        ...
        ValueError: derive() got 'lr', which is not a KFoldConfig setting; use KFoldConfig field names (e.g. 'learning_rate', 'finetune_strategy', 'freeze_layers').

        ```
        """
        check_setting_names(overrides, "derive() got")
        return dataclasses.replace(self, **overrides) if overrides else self

    @classmethod
    def from_training_arguments(cls, args: TrainingArguments, **kfold_settings) -> "KFoldConfig":
        """A `KFoldConfig` with the fields of a plain `TrainingArguments` (the token included, which `to_dict()`
        masks) and the cross-validation settings given here (the others at their defaults)."""
        own = {f.name for f in dataclasses.fields(cls)} - {f.name for f in dataclasses.fields(TrainingArguments)}
        unknown = sorted(set(kfold_settings) - own)
        if unknown:
            raise TypeError(f"Not KFoldConfig settings: {', '.join(unknown)}.")
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name not in own}
        return cls(**values, **kfold_settings)


def check_setting_names(settings: Iterable[str], source: str) -> None:
    """Raise a `ValueError` naming the entries of `settings` that are not `KFoldConfig` fields; `source` says where
    they came from (`"hp_space returned"`, `"Variant 'a' sets"`): the one check of every override of settings."""
    names = {f.name for f in dataclasses.fields(KFoldConfig) if f.init}
    unknown = sorted(set(settings) - names)
    if unknown:
        which = "is not a KFoldConfig setting" if len(unknown) == 1 else "are not KFoldConfig settings"
        raise ValueError(f"{source} {', '.join(map(repr, unknown))}, which {which}; use KFoldConfig field names "
                         "(e.g. 'learning_rate', 'finetune_strategy', 'freeze_layers').")


def changed_settings(saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any]) -> tuple[list, list]:
    """Compare the result settings a run folder recorded with the current ones.

    Returns:
        `(changed, unknown)`: settings that differ (a setting the folder predates counts as changed only when the
        current value is not its default), and settings the folder records that this version does not know (they
        cannot be compared: the caller warns).
    """
    changed = sorted(k for k in current if k in saved and saved[k] != current[k])
    changed += sorted(k for k in current if k not in saved and current[k] != defaults.get(k))
    unknown = sorted(k for k in saved if k not in current)
    return changed, unknown


def default_result_settings() -> dict[str, Any]:
    """`RESULT_SETTINGS` at their defaults (what a folder written before a setting existed implicitly used)."""
    out = {}
    for f in dataclasses.fields(KFoldConfig):
        if f.name in RESULT_SETTINGS:
            if f.default is not dataclasses.MISSING:
                out[f.name] = _jsonable(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = _jsonable(f.default_factory())
    return out


def _jsonable(value: Any) -> Any:
    """A JSON value that compares equal after a round trip through a file (enums by value, objects by str)."""
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    return str(value)
