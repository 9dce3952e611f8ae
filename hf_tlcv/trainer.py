"""`KFoldTrainer`: k-fold cross-validation of fine-tuning, as a `transformers.Trainer`.

The trainer orchestrates; focused modules do the work: `folds` splits rows, `strategies` decides what trains,
`data` preprocesses once, `metrics` scores, `results` aggregates and persists.
"""

from __future__ import annotations

import copy
import gc
import shutil
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import datasets
import numpy as np
from tqdm.auto import tqdm
from transformers import EvalPrediction, Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import set_seed
from transformers.utils import logging

from . import __version__
from ._distributed import DATA_PARALLEL_TYPES, deal_folds, single_process_view, wait_for_processes
from .cache import FeatureCache, plan_feature_cache, remove_bypass
from .config import KFoldConfig
from .data import label_names as dataset_label_names
from .data import num_labels as dataset_num_labels
from .data import preprocess
from .folds import Fold, load_folds, make_folds, save_folds, validate_fold_inputs
from .hub import FOLD_MODEL_DIR, HubPushCallback, hub_repo_id, push_cv, save_fold_model
from .metrics import build_compute_metrics
from .modeling import load_classifier, load_processor, state_fingerprint
from .plots import save_plots
from .results import OOF_FILE, RESULTS_FILE, CVResults, FoldResult, predictions_frame
from .strategies import apply_strategy, discover_layout, layerwise_lr_groups

FOLDS_FILE = "folds.json"
PLOTS_DIR = "plots"
logger = logging.get_logger(__name__)
_TIMING_KEYS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _strip_metrics(metrics: dict, prefix: str) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        name = key.removeprefix(f"{prefix}_")
        if name not in _TIMING_KEYS:
            out[name] = float(value) if isinstance(value, (int, float, np.floating)) else value
    return out


