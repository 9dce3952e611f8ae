"""The frozen-feature cache: run the frozen bottom of the network once for the whole dataset, not once per fold
and epoch.

With `finetune_strategy="linear_probe"` the whole backbone is frozen, with `"freeze"` the embeddings and the
first `freeze_layers` blocks are. Frozen layers run in eval mode (`strategies.pin_eval`) without gradients, so
their output for a given row is the same in every fold and every epoch. [`FeatureCache.build`] computes it once
(batched, `torch.no_grad`, eval mode) and keeps it as an Arrow dataset, in memory or memory-mapped from disk,
keyed by the model, the cut and the data fingerprints. Folds then train on those activations through the
trainable top only.

The fold's model stays a complete, normal model: the frozen modules are *bypassed* by replacing the `forward` of
their instances (their parameters, names and structure are untouched) and the cached activations are fed in place
of the model input (`pixel_values`, or `inputs_embeds` for text). Every module above the cut — including
parameter-free ones the task head applies outside the head module, such as BERT's or EfficientNet's dropout —
runs in the same order as without the cache, so dropout draws the same random numbers and the results equal the
uncached path within floating-point tolerance. [`remove_bypass`] restores the model before it is saved.

Exactness is checked, not assumed: before a cache is used, the cached path must reproduce the full model's
logits on a batch of real rows; when it does not, or when exactness cannot hold (random on-the-fly transforms,
a custom `data_collator`, a user `model_init`, LoRA adapters inside the blocks, trainable layers below the cut),
[`plan_feature_cache`] says why and training takes the normal path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch import nn
from transformers import DataCollatorWithPadding, default_data_collator
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import logging

from .config import FEATURE_CACHE_MODES
from .run_dir import building, read_marker, write_marker
from .strategies import BATCH_NORMS, ModelLayout, discover_layout

logger = logging.get_logger(__name__)

# "auto" keeps a cache in memory up to this size (and a quarter of the available memory); larger caches, such as
# ViT token states (tokens x hidden per row), are written to disk and memory-mapped.
AUTO_MEMORY_LIMIT_BYTES = 2 * 1024**3
CACHE_DIR_ENV = "HF_TLCV_FEATURE_CACHE"
_LABEL_KEYS = ("labels", "label", "label_ids")
# Arguments through which a backbone passes its input to the embeddings, in the order they are looked for.
_INPUT_ARGS = ("inputs_embeds", "pixel_values", "hidden_states", "input_ids")
# How a linear probe reads the backbone output, tried in this order until the cached path matches the model.
_PROBE_FEATURES = ("pooler", "cls", "sequence")
_SELF_CHECK_ATOL = 1e-4
_SELF_CHECK_ROWS = 8
_DATA_FILE = "features.arrow"


def default_cache_root() -> Path:
    """Where disk caches live: `$HF_TLCV_FEATURE_CACHE`, else `hf_tlcv_features/` in the `datasets` cache."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path(datasets.config.HF_DATASETS_CACHE) / "hf_tlcv_features"


@dataclass(frozen=True)
class CachePlan:
    """Where the network is cut and how the cached activations re-enter it.

    Attributes:
        strategy: the fine-tuning strategy the plan was made for.
        bypass: modules whose `forward` is replaced while training on the cache (the frozen part, outermost
            modules only).
        capture: the module whose output is cached (the last frozen module to run).
        input_column: the model input that carries the cached activations (`pixel_values` or `inputs_embeds`).
        kind: `"probe"` (the whole backbone is replayed) or `"blocks"` (embeddings and bottom blocks pass through).
        text: the input is tokenised text (variable length, padded per batch with an attention mask).
    """

    strategy: str
    bypass: tuple[str, ...]
    capture: str
    input_column: str
    kind: str
    text: bool


class _StopForward(Exception):
    """Raised by the capture hook: the layers above the cut are not needed while building the cache."""


