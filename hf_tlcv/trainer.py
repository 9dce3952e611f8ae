"""`KFoldTrainer`: k-fold cross-validation of fine-tuning, as a `transformers.Trainer`.

The trainer orchestrates; focused modules do the work: `folds` splits rows, `data` preprocesses once, `cache` runs
the frozen layers once, `fold_job` trains one fold with a fresh `Trainer`, `execution` runs fold jobs in worker
processes, `results` aggregates and persists. The features on top (plots, card, Hub push, search) are reached through
one seam, `hf_tlcv.integrations`; studies, searches and audits build their trainers with `derive`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import datasets
import numpy as np
from transformers import EvalPrediction, TrainerCallback, TrainingArguments
from transformers.trainer_utils import set_seed
from transformers.utils import logging

from . import __version__, integrations
from .config import KFoldConfig, changed_settings, default_result_settings
from .console import StepPostfix, fold_line, quiet_libraries
from .data import describe_dataset, needs_preprocessing, preprocess, recorded_for
from .execution import (
    DATA_PARALLEL_TYPES,
    InProcessExecutor,
    LaunchExecutor,
    RayExecutor,
    run_fold_jobs,
)
from .fold_job import FoldJob, ModelSource, StrategyTrainer, fold_settings, run_fold
from .folds import Fold, fold_kwargs, load_folds, make_folds, save_folds, spatial_block_size
from .metrics import build_compute_metrics, metrics_from_probabilities
from .modeling import load_classifier, load_processor, state_fingerprint
from .nested_interval import MIN_NESTED_REPEATS, NestedFit, nested_fits, nested_summary
from .options import option
from .results import CVResults, FoldResult
from .run_dir import (
    FOLDS_FILE,
    FORMAT_VERSION,
    NESTED_FOLDS_FILE,
    RUN_LOCATION_SETTINGS,
    clear_run,
    fold_is_complete,
    format_version,
)
from .sources import source_name
from .strategies import apply_strategy
from .utils import task_of_columns, to_plain
from .validation import validate_dataset

logger = logging.get_logger(__name__)


def ddp_batch_warning(per_device: int, accumulation: int, fold_processes: int, devices: int = 1,
                      one_process_batch: int | None = None) -> str | None:
    """The warning a launch gets when DDP makes a fold's global batch differ from a one-process run's, else `None`.

    Under DDP the global batch is `per_device x devices x accumulation x fold_processes`. It is compared with
    `one_process_batch`, the global batch of the one-process run the user compares with (the defaults they started
    from); a launch that already divided the per-device batch by the process count matches it and is not warned
    again. When it differs, the message compares with these settings on one process.

    Example:
    ```python
    >>> ddp_batch_warning(16, 1, 2, one_process_batch=32) is None      # 2 processes x 16 = the one-process 32
    True

    ```
    """
    one_process = per_device * devices * accumulation
    global_batch = one_process * fold_processes
    if fold_processes <= 1 or global_batch == one_process_batch:
        return None
    advice = (f", or set {option('per_device_train_batch_size', per_device // fold_processes)}"
              if per_device % fold_processes == 0 else "")
    return (f"Each fold trains on {fold_processes} processes (DDP): the global batch is {global_batch} rows "
            f"({per_device} per device x {fold_processes} processes x {accumulation} accumulation steps), not the "
            f"one-process batch of {one_process} rows, so a fold takes {fold_processes}x fewer optimisation steps than "
            f"a one-process run with the same settings and its results differ. For the results of a one-process run "
            f"use {option('parallel_folds', True)}{advice}.")


_KEEP = object()  # derive(): "this trainer's own" (None is a value: no eval_dataset)


class KFoldTrainer(StrategyTrainer):
    r"""
    A [`~transformers.Trainer`] that cross-validates fine-tuning: [`cross_validate`] shards `train_dataset` into
    folds, trains a fresh copy of the pretrained model on each and aggregates the metrics into [`CVResults`].

    Each fold is a self-contained job ([`FoldJob`]: settings, fold indices, rows, model source) run by a fresh inner
    `Trainer` built from a copy of `args` with the fold's own `output_dir` and `run_name`; the same job gives the same
    result here, in a worker process, or on another machine. Every fold starts from the same pretrained weights and
    the same seeded head. Folds are computed once and saved to `output_dir/folds.json`; a run started again on the
    same `output_dir` resumes: finished folds are read back, an interrupted fold is trained again from its start (so
    the results equal those of an uninterrupted run).

    Everything else keeps its `Trainer` meaning: `train()` trains one model on the whole `train_dataset` (with the
    same strategy) into `output_dir` — the model to ship once cross-validation has said how well it works —, and
    `evaluate()`, `predict()` and `push_to_hub()` act on that model. `eval_dataset` is a held-out test set: every fold
    model and the fold ensemble are scored on it, beside the cross-validated estimate, and it is never used to choose
    anything.

    Args:
        model (`str` or `PreTrainedModel`, *optional*): a Hub id, a local folder or a `builtin:` name (loaded once,
            with a new head sized to the label column), or a built classifier. Exclusive with `model_init`.
        args ([`KFoldConfig`] or `TrainingArguments`): training and cross-validation settings; a plain
            `TrainingArguments` is converted, with the cross-validation settings at their defaults.
        data_collator: as in `Trainer`.
        train_dataset (`datasets.Dataset`): all the labelled rows; folds are cut from it. A label column of strings
            becomes a `ClassLabel` (sorted class names).
        eval_dataset (`datasets.Dataset`, *optional*): a held-out test set with the same columns.
        processing_class: image processor or tokenizer; loaded with the model when `model` is a name and the rows
            still need preprocessing.
        model_init (`Callable[[], PreTrainedModel]`, *optional*): builds a fresh model; called once per fold after
            seeding with `args.seed`.
        compute_loss_func, callbacks, optimizer_cls_and_kwargs, preprocess_logits_for_metrics: as in `Trainer`; a
            callback class is instantiated per fold, an instance is shared by every fold that runs in this process.
        compute_metrics (`Callable[[EvalPrediction], dict]`, *optional*): replaces the `evaluate` metrics named in
            `args.metrics`.
        optimizers: kept for `Trainer`'s argument order; an optimizer instance trains one model, so it is refused:
            choose the optimizer of every fold (and of `train()`) with `optimizer_cls_and_kwargs`.
        peft_config (`peft.PeftConfig`, *optional*): the adapter configuration with `finetune_strategy="lora"`.

    Example:
    ```python
    >>> from hf_tlcv import KFoldConfig, KFoldTrainer, load_data
    >>> args = KFoldConfig(output_dir="cv", n_folds=5, finetune_strategy="linear_probe", image_size=112)
    >>> trainer = KFoldTrainer("builtin:efficientnet-lite0", args, train_dataset=load_data("builtin:animal-mnist"))
    >>> results = trainer.cross_validate()

    ```
    """

    _tag_names = ["hf_tlcv", "cross-validation", "k-fold"]
    # Whether cross_validate() draws the run's plots/ (the trials of a hyperparameter search do not: the search report
    # has its own, and hf_tlcv.plots.save_plots draws a trial's from its folder on demand).
    save_cv_plots: bool = True
    # Whether an interrupted cross_validate() says what it kept (a search's trials do not: the search says it).
    say_interrupted: bool = True
    # The per-device batch of the defaults the user started from (None: KFoldConfig's; a recipe sets its own). A DDP
    # launch whose global batch equals it has followed the batch advice (see ddp_batch_warning): it is not warned.
    default_train_batch_size: int | None = None
    # Put before each finished fold's console line: a search's trials say which trial the fold belongs to.
    fold_line_prefix: str = ""
    # The bar over the folds while cross_validate() runs them in this process (None otherwise).
    _fold_bar = None

    def __init__(self, model=None, args: KFoldConfig | TrainingArguments | None = None, data_collator=None,
                 train_dataset: datasets.Dataset | None = None, eval_dataset: datasets.Dataset | None = None,
                 processing_class=None, model_init: Callable | None = None, compute_loss_func: Callable | None = None,
                 compute_metrics: Callable[[EvalPrediction], dict] | None = None,
                 callbacks: list[TrainerCallback] | None = None, optimizers=(None, None),
                 optimizer_cls_and_kwargs=None, preprocess_logits_for_metrics=None, peft_config=None):
        args = self._config(args)
        if model is not None and model_init is not None:
            raise ValueError("Pass either model or model_init to KFoldTrainer, not both: each fold needs one "
                             "source of fresh weights.")
        if model is None and model_init is None:
            raise ValueError("KFoldTrainer needs a model (Hub id, local path, builtin: name or built model) or a "
                             "model_init.")
        self._check_peft_config(peft_config, args)
        if any(o is not None for o in optimizers):
            raise ValueError("An optimizer instance (optimizers=...) trains one model, but KFoldTrainer builds a fresh "
                             "model per fold (and for train()); pass optimizer_cls_and_kwargs=(OptimizerClass, "
                             "kwargs) to choose their optimizer.")
        # Everything about the data is checked before a model is loaded, a fold is cut or a file is written.
        checked = self._checked_dataset(train_dataset, args, "train_dataset")
        train_dataset, self.fold_strategy = checked.dataset, checked.fold_strategy
        self.raw_dataset = train_dataset
        self.class_names, n_labels = checked.class_names, checked.n_labels
        test_raw = None
        if eval_dataset is not None:
            test_raw = self._aligned_test_set(self._checked_dataset(eval_dataset, args, "eval_dataset", test=True),
                                              args.label_column)
        self.raw_test_dataset = test_raw

        self.model_name_or_path = model if isinstance(model, str) else None
        if isinstance(model, str):
            set_seed(args.seed)  # the new head is drawn once, from this seed, and copied into every fold
            with quiet_libraries(not args.trainer_console_output):
                model = load_classifier(model, self.class_names, n_labels, text_pooling=args.text_pooling)
            if processing_class is None:
                processing_class = self._processor(self.model_name_or_path, [train_dataset, test_raw])
        if model is not None:
            model_labels = getattr(getattr(model, "config", None), "num_labels", n_labels)
            if model_labels != n_labels:
                raise ValueError(
                    f"The model has {model_labels} output classes but column {args.label_column!r} has {n_labels}; "
                    f"load it with num_labels={n_labels} (and ignore_mismatched_sizes=True for a pretrained head)."
                )
            model = model.to("cpu")
        self.model_source = ModelSource(template=model, model_init=model_init, name_or_path=self.model_name_or_path,
                                        loaded_with=_load_settings(args) if self.model_name_or_path else None)
        self.peft_config = peft_config
        self._user_callbacks = list(callbacks or [])
        self._user_collator = data_collator

        with args.main_process_first(desc="preprocessing"), quiet_libraries(not args.trainer_console_output):
            self.cv_dataset = self._preprocess(train_dataset, processing_class, args)
            self.test_dataset = self._preprocess(test_raw, processing_class, args) if test_raw is not None else None
        self._user_compute_metrics = compute_metrics  # derive() rebuilds the default one from its own settings
        if compute_metrics is None:
            compute_metrics = build_compute_metrics(args.metrics, average=args.metric_average)
        # The folds evaluate on their own eval rows during training; train() has held-out rows to evaluate on only
        # when an eval_dataset is given, so without one its copy of the settings evaluates nothing.
        self.cv_args = args
        if args.eval_strategy != "no" and self.test_dataset is None:
            args = dataclasses.replace(args, eval_strategy="no", load_best_model_at_end=False)
        # The run's reports (plots, card, Hub push) are callbacks of the features, registered through the one seam
        # (hf_tlcv.integrations) before the user's: on_cross_validation_end finds the card written.
        callbacks = [*integrations.cv_reporters(self), *self._user_callbacks]
        super().__init__(model=None, args=args, data_collator=data_collator, train_dataset=self.cv_dataset,
                         eval_dataset=self.test_dataset, processing_class=processing_class,
                         model_init=self._fresh_model, compute_loss_func=compute_loss_func,
                         compute_metrics=compute_metrics, callbacks=callbacks, optimizers=optimizers,
                         optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
                         preprocess_logits_for_metrics=preprocess_logits_for_metrics)
        self.model_fingerprint = state_fingerprint(self.model)
        self.cv_results: CVResults | None = None
        self._features = None
        self._check_parallel_folds()

    # ---- inputs ------------------------------------------------------------------------------------------
    @staticmethod
    def _config(args) -> KFoldConfig:
        if args is None:
            return KFoldConfig(output_dir="hf_tlcv_output")
        if isinstance(args, KFoldConfig):
            return args
        if isinstance(args, TrainingArguments):
            logger.info("KFoldTrainer got a plain TrainingArguments: converted to a KFoldConfig with the "
                        "cross-validation settings at their defaults (5 folds, full fine-tuning).")
            return KFoldConfig.from_training_arguments(args)
        raise TypeError(f"args must be a KFoldConfig (or a TrainingArguments), got {type(args).__name__}.")

    @staticmethod
    def _checked_dataset(dataset, args: KFoldConfig, name: str, test: bool = False):
        """`hf_tlcv.validation.validate_dataset`: the training rows as `CheckedData`, the test rows as a dataset."""
        if dataset is None:
            raise ValueError(f"KFoldTrainer needs {name}: all the labelled rows, which it splits into folds.")
        with quiet_libraries(not args.trainer_console_output):  # encoding string labels casts the column
            if test:
                return validate_dataset(dataset, args, labels="optional", name=name)
            return validate_dataset(dataset, args, name=name, checked=True)

    def _aligned_test_set(self, dataset: datasets.Dataset, label_column: str) -> datasets.Dataset:
        """The test set with the training set's class ids (strings or another class order are mapped by name)."""
        if label_column not in dataset.column_names:
            return dataset  # unlabelled: fold models predict it, nothing is scored
        feature = dataset.features[label_column]
        names = self.class_names
        if names is None:
            return dataset
        if isinstance(feature, datasets.ClassLabel) and list(feature.names) == names:
            return dataset
        given = dataset.unique(label_column)
        if isinstance(feature, datasets.ClassLabel):
            given = [feature.int2str(int(v)) for v in given if v is not None and v >= 0]
        unknown = sorted(set(map(str, given)) - set(names))
        if unknown:
            raise ValueError(f"eval_dataset has labels the training rows do not have ({', '.join(unknown[:5])}); a "
                             "held-out test set must use the training classes.")
        if isinstance(feature, datasets.ClassLabel):
            return dataset.align_labels_with_mapping({n: i for i, n in enumerate(names)}, label_column)
        return dataset.cast_column(label_column, datasets.Value("string")).cast_column(
            label_column, datasets.ClassLabel(names=names))

    @staticmethod
    def _processor(name_or_path: str, rows: list[datasets.Dataset | None]):
        """The model's image processor or tokenizer. A model folder without one is fine when the rows already hold
        model inputs (it is kept with full fold models when it exists)."""
        try:
            return load_processor(name_or_path)
        except (OSError, ValueError) as exc:
            if any(d is not None and needs_preprocessing(d) for d in rows):
                raise
            logger.info(f"No image processor or tokenizer in {name_or_path} ({type(exc).__name__}); none is needed: "
                        "the rows already hold model inputs.")
            return None

    @staticmethod
    def _preprocess(dataset, processing_class, args: KFoldConfig) -> datasets.Dataset:
        return preprocess(dataset, processing_class, label_column=args.label_column, image_column=args.image_column,
                          text_column=args.text_column, image_size=args.image_size, max_length=args.max_length)

    @staticmethod
    def _check_peft_config(peft_config, args: KFoldConfig) -> None:
        if peft_config is None:
            return
        try:
            from peft import PeftConfig
        except ImportError as exc:  # pragma: no cover - peft is a dependency
            raise ImportError("peft_config needs the peft package: pip install peft") from exc
        if not isinstance(peft_config, PeftConfig):
            raise TypeError(f"peft_config must be a peft.PeftConfig, got {type(peft_config).__name__}.")
        if args.finetune_strategy != "lora":
            raise ValueError(f"A peft_config was given but {option('finetune_strategy', args.finetune_strategy)}; "
                             f"set {option('finetune_strategy', 'lora')} to train adapters, or drop peft_config.")

    def _fresh_model(self):
        """The model `train()` trains: a copy of the pretrained template (or a new `model_init` model) with the
        fine-tuning strategy applied. The Trainer seeds with `args.seed` before calling this."""
        source = self.model_source
        model = source.model_init() if source.model_init is not None else copy.deepcopy(source.template)
        return apply_strategy(model, self.args, self.peft_config)

    def _release_model(self) -> None:
        """Drop the model `Trainer.__init__` built (cross-validation builds one per fold, and releases it). It is freed
        by the full garbage collection `_run_scope` runs as the folds start: a second one here cost 0.2-0.8 s."""
        self.model = self.model_wrapped = None
        self.optimizer = self.lr_scheduler = None

    # ---- derived trainers ------------------------------------------------------------------------------------
    @property
    def inputs(self) -> "TrainerInputs":
        """What this trainer was built from besides its settings ([`TrainerInputs`]): `inputs.build(args)` makes
        another trainer of the same class and inputs (picklable: a Ray Tune trial builds its trainer from it)."""
        source = self.model_source
        return TrainerInputs(
            trainer_cls=type(self), model=source.template, model_init=source.model_init,
            model_name_or_path=self.model_name_or_path, loaded_with=source.loaded_with, train_dataset=self.raw_dataset,
            eval_dataset=self.raw_test_dataset, processing_class=self.processing_class,
            data_collator=self._user_collator, compute_metrics=self._user_compute_metrics,
            callbacks=list(self._user_callbacks), optimizer_cls_and_kwargs=self.optimizer_cls_and_kwargs,
            compute_loss_func=self.compute_loss_func, preprocess_logits_for_metrics=self.preprocess_logits_for_metrics,
            peft_config=self.peft_config, save_cv_plots=self.save_cv_plots,
            default_train_batch_size=self.default_train_batch_size)

    def derive(self, *, model=_KEEP, train_dataset=_KEEP, eval_dataset=_KEEP, processing_class=_KEEP,
               **config_overrides) -> "KFoldTrainer":
        """A new trainer of the same class and inputs as this one, with other settings: how a study builds its
        variants, a search its trials and an audit its grouped run.

        Everything this trainer was built from is reused (see [`TrainerInputs`]: the model, loaded once, so the same
        pretrained weights and seeded head; the checked data; the held-out test set; the processing class, collator,
        `compute_metrics`, callbacks, optimizer class, loss and `peft_config`) unless given here. The settings are
        `args.derive(**config_overrides)` ([`KFoldConfig.derive`], which checks the names).

        Args:
            model: another model (e.g. the same architecture with random weights).
            train_dataset: other rows (e.g. one outer-train part of a nested cross-validation).
            eval_dataset: another held-out test set, or `None` for none.
            processing_class: another image processor or tokenizer.
            config_overrides: `KFoldConfig` fields, e.g. `output_dir="cv/lr_1e-4"`, `learning_rate=1e-4`.

        Example:
        ```python
        >>> frozen = trainer.derive(output_dir="cv/freeze_6", finetune_strategy="freeze", freeze_layers=6)
        >>> frozen.cross_validate()

        ```
        """
        replaced = {name: value for name, value in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset),
                                                    ("processing_class", processing_class)) if value is not _KEEP}
        if model is not _KEEP:
            replaced.update(model=model, model_init=None, model_name_or_path=model if isinstance(model, str) else None)
        return dataclasses.replace(self.inputs, **replaced).build(self.cv_args.derive(**config_overrides))

    # ---- fold jobs -----------------------------------------------------------------------------------------
    def fold_jobs(self, folds: list[Fold] | None = None) -> list[FoldJob]:
        """The fold jobs of this run: the given folds, or every fold of `output_dir/folds.json` not finished yet.

        A job is self-contained: `hf_tlcv.run_fold(job)` trains it here, `hf_tlcv.execution.run_in_worker(job)` in
        a fresh process; both give the result `cross_validate()` would.
        """
        out = Path(self.cv_args.output_dir)
        if folds is None:
            folds = [f for f in self._prepare_output_dir() if not fold_is_complete(out / f.name)]
        features = self._feature_cache() if folds else None
        return [self._job(fold, features) for fold in folds]

    def _job(self, fold: Fold, features, worker_of_rank: int | None = None, out: Path | None = None) -> FoldJob:
        """The job of one fold; `worker_of_rank`: it runs in the one-process worker of that rank (`parallel_folds`)."""
        args = self.cv_args
        settings = fold_settings(args)
        if worker_of_rank is not None:
            # A one-process run: no process-group backend to set up, and one progress bar on the console.
            settings.update(ddp_backend=None, disable_tqdm=args.disable_tqdm or worker_of_rank != 0)
        cache, test_rows = features if features is not None else (None, self.test_dataset)
        extra_fit = isinstance(fold, NestedFit)  # ci_method="nested": only its predictions are used
        return FoldJob(
            settings=settings, fold=fold, dataset=cache.dataset if cache is not None else self.cv_dataset,
            model=self.model_source, output_dir=str(out if out is not None else args.output_dir),
            test_dataset=None if extra_fit else test_rows,
            features=cache,
            data_collator=self._user_collator if cache is None else None, compute_metrics=self.compute_metrics,
            callbacks=self._user_callbacks, peft_config=self.peft_config, processing_class=self.processing_class,
            compute_loss_func=self.compute_loss_func, preprocess_logits_for_metrics=self.preprocess_logits_for_metrics,
            optimizer_cls_and_kwargs=self.optimizer_cls_and_kwargs,
            # fold models only of the run's own folds (not the nested interval's extra fits, nor check_dependence's)
            save_fold_model=not extra_fit and (out is None or Path(out) == Path(args.output_dir))
            and (args.save_fold_models or (args.push_to_hub and args.push_fold_models != "none")),
            run_name=args.run_name,
        )

    # ---- frozen-feature cache ----------------------------------------------------------------------------
    @property
    def feature_cache(self):
        """The run's frozen-feature cache ([`hf_tlcv.cache.FeatureCache`]), built on first use, or `None` when the
        cache cannot be exact for this run (`feature_cache_reason` says why)."""
        features = self._feature_cache()
        return features[0] if features is not None else None

    def _feature_cache(self):
        """`(cache, test rows)` of this run, built once (`None` when it cannot be exact; the log says why, once).
        See `hf_tlcv.cache`."""
        if self._features is not None:
            return self._features or None
        from .cache import FeatureCache, plan_feature_cache

        args = self.cv_args
        self._features = False
        source = self.model_source
        # Only the strategies with a frozen part need a strategy-applied copy to plan on (and to build from).
        cacheable = (args.feature_cache != "off" and args.finetune_strategy in ("freeze", "linear_probe")
                     and source.model_init is None)
        model = apply_strategy(source.build(args.seed), args, self.peft_config) if cacheable else None
        plan, reason = plan_feature_cache(
            model if model is not None else source.template, args, dataset=self.cv_dataset,
            data_collator=self.data_collator, user_model_init=source.model_init is not None)
        cache = None
        if plan is not None:
            # The cache says whether it runs the frozen layers or reuses their output from an earlier run.
            show = self.is_local_process_zero() and not args.disable_tqdm
            # The collator of the uncached path: the user's, or the Trainer's default for this processing class.
            settings = dict(model_fingerprint=self.model_fingerprint, collator=self.data_collator,
                            batch_size=args.per_device_eval_batch_size, mode=args.feature_cache, progress=show)
            with args.main_process_first(desc="frozen-feature cache"):
                cache, reason = FeatureCache.build(model, plan, self.cv_dataset, **settings)
                test_rows = cache.encode(model, self.test_dataset, **settings) \
                    if cache is not None and self.test_dataset is not None else None
        if cache is not None:
            logger.info(cache.describe())
            self._features = (cache, test_rows)
        elif reason and args.feature_cache != "off":
            log = logger.info if args.finetune_strategy in ("full", "lora") else logger.warning
            log(f"Frozen-feature cache off: {reason}.")
        self.feature_cache_reason = reason
        return self._features or None

    # ---- the output folder ---------------------------------------------------------------------------------
    def _broadcast(self, obj):
        """The main process's `obj` on every process (identity with one process)."""
        if self.accelerator.num_processes == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def _processes(self) -> dict:
        """How a fold's training is laid out: processes of the launch, processes per fold, rows per step."""
        args = self.cv_args
        per_fold = 1 if args.world_size == 1 or args.parallel_folds else args.world_size
        devices = 1 if args.parallel_folds else max(1, args.n_gpu)
        return {"world_size": args.world_size, "fold_processes": per_fold, "parallel_folds": bool(args.parallel_folds),
                "global_train_batch_size": args.per_device_train_batch_size * devices
                * args.gradient_accumulation_steps * per_fold}

    def _fold_metadata(self) -> dict:
        """What `folds.json` records and a resumed run must agree with."""
        args = self.cv_args
        processes = self._processes()
        return {
            "format_version": FORMAT_VERSION,
            "fold_strategy": self.fold_strategy,
            "n_folds": args.n_folds,
            "n_repeats": args.n_repeats,
            "fold_seed": args.fold_seed,
            "label_column": args.label_column,
            "group_column": args.group_column,
            **({"spatial_block_size": self._spatial_block_size} if self.fold_strategy == "spatial" else {}),
            "n_rows": len(self.raw_dataset),
            "data_fingerprint": self._data_record["fingerprint"],
            "model_fingerprint": self.model_fingerprint,
            "processes": {"fold_processes": processes["fold_processes"],
                          "global_train_batch_size": processes["global_train_batch_size"]},
            "config": args.result_fingerprint_dict(),
        }

    @property
    def _data_record(self) -> dict:
        if not hasattr(self, "_data_record_cache"):
            self._data_record_cache = describe_dataset(self.raw_dataset)
        return self._data_record_cache

    def _on_main_process(self, compute: Callable, *args):
        """`compute(*args)` on the main process, its value (or its `ValueError`) given to every process."""
        payload = (None, None)
        if self.is_world_process_zero():
            try:
                payload = (compute(*args), None)
            except ValueError as exc:
                payload = (None, str(exc))
        value, error = self._broadcast(payload)
        if error is not None:
            raise ValueError(error)
        return value

    def _prepare_output_dir(self) -> list[Fold]:
        """Compute (or, when resuming, reload) the folds on the main process and give them to every process."""
        return self._on_main_process(self._main_process_folds, Path(self.cv_args.output_dir))

    def _nested_fits(self, folds: list[Fold]) -> list[NestedFit]:
        """`ci_method="nested"`: the extra fits of the nested interval (none otherwise), checked before training."""
        if self.cv_args.ci_method != "nested":
            return []
        return self._on_main_process(self._main_process_nested_fits, Path(self.cv_args.output_dir), folds)

    def _main_process_nested_fits(self, out: Path, folds: list[Fold]) -> list[NestedFit]:
        args = self.cv_args
        path = out / NESTED_FOLDS_FILE
        if path.exists():
            extra, _ = load_folds(path)
        else:
            # Further repeats of the same splitter: repeat 0 is the same split whatever n_repeats is.
            every = self._make_folds(n_repeats=max(args.n_repeats, MIN_NESTED_REPEATS))
            if every[:len(folds)] != folds:
                raise ValueError(f"The folds in {out / FOLDS_FILE} are not the ones make_folds gives for this data and "
                                 f"settings, so the nested interval cannot extend them; start a fresh run "
                                 f"({option('overwrite_output_dir', True)}) for {option('ci_method', 'nested')}.")
            extra = every[len(folds):]
            save_folds(extra, path, self._fold_metadata())
        return nested_fits(folds, extra)

    def _main_process_folds(self, out: Path) -> list[Fold]:
        meta = self._fold_metadata()
        folds_path = out / FOLDS_FILE
        if self.cv_args.overwrite_output_dir and out.exists():
            clear_run(out)
        if folds_path.exists():
            folds, saved = load_folds(folds_path)
            self._check_resumable(out, meta, saved)
            return folds
        folds = self._make_folds()
        out.mkdir(parents=True, exist_ok=True)
        save_folds(folds, folds_path, meta)
        return folds

    def _make_folds(self, **overrides) -> list[Fold]:
        """The run's folds (`make_folds` with every fold setting of the config), spatial blocks of the size recorded
        in `folds.json`."""
        settings = {**fold_kwargs(self.cv_args), "strategy": self.fold_strategy,
                    "block_size": self._spatial_block_size, **overrides}
        return make_folds(self.raw_dataset, seed=self.cv_args.fold_seed, **settings)

    @property
    def _spatial_block_size(self) -> float | None:
        """The side of the spatial blocks: the configured one, or the one chosen from the data (computed once)."""
        args = self.cv_args
        if self.fold_strategy != "spatial" or args.spatial_block_size is not None:
            return args.spatial_block_size
        if getattr(self, "_block_size_cache", None) is None:
            self._block_size_cache = spatial_block_size(self.raw_dataset, args.n_folds, args.label_column,
                                                        args.coordinate_columns, args.coordinate_system)
        return self._block_size_cache

    def _check_resumable(self, out: Path, meta: dict, saved: dict) -> None:
        """Refuse to mix results of different settings, data or process layouts in one folder."""
        old_format = format_version(saved) < 2
        compared = ["fold_strategy", "n_folds", "n_repeats", "fold_seed", "label_column", "group_column", "n_rows",
                    "model_fingerprint"]
        if not old_format:  # hf_tlcv 0.1 fingerprinted data and processes differently: not comparable
            compared += ["data_fingerprint", "processes"]
        changed = [k for k in compared if saved.get(k) != meta.get(k)]
        if "data_fingerprint" in changed and recorded_for(self.raw_dataset, saved.get("data_fingerprint")):
            changed.remove("data_fingerprint")  # the same rows, fingerprinted as hf_tlcv 0.4 and earlier did
        settings_changed, unknown = changed_settings(saved.get("config", {}), meta["config"], default_result_settings())
        changed += [f"config.{k}" for k in settings_changed]
        if changed:
            detail = ""
            if "processes" in changed:
                detail = (f" (the folds in it were trained {saved['processes']}, this launch would train "
                          f"{meta['processes']}: the number of processes per fold changes the global batch and so "
                          "the results)")
            raise ValueError(
                f"{out} holds a cross-validation run with different settings, data or process layout "
                f"({', '.join(changed)} changed){detail}, so it cannot be resumed. Use a new output_dir, or set "
                f"{option('overwrite_output_dir', True)} to delete those results and start fresh."
            )
        if unknown:
            logger.warning(f"{out} records settings this hf_tlcv version does not know ({', '.join(unknown)}); they "
                           "are not compared. Resuming with the ones it knows.")
        if old_format:
            logger.warning(f"{out} was written by hf_tlcv 0.1: its data fingerprint cannot be compared with this "
                           "version's, so only the row count, folds and settings were checked before resuming.")

    # ---- the cross-validation ----------------------------------------------------------------------------
    def cross_validate(self, executor=None) -> CVResults:
        """Train and evaluate one fresh model per fold; return (and save in `output_dir`) the [`CVResults`].

        Finished folds found in `output_dir` are reused, so calling this again after an interruption only runs
        what is missing.

        With several processes, every fold is trained by all of them together (DDP), or, with
        `parallel_folds=True`, each process hands whole folds to a one-process worker of its own (see
        [`KFoldConfig`]); either way every process returns the same results, and the main process saves them.
        In one process, `parallel_folds=True` runs the folds as Ray tasks (a local cluster, or `RAY_ADDRESS`).

        Args:
            executor ([`hf_tlcv.execution.RayExecutor`], *optional*): run the folds there (as many at once as the
                cluster's resources allow), with the results of a run in this process.
        """
        folds = self._prepare_output_dir()
        fits = self._nested_fits(folds)
        self._release_model()  # the copy Trainer.__init__ built is not needed any more
        out = Path(self.cv_args.output_dir)
        finished = self._broadcast([fold_is_complete(out / f.name) for f in [*folds, *fits]]
                                   if self.is_world_process_zero() else None)
        finished, fits_finished = finished[:len(folds)], finished[len(folds):]
        self._announce(folds, finished, out)
        if fits and self.is_world_process_zero():
            logger.warning(f"{option('ci_method', 'nested')}: after the {len(folds)} folds, {len(fits)} extra fits "
                           f"({sum(fits_finished)} already done) train like folds for the nested interval.")
        results: list[FoldResult] = []
        nested = None
        with self._run_scope(folds, finished, out):
            if not all(finished) or not all(fits_finished):
                self._feature_cache()  # its own step, with its own bar, before the folds' bar starts

            bar = self._fold_bar = self._progress(len(folds), "Cross-validation folds", "fold")
            for fold, result, resumed in self._fold_steps(folds, finished, out, executor):
                results.append(result)
                self._fold_event("on_fold_end", fold=fold, fold_dir=out / fold.name, result=result, resumed=resumed)
                bar.update(1)
                if self.is_world_process_zero():  # one line per fold, written above the bar
                    bar.write(self.fold_line_prefix
                              + fold_line(fold.name, result.eval_metrics, resumed, sum(result.seconds.values())))
            bar.close()
            self._fold_bar = None
            if fits:
                bar = self._progress(len(fits), "Nested-CV fits (ci_method='nested')", "fit")
                fit_results = []
                for _, result, _ in self._fold_steps(fits, fits_finished, out, executor):
                    fit_results.append(result)
                    bar.update(1)
                bar.close()
                nested = nested_summary(folds, results, fits, fit_results)
        cv = CVResults(results, oof_metrics=self._pooled_metrics(results), config=self._config_record(),
                       label_names=self.class_names, metadata=self._results_metadata(),
                       test_metrics=self._ensemble_test_metrics(results), nested=nested,
                       diagnostics=self._dependence_diagnostics(results, out, executor))
        if self.is_world_process_zero():
            cv.save(out)
        self.cv_results = cv
        self._fold_event("on_cross_validation_end", results=cv, output_dir=out)
        return cv

    def _dependence_diagnostics(self, results: list[FoldResult], out: Path, executor=None) -> dict:
        """`diagnostics["dependence"]` of a run with random folds whose rows have coordinates or times (see
        `hf_tlcv.dependence`); with `check_dependence`, the blocked folds are cross-validated too (in
        `output_dir/dependence_check/`, resumable) and the two estimates compared."""
        import pandas as pd

        from .dependence import DEPENDENCE_CHECK_DIR, blocked_folds, compare_blocked, dependence_lines, \
            detect_dependence

        frames = [r.predictions for r in results if r.predictions is not None]
        if not frames:
            return {}
        found = detect_dependence(pd.concat(frames, ignore_index=True), self.raw_dataset, self.cv_args,
                                  self.fold_strategy)
        if found is None:
            if self.cv_args.check_dependence and self.is_world_process_zero():
                logger.warning(f"{option('check_dependence', True)} compares random folds with blocked ones, but this "
                               f"run's folds are {self.fold_strategy!r} or its rows have no coordinate or time column; "
                               f"set {option('coordinate_columns')} or {option('time_column')} with random folds.")
            return {}
        if self.cv_args.check_dependence and found.get("proposal"):
            folds = self._on_main_process(blocked_folds, self.raw_dataset, self.cv_args, found, self.cv_args.fold_seed)
            check_dir = out / DEPENDENCE_CHECK_DIR
            if self.is_world_process_zero():  # fold results of other blocks (another run in this folder) are not reused
                if (check_dir / FOLDS_FILE).exists() and load_folds(check_dir / FOLDS_FILE)[0] != folds:
                    shutil.rmtree(check_dir)
                save_folds(folds, check_dir / FOLDS_FILE, {"proposal": found["proposal"]["settings"]})
            self.accelerator.wait_for_everyone()
            finished = self._broadcast([fold_is_complete(check_dir / f.name) for f in folds]
                                       if self.is_world_process_zero() else None)
            blocked = []
            bar = self._progress(len(folds), "Blocked folds (check_dependence)", "fold")
            for _, result, _ in self._fold_steps(folds, finished, check_dir, executor):
                blocked.append(result)
                bar.update(1)
            bar.close()
            random_cv, blocked_cv = CVResults(results), CVResults(blocked)
            metric = "accuracy" if "accuracy" in random_cv.summary else next(iter(random_cv.summary))
            found["check"] = compare_blocked(random_cv.summary, blocked_cv.summary, found["kind"], metric)
        if self.is_world_process_zero():
            for line in dependence_lines({"dependence": found}):
                logger.warning(line)
        return {"dependence": found}

    def _progress(self, total: int, description: str, unit: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=description, unit=unit, position=0, leave=True,
                    disable=self.cv_args.disable_tqdm or not self.is_world_process_zero())

    def _announce(self, folds: list[Fold], finished: list[bool], out: Path) -> None:
        if not self.is_world_process_zero():
            return
        done = [f.name for f, d in zip(folds, finished) if d]
        if done:
            logger.warning(f"Resuming the cross-validation in {out}: {len(done)} finished fold(s) read back "
                           f"({', '.join(done)}); {len(folds) - len(done)} to train.")
        processes, args = self._processes(), self.cv_args
        default = self.default_train_batch_size
        if default is None:
            default = KFoldConfig.__dataclass_fields__["per_device_train_batch_size"].default
        devices = 1 if args.parallel_folds else max(1, args.n_gpu)
        message = ddp_batch_warning(args.per_device_train_batch_size, args.gradient_accumulation_steps,
                                    processes["fold_processes"], devices, default * args.gradient_accumulation_steps)
        if message:
            logger.warning(message)

    @contextlib.contextmanager
    def _run_scope(self, folds: list[Fold], finished: list[bool], out: Path) -> Iterator[None]:
        """Around the folds: cheap garbage collections, and a clear word when the run is interrupted.

        Every fold ends with a full garbage collection (its Trainer and model sit in reference cycles), which walks
        every object of the process: about 0.5 M after importing torch and transformers, 0.2-0.8 s each. What is
        alive when the folds start lives as long as the run, so it is moved to the permanent generation for the
        run's duration (`gc.freeze`) and given back (`gc.unfreeze`) when the run ends, however it ends.
        """
        froze = gc.get_freeze_count() == 0
        if froze:
            gc.collect()
            gc.freeze()
        try:
            # the libraries' bars off for the run (hf_tlcv.console), back on after it
            with quiet_libraries(not self.cv_args.trainer_console_output):
                yield
        except KeyboardInterrupt:
            if self._fold_bar is not None:  # closed first, so that what is said next goes under the bar
                self._fold_bar.close()
                self._fold_bar = None
            if self.is_world_process_zero() and self.say_interrupted:
                kept = sum(fold_is_complete(out / f.name) for f in folds)
                logger.warning(f"Interrupted: the {kept} finished fold(s) are kept in {out}; run the same command "
                               "again to resume from there.")
            raise
        finally:
            if froze:
                gc.unfreeze()

    def _read_fold(self, fold_dir: Path) -> FoldResult:
        """A fold finished in an earlier run, read by the main process and sent to every process."""
        return self._broadcast(FoldResult.load(fold_dir) if self.is_world_process_zero() else None)

    def _fold_steps(self, folds: list[Fold], finished: list[bool], out: Path,
                    executor=None) -> Iterator[tuple[Fold, FoldResult, bool]]:
        """The folds run on their executor (see `_fold_executor`) through `hf_tlcv.execution.run_fold_jobs`: finished
        ones read back, the others trained, each result saved as it arrives; `(fold, result, resumed)` in fold order."""
        args = self.cv_args
        if executor is not None and args.world_size > 1:
            raise ValueError("cross_validate(executor=...) runs the folds from one process, but this is one of "
                             f"{args.world_size} processes of a launch: run the script with plain python.")
        features = self._feature_cache() if not all(finished) else None
        own = executor is None
        executor = executor if executor is not None else self._fold_executor()
        rank = args.process_index if isinstance(executor, LaunchExecutor) else None

        def make_job(fold: Fold) -> FoldJob:
            job = self._job(fold, features, worker_of_rank=rank, out=out)  # it trains in the folder it is saved in
            if (isinstance(executor, InProcessExecutor) and self._fold_bar is not None
                    and not args.trainer_console_output):
                job.callbacks = [*job.callbacks, StepPostfix(self._fold_bar, fold.name)]
            return job

        try:
            yield from run_fold_jobs(folds, finished, out, make_job, executor, read=self._read_fold,
                                     is_main=self.is_world_process_zero(), barrier=self.accelerator.wait_for_everyone)
        finally:
            if own:
                executor.close()

    def _fold_executor(self):
        """Where this run's folds train: with `parallel_folds`, in a worker process of each process of a launch
        ([`LaunchExecutor`]), or as Ray tasks in one process ([`RayExecutor`], on a local cluster or `RAY_ADDRESS`);
        otherwise here ([`InProcessExecutor`], every process of a launch training each fold together)."""
        args = self.cv_args
        if args.parallel_folds and args.world_size > 1:
            return LaunchExecutor(args.process_index, args.world_size, args.device)
        if args.parallel_folds and self._ray_for_parallel_folds():
            return RayExecutor()
        # run_fold looked up when the folds run, as this module's name (tests replace it)
        return InProcessExecutor(lambda job: run_fold(job))

    # ---- fold jobs on Ray (hf_tlcv.execution.RayExecutor) ------------------------------------------------------
    def _ray_for_parallel_folds(self) -> bool:
        """`parallel_folds` in one process runs the folds on Ray when it is installed; without it, here, one by one."""
        from .execution import ray_available

        if ray_available():
            return True
        logger.warning(f"{option('parallel_folds', True)} in one process runs the folds as Ray tasks, but Ray is not "
                       "installed (pip install 'hf_tlcv[ray]'): the folds run here, one at a time.")
        return False

    def _check_parallel_folds(self) -> None:
        """`parallel_folds` needs one whole model per process: refuse launches that spread one over several."""
        if not self.cv_args.parallel_folds or self.cv_args.world_size == 1:
            return
        sharded = [name for name, on in (
            ("DeepSpeed", self.is_deepspeed_enabled),
            ("FSDP", self.is_fsdp_enabled),
            ("a model split over several devices", self.is_model_parallel),
            (f"distributed type {self.accelerator.distributed_type}",
             self.accelerator.distributed_type not in DATA_PARALLEL_TYPES),
        ) if on]
        if sharded:
            raise ValueError(
                f"parallel_folds=True trains each fold whole on one process, but this launch uses {sharded[0]}, "
                "which spreads one model over several processes or devices. Launch plain data-parallel processes "
                f"(accelerate launch --multi_gpu, or torchrun), or drop {option('parallel_folds')}."
            )

    def _fold_event(self, event: str, **kwargs) -> None:
        """Tell the callbacks that define `event` (`on_fold_end`, `on_cross_validation_end`) about it.

        Cross-validation events extend the `TrainerCallback` protocol: a callback may define
        `on_fold_end(args, state, control, fold, fold_dir, result, resumed, trainer)`, called on every process once
        a fold's results are saved, for every fold in fold order (`resumed=True` for a fold read back from an earlier
        run; with `parallel_folds`, once the round of folds the fold was trained in has finished), and
        `on_cross_validation_end(args, state, control, results, output_dir, trainer)`, called once the
        `CVResults` are saved. Callbacks without them are not called.
        """
        for callback in self.callback_handler.callbacks:
            handler = getattr(callback, event, None)
            if handler is not None:
                handler(self.cv_args, self.state, self.control, trainer=self, **kwargs)

    # ---- what the run reports ------------------------------------------------------------------------------
    def _pooled_metrics(self, results: list[FoldResult]) -> dict[str, float]:
        """The metrics once over all out-of-fold predictions together (each repeat covers every row once)."""
        frames = [r.predictions for r in results if r.predictions is not None]
        if not frames or self.compute_metrics is None:
            return {}
        probs = np.concatenate([f.filter(like="prob_").to_numpy() for f in frames])
        labels = np.concatenate([f["label"].to_numpy() for f in frames])
        return metrics_from_probabilities(probs, labels, self.compute_metrics)

    def _ensemble_test_metrics(self, results: list[FoldResult]) -> dict[str, float]:
        """The fold ensemble on the test set: the metrics of the mean of the fold models' probabilities."""
        frames = [r.test_predictions for r in results if r.test_predictions is not None]
        if not frames or "label" not in frames[0] or self.compute_metrics is None:
            return {}
        probs = np.mean([f.filter(like="prob_").to_numpy() for f in frames], axis=0)
        return metrics_from_probabilities(probs, frames[0]["label"].to_numpy(), self.compute_metrics)

    def _config_record(self) -> dict:
        """The settings as `cv_results.json` records them. Without `output_dir` (nor `logging_dir`): the folder that
        holds the record is the run, wherever it is moved or pushed, and its path on this machine names nothing there.
        The model as the user named it."""
        record = {k: v for k, v in self.cv_args.to_dict().items() if k not in RUN_LOCATION_SETTINGS}
        record["model_name_or_path"] = self.model_name_or_path
        record["resolved_fold_strategy"] = self.fold_strategy
        return record

    def _results_metadata(self) -> dict:
        template = self.model_source.template
        # A built model is named by where it was loaded from: a builtin's cache folder by its builtin: name.
        model = {"name_or_path": self.model_name_or_path
                 or source_name(getattr(template, "name_or_path", None) if template is not None else None) or None,
                 "class": type(template).__name__ if template is not None else "model_init",
                 "fingerprint": self.model_fingerprint}
        meta = self._fold_metadata()
        meta.update({"processes": self._processes(), "data": self._data_record, "model": model,
                     "task": self.task, "hf_tlcv_version": __version__})
        if self.raw_test_dataset is not None:
            meta.update({"test_data": describe_dataset(self.raw_test_dataset),
                         "n_test_rows": len(self.raw_test_dataset)})
        return to_plain(meta)

    @property
    def task(self) -> str:
        """`"image-classification"` or `"text-classification"`, from the model inputs of the rows."""
        return task_of_columns(self.cv_dataset.column_names)

    @property
    def dataset_name(self) -> str | None:
        """The dataset as the user named it (a Hub id, a `builtin:` name, a file name; never a datasets builder such
        as "csv"), or `None`."""
        return self._data_record["name"]

    # ---- hyperparameter search (hf_tlcv.search) -------------------------------------------------------------------
    def hyperparameter_search(self, hp_space: Callable | None = None, compute_objective: Callable | None = None,
                              n_trials: int = 20, direction: str | None = None, backend="optuna",
                              hp_name: Callable | None = None, **kwargs):
        """Search hyperparameters with Optuna or Ray Tune, `Trainer`'s way, but every trial is a cross-validation on
        this run's folds (`output_dir/folds.json`, the same folds for every trial) and its objective is the
        cross-validated mean of `metric_for_best_model` (default: accuracy, or the first metric).

        After each fold a trial reports its running mean (step = fold index), so pruners stop hopeless trials after
        their first folds; pruned trials are recorded as pruned, never scored. Each trial is a [`KFoldTrainer`] run
        in `output_dir/trials/<trial>/`, resumable like any cross-validation; the study lives in `output_dir`
        (SQLite), so the same call after an interruption runs only what is missing (`n_trials` counts the study's
        trials in total) and, once complete, returns the same best trial without training. The report (best
        settings, trial table, best vs. runner-up on shared folds, pruning savings, plots) is written to
        `output_dir/search_report.md` and `.json`. See `hf_tlcv.search` and docs/tuning.md.

        Args:
            hp_space (`Callable[[optuna.Trial], dict]`, *optional*): `KFoldConfig` overrides of a trial; default
                [`hf_tlcv.search.default_hp_space`] bounded by the model's blocks (learning rate, strategy, freeze
                depth, LoRA rank, layer-wise decay, epochs).
            compute_objective (`Callable[[dict], float]`, *optional*): the objective from the folds' mean metrics
                (`{"eval_accuracy": ..., "eval_loss": ...}`); needs `direction`.
            n_trials (`int`, defaults to 20): the study's total number of trials.
            direction (`str`, *optional*): `"maximize"` or `"minimize"`; default: the metric's own.
            backend (`str`, defaults to `"optuna"`): `"optuna"` (trials one after the other here; their folds on Ray
                with `parallel_folds=True`) or `"ray"` (Ray Tune trials: Optuna's sampler, an ASHA scheduler on the
                fold reports).
            hp_name (`Callable[[optuna.Trial], str]`, *optional*): the run name of a trial.
            kwargs: `storage` (None: `output_dir/search.db`; `"journal"`; a database URL; an optuna storage),
                `study_name`, `sampler` (default: TPE seeded with `args.seed`), `pruner` (default: Optuna's median
                pruner, its start-up trials sized to `n_trials`: `hf_tlcv.search.startup_trials`), `timeout`, `catch`,
                `callbacks`, `gc_after_trial`; `nested=True` and `inner_folds` (the
                nested estimate); `executor` (a `RayExecutor` for the folds), `save_fold_models` (default False);
                with `backend="ray"`: `resources_per_trial`, `scheduler`, `max_concurrent_trials`, `ray_address`.

        Returns:
            `transformers.trainer_utils.BestRun`: `run_id` (the trial number), `objective`, `hyperparameters` (the
            best trial's `KFoldConfig` overrides) and `run_summary` (the [`hf_tlcv.search.report.SearchReport`]).

        Example:
        ```python
        >>> best = trainer.hyperparameter_search(n_trials=20)
        >>> best.hyperparameters, best.objective
        >>> print(best.run_summary.to_markdown())

        ```
        """
        folds = self._prepare_output_dir()
        self._release_model()  # every trial builds its own models
        return integrations.hyperparameter_search(
            self, folds, hp_space=hp_space, compute_objective=compute_objective, n_trials=n_trials, direction=direction,
            backend=backend, hp_name=hp_name, **kwargs)

    # ---- Hub ---------------------------------------------------------------------------------------------
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the Hub repository `args.hub_model_id` (default: the `output_dir` name), as `Trainer` does, through
        hf_tlcv's Hub transport (one clear error, token never shown)."""
        if not self.is_world_process_zero():
            return
        args = self.args
        self.hub_model_id = integrations.create_repo(args, token=token if token is not None else args.hub_token,
                                                     private=private if private is not None else args.hub_private_repo)
        self.push_in_progress = None

    def push_cross_validation_to_hub(self, commit_message: str | None = None, token: str | None = None,
                                     revision: str | None = None, private: bool | None = None, **kwargs):
        """Push the cross-validation run in `output_dir` to `args.hub_model_id` (default: the `output_dir` name).

        One commit adds the card (`README.md`), `cv_results.json`, `folds.json`, `oof_predictions.parquet`, the
        plots and every fold folder with its model in the form `push_fold_models` gives. Files already on the Hub
        with the same content are skipped, so pushing again completes an interrupted push. With
        `KFoldConfig(push_to_hub=True)` this happens automatically: each fold is pushed as it finishes, the rest
        when cross-validation ends. Only the main process pushes. (`push_to_hub()` keeps its `Trainer` meaning: it
        pushes the model `train()` produced.)

        Args:
            commit_message: defaults to a summary of the scores.
            token: write token; default `args.hub_token`, else `HF_TOKEN` or the login cache.
            revision: branch; default `args.hub_revision` (`main`).
            private: create the repository private; default `args.hub_private_repo`.
            kwargs: `hub_model_id`, `push_fold_models` (default `args.push_fold_models`), `dataset_name`,
                `study_report`, `license`, `language` (card content, see `hf_tlcv.hub.CVCardData`).

        Returns:
            `huggingface_hub.CommitInfo` on the main process (`None` on the others).

        Raises:
            FileNotFoundError: no finished run in `output_dir` (call `cross_validate()` first).
            hf_tlcv.hub.HubPushError: the push failed; the message says why and how to retry.
        """
        if not self.is_world_process_zero():
            return None
        args = self.args
        repo_id = kwargs.pop("hub_model_id", None) or integrations.repo_id(args)
        results = self.cv_results if self.cv_results is not None else CVResults.load(args.output_dir)
        return results.push_to_hub(repo_id, token=token if token is not None else args.hub_token,
                                   private=private if private is not None else args.hub_private_repo,
                                   revision=revision if revision is not None else args.hub_revision,
                                   push_fold_models=kwargs.pop("push_fold_models", args.push_fold_models),
                                   commit_message=commit_message, task=self.task,
                                   dataset_name=kwargs.pop("dataset_name", self.dataset_name), **kwargs)


