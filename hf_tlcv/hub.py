"""Sharing a cross-validation run on the Hugging Face Hub: fold models, model card and pushes.

One model repository per run, laid out exactly as the run's local `output_dir`, so that
[`KFoldEnsemble.from_pretrained`] reads a downloaded repository and a local run the same way:

```
README.md                      model card (rendered from templates/model_card.md)
cv_results.json  folds.json  oof_predictions.parquet  plots/*.png
fold_{repeat}_{fold}/fold_result.json, predictions.parquet
fold_{repeat}_{fold}/model/    the fold's model, in the form `push_fold_models` asks for (see save_fold_model)
```

Pushes never stop a run and never lose a local result: a push reads the files the run has already written, and
any failure is raised as a [`HubPushError`] whose message says what failed and how to retry. Pushing again uploads
only what changed (the Hub skips files whose content it already has), so a later push completes a partial repo.
The token is resolved by `huggingface_hub` (explicit `token`, else `HF_TOKEN`, else the login cache) and is
scrubbed from every message hf_tlcv writes.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback
from transformers.utils import logging

from ._io import atomic_path, write_json_atomic
from .results import FOLD_PREDICTIONS_FILE, FOLD_RESULT_FILE, OOF_FILE, RESULTS_FILE, CVResults

logger = logging.get_logger(__name__)

FOLDS_FILE = "folds.json"  # the name KFoldTrainer writes (hf_tlcv.trainer.FOLDS_FILE); kept here to avoid a cycle
PLOTS_DIR = "plots"
CARD_FILE = "README.md"
FOLD_MODEL_DIR = "model"
FOLD_MODEL_INFO = "fold_model.json"
TRAINABLE_WEIGHTS = "trainable.safetensors"
TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
LIBRARY_NAME = "hf_tlcv"

# Fold-model formats (the "format" key of fold_model.json):
#   "adapter":   a PEFT adapter folder (adapter_config.json + adapter_model.safetensors; the head via modules_to_save)
#   "trainable": trainable.safetensors, the parameters that trained and the buffers of the modules that trained
#   "full":      a transformers save_pretrained folder (config.json + model.safetensors, plus the processor)
FOLD_MODEL_FORMATS = ("adapter", "trainable", "full")


class HubPushError(RuntimeError):
    """A push to the Hub failed. The local results are intact; the message says what failed and how to retry."""


# ---- the token never leaves huggingface_hub ----------------------------------------------------------------
_TOKEN_PATTERNS = (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), re.compile(r"(?i)(bearer\s+)[^\s'\",]+"),
                   re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+"))


def scrub(text: str, token: str | None = None) -> str:
    """`text` with `token` and anything that looks like a Hub token or an Authorization value masked."""
    if token:
        text = text.replace(token, "<HF_TOKEN>")
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "<HF_TOKEN>", text)
    return text


def _failure_reason(exc: Exception, repo_id: str) -> str:
    """One sentence on why a Hub call failed, and what fixes it."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so huggingface_hub refuses to reach the Hub; unset it to push"
    status = getattr(getattr(exc, "response", None), "status_code", None) if isinstance(exc, HfHubHTTPError) else None
    if status == 401:
        return ("the Hub rejected the token (401): pass hub_token / token=..., set HF_TOKEN or run `hf auth login` "
                "with a valid token")
    if status == 403:
        return f"the token may not write to {repo_id} (403): use a token with write access to that namespace"
    if status == 404:
        return f"{repo_id} was not found (404): check the repository id and that the token can see it"
    if status is not None and status >= 500:
        return f"the Hub answered with a server error ({status}); try again later"
    if status is not None:
        return f"the Hub answered {status}"
    name = type(exc).__name__
    if any(word in name for word in ("Connect", "Timeout", "Network", "Proxy")) or isinstance(exc, OSError):
        return f"the Hub could not be reached ({name}: is the network up?)"
    return f"{name}"


