"""The plots of a run drawn at the end of its cross-validation (matplotlib is imported only when they are drawn)."""

from __future__ import annotations

from pathlib import Path

from ..integrations import ReportCallback
from ..run_dir import PLOTS_DIR


class PlotsCallback(ReportCallback):
    """Draws a run's plots into `output_dir/plots/` at the end of its cross-validation (registered by `KFoldTrainer`
    through `hf_tlcv.integrations.cv_reporters`; skipped for a trainer whose `save_cv_plots` is `False`, as a
    search's trials are: the search report draws its own)."""

    what = "plots"

    def write(self, results, output_dir: Path, trainer=None) -> None:
        if trainer is not None and not trainer.save_cv_plots:
            return
        from .cv import save_plots

        save_plots(results, output_dir / PLOTS_DIR)


__all__ = ["PlotsCallback"]