# ---- planning ----------------------------------------------------------------------------------------------
def plan_feature_cache(model: nn.Module, args, *, dataset: datasets.Dataset, data_collator: Callable | None,
                       user_model_init: bool, inference: bool = False) -> tuple[CachePlan | None, str]:
    """Decide whether the frozen part of `model` can be cached exactly, and where to cut.

    Args:
        model: a fold model with the strategy applied (`strategies.apply_strategy`), not yet trained.
        args: the [`KFoldConfig`] (`feature_cache`, `finetune_strategy`, `freeze_layers`).
        dataset: the preprocessed dataset folds are cut from.
        data_collator: the collator the Trainer uses.
        user_model_init: whether folds come from a user `model_init` (the cache is then off).
        inference: the cached part will only predict (a fold ensemble): whether its parameters would take gradients
            does not matter then.

    Returns:
        `(plan, "")` when a cache can be used, else `(None, reason)`: one sentence for the log.
    """
    mode = getattr(args, "feature_cache", "auto")
    strategy = args.finetune_strategy
    if mode == "off":
        return None, "feature_cache='off'"
    if strategy in ("full", "lora"):
        what = "nothing is frozen" if strategy == "full" else (
            "LoRA adapters sit inside every block, so only the embeddings are frozen and caching them saves little")
        return None, f"finetune_strategy={strategy!r}: {what}"
    if user_model_init:
        return None, ("folds come from a user model_init, whose frozen part may differ between calls; pass the "
                      "model itself to use the cache")
    if dataset.format.get("type") == "custom":
        return None, ("the dataset has an on-the-fly transform (set_transform / with_transform), which may be "
                      "random augmentation: its frozen features differ between epochs")
    if data_collator is not None and data_collator is not default_data_collator and not isinstance(
            data_collator, DataCollatorWithPadding):
        return None, (f"a custom data_collator ({type(data_collator).__name__}) may transform the inputs at every "
                      "step")
    try:
        layout = discover_layout(model)
    except ValueError as exc:
        return None, str(exc)
    text = model.main_input_name == "input_ids"
    input_column = "inputs_embeds" if text else model.main_input_name
    if text and "inputs_embeds" not in _forward_arguments(model):
        return None, f"{type(model).__name__}.forward takes no inputs_embeds to feed cached activations through"
    if strategy == "linear_probe":
        bypass, capture, kind = (layout.backbone,), layout.backbone, "probe"
    else:
        n_frozen = args.freeze_layers
        embeddings = _modules_before_stack(model, layout)
        if embeddings is None:
            return None, (f"the embeddings of {type(model).__name__} are not separate modules run before the "
                          "blocks")
        bypass = embeddings + layout.blocks[:n_frozen]
        capture, kind = bypass[-1], "blocks"
        covered = [m for m in layout.embeddings if not any(m == b or m.startswith(b + ".") for b in bypass)]
        if covered:
            return None, f"frozen modules {covered} run outside the part that can be bypassed"
    trainable_below = [] if inference else [
        name for name, param in model.named_parameters()
        if param.requires_grad and any(name.startswith(b + ".") for b in bypass)
    ]
    if trainable_below:
        return None, f"trainable layers below the cut ({trainable_below[0]}, ...)"
    training = [name for b in bypass for name, m in model.get_submodule(b).named_modules(prefix=b)
                if m.training and _depends_on_mode(type(m))]
    if training:
        return None, f"module {training[0]} below the cut runs in training mode (dropout or batch statistics)"
    return CachePlan(strategy, tuple(bypass), capture, input_column, kind, text), ""


_MODE_DEPENDENT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
                   *BATCH_NORMS)


@functools.lru_cache(maxsize=None)
def _depends_on_mode(cls: type) -> bool:
    """Whether modules of this class act differently in training mode (dropout, batch norm, drop path...).

    Frozen layers are pinned to eval mode by `strategies.pin_eval`, but parameter-free modules such as an
    activation may be left in training mode, where they act the same; only those that read `self.training`
    would make the frozen output random."""
    if issubclass(cls, _MODE_DEPENDENT):
        return True
    try:
        return "self.training" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return True


