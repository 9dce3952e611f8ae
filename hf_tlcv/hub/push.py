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

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback
from transformers.utils import logging

from ..fold_models import read_fold_model_info
from ..run_dir import (
    AUDIT_DIR,
    AUDIT_FILE,
    CARD_FILE,
    FOLD_MODEL_DIR,
    FOLD_PREDICTIONS_FILE,
    FOLD_RESULT_FILE,
    FOLD_TEST_PREDICTIONS_FILE,
    FOLDS_FILE,
    OOF_FILE,
    PLOTS_DIR,
    RESULTS_FILE,
    fold_dirs,
    write_text_atomic,
)

if TYPE_CHECKING:
    from ..results import CVResults

logger = logging.get_logger(__name__)
LIBRARY_NAME = "hf_tlcv"


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


# ---- what a push uploads ------------------------------------------------------------------------------------
def _fold_model_allowed(info: dict | None, push_fold_models: str) -> bool:
    """Whether a saved fold model may go to the Hub under `push_fold_models`."""
    if info is None or push_fold_models == "none":
        return False
    if push_fold_models == "full":
        return True
    # "trainable": compact forms, and full weights only where full weights *are* the trainable part.
    return info["format"] != "full" or info.get("reason") != "requested"


# ---- pushes --------------------------------------------------------------------------------------------------
def _fold_files(fold_dir: Path, push_fold_models: str) -> list[Path]:
    files = [fold_dir / FOLD_RESULT_FILE, fold_dir / FOLD_PREDICTIONS_FILE, fold_dir / FOLD_TEST_PREDICTIONS_FILE]
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
        if (out / AUDIT_FILE).is_file():  # a finished data audit (hf_tlcv.audit): the card shows its section
            files += [out / AUDIT_FILE, *sorted(p for p in (out / AUDIT_DIR).iterdir() if p.is_file())]
        for fold_dir in fold_dirs(out):
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


def push_run(output_dir: str | os.PathLike, repo_id: str, *, card: str | None = None, token: str | None = None,
             private: bool | None = None, revision: str | None = None, push_fold_models: str = "trainable",
             commit_message: str = "Cross-validation results"):
    """Push a finished run folder to `repo_id` in one commit, its card (`README.md`) written into the folder first.

    Args:
        output_dir: the run's folder (holds `cv_results.json`).
        repo_id: `"namespace/name"` (or a bare name, created in the token's namespace).
        card: the card's text (`None`: the folder's `README.md` as it is).
        token: a write token; `None` lets huggingface_hub resolve `HF_TOKEN` or the login cache.
        private: create the repository private (no effect on an existing one).
        revision: branch to commit to (default `main`).
        push_fold_models: `"none"`, `"trainable"` or `"full"`: which saved fold models are uploaded.
        commit_message: the commit's message.

    Returns:
        `huggingface_hub.CommitInfo` (its `repo_url` is the repository).

    Raises:
        HubPushError: with what failed and the command that retries; local files are never modified beyond the
            card, which is written before anything is sent.
    """
    out = Path(output_dir)
    if card is not None:
        write_text_atomic(out / CARD_FILE, card)
    return _commit(out, repo_id, repo_files(out, push_fold_models), what="the cross-validation run",
                   commit_message=commit_message, token=token, private=private, revision=revision)


def create_hub_repo(repo_id: str, *, token: str | None = None, private: bool | None = None) -> str:
    """Create `repo_id` (or find it) and return its full id; [`HubPushError`] with the reason when that fails."""
    from huggingface_hub import HfApi

    try:
        return HfApi(token=token, library_name=LIBRARY_NAME).create_repo(repo_id, private=private,
                                                                        exist_ok=True).repo_id
    except Exception as exc:  # noqa: BLE001 - one clear, token-free error
        raise HubPushError(scrub(f"Creating the Hub repository {repo_id} failed: {_failure_reason(exc, repo_id)}. "
                                 "Nothing was trained or pushed yet; fix the token or the network, or drop "
                                 "push_to_hub.", token)) from None


def hub_repo_id(args) -> str:
    """The repository a run pushes to: `hub_model_id`, else the name of `output_dir` (transformers' convention)."""
    return args.hub_model_id or Path(args.output_dir).absolute().name


class HubPushCallback(TrainerCallback):
    """Pushes each fold to the Hub as it finishes, then the whole run with its card (`KFoldConfig(push_to_hub=True)`).

    Registered by [`KFoldTrainer`] when `args.push_to_hub` is set (`hf_tlcv.integrations.cv_reporters`); only the
    main process pushes. A failed fold push is logged and training goes on; the final push retries everything and
    raises [`HubPushError`] if it still fails — after the results are saved locally.

    Args:
        task, dataset_name: what the card says of the run (default: the trainer's).
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
        task = self.task if self.task is not None or trainer is None else trainer.task
        dataset_name = self.dataset_name if self.dataset_name is not None or trainer is None else trainer.dataset_name
        info = push_results(results, hub_repo_id(args), token=args.hub_token, private=args.hub_private_repo,
                            revision=args.hub_revision, push_fold_models=args.push_fold_models, task=task,
                            dataset_name=dataset_name)
        logger.info(f"Pushed the cross-validation run to {info.repo_url}")
        self.failed_folds.clear()


def push_results(results: "CVResults", repo_id: str, *, token: str | None = None, private: bool | None = None,
                 revision: str | None = None, push_fold_models: str | None = None, commit_message: str | None = None,
                 **card_kwargs):
    """Push the run `results` were saved in / loaded from to `repo_id`, its card rendered for `repo_id` first (see
    `CVResults.push_to_hub`, which calls this)."""
    from .card import CVCardData, build_model_card

    if results.directory is None:
        raise ValueError("These results have no run directory to push: save() them into the run's output_dir "
                         "or load them with CVResults.load(output_dir) first.")
    card = build_model_card(results, CVCardData(repo_id=repo_id, **card_kwargs), results.directory)
    if commit_message is None:
        means = ", ".join(f"{k} {v['mean']:.4f}" for k, v in results.summary.items() if k != "loss")
        commit_message = f"Cross-validation results ({len(results.folds)} folds: {means})"
    return push_run(results.directory, repo_id, card=str(card), token=token, private=private, revision=revision,
                    push_fold_models=push_fold_models or results.config.get("push_fold_models", "trainable"),
                    commit_message=commit_message)

__all__ = ["HubPushCallback", "HubPushError", "create_hub_repo", "hub_repo_id", "push_fold", "push_results", "push_run",
           "repo_files", "scrub"]
