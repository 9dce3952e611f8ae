"""One fold of a cross-validation as a self-contained unit of work.

A [`FoldJob`] holds everything one fold needs — the settings, the fold's row indices, the rows, where the fresh
model comes from, and the user's callbacks, collator and metrics — and [`run_fold`] turns it into a [`FoldResult`]
with a fresh `transformers.Trainer` built from a copy of the settings. Nothing is read from the orchestrating
[`KFoldTrainer`] while the fold runs, so the same job gives the same result in the process that made it, in a
worker process ([`hf_tlcv.execution`]) or on another machine.

```python
>>> jobs = trainer.fold_jobs()                 # the folds still to train
>>> result = run_fold(jobs[0])                 # here, or: run_in_worker(jobs[0]) in a fresh process
>>> result.eval_metrics["accuracy"]

```
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from transformers import Trainer
from transformers.trainer_utils import set_seed
from transformers.utils import logging

from .compat import use_mean_loss
from .console import quiet_trainer
from .folds import Fold
from .run_dir import FOLD_MODEL_DIR
from .results import FoldResult, predictions_frame
from .strategies import apply_strategy, discover_layout, layerwise_lr_groups
from .utils import log_softmax, softmax, timed

if TYPE_CHECKING:
    import datasets
    from torch import nn

    from .cache import FeatureCache

logger = logging.get_logger(__name__)
_TIMING_KEYS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


class StrategyTrainer(Trainer):
    """A `Trainer` that trains the way a fine-tuning strategy asks.

    - With `layerwise_lr_decay`, the optimizer gets one parameter group per depth (see
      [`hf_tlcv.strategies.layerwise_lr_groups`]).
    - The loss is the model's per-example mean. `Trainer` would otherwise pass `num_items_in_batch` to any model whose
      `forward` takes `**kwargs` and multiply the loss by the number of processes, expecting the model to divide a
      summed loss by that count; classification heads ignore it, so every loss (and gradient) came out multiplied by
      the number of processes. DDP averages per-process means exactly, so nothing else is needed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.compute_loss_func is None:
            use_mean_loss(self)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """`Trainer.floating_point_ops`, with the model's parameter count taken once per model instead of at every
        step: counting walks every module (~5 ms on a 300-module CNN, more than a linear probe's whole step), and the
        count does not change while a fold trains."""
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        cached = getattr(self, "_parameter_count", None)
        if cached is None or cached[0] is not self.model:
            cached = self._parameter_count = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * inputs[main_input].numel() * cached[1]

    def create_optimizer(self, model=None):
        decay = getattr(self.args, "layerwise_lr_decay", None)
        if decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = model if model is not None else self.model_wrapped if self.model_wrapped is not None else self.model
        base = opt_model.get_base_model() if hasattr(opt_model, "get_base_model") else opt_model
        layout = discover_layout(getattr(base, "module", base))
        decayed = set(self.get_decay_parameter_names(opt_model))
        no_decay = {n for n, _ in opt_model.named_parameters() if n not in decayed}
        groups = layerwise_lr_groups(opt_model, layout, self.args.learning_rate, decay, self.args.weight_decay,
                                     no_decay)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


@dataclass
class ModelSource:
    """Where a fold's fresh model comes from: a copy of `template`, or a new `model_init()` model.

    Attributes:
        template: a built classifier (pretrained body and a head drawn once from the seed); every fold trains a copy.
        model_init: a callable returning a fresh classifier, called after seeding with the run's seed.
        name_or_path: the Hub id, folder or `builtin:` name `template` was loaded from, or `None` (a built model,
            `model_init`, a from-scratch model): where the frozen part of a saved fold model can be restored from.
        loaded_with: the settings `template` was loaded from `name_or_path` with (the head's seed, the text pooling):
            a trainer derived with other ones loads the model again (`KFoldTrainer.derive`).
    """

    template: "nn.Module | None" = None
    model_init: Callable | None = None
    name_or_path: str | None = None
    loaded_with: tuple | None = None

    def build(self, seed: int, share: tuple[str, ...] = ()) -> "nn.Module":
        """A fresh model: `model_init()` after seeding, or a copy of `template`.

        Args:
            seed: the run's seed, set first.
            share: submodules of `template` whose parameters and buffers the copy reads from the template's own memory
                instead of copying them: the frozen part a fold bypasses with the frozen-feature cache, which the
                fold never runs nor trains, so one copy serves every fold (a large backbone is then neither copied
                nor held twice per fold). Each shared tensor is a new `nn.Parameter` (or tensor) over the same
                storage, so that the strategy's `requires_grad` settings on the copy leave the template's alone.
        """
        set_seed(seed)  # as Trainer does before model_init: a randomly initialised init repeats itself
        if self.model_init is not None:
            return self.model_init()
        import torch

        memo: dict[int, Any] = {}
        for name in share:
            module = self.template.get_submodule(name)
            for tensor in itertools.chain(module.parameters(), module.buffers()):
                view = tensor.detach()
                memo[id(tensor)] = type(tensor)(view, requires_grad=tensor.requires_grad) \
                    if isinstance(tensor, torch.nn.Parameter) else view
        return copy.deepcopy(self.template, memo)

    @property
    def restorable_base(self) -> str | None:
        return self.name_or_path if self.model_init is None else None


