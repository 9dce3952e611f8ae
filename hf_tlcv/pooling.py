"""Reading a text encoder the way it was trained to be read: the pooling of its token states.

A sentence encoder such as all-MiniLM-L6-v2 is trained (by sentence-transformers) to be read by mean pooling over its
tokens; the folder says so in its pooling module's config (`1_Pooling/config.json`: `pooling_mode_mean_tokens: true`).
`AutoModelForSequenceClassification` ignores that folder and puts the head on BERT's `[CLS]` pooler, a dense layer the
sentence training never shaped: on 600 movie snippets a logistic regression on the pooler output scores 0.63, on the
mean-pooled tokens 0.75.

[`apply_pooling`] swaps the backbone's pooler for a [`TokenPooler`] that pools the token states the declared way,
counting only the tokens the attention mask keeps, and records the pooling in the model's config
(`config.hf_tlcv_pooling`), so that a saved model comes back the same way through
[`hf_tlcv.modeling.load_classifier`]. The model stays a transformers model of its own class: the head, the
strategies, LoRA, the frozen-feature cache and saved fold models see a pooler like any other. The embedding is the
pooled vector itself; the `Normalize` module some sentence encoders add after pooling is left out, as SetFit reads
them (`normalize_embeddings=False`).

```python
>>> from hf_tlcv.modeling import load_classifier
>>> model = load_classifier("builtin:minilm-l6", ["neg", "pos"], 2)     # text_pooling="auto"
>>> model.config.hf_tlcv_pooling
['mean']

```
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

# sentence-transformers' pooling modes, in the order its Pooling module concatenates them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "weightedmean", "lasttoken")
# KFoldConfig.text_pooling: "auto" reads the model's folder, "pooler" keeps the head transformers builds.
TEXT_POOLING_CHOICES = ("auto", "pooler", *POOLING_MODES)
CONFIG_ATTRIBUTE = "hf_tlcv_pooling"
_ST_MODULES = "modules.json"
_ST_POOLING_DIR = "1_Pooling"
_ST_KEYS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


def pooling_from_config(config: dict) -> list[str]:
    """The modes a sentence-transformers `Pooling` config switches on, in concatenation order."""
    modes = [mode for mode in POOLING_MODES if config.get(_ST_KEYS[mode])]
    if not modes and config.get("pooling_mode") in POOLING_MODES:  # the single-string form
        modes = [config["pooling_mode"]]
    return modes


def _read_json(folder: str, name: str, hub_kwargs: dict) -> dict | None:
    """`name` inside a model folder or Hub repo, or `None` when it genuinely does not exist there. Any other failure
    (no network, 401, an outage, a file that is not cached offline) raises: guessing "no pooling declared" would
    silently swap a sentence encoder's mean pooling for BERT's pooler."""
    if os.path.isdir(folder):
        path = Path(folder) / name
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(folder, name, **hub_kwargs)).read_text())
    except LocalEntryNotFoundError as exc:
        cached = try_to_load_from_cache(folder, name, revision=hub_kwargs.get("revision"),
                                        cache_dir=hub_kwargs.get("cache_dir"))
        if cached is not None and not isinstance(cached, str):  # the Hub said "no such file" earlier
            return None
        error = exc
    except EntryNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - reported below with what to do
        error = exc
    raise OSError(
        f"Could not read {name} from {folder!r} to find the text pooling it declares ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else 'no details'}); check the model id and your access to it, "
        "or set text_pooling explicitly (e.g. text_pooling='mean' for a sentence-transformers encoder, "
        "text_pooling='pooler' for the model's own head)."
    ) from error


def read_pooling(name_or_path: str, hub_kwargs: dict | None = None) -> list[str] | None:
    """The pooling a sentence-transformers model folder (or Hub repo) declares, e.g. `["mean"]`; `None` when it
    declares none (a plain transformers checkpoint).

    The pooling module is found through `modules.json` (its `sentence_transformers.models.Pooling` entry), else at
    `1_Pooling/`.

    Args:
        name_or_path: a local folder or a Hub repo id.
        hub_kwargs: passed to `hf_hub_download` for a repo id (e.g. `local_files_only=True` offline).
    """
    hub_kwargs = hub_kwargs or {}
    modules = _read_json(name_or_path, _ST_MODULES, hub_kwargs)
    folder = _ST_POOLING_DIR
    if isinstance(modules, list):
        pooling = [m for m in modules if str(m.get("type", "")).endswith(".Pooling")]
        if not pooling:
            return None
        folder = pooling[0].get("path") or _ST_POOLING_DIR
    config = _read_json(name_or_path, f"{folder}/config.json", hub_kwargs)
    modes = pooling_from_config(config) if isinstance(config, dict) else []
    return modes or None


class TokenPooler(nn.Module):
    """Pools a text encoder's token states `(batch, tokens, hidden)` into one vector per row, over the tokens the
    attention mask keeps (sentence-transformers' `Pooling`, modes concatenated in its order).

    It stands where the backbone's pooler stood; the backbone hands it the attention mask it was called with (a
    forward pre-hook that [`apply_pooling`] registers), since a pooler is called with the token states only.

    Args:
        modes: pooling modes from [`POOLING_MODES`].
    """

    def __init__(self, modes: list[str]):
        super().__init__()
        unknown = [m for m in modes if m not in POOLING_MODES]
        if not modes or unknown:
            raise ValueError(f"Unknown pooling mode(s) {unknown or modes}; choose from {', '.join(POOLING_MODES)}.")
        self.modes = list(modes)
        self.attention_mask: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"modes={self.modes}"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dim() != 3:
            raise TypeError(f"TokenPooler pools token states (batch, tokens, hidden), got shape "
                            f"{tuple(hidden_states.shape)}: this backbone hands its pooler something else.")
        mask, self.attention_mask = self.attention_mask, None
        if mask is None or mask.shape != hidden_states.shape[:2]:
            mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
        mask = mask.to(hidden_states.dtype).unsqueeze(-1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        out = []
        for mode in self.modes:
            if mode == "cls":
                out.append(hidden_states[:, 0])
            elif mode == "max":
                out.append(hidden_states.masked_fill(mask == 0, -1e9).max(dim=1).values)
            elif mode == "mean":
                out.append((hidden_states * mask).sum(dim=1) / counts)
            elif mode == "mean_sqrt_len":
                out.append((hidden_states * mask).sum(dim=1) / counts.sqrt())
            elif mode == "weightedmean":
                weights = mask * torch.arange(1, hidden_states.shape[1] + 1, device=hidden_states.device,
                                              dtype=hidden_states.dtype)[None, :, None]
                out.append((hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9))
            else:  # lasttoken: the last token the mask keeps
                last = mask.squeeze(-1).cumsum(dim=1).argmax(dim=1)
                out.append(hidden_states[torch.arange(hidden_states.shape[0]), last])
        return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def _hand_mask_to_pooler(backbone: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of the backbone: give its [`TokenPooler`] the attention mask of this call."""
    pooler = getattr(backbone, "pooler", None)
    if not isinstance(pooler, TokenPooler):
        return
    mask = kwargs.get("attention_mask")
    if mask is None and args:
        bound = inspect.signature(type(backbone).forward).bind_partial(backbone, *args, **kwargs).arguments
        mask = bound.get("attention_mask")
    pooler.attention_mask = mask