def _push_error(what: str, exc: Exception, repo_id: str, output_dir: Path, token: str | None) -> HubPushError:
    if token is None:  # the token huggingface_hub used (HF_TOKEN or the login cache), to mask it too
        try:
            from huggingface_hub import get_token

            token = get_token()
        except Exception:  # noqa: BLE001
            token = None
    detail = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", token)
    message = (
        f"Pushing {what} of {output_dir} to the Hub repository {repo_id} failed: {_failure_reason(exc, repo_id)}"
        + (f" [{detail}]" if detail else "")
        + f". Every local result in {output_dir} is intact. Retry with: "
        f"`CVResults.load({str(output_dir)!r}).push_to_hub({repo_id!r})` "
        "(it uploads only what is missing)."
    )
    return HubPushError(scrub(message, token))


# ---- fold models ---------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def trainable_state_dict(model: nn.Module) -> dict:
    """The trained part of a model: parameters with `requires_grad`, and the persistent buffers of every module
    that owns a trainable parameter or owns no parameter at all (batch-norm running statistics of unfrozen blocks
    change during training; buffers of frozen modules stay as pretrained and come back with the base model)."""
    state = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        own_params = list(module.named_parameters(recurse=False))
        for name, param in own_params:
            if param.requires_grad:
                state[prefix + name] = param.detach().cpu().contiguous()
        if not own_params or any(p.requires_grad for _, p in own_params):
            persistent = set(module._buffers) - set(getattr(module, "_non_persistent_buffers_set", set()))
            for name, buf in module.named_buffers(recurse=False):
                if name in persistent and buf is not None:
                    state[prefix + name] = buf.detach().cpu().contiguous()
    return state


def fold_model_format(model: nn.Module, push_fold_models: str, base_model: str | None) -> tuple[str, str]:
    """Which form a fold's model is saved in, and why: `("adapter"|"trainable"|"full", reason)`."""
    if push_fold_models == "full":
        return "full", "requested"
    if _is_peft(model):
        if base_model is None:
            return "full", "no pretrained base"
        return "adapter", "lora"
    if base_model is None:
        return "full", "no pretrained base"
    if all(p.requires_grad for p in model.parameters()):
        return "full", "all parameters train"
    return "trainable", "frozen parameters"


