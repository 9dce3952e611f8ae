"""Saving and loading one fold's trained model, in the smallest form that restores it exactly.

Formats (the `"format"` key of `fold_model.json` in the fold's `model/` folder):

- `"adapter"`: a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`; the head through
  `modules_to_save`): LoRA runs.
- `"trainable"`: `trainable.safetensors` with the parameters that trained and the buffers of the modules that trained
  (batch-norm statistics of unfrozen blocks): `freeze` and `linear_probe` runs; the frozen rest comes back from the
  pretrained base model.
- `"full"`: a transformers `save_pretrained` folder (with the processor): when everything trains, when there is no
  pretrained base to restore the rest from (a built model, `model_init`, a from-scratch run), or on request.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

from torch import nn

from .run_dir import FOLD_MODEL_DIR, atomic_path, honour_umask, read_json, write_json_atomic

FOLD_MODEL_INFO = "fold_model.json"
TRAINABLE_WEIGHTS = "trainable.safetensors"
FOLD_MODEL_FORMATS = ("adapter", "trainable", "full")


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def trainable_state_dict(model: nn.Module) -> dict:
    """The trained part of a model: parameters with `requires_grad`, and the persistent buffers of every module that
    owns a trainable parameter or owns no parameter at all (batch-norm running statistics of unfrozen blocks change
    during training; buffers of frozen modules stay as pretrained and come back with the base model)."""
    persistent = model.state_dict(keep_vars=True)  # exactly the parameters and persistent buffers
    state = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        own_params = list(module.named_parameters(recurse=False))
        for name, param in own_params:
            if param.requires_grad:
                state[prefix + name] = param.detach().cpu().contiguous()
        if not own_params or any(p.requires_grad for _, p in own_params):
            for name, buf in module.named_buffers(recurse=False):
                if prefix + name in persistent and buf is not None:
                    state[prefix + name] = buf.detach().cpu().contiguous()
    return state


def fold_model_format(model: nn.Module, push_fold_models: str, base_model: str | None) -> tuple[str, str]:
    """Which form a fold's model is saved in, and why: `("adapter"|"trainable"|"full", reason)`."""
    if push_fold_models == "full":
        return "full", "requested"
    if base_model is None:
        return "full", "no pretrained base"
    if is_peft_model(model):
        return "adapter", "lora"
    if all(p.requires_grad for p in model.parameters()):
        return "full", "all parameters train"
    return "trainable", "frozen parameters"


def save_fold_model(model: nn.Module, directory: str | os.PathLike, *, push_fold_models: str = "trainable",
                    finetune_strategy: str | None = None, base_model: str | None = None,
                    processing_class=None) -> dict:
    """Save one fold's trained model in `directory` in the form `push_fold_models` asks for (see the module
    docstring). `push_fold_models="none"` saves the compact form: it only keeps the model off the Hub. A LoRA model
    saved in full is merged first.

    Returns:
        `dict`: what was written in `fold_model.json` (format, reason, base model, strategy).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    model = _unwrap(model)
    kind, reason = fold_model_format(model, "trainable" if push_fold_models == "none" else push_fold_models,
                                     base_model)
    n_saved = None
    if kind == "adapter":
        model.save_pretrained(str(directory), safe_serialization=True)
    elif kind == "trainable":
        state = trainable_state_dict(model)
        n_saved = sum(t.numel() for t in state.values())
        with atomic_path(directory / TRAINABLE_WEIGHTS) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
    else:
        if is_peft_model(model):
            model = model.merge_and_unload()
        model.save_pretrained(str(directory), safe_serialization=True)
        if processing_class is not None and hasattr(processing_class, "save_pretrained"):
            processing_class.save_pretrained(str(directory))
    info = {"format": kind, "reason": reason, "base_model": base_model, "finetune_strategy": finetune_strategy,
            "saved_values": n_saved}
    write_json_atomic(directory / FOLD_MODEL_INFO, info, indent=2)
    honour_umask(directory)
    return info


def read_fold_model_info(fold_dir: str | os.PathLike) -> dict | None:
    """`fold_model.json` of a fold folder, or `None` when the fold saved no model."""
    path = Path(fold_dir) / FOLD_MODEL_DIR / FOLD_MODEL_INFO
    return read_json(path) if path.exists() else None


def load_fold_model(directory: str | os.PathLike, info: dict, base: nn.Module | None,
                    label_names: list[str] | None, n_labels: int) -> nn.Module:
    """Rebuild a saved fold model (in eval mode): `base` (the pretrained classifier, for the compact formats) plus
    what the fold saved in `directory`."""
    directory = Path(directory)
    kind = info["format"]
    if kind == "full":
        from .modeling import load_classifier

        return load_classifier(str(directory), label_names, n_labels).eval()
    model = copy.deepcopy(base)
    if kind == "adapter":
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(directory)).eval()
    if kind == "trainable":
        from safetensors.torch import load_file

        state = load_file(str(directory / TRAINABLE_WEIGHTS))
        missing = set(state) - set(model.state_dict())
        if missing:
            raise ValueError(f"{directory} holds weights the base model {info.get('base_model')} does not have "
                             f"({sorted(missing)[:3]}...): it was saved from a different architecture.")
        model.load_state_dict(state, strict=False)
        return model.eval()
    raise ValueError(f"Unknown fold model format {kind!r} in {directory / FOLD_MODEL_INFO}; this hf_tlcv reads "
                     f"{', '.join(FOLD_MODEL_FORMATS)}.")