def apply_pooling(model: nn.Module, modes: list[str]) -> bool:
    """Read `model` (a transformers text classifier whose head reads its backbone's pooler, such as
    `BertForSequenceClassification`) through `modes` instead of its pooler; record them in `model.config`.

    The pooler is replaced only after a dry run (`model.dummy_inputs`) goes through: the backbone must hand its
    pooler the token states, and the head must take the pooled width (several modes concatenated are wider than one
    head input); otherwise the model is left as it is and `False` is returned (the log says why).

    Returns:
        whether the pooling is in place.
    """
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    original = getattr(backbone, "pooler", None)
    name = type(model).__name__
    if not isinstance(original, nn.Module):
        logger.warning(f"{name} declares {modes} pooling, but its head does not read a pooler that could be replaced; "
                       "it keeps the head transformers builds for it.")
        return False
    backbone.pooler = TokenPooler(modes)
    handle = backbone.register_forward_pre_hook(_hand_mask_to_pooler, with_kwargs=True)
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(**model.dummy_inputs)
        model.train(was_training)
    except Exception as exc:  # noqa: BLE001 - any failure of the dry run means "cannot pool here"
        handle.remove()
        backbone.pooler = original
        logger.warning(f"{name} declares {modes} pooling, but its backbone cannot hand a pooler the token states "
                       f"({exc}); it keeps the head transformers builds for it.")
        return False
    setattr(model.config, CONFIG_ATTRIBUTE, list(modes))
    return True


def resolve_pooling(text_pooling: str, path: str, config, hub_kwargs: dict | None = None) -> list[str] | None:
    """The pooling modes a classifier loaded from `path` should use, or `None` for the model's own head.

    `text_pooling` decides (`"pooler"`: none; a mode: that one); with `"auto"`, a model saved by hf_tlcv is read as it
    was saved (`config.hf_tlcv_pooling`), a sentence-transformers folder as it declares ([`read_pooling`]).
    """
    if text_pooling not in TEXT_POOLING_CHOICES:
        raise ValueError(f"text_pooling must be one of {', '.join(TEXT_POOLING_CHOICES)}, got {text_pooling!r}.")
    if text_pooling == "pooler":
        return None
    if text_pooling != "auto":
        return [text_pooling]
    saved = getattr(config, CONFIG_ATTRIBUTE, None)
    if saved:
        return list(saved)
    return read_pooling(path, hub_kwargs)


__all__ = ["POOLING_MODES", "TEXT_POOLING_CHOICES", "TokenPooler", "apply_pooling", "pooling_from_config",
           "read_pooling", "resolve_pooling"]