def save_fold_model(model: nn.Module, directory: str | os.PathLike, *, push_fold_models: str = "trainable",
                    finetune_strategy: str | None = None, base_model: str | None = None,
                    processing_class=None) -> dict:
    """Save one fold's trained model in `directory` in the form `push_fold_models` asks for.

    - LoRA: the PEFT adapter (the head is in it through `modules_to_save`): megabytes.
    - `freeze` / `linear_probe`: `trainable.safetensors` with the trained parameters and the buffers of the
      modules that trained (batch-norm statistics of unfrozen blocks).
    - full weights (a `save_pretrained` folder with the processor) when `push_fold_models="full"`, when everything
      trains, or when there is no pretrained base to restore the frozen part from (`base_model=None`: a built model,
      `model_init`, or a from-scratch run). A LoRA model saved in full is merged first.

    `fold_model.json` records the format, the base model and the strategy; [`KFoldEnsemble`] reads it.
    `push_fold_models="none"` saves the compact ("trainable") form: it only keeps the model off the Hub.

    Returns:
        `dict`: what was written in `fold_model.json`.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    model = _unwrap(model)
    kind, reason = fold_model_format(model, "trainable" if push_fold_models == "none" else push_fold_models,
                                     base_model)
    if kind == "adapter":
        model.save_pretrained(str(directory), safe_serialization=True)
    elif kind == "trainable":
        state = trainable_state_dict(model)
        with atomic_path(directory / TRAINABLE_WEIGHTS) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
    else:
        if _is_peft(model):
            model = model.merge_and_unload()
        model.save_pretrained(str(directory), safe_serialization=True)
        if processing_class is not None and hasattr(processing_class, "save_pretrained"):
            processing_class.save_pretrained(str(directory))
    n_saved = sum(t.numel() for t in trainable_state_dict(model).values()) if kind == "trainable" else None
    info = {"format": kind, "reason": reason, "base_model": base_model, "finetune_strategy": finetune_strategy,
            "saved_values": n_saved}
    write_json_atomic(directory / FOLD_MODEL_INFO, info, indent=2)
    return info


def read_fold_model_info(fold_dir: str | os.PathLike) -> dict | None:
    path = Path(fold_dir) / FOLD_MODEL_DIR / FOLD_MODEL_INFO
    if not path.exists():
        return None
    with open(path) as fh:
        return json.load(fh)


def _fold_model_allowed(info: dict | None, push_fold_models: str) -> bool:
    """Whether a saved fold model may go to the Hub under `push_fold_models`."""
    if info is None or push_fold_models == "none":
        return False
    if push_fold_models == "full":
        return True
    # "trainable": compact forms, and full weights only where full weights *are* the trainable part.
    return info["format"] != "full" or info.get("reason") != "requested"


# ---- model card ----------------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def infer_task(cv: CVResults, directory: Path | None = None) -> str:
    """`"image-classification"` or `"text-classification"`, from the run's settings or its base model."""
    config = cv.config
    if config.get("image_size") or config.get("image_column"):
        return "image-classification"
    if config.get("max_length") or config.get("text_column"):
        return "text-classification"
    candidates = []
    if directory is not None:
        candidates += [p.parent for p in sorted(Path(directory).glob(f"fold_*/{FOLD_MODEL_DIR}/config.json"))]
    if config.get("model_name_or_path"):
        candidates.append(config["model_name_or_path"])
    for candidate in candidates[:2]:
        try:
            from .modeling import _is_image_model, load_config

            _, model_config = load_config(str(candidate))
            return "image-classification" if _is_image_model(model_config) else "text-classification"
        except Exception:  # noqa: BLE001 - an unreachable base model only costs the card its task tag
            continue
    return "text-classification"


@dataclass
class CVCardData:
    """What the model card of a cross-validation run is rendered from (YAML metadata + template variables).

    Attributes:
        repo_id: the repository the card is for.
        task: `"image-classification"` or `"text-classification"`.
        dataset_name: the Hub dataset id (goes into `datasets:` and `model-index`) or a local/builtin name.
        study_report: an optional markdown section (e.g. a `TransferStudy` report) placed under "Study".
        license, language: optional YAML fields.
    """

    repo_id: str
    task: str
    dataset_name: str | None = None
    study_report: str | None = None
    license: str | None = None
    language: str | list[str] | None = None
    extra_tags: list[str] = field(default_factory=list)


def _is_hub_dataset_id(name: str | None) -> bool:
    # Only "namespace/name" goes into the YAML: a bare builder name ("beans") or a builtin:/local name is not an id
    # the Hub can link, and a wrong `datasets:` entry is worse than none.
    return bool(name) and not name.startswith("builtin:") and not os.path.exists(name) and bool(
        re.fullmatch(r"[\w.\-]+/[\w.\-]+", name))


def eval_results_for(cv: CVResults, task: str, dataset_name: str | None) -> list:
    """One `EvalResult` per metric: the cross-validated mean, as a plain float (non-finite values are left out)."""
    from huggingface_hub import EvalResult

    k, repeats = cv.config.get("n_folds"), cv.config.get("n_repeats", 1)
    dataset_type = dataset_name if _is_hub_dataset_id(dataset_name) else "custom"
    results = []
    for metric, summary in cv.summary.items():
        value = _finite(summary.get("mean"))
        if value is None or metric in ("loss",):
            continue
        results.append(EvalResult(
            task_type=task, dataset_type=dataset_type, dataset_name=dataset_name or "custom",
            metric_type=metric, metric_value=value,
            metric_name=f"{metric} (mean of {k}-fold cross-validation x {repeats})",
            dataset_split="train",
        ))
    return results


