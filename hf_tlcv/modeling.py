"""Loading a pretrained classifier and its processor from a Hub id, a local folder or a source name (`builtin:`)."""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn
from transformers import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.utils import logging

from .compat import held_load_report
from .sources import hub_errors, hub_is_reachable, resolve_model_path

logger = logging.get_logger(__name__)


def is_image_model(config) -> bool:
    """Whether transformers' image-classification auto class has a model for this config."""
    return type(config) in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING


def _hub_kwargs(path: str) -> dict:
    # A Hub id while the Hub is unreachable: use the local cache only (at once, instead of ~30 s of retries); a model
    # that is not cached then fails fast with hub_errors' message.
    return {"local_files_only": True} if not os.path.isdir(path) and not hub_is_reachable() else {}


def load_config(name_or_path: str):
    path = resolve_model_path(name_or_path)
    with hub_errors("model", name_or_path):
        return path, AutoConfig.from_pretrained(path, **_hub_kwargs(path))


def _head_keys(model: nn.Module) -> tuple[str, ...]:
    from .strategies import discover_layout

    try:
        return tuple(f"{name}." for name in discover_layout(model).head)
    except ValueError:
        return ()


def _is_local_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0") or 0) == 0


def load_classifier(name_or_path: str, label_names: list[str] | None, num_labels: int,
                    pretrained: bool = True, text_pooling: str = "auto", new_head: bool = True) -> nn.Module:
    """A pretrained backbone with a new classification head of `num_labels` outputs.

    The head is initialised by the current torch seed (the caller seeds it), so every fold can start from the
    same head. Image models load through `AutoModelForImageClassification`, the others through
    `AutoModelForSequenceClassification`. With `pretrained=False` the same architecture is built from its
    config with random weights: the "from scratch" baseline that tells whether pretraining helps.

    A text model is read the way it was trained to be read (`text_pooling`, see [`hf_tlcv.pooling`]): with
    `"auto"`, a sentence encoder whose folder declares a pooling (all-MiniLM-L6-v2: mean over tokens) gets a head on
    that pooled embedding instead of BERT's `[CLS]` pooler, and a model hf_tlcv saved comes back as it was saved.

    Replacing the checkpoint's head is the point, so transformers' report of it is replaced by one line; any other
    loading problem (missing or unexpected backbone weights) is shown in full. `new_head=False` says the caller
    loads trained head weights over it at once (a fold model of an ensemble): nothing new is kept, so the line is not
    said.
    """
    from .pooling import apply_pooling, resolve_pooling

    path, config = load_config(name_or_path)
    names = label_names or [str(i) for i in range(num_labels)]
    config.num_labels = num_labels  # set on the config first: no "num_labels vs id2label" warning
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    image = is_image_model(config)
    auto = AutoModelForImageClassification if image else AutoModelForSequenceClassification
    pooling = None if image else resolve_pooling(text_pooling, path, config, _hub_kwargs(path))
    if not pretrained:
        model = auto.from_config(config)
        if pooling:
            apply_pooling(model, pooling)
        return model
    with hub_errors("model", name_or_path), held_load_report() as hold:
        model, info = auto.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                           output_loading_info=True, **_hub_kwargs(path))
    head = _head_keys(model)
    pooled = bool(pooling) and apply_pooling(model, pooling)
    # A model saved with a pooling has no pooler weights: transformers reports them missing, and they are not used.
    expected = head + ((f"{model.base_model_prefix}.pooler.",) if pooled else ())
    replaced = [k for k in [*info.get("missing_keys", ()), *(m[0] if isinstance(m, tuple) else m
                                                             for m in info.get("mismatched_keys", ()))]]
    only_head = bool(head) and all(k.startswith(expected) for k in replaced) and not info.get("unexpected_keys")
    if only_head:
        replaced_head = [k for k in replaced if k.startswith(head)]
        if replaced_head and new_head and _is_local_main_process():
            logger.warning(f"hf_tlcv: {name_or_path} gets a new classification head for {num_labels} classes "
                           f"({', '.join(sorted({k.split('.')[0] for k in replaced_head}))} replaced on purpose; the "
                           "backbone loads with its pretrained weights"
                           + (f"; the head reads its {'+'.join(pooling)}-pooled tokens)." if pooled else ")."))
    else:
        hold.release()
    return model


def load_processor(name_or_path: str):
    """The image processor of an image model, or the tokenizer of a text model."""
    path, config = load_config(name_or_path)
    with hub_errors("processor", name_or_path):
        if is_image_model(config):
            return AutoImageProcessor.from_pretrained(path, **_hub_kwargs(path))
        return AutoTokenizer.from_pretrained(path, **_hub_kwargs(path))


def state_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers: equal fingerprints mean identical starting weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