@dataclass
class FoldJob:
    """Everything one fold needs, and nothing else.

    Attributes:
        settings: the run's [`KFoldConfig`] fields (as `dataclasses.replace` would copy them, token included);
            [`fold_config`] builds the fold's own config from them.
        fold: the fold's train and eval row indices.
        dataset: the rows the indices refer to: the preprocessed model inputs, or the frozen-feature cache's rows.
        model: where the fresh model comes from ([`ModelSource`]).
        output_dir: the run folder; the fold writes into `output_dir/<fold name>`.
        test_dataset: held-out rows (same columns as `dataset`) every fold model is scored on, or `None`.
        features: the frozen-feature cache the rows come from (the fold model then bypasses its frozen part).
        data_collator, compute_metrics, callbacks, peft_config, processing_class, compute_loss_func,
            preprocess_logits_for_metrics, optimizer_cls_and_kwargs: as given to [`KFoldTrainer`].
        save_fold_model: whether this process saves the fold's model (`model/` in the fold folder).
        run_name: the run's name; the fold's tracker runs are called `<run_name>-<fold name>`.
    """

    settings: dict[str, Any]
    fold: Fold
    dataset: "datasets.Dataset"
    model: ModelSource
    output_dir: str
    test_dataset: "datasets.Dataset | None" = None
    features: "FeatureCache | None" = None
    data_collator: Callable | None = None
    compute_metrics: Callable | None = None
    callbacks: list = field(default_factory=list)
    peft_config: Any = None
    processing_class: Any = None
    compute_loss_func: Callable | None = None
    preprocess_logits_for_metrics: Callable | None = None
    optimizer_cls_and_kwargs: tuple | None = None
    save_fold_model: bool = True
    run_name: str | None = None

    @property
    def fold_dir(self) -> Path:
        return Path(self.output_dir) / self.fold.name

    def fold_config(self):
        """The fold's own config: the run's settings with the fold's folder and tracker run name, no Hub push (the
        run pushes whole folds), and no pinned memory where there is no accelerator to pin it for."""
        import torch

        from .config import KFoldConfig

        base = self.run_name or Path(self.output_dir).name
        pin = self.settings.get("dataloader_pin_memory", True) and torch.accelerator.is_available()
        return KFoldConfig(**{**self.settings, "output_dir": str(self.fold_dir),
                              "run_name": f"{base}-{self.fold.name}", "push_to_hub": False,
                              "dataloader_pin_memory": pin})


def _logits(prediction) -> np.ndarray:
    return prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions


def _probabilities(prediction) -> np.ndarray:
    return softmax(_logits(prediction))


def _plain_cross_entropy(trainer: Trainer) -> bool:
    """Whether the model's loss is the plain cross-entropy of its logits (then it can be recomputed exactly)."""
    config = getattr(trainer.model, "config", None)
    return (trainer.compute_loss_func is None and not trainer.args.label_smoothing_factor
            and getattr(config, "problem_type", None) in (None, "single_label_classification"))


def _metrics(trainer: Trainer, prediction, prefix: str) -> dict[str, float]:
    """The metrics of one `Trainer.predict`, without timings; the loss recomputed from the predictions.

    Under several processes `Trainer` averages each process's mean loss over a shard that the sampler pads with
    repeated rows up to a whole batch, so its loss is off whenever the rows do not fill the processes' batches
    evenly (measured: 1.0889 against 1.0971 for 12 rows on 2 processes). The predictions themselves are gathered
    exactly, so the cross-entropy of the logits is the loss of exactly these rows, on any number of processes."""
    out = {}
    for key, value in prediction.metrics.items():
        name = key.removeprefix(f"{prefix}_")
        if name not in _TIMING_KEYS:
            out[name] = float(value) if isinstance(value, (int, float, np.floating)) else value
    if "loss" in out and prediction.label_ids is not None and _plain_cross_entropy(trainer):
        labels = np.asarray(prediction.label_ids, dtype=np.int64).reshape(-1)
        out["loss"] = float(-np.mean(log_softmax(_logits(prediction))[np.arange(len(labels)), labels]))
    return out