def build_model_card(cv: CVResults, data: CVCardData, directory: Path | None = None):
    """The `huggingface_hub.ModelCard` of a run, rendered from `templates/model_card.md`."""
    from huggingface_hub import ModelCard, ModelCardData

    from ._markdown import escape_markdown

    config = cv.config
    strategy = config.get("finetune_strategy", "full")
    base_model = config.get("model_name_or_path")
    hub_base = base_model if base_model and not base_model.startswith("builtin:") and not os.path.exists(
        base_model) else None
    tags = list(dict.fromkeys(["hf_tlcv", "cross-validation", "k-fold", strategy, *data.extra_tags]))
    card_data = ModelCardData(
        base_model=hub_base,
        datasets=[data.dataset_name] if _is_hub_dataset_id(data.dataset_name) else None,
        library_name=LIBRARY_NAME,
        license=data.license,
        language=data.language,
        tags=tags,
        pipeline_tag=data.task,
        model_name=data.repo_id.split("/")[-1],
        eval_results=eval_results_for(cv, data.task, data.dataset_name) or None,
    )
    metrics = list(cv.summary)
    frame = cv.to_pandas()
    fold_rows = [
        {"repeat": int(row["repeat"]), "fold": int(row["fold"]), "n_train": int(row["n_train"]),
         "n_eval": int(row["n_eval"]), "values": [_fmt(row.get(m)) for m in metrics]}
        for row in frame.to_dict("records")
    ]
    summary_rows = []
    for metric, s in cv.summary.items():
        lo, hi = s.get("ci95", [math.nan, math.nan])
        train = cv.train_summary.get(metric, {}).get("mean")
        summary_rows.append({"metric": metric, "mean": _fmt(s["mean"]), "std": _fmt(s["std"]), "low": _fmt(lo),
                             "high": _fmt(hi), "train": _fmt(train) if train is not None else "",
                             "pooled": _fmt(cv.oof_metrics.get(metric)) if metric in cv.oof_metrics else ""})
    meta = cv.metadata
    plots = sorted(p.name for p in (Path(directory) / PLOTS_DIR).glob("*.png")) if directory else []
    fold_models = sorted({(read_fold_model_info(d) or {}).get("format") for d in Path(directory).glob("fold_*")}
                         - {None}) if directory else []
    hyper = {key: config.get(key) for key in (
        "learning_rate", "num_train_epochs", "per_device_train_batch_size", "weight_decay", "warmup_steps",
        "lr_scheduler_type", "optim", "seed", "freeze_layers", "layerwise_lr_decay", "lora_r", "lora_alpha",
        "lora_dropout", "lora_target_modules", "image_size", "max_length", "metric_average") if key in config}
    if strategy != "lora":
        for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"):
            hyper.pop(key, None)
    if strategy != "freeze":
        hyper.pop("freeze_layers", None)
    hyper = {k: v for k, v in hyper.items() if v is not None}
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        repo_id=data.repo_id,
        task=data.task,
        dataset_name=data.dataset_name,
        base_model_name=base_model,
        strategy=strategy,
        fold_strategy=meta.get("fold_strategy") or config.get("resolved_fold_strategy"),
        n_folds=meta.get("n_folds", config.get("n_folds")),
        n_repeats=meta.get("n_repeats", config.get("n_repeats", 1)),
        fold_seed=meta.get("fold_seed", config.get("fold_seed")),
        group_column=meta.get("group_column"),
        label_column=meta.get("label_column", "label"),
        n_rows=meta.get("n_rows"),
        n_fold_results=len(cv.folds),
        # Class names are folder names of an upload or labels of a stranger's dataset: shown as text, never markup.
        label_names=[escape_markdown(name) for name in cv.label_names] if cv.label_names else cv.label_names,
        metrics=metrics,
        fold_rows=fold_rows,
        summary_rows=summary_rows,
        oof_metrics={k: _fmt(v) for k, v in cv.oof_metrics.items() if _finite(v) is not None},
        hyperparameters=hyper,
        plots=plots,
        fold_model_formats=fold_models,
        study_report=data.study_report,
        version=meta.get("hf_tlcv_version"),
    )


