"""The one seam between the core and the features built on it.

The core (settings, folds, the fold job and its executors, results and statistics, the frozen-feature cache,
strategies, data and the run folder) imports no feature. Where it offers a convenience that a feature implements —
`CVResults.audit()`, `CVResults.push_to_hub()`, `KFoldTrainer.hyperparameter_search()` as `Trainer` has it, the
plots, card and Hub push at the end of `cross_validate()` — it calls a function of this module, which imports the
feature inside the function, as transformers' `integrations` do. `tests/test_layers.py` reads every import of the
package and fails when any other core module reaches a feature (docs/concepts.md draws the layers).

A new feature is a subpackage that uses the core's public API; it needs a function here only when a core object
should offer it as a method.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback
from transformers.utils import logging

if TYPE_CHECKING:
    from .results import CVResults
    from .trainer import KFoldTrainer

logger = logging.get_logger(__name__)


class ReportCallback(TrainerCallback):
    """A report a feature writes into the run folder once a cross-validation's results are saved (the plots, the
    card): on the main process only, and a failure is a warning, never an error, since the results are on disk
    already. Subclasses define `what` and `write`."""

    what = "report"

    def write(self, results: "CVResults", output_dir: Path, trainer: "KFoldTrainer | None") -> None:
        raise NotImplementedError

    def on_cross_validation_end(self, args, state, control, results=None, output_dir=None, trainer=None, **kwargs):
        if trainer is not None and not trainer.is_world_process_zero():
            return
        try:
            self.write(results, Path(output_dir), trainer)
        except Exception as exc:  # noqa: BLE001 - a finished run is not turned into an error by its report
            logger.warning(f"Could not write the cross-validation {self.what} into {output_dir}: {exc}")


def cv_reporters(trainer: "KFoldTrainer") -> list["TrainerCallback"]:
    """The callbacks that report a cross-validation once its results are saved, in the order they run: the plots
    (`output_dir/plots/`), the card (`output_dir/README.md`), then, with `push_to_hub`, the Hub push (each fold as it
    finishes, the whole run at the end). `KFoldTrainer` registers them before the user's callbacks."""
    from .hub.card import ModelCardCallback
    from .plots.callback import PlotsCallback

    reporters: list[TrainerCallback] = [PlotsCallback(), ModelCardCallback()]
    if trainer.cv_args.push_to_hub:
        from .hub.push import HubPushCallback

        reporters.append(HubPushCallback())
    return reporters


def audit(results: "CVResults", dataset, **kwargs):
    """`CVResults.audit`: [`hf_tlcv.audit.audit`]."""
    from .audit.checks import audit as audit_results

    return audit_results(results, dataset, **kwargs)


def push_results(results: "CVResults", repo_id: str, **kwargs):
    """`CVResults.push_to_hub`: [`hf_tlcv.hub.push_results`]."""
    from .hub.push import push_results as push

    return push(results, repo_id, **kwargs)


def create_repo(args, token: str | None = None, private: bool | None = None) -> str:
    """`KFoldTrainer.init_hf_repo`: the run's repository created through hf_tlcv's Hub transport; its full id."""
    from .hub.push import create_hub_repo, hub_repo_id

    return create_hub_repo(hub_repo_id(args), token=token, private=private)


def repo_id(args) -> str:
    """The repository a run pushes to (`hub_model_id`, else the name of `output_dir`)."""
    from .hub.push import hub_repo_id

    return hub_repo_id(args)


def hyperparameter_search(trainer: "KFoldTrainer", folds, **kwargs) -> Any:
    """`KFoldTrainer.hyperparameter_search`: [`hf_tlcv.search.run_search`]."""
    from .search.run import run_search

    return run_search(trainer, folds, **kwargs)


__all__ = ["ReportCallback", "audit", "create_repo", "cv_reporters", "hyperparameter_search", "push_results", "repo_id"]