def _forward_arguments(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _modules_before_stack(model: nn.Module, layout: ModelLayout) -> tuple[str, ...] | None:
    """The backbone's children that run before the child holding the block stack (the embeddings' call sites).

    Registration order is execution order in transformers models (the premise of `discover_layout`).
    """
    backbone = model.get_submodule(layout.backbone)
    stack_child = layout.blocks[0][len(layout.backbone) + 1:].split(".")[0]
    before = []
    for name, module in backbone.named_children():
        if name == stack_child:
            break
        before.append(f"{layout.backbone}.{name}")
    return tuple(before) if before else None


# ---- bypassing the frozen part -----------------------------------------------------------------------------
def _pass_through(*args, **kwargs):
    """The forward of a bypassed embedding or block: hand the (cached) input on unchanged."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in _INPUT_ARGS:
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    raise RuntimeError("A bypassed frozen module received no tensor input; turn the cache off with "
                       "feature_cache='off' and report the model class to hf_tlcv.")


def _replay(feature: str) -> Callable:
    """The forward of a bypassed backbone: the cached activations, shaped as the output the head reads."""

    def forward(*args, **kwargs):
        cached = _pass_through(*args, **kwargs)
        if feature == "pooler":
            # The sequence slot is filled too, so that `outputs[1]` (BERT) still finds the pooled output.
            return BaseModelOutputWithPooling(last_hidden_state=cached, pooler_output=cached)
        return BaseModelOutputWithPooling(last_hidden_state=cached)

    return forward


def install_bypass(model: nn.Module, plan: CachePlan, feature: str | None) -> nn.Module:
    """Make `model` read cached activations: the frozen modules in `plan.bypass` hand their input on (or, for a
    linear probe, replay it as the backbone output). Parameters, buffers and names are untouched."""
    for name in plan.bypass:
        module = model.get_submodule(name)
        module.forward = _replay(feature) if plan.kind == "probe" else _pass_through
        module._hf_tlcv_bypassed = True
    return model


def remove_bypass(model: nn.Module | None) -> nn.Module | None:
    """Give every bypassed module its own `forward` back: `model` is a normal model again (to save or predict)."""
    if model is None:
        return None
    for module in model.modules():
        if module.__dict__.pop("_hf_tlcv_bypassed", False):
            module.__dict__.pop("forward", None)
    return model


@contextlib.contextmanager
def bypassed(model: nn.Module, plan: CachePlan, feature: str | None) -> Iterator[nn.Module]:
    install_bypass(model, plan, feature)
    try:
        yield model
    finally:
        remove_bypass(model)


@contextlib.contextmanager
def _capture(module: nn.Module, box: list, stop: bool = True) -> Iterator[None]:
    """Record `module`'s output in `box`; with `stop`, skip the rest of the forward pass (raise `_StopForward`)."""
    def hook(_module, _inputs, output):
        box.append(output)
        if stop:
            raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ---- the cache ---------------------------------------------------------------------------------------------
def _model_inputs(model: nn.Module, batch: dict) -> dict:
    accepted = _forward_arguments(model)
    return {k: v for k, v in batch.items() if k in accepted and k not in _LABEL_KEYS}


def _probe_feature(output: Any, feature: str) -> torch.Tensor | None:
    pooled = getattr(output, "pooler_output", None)
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and isinstance(output, (tuple, list)):
        hidden = output[0]
    if feature == "pooler":
        return pooled
    if hidden is None:
        return None
    if feature == "cls":
        return hidden[:, :1] if hidden.dim() == 3 else None
    return hidden


def _token_pooling(model: nn.Module, plan: CachePlan, feature: str | None) -> list[str] | None:
    """The modes of the [`TokenPooler`] whose output a text probe's cache holds, or `None` (any other cut or pooler).
    Read from the model the cache is built from, which is checked against the cached path on every build."""
    from .pooling import TokenPooler

    if plan.kind != "probe" or not plan.text or feature != "pooler":
        return None
    pooler = getattr(model.get_submodule(plan.capture), "pooler", None)
    return list(pooler.modes) if isinstance(pooler, TokenPooler) else None


def _dense(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """A column of equal-shape nested lists of numbers as one array, straight from Arrow (`None` if ragged or
    nullable). Formatting such rows one by one through `datasets`' torch formatter costs about as much as a
    small model's forward pass."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(array)]
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(
            array.type):
        if array.null_count:
            return None
        if pa.types.is_fixed_size_list(array.type):
            width = array.type.list_size
        else:
            lengths = array.value_lengths().to_numpy(zero_copy_only=False)
            if len(lengths) == 0 or lengths.min() != lengths.max():
                return None
            width = int(lengths[0])
        shape.append(width)
        array = array.flatten()
    if array.null_count or not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        return None
    return array.to_numpy(zero_copy_only=False).reshape(shape)


def _batch(dataset: datasets.Dataset, start: int, stop: int, collator: Callable) -> dict:
    """Rows `start:stop` batched as the Trainer's collator would batch them. With the default collator, equal-shape
    columns are read as whole arrays from Arrow (the same numbers, without per-row conversion)."""
    if collator is default_data_collator:
        table = dataset.with_format("arrow")[start:stop]
        dense = {name: _dense(table.column(name)) for name in table.column_names if name != "label"}
        if all(v is not None for v in dense.values()):
            return {k: torch.from_numpy(np.array(v)) for k, v in dense.items()}
    return collator([dataset[i] for i in range(start, stop)])


def _row_lengths(batch: dict) -> list[int] | None:
    mask = batch.get("attention_mask")
    return None if mask is None else [int(m.sum()) for m in mask]


def _to_rows(features: torch.Tensor, lengths: list[int] | None) -> list[np.ndarray]:
    array = features.detach().to("cpu", torch.float32).numpy()
    if lengths is None:
        return list(array)
    # Text: each row keeps its own tokens; the padding of this batch is not part of the row.
    return [row[:n] for row, n in zip(array, lengths)]


def _arrow_feature(shape: tuple[int, ...], text: bool) -> datasets.features.features.FeatureType:
    if text and len(shape) == 2:
        return datasets.Array2D(shape=(None, shape[1]), dtype="float32")
    arrays = {1: None, 2: datasets.Array2D, 3: datasets.Array3D, 4: datasets.Array4D, 5: datasets.Array5D}
    if len(shape) == 1:
        return datasets.Sequence(datasets.Value("float32"), length=shape[0])
    return arrays[len(shape)](shape=tuple(shape), dtype="float32")


class FeatureCache:
    r"""The frozen part's output for every row of the dataset, and how to train on it.

    Build it with [`FeatureCache.build`]; then folds select rows of [`FeatureCache.dataset`], batch them with
    [`FeatureCache.collate`] and train a model prepared with [`install_bypass`].

    Attributes:
        plan: the [`CachePlan`] (cut and input column).
        feature: for a linear probe, which backbone output the head reads (`"pooler"`, `"cls"` or `"sequence"`).
        pooling: for a text linear probe whose head reads a [`hf_tlcv.pooling.TokenPooler`] (`feature == "pooler"`),
            its modes, e.g. `["mean"]`: the cache then holds the pooled sentence embedding of every row; else `None`
            (BERT's own `[CLS]` pooler is a trained projection, not a sentence embedding).
        dataset: the cached activations in `plan.input_column`, plus `label` (and `attention_mask` for text).
        nbytes: size of the cached activations.
        location: `"memory"`, or the folder of the on-disk Arrow cache.
        key: the fingerprint of model, cut and data that names the cache.
        reused: whether an on-disk cache from an earlier run was reused.

    Example:
    ```python
    >>> plan, reason = plan_feature_cache(model, args, dataset=ds, data_collator=None, user_model_init=False)
    >>> cache, reason = FeatureCache.build(model, plan, ds, model_fingerprint=state_fingerprint(model))
    >>> fold_rows = cache.dataset.select(train_indices)

    ```
    """

    def __init__(self, plan: CachePlan, feature: str | None, dataset: datasets.Dataset, nbytes: int,
                 location: str, key: str, reused: bool = False, pooling: list[str] | None = None):
        self.plan, self.feature, self.dataset = plan, feature, dataset
        self.nbytes, self.location, self.key, self.reused = nbytes, location, key, reused
        self.pooling = pooling

    def describe(self) -> str:
        where = "in memory" if self.location == "memory" else f"on disk at {self.location}"
        state = "reused" if self.reused else "computed once"
        cut = "the backbone" if self.plan.kind == "probe" else f"{self.plan.capture}"
        return (f"frozen-feature cache {state}: output of {cut} for {len(self.dataset)} rows, "
                f"{self.nbytes / 2**20:.1f} MiB {where}")

    # -- building --
    @classmethod
    def build(cls, model: nn.Module, plan: CachePlan, dataset: datasets.Dataset, *, model_fingerprint: str,
              collator: Callable | None = None, batch_size: int = 64, mode: str = "auto",
              cache_root: str | os.PathLike | None = None, progress: bool = False) -> tuple[FeatureCache | None, str]:
        """Run the frozen part of `model` once over `dataset` and keep its output.

        Args:
            model: a fold model with the strategy applied (its frozen part is what is cached; it is not changed).
            plan: from [`plan_feature_cache`].
            dataset: the preprocessed rows, in fold-index order.
            model_fingerprint: `modeling.state_fingerprint` of the pretrained model (part of the cache key).
            collator: the collator of the uncached path (`None` for the Trainer default).
            batch_size: rows per forward pass.
            mode: `"auto"`, `"memory"` or `"disk"`.
            cache_root: folder of disk caches (default: [`default_cache_root`]).
            progress: show a progress bar over the rows.

        Returns:
            `(cache, "")`, or `(None, reason)` when the cached path does not reproduce the model's outputs.
        """
        collator = collator or default_data_collator
        with _eval_mode(model):
            # A few real rows are enough to tell whether the cached path reproduces the model.
            first = _batch(dataset, 0, min(_SELF_CHECK_ROWS, len(dataset)), collator)
            feature = cls._check_exact(model, plan, first)
        if feature is False:
            return None, (f"the cached path does not reproduce the outputs of {type(model).__name__} "
                          f"(cut at {plan.capture}), so it cannot stand in for it exactly")
        cache = cls(plan, feature, dataset, 0, "memory", "", pooling=_token_pooling(model, plan, feature))
        rows, nbytes, location, key, reused = cache._encode(model, dataset, model_fingerprint, collator, batch_size,
                                                            mode, cache_root, progress)
        cache.dataset, cache.nbytes, cache.location, cache.key, cache.reused = rows, nbytes, location, key, reused
        return cache, ""

    def encode(self, model: nn.Module, dataset: datasets.Dataset, *, model_fingerprint: str,
               collator: Callable | None = None, batch_size: int = 64, mode: str = "auto",
               cache_root: str | os.PathLike | None = None, progress: bool = False) -> datasets.Dataset:
        """The frozen part's output for other rows (a held-out test set), in the cache's columns, so that fold
        models can score them through the same bypass."""
        return self._encode(model, dataset, model_fingerprint, collator or default_data_collator, batch_size, mode,
                            cache_root, progress)[0]

    def _encode(self, model, dataset, model_fingerprint, collator, batch_size, mode, cache_root, progress):
        """`(rows, nbytes, location, key, reused)`: computed in memory, or streamed to / reused from disk."""
        from datasets.fingerprint import Hasher

        plan, feature = self.plan, self.feature
        data_fingerprint = Hasher.hash(dataset)
        key = cache_key(plan, model_fingerprint, data_fingerprint)
        folder = (Path(cache_root) if cache_root is not None else default_cache_root()) / key
        meta = read_marker(folder) if mode != "memory" else None
        if meta is not None:
            if progress:  # said only when true: the frozen layers do not run here
                logger.warning(f"Frozen-feature cache: reusing the frozen layers' output for {len(dataset)} rows, "
                               f"computed by an earlier run ({folder}); the folds read it instead of running them.")
            return datasets.Dataset.from_file(str(folder / _DATA_FILE)).with_format("torch"), meta["bytes"], \
                str(folder), key, True
        if progress:
            logger.warning(f"Frozen-feature cache: running the frozen layers of the model once over {len(dataset)} "
                           "rows; the folds then read their output instead of running them.")
        with _eval_mode(model):
            batches = _compute(model, plan, feature, dataset, collator, batch_size, progress)
            columns, features, row_bytes = next(batches)
            nbytes = row_bytes * len(dataset)  # rows of a batch have the size of the first batch's rows
            if mode == "auto":
                mode = "memory" if nbytes <= _memory_budget() else "disk"
            if mode == "disk":
                # Streamed batch by batch to a memory-mapped Arrow file: a cache larger than memory never has
                # to fit in it.
                meta = {"plan": asdict(plan), "feature": feature, "bytes": nbytes, "rows": len(dataset),
                        "model_fingerprint": model_fingerprint, "data_fingerprint": data_fingerprint}
                _write_atomic(folder, features, itertools.chain([columns], (c for c, _, _ in batches)), meta)
                return datasets.Dataset.from_file(str(folder / _DATA_FILE)).with_format("torch"), nbytes, \
                    str(folder), key, False
            for more, _, _ in batches:
                for name, values in more.items():
                    columns[name].extend(values)
        nbytes = sum(row.nbytes for row in columns[plan.input_column])
        rows = datasets.Dataset.from_dict(columns, features=features).with_format("torch")
        return rows, nbytes, "memory", key, False

    @staticmethod
    def _check_exact(model: nn.Module, plan: CachePlan, batch: dict) -> str | None | bool:
        """The probe feature whose cached path matches the model's logits on `batch` (`None` for blocks), or
        `False` when no cached path does."""
        inputs = _model_inputs(model, batch)
        with torch.no_grad():
            box: list = []
            with _capture(model.get_submodule(plan.capture), box, stop=False):
                expected = model(**inputs).logits
            captured = box[0]
            for feature in (_PROBE_FEATURES if plan.kind == "probe" else (None,)):
                cached = captured if feature is None else _probe_feature(captured, feature)
                if not isinstance(cached, torch.Tensor):
                    continue
                replayed = {k: v for k, v in inputs.items() if k == "attention_mask" or k not in _INPUT_ARGS}
                replayed[plan.input_column] = cached
                with bypassed(model, plan, feature):
                    try:
                        got = model(**replayed).logits
                    except Exception:  # noqa: BLE001 - a cut this model's forward cannot take means "not exact"
                        continue
                if got.shape == expected.shape and torch.allclose(got, expected, atol=_SELF_CHECK_ATOL, rtol=1e-4):
                    return feature
        return False

    # -- training on it --
    def as_tensors(self, rows: datasets.Dataset | None) -> "CachedRows | datasets.Dataset | None":
        """`rows` (the cache's own rows, or rows [`encode`] made for a test set) as plain tensors, read out of Arrow
        once, when the cache is in memory; a disk cache keeps its memory-mapped Arrow rows.

        Served through `datasets`' formatting, every batch of cached rows costs more than the head's whole training
        step (measured: 8.7 s of a 17 s linear-probe fold loop); as tensors, a batch is an index into one array."""
        if rows is None or self.location != "memory":
            return rows
        memo = self.__dict__.setdefault("_tensor_rows", {})
        if id(rows) not in memo:
            memo[id(rows)] = (rows, CachedRows.from_dataset(rows, self.plan.input_column))  # rows kept: id stays
        return memo[id(rows)][1]

    def __getstate__(self) -> dict:
        # The tensor view is rebuilt where the cache is used (a worker process), not shipped beside its Arrow rows.
        return {k: v for k, v in self.__dict__.items() if k != "_tensor_rows"}

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Batch cached rows: stack the activations (text: pad them to the longest row with a zero attention
        mask, as the uncached collator pads tokens) and name the labels (when there are any) `labels`, as the
        Trainer's collators do."""
        column = self.plan.input_column
        tensors = [torch.as_tensor(r[column]) for r in rows]
        batch: dict[str, torch.Tensor] = {}
        if "attention_mask" in rows[0]:
            width = max(t.shape[0] for t in tensors)
            padded = torch.zeros((len(tensors), width, *tensors[0].shape[1:]), dtype=tensors[0].dtype)
            mask = torch.zeros((len(tensors), width), dtype=torch.long)
            for i, t in enumerate(tensors):
                padded[i, : t.shape[0]] = t
                mask[i, : t.shape[0]] = 1
            batch[column], batch["attention_mask"] = padded, mask
        else:
            batch[column] = torch.stack(tensors)
        if "label" in rows[0]:
            batch["labels"] = torch.as_tensor([int(r["label"]) for r in rows])
        return batch

    def install(self, model: nn.Module) -> nn.Module:
        return install_bypass(model, self.plan, self.feature)


class CachedRows(torch.utils.data.Dataset):
    """Cached rows as plain tensors: a map-style dataset whose rows are the dicts [`FeatureCache.collate`] batches
    (`{input column: activations, "label": class id}`, plus `attention_mask` for text), read from tensors built once.

    Folds select from it with [`select`], as from a `datasets.Dataset`; the values are those of the Arrow rows, so
    the fold trains on the same numbers either way.

    Args:
        inputs: one `(n, ...)` tensor of equal-shape rows, or one tensor per row (text: each row keeps its own
            tokens).
        labels: `(n,)` class ids (`None`: rows to predict).
        column: the model input the activations feed (`pixel_values`, `inputs_embeds`).
        indices: the rows of this view (default: all).
    """

    def __init__(self, inputs: torch.Tensor | list[torch.Tensor], labels: torch.Tensor | None, column: str,
                 indices: np.ndarray | None = None):
        self.inputs, self.labels_all, self.column = inputs, labels, column
        self.indices = np.arange(len(inputs)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.text = isinstance(inputs, list)

    @classmethod
    def from_dataset(cls, dataset: datasets.Dataset, column: str) -> "CachedRows":
        table = dataset.with_format("arrow")[:]
        labels = torch.from_numpy(np.array(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)) \
            if "label" in table.column_names else None
        dense = _dense(table.column(column)) if "attention_mask" not in table.column_names else None
        if dense is not None:
            inputs = torch.from_numpy(np.array(dense, dtype=np.float32))
        else:
            inputs = [torch.as_tensor(np.asarray(r, dtype=np.float32))
                      for r in dataset.with_format("numpy")[column]]
        return cls(inputs, labels, column)

    def __len__(self) -> int:
        return len(self.indices)

    def _row(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.indices[i])
        row = {self.column: self.inputs[j]}
        if self.labels_all is not None:
            row["label"] = self.labels_all[j]
        if self.text:
            row["attention_mask"] = torch.ones(self.inputs[j].shape[0], dtype=torch.long)
        return row

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._row(i)

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        return [self._row(i) for i in indices]

    def select(self, indices) -> "CachedRows":
        """The rows at `indices` of this view (as `datasets.Dataset.select`)."""
        return CachedRows(self.inputs, self.labels_all, self.column, self.indices[np.asarray(indices, dtype=np.int64)])

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.labels_all is None else self.labels_all[torch.from_numpy(self.indices)].numpy()


def _compute(model, plan, feature, dataset, collator, batch_size, progress=False) -> Iterator[tuple[dict, Any, int]]:
    """The cached columns batch by batch: `(columns, arrow features, bytes per row)`."""
    module = model.get_submodule(plan.capture)
    label_feature = dataset.features.get("label", datasets.Value("int64"))
    # Rows to predict (a fold ensemble's inputs) may have no label.
    labels = np.asarray(list(dataset.with_format(None)["label"])) if "label" in dataset.column_names else None
    from tqdm.auto import tqdm

    # leave=False: the bar gives its line to the fold bar that follows, so a run shows one progress display.
    bar = tqdm(total=len(dataset), desc="Frozen-feature cache (frozen layers, once for all folds)", unit="row",
               disable=not progress, leave=False)
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        batch = _batch(dataset, start, stop, collator)
        box: list = []
        with torch.no_grad(), contextlib.suppress(_StopForward), _capture(module, box):
            model(**_model_inputs(model, batch))
        out = box[0] if feature is None else _probe_feature(box[0], feature)
        lengths = _row_lengths(batch) if plan.text and plan.kind == "blocks" else None
        rows = _to_rows(out, lengths)
        columns: dict[str, list] = {plan.input_column: rows}
        features = {plan.input_column: _arrow_feature(rows[0].shape, lengths is not None)}
        if labels is not None:
            columns["label"], features["label"] = labels[start:stop].tolist(), label_feature
        if lengths is not None:
            columns["attention_mask"] = [np.ones(n, dtype=np.int64) for n in lengths]
            features["attention_mask"] = datasets.Sequence(datasets.Value("int64"))
        bar.update(stop - start)
        yield columns, datasets.Features(features), sum(r.nbytes for r in rows) // len(rows)
    bar.close()


def cache_key(plan: CachePlan, model_fingerprint: str, data_fingerprint: str) -> str:
    """The name of a cache: model weights, cut and data, plus the versions whose numerics could differ."""
    payload = json.dumps({"plan": asdict(plan), "model": model_fingerprint, "data": data_fingerprint,
                          "torch": torch.__version__, "format": 1}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _memory_budget() -> int:
    try:
        import psutil

        return min(AUTO_MEMORY_LIMIT_BYTES, psutil.virtual_memory().available // 4)
    except ImportError:  # pragma: no cover - psutil ships with accelerate
        return AUTO_MEMORY_LIMIT_BYTES


def _write_atomic(folder: Path, features: datasets.Features, batches: Iterator[dict], meta: dict) -> None:
    """Stream the cache into a folder that appears complete or not at all (`hf_tlcv.run_dir.building`): a run killed
    half-way leaves no cache that looks finished, and of two processes writing the same cache, one copy wins.

    Each batch becomes an Arrow record batch of a `datasets.Dataset.from_dict` with the cache's features, written to
    an Arrow stream file that `datasets.Dataset.from_file` memory-maps."""
    with building(folder) as tmp:
        writer = None
        try:
            for columns in batches:
                table = datasets.Dataset.from_dict(columns, features=features).data.table
                if writer is None:
                    writer = pa.ipc.new_stream(str(tmp / _DATA_FILE), table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        write_marker(tmp, meta)  # last: its presence marks a complete cache


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


__all__ = ["FEATURE_CACHE_MODES", "CachePlan", "CachedRows", "FeatureCache", "bypassed", "cache_key",
           "default_cache_root", "install_bypass", "plan_feature_cache", "remove_bypass"]