def _fmt(value: Any) -> str:
    number = _finite(value)
    return f"{number:.4f}" if number is not None else "n/a"


def write_model_card(cv: CVResults, directory: str | os.PathLike, data: CVCardData) -> Path:
    """Render the card and write it as `README.md` in the run's directory (so the local run and the repo agree)."""
    directory = Path(directory)
    card = build_model_card(cv, data, directory)
    with atomic_path(directory / CARD_FILE) as tmp:
        tmp.write_text(str(card), encoding="utf-8")
    return directory / CARD_FILE


# ---- pushes --------------------------------------------------------------------------------------------------
def _fold_files(fold_dir: Path, push_fold_models: str) -> list[Path]:
    files = [fold_dir / FOLD_RESULT_FILE, fold_dir / FOLD_PREDICTIONS_FILE]
    info = read_fold_model_info(fold_dir)
    if _fold_model_allowed(info, push_fold_models):
        files += sorted(p for p in (fold_dir / FOLD_MODEL_DIR).rglob("*") if p.is_file())
    elif info is not None and push_fold_models != "none":
        logger.warning(f"{fold_dir.name}: its model was saved with full weights (push_fold_models='full'), which "
                       f"push_fold_models={push_fold_models!r} does not upload; push with push_fold_models='full' "
                       "to include it.")
    # Never anything else from a fold folder: Trainer checkpoints, tracker logs and training_args.bin (which holds
    # the arguments unmasked, token included) stay local.
    return [p for p in files if p.is_file() and not p.name.startswith(".")]


def repo_files(output_dir: str | os.PathLike, push_fold_models: str = "trainable",
               folds: list[str] | None = None) -> list[Path]:
    """The local files a push uploads: the run summary, the plots, the card and the fold folders (all folds, or the
    ones named in `folds`), with fold models as `push_fold_models` allows."""
    out = Path(output_dir)
    if folds is not None:
        files = [out / FOLDS_FILE] + [f for name in folds for f in _fold_files(out / name, push_fold_models)]
    else:
        files = [out / name for name in (CARD_FILE, RESULTS_FILE, FOLDS_FILE, OOF_FILE)]
        files += sorted((out / PLOTS_DIR).glob("*.png"))
        for fold_dir in sorted(p for p in out.glob("fold_*") if p.is_dir()):
            files += _fold_files(fold_dir, push_fold_models)
    return [f for f in files if f.is_file()]


def _commit(output_dir: Path, repo_id: str, files: list[Path], *, what: str, commit_message: str,
            token: str | None, private: bool | None, revision: str | None):
    from huggingface_hub import CommitOperationAdd, HfApi

    try:
        # A new HfApi per push: huggingface_hub's module-level helpers keep the endpoint of import time.
        api = HfApi(token=token, library_name=LIBRARY_NAME)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        operations = [CommitOperationAdd(path_in_repo=f.relative_to(output_dir).as_posix(), path_or_fileobj=str(f))
                      for f in files]
        with warnings.catch_warnings():
            # Out-of-fold predictions are parquet files by design; the client warns about data files in model repos.
            warnings.filterwarnings("ignore", message="It seems that you are about to commit a data file")
            return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear, token-free error
        raise _push_error(what, exc, repo_id, output_dir, token) from None


def push_fold(output_dir: str | os.PathLike, repo_id: str, fold_name: str, *, token: str | None = None,
              private: bool | None = None, revision: str | None = None, push_fold_models: str = "trainable"):
    """Push one finished fold (`fold_dir` results and model part, plus `folds.json`) in one commit."""
    out = Path(output_dir)
    files = repo_files(out, push_fold_models, folds=[fold_name])
    return _commit(out, repo_id, files, what=f"fold {fold_name}", commit_message=f"Add cross-validation {fold_name}",
                   token=token, private=private, revision=revision)