def run_fold(job: FoldJob) -> FoldResult:
    """Train and evaluate one fold with a fresh `Trainer`; return its [`FoldResult`].

    The fold's folder receives the Trainer's own outputs (checkpoints when `save_strategy` asks for them, tracker
    logs) and, with `save_fold_models`, the fold's model; the result itself is saved by whoever runs the job (see
    [`FoldResult.save`]), so that a job run elsewhere can hand it back.
    """
    from accelerate.utils import release_memory

    args = job.fold_config()
    fold = job.fold
    frozen = job.features.plan.bypass if job.features is not None else ()
    model = apply_strategy(job.model.build(args.seed, share=frozen), args, job.peft_config)
    collator, rows, test_rows = job.data_collator, job.dataset, job.test_dataset
    if job.features is not None:
        trained = [n for name in frozen for n, p in model.get_submodule(name).named_parameters() if p.requires_grad]
        if trained:  # the cache's plan was made on a model with this strategy: its bypassed part is frozen
            raise RuntimeError(f"The frozen-feature cache bypasses {frozen}, but the fold trains {trained[:3]}.")
        model, collator = job.features.install(model), job.features.collate
        rows, test_rows = job.features.as_tensors(rows), job.features.as_tensors(test_rows)
    train_rows = rows.select(fold.train_indices)
    eval_rows = rows.select(fold.eval_indices)
    trainer = StrategyTrainer(
        model=model, args=args, data_collator=collator, train_dataset=train_rows,
        optimizer_cls_and_kwargs=job.optimizer_cls_and_kwargs,
        eval_dataset=eval_rows if args.eval_strategy != "no" else None, processing_class=job.processing_class,
        compute_loss_func=job.compute_loss_func, compute_metrics=job.compute_metrics, callbacks=list(job.callbacks),
        preprocess_logits_for_metrics=job.preprocess_logits_for_metrics,
    )
    if not args.trainer_console_output:
        quiet_trainer(trainer)  # the console only: the logs still reach log_history and report_to
    del model  # the trainer holds it; released with the trainer below
    try:
        return _train_and_score(trainer, job, args, train_rows, eval_rows, test_rows)
    finally:
        # The fold's Trainer and model sit in reference cycles: free them before the next fold builds its own.
        del trainer
        release_memory()


def _labels(rows) -> np.ndarray | None:
    """The `label` column of a fold's rows (a `datasets.Dataset`, or cached rows as tensors), `None` without one."""
    if hasattr(rows, "labels"):
        return rows.labels
    return np.asarray(rows.with_format(None)["label"]) if "label" in rows.column_names else None


def _train_and_score(trainer: StrategyTrainer, job: FoldJob, args, train_rows, eval_rows, test_rows) -> FoldResult:
    from .cache import remove_bypass
    from .fold_models import save_fold_model

    fold = job.fold
    seconds: dict[str, float] = {}
    with timed(seconds, "train"):
        trainer.train()
    log_history = list(trainer.state.log_history)
    with timed(seconds, "eval"):
        prediction = trainer.predict(eval_rows, metric_key_prefix="eval")
    train_metrics, test_metrics, test_predictions = {}, {}, None
    if args.eval_on_train:
        with timed(seconds, "train_eval"):
            train_metrics = _metrics(trainer, trainer.predict(train_rows, metric_key_prefix="train"), "train")
    if test_rows is not None:
        with timed(seconds, "test"):
            test = trainer.predict(test_rows, metric_key_prefix="test")
        test_metrics = _metrics(trainer, test, "test")
        test_predictions = predictions_frame(np.arange(len(test_rows)), fold.repeat, fold.fold, _labels(test_rows),
                                             _probabilities(test))
    labels = _labels(eval_rows)
    result = FoldResult(
        repeat=fold.repeat, fold=fold.fold, n_train=len(train_rows), n_eval=len(eval_rows),
        eval_metrics=_metrics(trainer, prediction, "eval"), train_metrics=train_metrics, log_history=log_history,
        predictions=predictions_frame(fold.eval_indices, fold.repeat, fold.fold, labels, _probabilities(prediction)),
        test_metrics=test_metrics, test_predictions=test_predictions, seconds=seconds,
    )
    # The fold model in the form push_fold_models asks for (adapter / trained part / full weights). Not
    # Trainer.save_model: it writes training_args.bin, token included.
    if job.save_fold_model and args.should_save:
        save_fold_model(remove_bypass(trainer.model), job.fold_dir / FOLD_MODEL_DIR, push_fold_models=args.push_fold_models,
                        finetune_strategy=args.finetune_strategy, base_model=job.model.restorable_base,
                        processing_class=job.processing_class)
    return result


def fold_settings(args) -> dict[str, Any]:
    """The fields of a config as `dataclasses.replace` copies them (init fields, raw values, token included)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}


__all__ = ["FoldJob", "ModelSource", "StrategyTrainer", "fold_settings", "run_fold"]