@dataclasses.dataclass
class TrainerInputs:
    """What a [`KFoldTrainer`] is built from besides its settings (`KFoldTrainer.inputs`), so that another trainer
    of the same class and inputs can be built with other settings ([`KFoldTrainer.derive`], a search's trials).

    Picklable with `cloudpickle` (a Ray Tune trial builds its trainer from it). `model` is the loaded template (the
    pretrained weights and the head seeded once), shared by every trainer built from it; a model named by a string is
    loaded again only when the settings change how it loads (`seed` draws the head, `text_pooling` builds it).
    """

    trainer_cls: type
    model: Any
    model_init: Callable | None
    model_name_or_path: str | None
    loaded_with: tuple | None
    train_dataset: Any
    eval_dataset: Any
    processing_class: Any
    data_collator: Callable | None
    compute_metrics: Callable | None
    callbacks: list
    optimizer_cls_and_kwargs: Any
    compute_loss_func: Callable | None
    preprocess_logits_for_metrics: Callable | None
    peft_config: Any
    save_cv_plots: bool = True
    default_train_batch_size: int | None = None

    def build(self, args: KFoldConfig) -> KFoldTrainer:
        """A trainer of these inputs with settings `args`."""
        name, model = self.model_name_or_path, self.model
        if isinstance(model, str) or (name is not None and _load_settings(args) != self.loaded_with):
            model = name  # loaded again, as the constructor loads a name
        trainer = self.trainer_cls(
            model, args, data_collator=self.data_collator, train_dataset=self.train_dataset,
            eval_dataset=self.eval_dataset, processing_class=self.processing_class,
            model_init=self.model_init if model is None else None, compute_loss_func=self.compute_loss_func,
            compute_metrics=self.compute_metrics, callbacks=list(self.callbacks),
            optimizer_cls_and_kwargs=self.optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=self.preprocess_logits_for_metrics,
            peft_config=self.peft_config if args.finetune_strategy == "lora" else None)
        if name is not None and not isinstance(model, str):
            # The template is the model named `name`, loaded once: the built run's records and its fold models say
            # so, as those of the trainer it was derived from do.
            trainer.model_name_or_path = trainer.model_source.name_or_path = name
            trainer.model_source.loaded_with = self.loaded_with
        trainer.save_cv_plots, trainer.default_train_batch_size = self.save_cv_plots, self.default_train_batch_size
        return trainer


def _load_settings(args: KFoldConfig) -> tuple:
    """The settings a model named by a string is loaded with (the head's seed, the text pooling)."""
    return (args.seed, args.text_pooling)


__all__ = ["KFoldTrainer", "TrainerInputs", "ddp_batch_warning"]
