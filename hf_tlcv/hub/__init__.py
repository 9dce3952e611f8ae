"""Sharing a run on the Hugging Face Hub, with its card.

- `push`: [`push_run`] and [`push_fold`] (one commit, files the Hub has skipped, the token never shown) and
  [`HubPushCallback`], which pushes each fold as it finishes when `KFoldConfig(push_to_hub=True)`;
- `card`: the run's model card (`README.md`), rendered from `templates/model_card.md`.

A feature on top of the core: it reaches `hf_tlcv` only through the core's public API (docs/concepts.md).
"""

from .card import CVCardData, ModelCardCallback, build_model_card, write_model_card
from .push import (
    HubPushCallback,
    HubPushError,
    create_hub_repo,
    hub_repo_id,
    push_fold,
    push_results,
    push_run,
    repo_files,
    scrub,
)

__all__ = ["CVCardData", "HubPushCallback", "HubPushError", "ModelCardCallback", "build_model_card", "create_hub_repo",
           "hub_repo_id", "push_fold", "push_results", "push_run", "repo_files", "scrub", "write_model_card"]