class KFoldTrainer(Trainer):
    r"""
    A [`~transformers.Trainer`] that cross-validates fine-tuning: [`cross_validate`] shards `train_dataset` into
    folds, trains a fresh copy of the pretrained model on each and aggregates the metrics into [`CVResults`].

    Every fold starts from the same pretrained weights and the same seeded head: the model (or what `model_init`
    returns) is copied for each fold and never trained itself, and a finished fold's model is released before the
    next one is built. Folds are computed once, saved to `output_dir/folds.json`, and a run started again on the
    same `output_dir` resumes: finished folds are read back, an interrupted fold is trained again from its start
    (so the results equal those of an uninterrupted run).

    `train()` keeps its `Trainer` meaning: it trains one model on the whole `train_dataset`, from the same
    pretrained start and with the same fine-tuning strategy, writing to `output_dir` — the model to ship once
    cross-validation has estimated how well it works.

    Args:
        model (`str` or `PreTrainedModel`, *optional*): a Hub id, a local folder or a `builtin:` name (loaded once,
            with a new head sized to the label column), or a built classifier. Exclusive with `model_init`.
        args ([`KFoldConfig`]): training and cross-validation settings.
        train_dataset (`datasets.Dataset`): all the labelled rows; folds are cut from it.
        model_init (`Callable[[], PreTrainedModel]`, *optional*): builds a fresh model; called once per fold after
            seeding with `args.seed`.
        processing_class: image processor or tokenizer; loaded with the model when `model` is a name.
        data_collator, callbacks: as in `Trainer`.
        compute_metrics (`Callable[[EvalPrediction], dict]`, *optional*): replaces the `evaluate` metrics named in
            `args.metrics`.
        peft_config (`peft.PeftConfig`, *optional*): the adapter configuration with `finetune_strategy="lora"`.

    Example:
    ```python
    >>> from hf_tlcv import KFoldConfig, KFoldTrainer
    >>> from hf_tlcv.assets import load_dataset
    >>> args = KFoldConfig(output_dir="cv", n_folds=5, finetune_strategy="linear_probe", image_size=112)
    >>> trainer = KFoldTrainer("builtin:efficientnet-lite0", args, train_dataset=load_dataset("builtin:animal-mnist"))
    >>> results = trainer.cross_validate()
    ```
    """

    _tag_names = ["hf_tlcv", "cross-validation", "k-fold"]

    def __init__(self, model=None, args: KFoldConfig | None = None, train_dataset: datasets.Dataset | None = None,
                 model_init: Callable | None = None, processing_class=None, data_collator=None,
                 compute_metrics: Callable[[EvalPrediction], dict] | None = None, peft_config=None,
                 callbacks: list[TrainerCallback] | None = None, **kwargs):
        if args is None:
            args = KFoldConfig(output_dir="hf_tlcv_output")
        if not isinstance(args, KFoldConfig):
            raise TypeError(
                f"args must be a KFoldConfig, got {type(args).__name__}; build one with the same fields, "
                "e.g. KFoldConfig(**training_args.to_dict()) plus the cross-validation settings."
            )
        if model is not None and model_init is not None:
            raise ValueError("Pass either model or model_init to KFoldTrainer, not both: each fold needs one "
                             "source of fresh weights.")
        if model is None and model_init is None:
            raise ValueError("KFoldTrainer needs a model (Hub id, local path, builtin: name or built model) or a "
                             "model_init.")
        self._check_peft_config(peft_config, args)
        if train_dataset is None:
            raise ValueError("KFoldTrainer needs train_dataset: all the labelled rows, which it splits into folds.")
        if not isinstance(train_dataset, datasets.Dataset):
            raise TypeError(f"train_dataset must be a datasets.Dataset (got {type(train_dataset).__name__}); "
                            "convert it with datasets.Dataset.from_dict / from_pandas.")
        # Everything about the data is checked before a model is loaded or a step is taken.
        if len(train_dataset) and args.label_column not in train_dataset.column_names:
            raise ValueError(
                f"label_column {args.label_column!r} is not in the dataset (columns: "
                f"{', '.join(train_dataset.column_names)}); set label_column to the column holding the labels."
            )
        self.fold_strategy = validate_fold_inputs(train_dataset, strategy=args.fold_strategy, n_folds=args.n_folds,
                                                  n_repeats=args.n_repeats, label_column=args.label_column,
                                                  group_column=args.group_column)
        self.raw_dataset = train_dataset
        self.class_names = dataset_label_names(train_dataset, args.label_column)
        n_labels = dataset_num_labels(train_dataset, args.label_column)

        self.model_name_or_path = model if isinstance(model, str) else None
        if isinstance(model, str):
            set_seed(args.seed)  # the new head is drawn once, from this seed, and copied into every fold
            model = load_classifier(model, self.class_names, n_labels)
            if processing_class is None:
                processing_class = load_processor(self.model_name_or_path)
        if model is not None:
            model_labels = getattr(getattr(model, "config", None), "num_labels", n_labels)
            if model_labels != n_labels:
                raise ValueError(
                    f"The model has {model_labels} output classes but column {args.label_column!r} has {n_labels}; "
                    f"load it with num_labels={n_labels} (and ignore_mismatched_sizes=True for a pretrained head)."
                )
            model = model.to("cpu")
        self._template = model
        self._user_model_init = model_init
        self.peft_config = peft_config

        with args.main_process_first(desc="preprocessing"):
            self.cv_dataset = preprocess(
                train_dataset, processing_class, label_column=args.label_column, image_column=args.image_column,
                text_column=args.text_column, image_size=args.image_size, max_length=args.max_length,
            )
        if compute_metrics is None:
            compute_metrics = build_compute_metrics(args.metrics, average=args.metric_average)
        eval_placeholder = self.cv_dataset if args.eval_strategy != "no" else None
        super().__init__(model=None, args=args, data_collator=data_collator, train_dataset=self.cv_dataset,
                         eval_dataset=eval_placeholder, processing_class=processing_class,
                         model_init=self._fresh_model, compute_metrics=compute_metrics, callbacks=callbacks,
                         **kwargs)
        self.model_fingerprint = state_fingerprint(self.model)
        self.cv_results: CVResults | None = None
        if args.push_to_hub:
            # Each fold goes to the Hub as it finishes, then the summary and card (hf_tlcv.hub); the Trainer's own
            # per-checkpoint pushes are switched off (init_hf_repo / _push_from_checkpoint below).
            self.add_callback(HubPushCallback(task=self._task(), dataset_name=self._dataset_name()))
        self._check_parallel_folds()

    # ---- model per fold ----------------------------------------------------------------------------------
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
            raise ValueError(f"A peft_config was given but finetune_strategy={args.finetune_strategy!r}; set "
                             "finetune_strategy='lora' to train adapters, or drop peft_config.")

    def _fresh_model(self):
        """The model for one fold: a copy of the pretrained template (or a new `model_init` model), with the
        fine-tuning strategy applied. The Trainer seeds with `args.seed` before calling this."""
        if self._user_model_init is not None:
            model = self._user_model_init()
        else:
            model = copy.deepcopy(self._template)
        model = apply_strategy(model, self.args, self.peft_config)
        cache = getattr(self, "_cache_in_use", None)
        return cache.install(model) if cache is not None else model

    # ---- frozen-feature cache ----------------------------------------------------------------------------
    def _feature_cache(self) -> FeatureCache | None:
        """The frozen-feature cache of this run, built at its first fold (`None` when it cannot be exact; the log
        says why, once). See `hf_tlcv.cache`."""
        if hasattr(self, "_cache_built"):
            return self._cache_built
        self._cache_built = None
        args = self.args
        # Only the strategies with a frozen part need a strategy-applied copy to plan on (and to build from).
        cacheable = (args.feature_cache != "off" and args.finetune_strategy in ("freeze", "linear_probe")
                     and self._user_model_init is None)
        model = apply_strategy(copy.deepcopy(self._template), args, self.peft_config) if cacheable else None
        plan, reason = plan_feature_cache(
            model if model is not None else self._template, args, dataset=self.cv_dataset,
            data_collator=self.data_collator, user_model_init=self._user_model_init is not None)
        if plan is not None:
            with args.main_process_first(desc="frozen-feature cache"):
                self._cache_built, reason = FeatureCache.build(
                    model, plan, self.cv_dataset, model_fingerprint=self.model_fingerprint,
                    collator=self.data_collator, batch_size=args.per_device_eval_batch_size,
                    mode=args.feature_cache)
        if self._cache_built is not None:
            logger.info(self._cache_built.describe())
        elif reason and args.feature_cache != "off":
            log = logger.info if args.finetune_strategy in ("full", "lora") else logger.warning
            log(f"Frozen-feature cache off: {reason}.")
        self.feature_cache_reason = reason
        return self._cache_built

    def _freeze_long_lived_objects(self) -> None:
        """Keep the per-fold garbage collections cheap.

        Every fold ends with full garbage collections (`_release_model`, `accelerator.free_memory`) that walk every
        object of the process: about 0.5 M after importing torch and transformers, measured 0.2-0.8 s each, several
        per fold — seconds per fold that the naive loop does not pay. What is alive when the first fold starts
        (modules, the pretrained template, the datasets) lives as long as the run, so it is moved once to the
        permanent generation (`gc.freeze`); fold models are created later and are still collected. The objects are
        given back to the collector (`gc.unfreeze`) when this trainer is garbage-collected.
        """
        if getattr(self, "_gc_frozen", False):
            return
        gc.collect()
        gc.freeze()
        self._gc_frozen = True
        weakref.finalize(self, gc.unfreeze)

    @contextmanager
    def _training_on_cache(self, cache: FeatureCache | None) -> Iterator[None]:
        """Within the block, fold models read cached activations (`_fresh_model` bypasses their frozen part) and
        batches come from the cache's collator; on leaving it `self.model` is a normal model again."""
        if cache is None:
            yield
            return
        saved_collator = self.data_collator
        self._cache_in_use, self.data_collator = cache, cache.collate
        try:
            yield
        finally:
            self._cache_in_use, self.data_collator = None, saved_collator
            remove_bypass(self.model)

    def create_optimizer(self, model=None):
        if self.args.layerwise_lr_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = model if model is not None else self.model_wrapped if self.model_wrapped is not None else self.model
        base = opt_model.get_base_model() if hasattr(opt_model, "get_base_model") else opt_model
        layout = discover_layout(getattr(base, "module", base))
        decayed = set(self.get_decay_parameter_names(opt_model))
        no_decay = {n for n, _ in opt_model.named_parameters() if n not in decayed}
        groups = layerwise_lr_groups(opt_model, layout, self.args.learning_rate, self.args.layerwise_lr_decay,
                                     self.args.weight_decay, no_decay)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _release_model(self) -> None:
        """Drop every reference to the last fold's model and optimizer before the next fold builds its own."""
        self.model = self.model_wrapped = None
        self.optimizer = self.lr_scheduler = None
        handler = self.callback_handler
        handler.model = handler.optimizer = handler.lr_scheduler = None
        handler.train_dataloader = handler.eval_dataloader = None
        self.accelerator.free_memory()  # one gc.collect() and the device cache emptied (about 0.5 s on a big heap)

    # ---- folds -------------------------------------------------------------------------------------------
    def _broadcast(self, obj):
        """The main process's `obj` on every process (identity with one process)."""
        if self.accelerator.num_processes == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def _fold_metadata(self) -> dict:
        args = self.args
        return {
            "fold_strategy": self.fold_strategy,
            "n_folds": args.n_folds,
            "n_repeats": args.n_repeats,
            "fold_seed": args.fold_seed,
            "label_column": args.label_column,
            "group_column": args.group_column,
            "n_rows": len(self.raw_dataset),
            "data_fingerprint": self.raw_dataset._fingerprint,
            "model_fingerprint": self.model_fingerprint,
            "config": args.result_fingerprint_dict(),
        }

    def _prepare_output_dir(self) -> list[Fold]:
        """Compute (or, when resuming, reload) the folds on the main process and give them to every process."""
        out = Path(self.args.output_dir)
        payload: tuple[list[Fold] | None, str | None] = (None, None)
        if self.is_world_process_zero():
            try:
                payload = (self._main_process_folds(out), None)
            except ValueError as exc:
                payload = (None, str(exc))
        folds, error = self._broadcast(payload)
        if error is not None:
            raise ValueError(error)
        return folds

    def _main_process_folds(self, out: Path) -> list[Fold]:
        meta = self._fold_metadata()
        folds_path = out / FOLDS_FILE
        if self.args.overwrite_output_dir and out.exists():
            for item in [folds_path, out / RESULTS_FILE, out / OOF_FILE, out / PLOTS_DIR, *out.glob("fold_*")]:
                if item.is_dir():
                    shutil.rmtree(item)
                elif item.exists():
                    item.unlink()
        if folds_path.exists():
            folds, saved = load_folds(folds_path)
            changed = sorted(
                k for k in set(meta) | set(saved) if k not in ("config", "version") and saved.get(k) != meta.get(k)
            )
            changed += sorted(
                f"config.{k}" for k in set(meta["config"]) | set(saved.get("config", {}))
                if saved.get("config", {}).get(k) != meta["config"].get(k)
            )
            if changed:
                raise ValueError(
                    f"{out} holds a cross-validation run with different settings or data ({', '.join(changed)} "
                    f"changed), so it cannot be resumed. Use a new output_dir, or set overwrite_output_dir=True "
                    f"(--overwrite_output_dir) to delete those results and start fresh."
                )
            return folds
        folds = make_folds(self.raw_dataset, strategy=self.fold_strategy, n_folds=self.args.n_folds,
                           n_repeats=self.args.n_repeats, seed=self.args.fold_seed,
                           label_column=self.args.label_column, group_column=self.args.group_column)
        out.mkdir(parents=True, exist_ok=True)
        save_folds(folds, folds_path, meta)
        return folds

    # ---- the cross-validation ----------------------------------------------------------------------------
    def cross_validate(self) -> CVResults:
        """Train and evaluate one fresh model per fold; return (and save in `output_dir`) the [`CVResults`].

        Finished folds found in `output_dir` are reused, so calling this again after an interruption only runs
        what is missing.

        With several processes, every fold is trained by all of them together (DDP), or, with
        `parallel_folds=True`, each process trains whole folds on its own (see [`KFoldConfig`]); either way every
        process returns the same results, and the main process saves them.
        """
        folds = self._prepare_output_dir()
        self._release_model()  # the copy Trainer.__init__ built is not needed any more
        out = Path(self.args.output_dir)
        finished = self._broadcast([FoldResult.is_complete(out / f.name) for f in folds]
                                   if self.is_world_process_zero() else None)
        if self.args.parallel_folds and self.args.world_size > 1:
            steps = self._parallel_folds(folds, finished, out)
        else:
            steps = self._sequential_folds(folds, finished, out)
        results: list[FoldResult] = []
        bar = tqdm(total=len(folds), desc="Cross-validation folds", unit="fold", position=0, leave=True,
                   disable=self.args.disable_tqdm or not self.is_world_process_zero())
        for fold, result, resumed in steps:
            results.append(result)
            self._fold_event("on_fold_end", fold=fold, fold_dir=out / fold.name, result=result, resumed=resumed)
            bar.update(1)
            score = result.eval_metrics.get("accuracy", result.eval_metrics.get("loss"))
            if score is not None:
                bar.set_postfix({"last": f"{score:.4f}"})
        bar.close()
        cv = CVResults(results, oof_metrics=self._pooled_metrics(results), config=self._config_record(),
                       label_names=self.class_names, metadata=self._fold_metadata() | {"hf_tlcv_version": __version__})
        if self.is_world_process_zero():
            cv.save(out)
            self._save_plots(cv, out / PLOTS_DIR)
        self.cv_results = cv
        self._fold_event("on_cross_validation_end", results=cv, output_dir=out)
        return cv

    def _read_fold(self, fold_dir: Path) -> FoldResult:
        """A fold finished in an earlier run, read by the main process and sent to every process."""
        return self._broadcast(FoldResult.load(fold_dir) if self.is_world_process_zero() else None)

    def _sequential_folds(self, folds: list[Fold], finished: list[bool],
                          out: Path) -> Iterator[tuple[Fold, FoldResult, bool]]:
        """Train the folds one after the other, every process on every fold (one process, or DDP)."""
        for fold, done in zip(folds, finished):
            yield fold, self._read_fold(out / fold.name) if done else self._run_fold(fold, out / fold.name), done

    def _parallel_folds(self, folds: list[Fold], finished: list[bool],
                        out: Path) -> Iterator[tuple[Fold, FoldResult, bool]]:
        """`parallel_folds`: each process trains whole folds alone; every process gets every result, in fold order.

        The folds still to train are dealt round-robin (round `r` gives the `p`-th of its folds to process `p`).
        After each round the processes exchange the round's results and wait for each other, and the folds whose
        results are then known are reported in fold order: `on_fold_end` comes once per round, for all the folds of
        the round, on every process, after they are saved.
        """
        trained: dict[int, FoldResult] = {}
        rounds = deal_folds([i for i, done in enumerate(finished) if not done], self.args.world_size)
        if rounds:
            # What every fold shares (the frozen-feature cache) is built here, by all processes together, so that
            # main_process_first orders its disk writes; inside a fold's one-process view it could not.
            self._feature_cache()
        reported = 0
        for step in range(len(rounds) + 1):
            while reported < len(folds) and (finished[reported] or reported in trained):
                fold = folds[reported]
                result = self._read_fold(out / fold.name) if finished[reported] else trained.pop(reported)
                yield fold, result, finished[reported]
                reported += 1
            if step < len(rounds):
                trained.update(self._train_round(folds, rounds[step], out))

    def _train_round(self, folds: list[Fold], round_folds: list[int], out: Path) -> list[tuple[int, FoldResult]]:
        """Train this process's fold of the round alone, then exchange the round's results with every process.

        Each process saves the folds it trains in `output_dir`; the main process also saves those it does not
        find there (processes on other machines without a shared filesystem), so its `output_dir` always holds
        every finished fold. Fold models (`save_fold_models`) stay where the process that trained them saved them.
        """
        from accelerate.utils import gather_object

        rank = self.args.process_index
        index = round_folds[rank] if rank < len(round_folds) else None
        outcome, failure = (index, None, None), None
        if index is not None:
            fold = folds[index]
            try:
                with single_process_view(), self._progress_on_main_process_only(rank == 0):
                    outcome = (index, self._run_fold(fold, out / fold.name), None)
            except Exception as exc:  # noqa: BLE001 - reported to every process below, then raised
                outcome, failure = (index, None, f"{type(exc).__name__}: {exc}"), exc
            finally:
                # TrainerState was filled inside the one-process view; callbacks must see this process's real rank.
                self.state.is_world_process_zero = self.is_world_process_zero()
                self.state.is_local_process_zero = self.is_local_process_zero()
        # Every process joins the exchange, also one whose fold failed, so that no process waits forever; the
        # exchange itself starts once all are there, so that a long fold cannot make it time out.
        wait_for_processes(self.args.world_size)
        gathered = gather_object([outcome])
        errors = [(folds[i].name, message) for i, _, message in gathered if message is not None]
        if failure is not None:
            raise failure
        if errors:
            raise RuntimeError("Cross-validation stopped: " + "; ".join(f"fold {name} failed on another process "
                                                                     f"({message})" for name, message in errors))
        if self.is_world_process_zero():
            for i, result, _ in gathered:
                if i is not None and not FoldResult.is_complete(out / folds[i].name):
                    result.save(out / folds[i].name)
        self.accelerator.wait_for_everyone()
        return [(i, result) for i, result, _ in gathered if i is not None]

    @contextmanager
    def _progress_on_main_process_only(self, is_main: bool):
        """Keep the per-fold training bar of other processes off the console the main process draws on."""
        removed = None if is_main else self.callback_handler.pop_callback(ProgressCallback)
        try:
            yield
        finally:
            if removed is not None:
                self.callback_handler.add_callback(removed)

    def _check_parallel_folds(self) -> None:
        """`parallel_folds` needs one whole model per process: refuse launches that spread one over several."""
        if not self.args.parallel_folds or self.args.world_size == 1:
            return
        sharded = [name for name, on in (
            ("DeepSpeed", self.is_deepspeed_enabled),
            ("FSDP", self.is_fsdp_enabled),
            ("a model split over several devices", self.is_model_parallel),
            ("a model sharded at load time", getattr(self, "is_distributed_loading_by_transformers", False)),
            (f"distributed type {self.accelerator.distributed_type}",
             self.accelerator.distributed_type not in DATA_PARALLEL_TYPES),
        ) if on]
        if sharded:
            raise ValueError(
                f"parallel_folds=True trains each fold whole on one process, but this launch uses {sharded[0]}, "
                "which spreads one model over several processes or devices. Launch plain data-parallel processes "
                "(accelerate launch --multi_gpu, or torchrun), or drop --parallel_folds."
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
                handler(self.args, self.state, self.control, trainer=self, **kwargs)

    def _run_fold(self, fold: Fold, fold_dir: Path) -> FoldResult:
        args = self.args
        self._freeze_long_lived_objects()
        cache = self._feature_cache()
        rows = cache.dataset if cache is not None else self.cv_dataset
        train_ds = rows.select(fold.train_indices)
        eval_ds = rows.select(fold.eval_indices)
        saved = (self.train_dataset, self.eval_dataset, args.output_dir, args.run_name)
        base_name = args.run_name or Path(args.output_dir).name
        self.train_dataset, self.eval_dataset = train_ds, eval_ds
        # Each fold is its own run for trackers (report_to): own run name, own output/logging folder, and new
        # tracker callbacks so that a fold never appends to the previous fold's run.
        args.output_dir, args.run_name = str(fold_dir), f"{base_name}-{fold.name}"
        self._renew_tracker_callbacks()
        try:
            # A fold interrupted part-way is trained again from its start: resuming from its last checkpoint is not
            # bit-identical to an uninterrupted fold in transformers 5.24 (measured: probabilities off by 0.03),
            # and a resumed run must give the results of an uninterrupted one.
            if self.is_world_process_zero() and fold_dir.is_dir():
                shutil.rmtree(fold_dir)
            self.accelerator.wait_for_everyone()
            with self._training_on_cache(cache):
                self.train()
                log_history = list(self.state.log_history)
                prediction = self.predict(eval_ds, metric_key_prefix="eval")
                eval_metrics = _strip_metrics(prediction.metrics, "eval")
                train_metrics = {}
                if args.eval_on_train:
                    train_metrics = _strip_metrics(self.predict(train_ds, metric_key_prefix="train").metrics, "train")
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            probs = np.exp(_log_softmax(np.asarray(logits, dtype=np.float64)))
            labels = np.asarray(eval_ds["label"])
            result = FoldResult(
                repeat=fold.repeat, fold=fold.fold, n_train=len(train_ds), n_eval=len(eval_ds),
                eval_metrics=eval_metrics, train_metrics=train_metrics, log_history=log_history,
                predictions=predictions_frame(fold.eval_indices, fold.repeat, fold.fold, labels, probs),
            )
            # The fold model in the form push_fold_models asks for (adapter / trained part / full weights); also
            # when only a push needs it. Not Trainer.save_model: it writes training_args.bin, token included.
            if (args.save_fold_models or (args.push_to_hub and args.push_fold_models != "none")) and args.should_save:
                save_fold_model(self.model, fold_dir / FOLD_MODEL_DIR, push_fold_models=args.push_fold_models,
                                finetune_strategy=args.finetune_strategy, base_model=self._restorable_base(),
                                processing_class=self.processing_class)
            if self.is_world_process_zero():
                result.save(fold_dir)
            self.accelerator.wait_for_everyone()
        finally:
            self.train_dataset, self.eval_dataset, args.output_dir, args.run_name = saved
            self._release_model()
        return result

    @staticmethod
    def _save_plots(cv: CVResults, directory: Path) -> None:
        # The results are on disk already; a plotting problem must not turn a finished run into an error.
        try:
            save_plots(cv, directory)
        except Exception as exc:  # noqa: BLE001
            logger.warning(f"Could not draw the cross-validation plots into {directory}: {exc}")

    def _renew_tracker_callbacks(self) -> None:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        tracker_types = tuple(set(INTEGRATION_TO_CALLBACK.values()))
        for callback in list(self.callback_handler.callbacks):
            if isinstance(callback, tracker_types):
                self.callback_handler.remove_callback(callback)
                self.callback_handler.add_callback(type(callback))

    def _pooled_metrics(self, results: list[FoldResult]) -> dict[str, float]:
        """The metrics once over all out-of-fold predictions together (each repeat covers every row once)."""
        frames = [r.predictions for r in results if r.predictions is not None]
        if not frames or self.compute_metrics is None:
            return {}
        oof = np.concatenate([f.filter(like="prob_").to_numpy() for f in frames])
        labels = np.concatenate([f["label"].to_numpy() for f in frames])
        metrics = self.compute_metrics(EvalPrediction(predictions=np.log(np.clip(oof, 1e-300, None)),
                                                      label_ids=labels))
        return {k: float(v) if isinstance(v, (int, float, np.floating)) else v for k, v in metrics.items()}

    def _config_record(self) -> dict:
        record = self.args.to_dict()
        record["model_name_or_path"] = self.model_name_or_path
        record["resolved_fold_strategy"] = self.fold_strategy
        return record

    # ---- Hub ---------------------------------------------------------------------------------------------
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """No-op: hf_tlcv creates the repository at the first push (after the first fold), so a run never waits on
        or fails because of the network before training (see `hf_tlcv.hub`)."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """No-op: Trainer checkpoints inside a fold are never pushed; finished folds are (`HubPushCallback`)."""

    def _restorable_base(self) -> str | None:
        """The name the frozen part of a fold model can be reloaded from, or `None` (a built model, `model_init`,
        a from-scratch run): then fold models are saved with full weights."""
        return self.model_name_or_path if self._user_model_init is None else None

    def _task(self) -> str:
        return "image-classification" if "pixel_values" in self.cv_dataset.column_names else "text-classification"

    def _dataset_name(self) -> str | None:
        return getattr(self.raw_dataset.info, "dataset_name", None) or None

    def push_to_hub(self, commit_message: str | None = None, blocking: bool = True, token: str | None = None,
                    revision: str | None = None, private: bool | None = None, **kwargs):
        """Push the cross-validation run in `output_dir` to `args.hub_model_id` (default: the `output_dir` name).

        One commit adds the model card (`README.md`, also written into `output_dir`), `cv_results.json`,
        `folds.json`, `oof_predictions.parquet`, the plots and every fold folder with its model in the form
        `push_fold_models` gives. Files already on the Hub with the same content are skipped, so pushing again
        completes an interrupted push. With `KFoldConfig(push_to_hub=True)` this happens automatically: each fold is
        pushed as it finishes, the rest when cross-validation ends. Only the main process pushes.

        Args:
            commit_message: defaults to a summary of the scores.
            blocking: kept for `Trainer` compatibility; pushes are always blocking.
            token: write token; default `args.hub_token`, else `HF_TOKEN` or the login cache.
            revision: branch; default `args.hub_revision` (`main`).
            private: create the repository private; default `args.hub_private_repo`.
            kwargs: `hub_model_id`, `push_fold_models` (default `args.push_fold_models`), `dataset_name`,
                `study_report`, `license`, `language` (card content, see `hf_tlcv.hub.push_cv`).

        Returns:
            `huggingface_hub.CommitInfo` on the main process (`None` on the others).

        Raises:
            FileNotFoundError: no finished run in `output_dir` (call `cross_validate()` first).
            hf_tlcv.hub.HubPushError: the push failed; the message says why and how to retry.
        """
        if not self.is_world_process_zero():
            return None
        args = self.args
        kwargs.pop("model_name", None)  # Trainer.save_model passes Trainer-card arguments: not used by this card
        repo_id = kwargs.pop("hub_model_id", None) or hub_repo_id(args)
        return push_cv(args.output_dir, repo_id, token=token if token is not None else args.hub_token,
                       private=private if private is not None else args.hub_private_repo,
                       revision=revision if revision is not None else args.hub_revision,
                       push_fold_models=kwargs.pop("push_fold_models", args.push_fold_models),
                       commit_message=commit_message, task=self._task(),
                       dataset_name=kwargs.pop("dataset_name", self._dataset_name()),
                       results=self.cv_results, **kwargs)
