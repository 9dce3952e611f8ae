"""Loading a pretrained classifier and its processor from a Hub id, a local folder or a `builtin:` name."""

from __future__ import annotations

import hashlib

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from .assets import hub_errors, resolve_model_path


def _is_image_model(config) -> bool:
    return config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES


def load_config(name_or_path: str):
    path = resolve_model_path(name_or_path)
    with hub_errors("model", name_or_path):
        return path, AutoConfig.from_pretrained(path)


def load_classifier(name_or_path: str, label_names: list[str] | None, num_labels: int,
                    pretrained: bool = True) -> nn.Module:
    """A pretrained backbone with a new classification head of `num_labels` outputs.

    The head is initialised by the current torch seed (the caller seeds it), so every fold can start from the
    same head. Image models load through `AutoModelForImageClassification`, the others through
    `AutoModelForSequenceClassification`. With `pretrained=False` the same architecture is built from its
    config with random weights: the "from scratch" baseline that tells whether pretraining helps.
    """
    path, config = load_config(name_or_path)
    names = label_names or [str(i) for i in range(num_labels)]
    labels = dict(num_labels=num_labels, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    auto = AutoModelForImageClassification if _is_image_model(config) else AutoModelForSequenceClassification
    if not pretrained:
        for key, value in labels.items():
            setattr(config, key, value)
        return auto.from_config(config)
    with hub_errors("model", name_or_path):
        return auto.from_pretrained(path, ignore_mismatched_sizes=True, **labels)


def load_processor(name_or_path: str):
    """The image processor of an image model, or the tokenizer of a text model."""
    path, config = load_config(name_or_path)
    with hub_errors("processor", name_or_path):
        if _is_image_model(config):
            return AutoImageProcessor.from_pretrained(path)
        return AutoTokenizer.from_pretrained(path)


def state_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers: equal fingerprints mean identical starting weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