def push_cv(output_dir: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool | None = None,
            revision: str | None = None, push_fold_models: str = "trainable", commit_message: str | None = None,
            task: str | None = None, dataset_name: str | None = None, study_report: str | None = None,
            license: str | None = None, language: str | list[str] | None = None, results: CVResults | None = None):
    """Write the model card into a finished run's `output_dir` and push the whole run to `repo_id` in one commit.

    Args:
        output_dir: the run's output directory (holds `cv_results.json`).
        repo_id: `"namespace/name"` (or a bare name, created in the token's namespace).
        token: a write token; `None` lets huggingface_hub resolve `HF_TOKEN` or the login cache.
        private: create the repository private (no effect on an existing one).
        revision: branch to commit to (default `main`).
        push_fold_models: `"none"`, `"trainable"` or `"full"`: which saved fold models are uploaded.
        commit_message: defaults to a summary of the run.
        task, dataset_name, study_report, license, language: card content (see [`CVCardData`]).
        results: the [`CVResults`] (read from `output_dir` when `None`).

    Returns:
        `huggingface_hub.CommitInfo` (its `repo_url` is the repository).

    Raises:
        HubPushError: with what failed and the command that retries; local files are never modified beyond the
            card, which is written before anything is sent.
    """
    out = Path(output_dir)
    cv = results if results is not None else CVResults.load(out)
    task = task or infer_task(cv, out)
    write_model_card(cv, out, CVCardData(repo_id=repo_id, task=task, dataset_name=dataset_name,
                                         study_report=study_report, license=license, language=language))
    if commit_message is None:
        means = ", ".join(f"{k} {v['mean']:.4f}" for k, v in cv.summary.items() if k != "loss")
        commit_message = f"Cross-validation results ({len(cv.folds)} folds: {means})"
    files = repo_files(out, push_fold_models)
    return _commit(out, repo_id, files, what="the cross-validation run", commit_message=commit_message,
                   token=token, private=private, revision=revision)


def hub_repo_id(args) -> str:
    """The repository a run pushes to: `hub_model_id`, else the name of `output_dir` (transformers' convention)."""
    return args.hub_model_id or Path(args.output_dir).absolute().name


class HubPushCallback(TrainerCallback):
    """Pushes each fold to the Hub as it finishes, then the whole run with its card (`KFoldConfig(push_to_hub=True)`).

    Registered by [`KFoldTrainer`] when `args.push_to_hub` is set; only the main process pushes. A failed fold push
    is logged and training goes on; the final push retries everything and raises [`HubPushError`] if it still
    fails — after the results are saved locally.
    """

    def __init__(self, task: str | None = None, dataset_name: str | None = None):
        self.task = task
        self.dataset_name = dataset_name
        self.failed_folds: list[str] = []

    def on_fold_end(self, args, state, control, fold=None, fold_dir=None, trainer=None, **kwargs):
        if trainer is not None and not trainer.is_world_process_zero():
            return
        try:
            push_fold(args.output_dir, hub_repo_id(args), Path(fold_dir).name, token=args.hub_token,
                      private=args.hub_private_repo, revision=args.hub_revision,
                      push_fold_models=args.push_fold_models)
        except HubPushError as exc:
            self.failed_folds.append(Path(fold_dir).name)
            logger.warning(f"{exc} Training goes on; the push at the end of cross-validation retries this fold.")

    def on_cross_validation_end(self, args, state, control, results=None, output_dir=None, trainer=None, **kwargs):
        if trainer is not None and not trainer.is_world_process_zero():
            return
        info = push_cv(output_dir or args.output_dir, hub_repo_id(args), token=args.hub_token,
                       private=args.hub_private_repo, revision=args.hub_revision,
                       push_fold_models=args.push_fold_models, task=self.task, dataset_name=self.dataset_name,
                       results=results)
        logger.info(f"Pushed the cross-validation run to {info.repo_url}")
        self.failed_folds.clear()
