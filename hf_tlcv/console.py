"""What a cross-validation shows on the console, and what it keeps quiet.

A default run shows one progress display (the bar over the folds, the running fold's training step as its postfix)
and one line per finished fold, then the summary. The fold Trainers' own output — a step bar redrawn inside the fold
bar and a log dictionary per `logging_steps` that does not say which fold it belongs to — is left out of the console
only: the step logs stay in each fold's log history (`fold_result.json`) and still go to `report_to`. The libraries'
own bars ("Loading weights", `datasets`' "Generating / Casting / Map") are switched off for the run and switched
back on when it returns. `KFoldConfig(trainer_console_output=True)` keeps all of it, as a plain `Trainer` prints it.

Only public switches are used: `Trainer.remove_callback`, `transformers.utils.logging.disable_progress_bar`,
`datasets.disable_progress_bars`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

# The metrics a fold's line names, in this order, when the fold reports them (others are in the table).
FOLD_LINE_METRICS = ("accuracy", "f1", "loss")


def quiet_trainer(trainer) -> None:
    """Take the console printing out of one fold's `Trainer`: its step bar and the log dictionaries its
    `ProgressCallback` (or `PrinterCallback` with `disable_tqdm=True`) writes. Logging itself is untouched: the logs
    reach `state.log_history` and every reporting integration (`report_to`) as before."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


@contextlib.contextmanager
def quiet_libraries(quiet: bool = True) -> Iterator[None]:
    """Within the block, no progress bars from `transformers` (weight loading) and `datasets` (file generation,
    casts, maps); on exit each switch is put back as it was, however the block ends. `quiet=False` changes nothing.

    Example:
    ```python
    >>> import datasets
    >>> with quiet_libraries():   # e.g. load_dataset("csv", data_files="reviews.csv"): no "Generating" bar
    ...     datasets.is_progress_bar_enabled()
    False
    >>> datasets.is_progress_bar_enabled()   # put back as it was
    True

    ```
    """
    if not quiet:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    datasets_quiet = datasets.are_progress_bars_disabled()
    transformers_bars = hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not datasets_quiet:
            datasets.enable_progress_bars()
        if transformers_bars:
            hf_logging.enable_progress_bar()


def fold_line(name: str, metrics: dict[str, Any], resumed: bool = False, seconds: float | None = None) -> str:
    """The one line a finished fold gets: its name and main metrics, e.g.
    `fold_0_1: accuracy 0.7562  f1 0.7562  loss 0.4925  (2.1 s)`."""
    shown = [f"{key} {metrics[key]:.4f}" for key in FOLD_LINE_METRICS
             if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool)]
    if not shown:  # a custom compute_metrics: its first numeric values
        shown = [f"{key} {value:.4f}" for key, value in metrics.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)][:3]
    tail = "  (read back from an earlier run)" if resumed else (f"  ({seconds:.1f} s)" if seconds is not None else "")
    return f"{name}: " + "  ".join(shown) + tail


class StepPostfix(TrainerCallback):
    """Shows the running fold's training step as the postfix of the fold bar (`fold_0_2 step 40/100`), redrawn at
    most every `interval` seconds, so that a long fold is visibly moving without a bar of its own."""

    def __init__(self, bar, fold_name: str, interval: float = 0.5):
        self.bar, self.fold_name, self.interval = bar, fold_name, interval
        self._drawn = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None or not state.is_world_process_zero:
            return
        now = time.monotonic()
        if now - self._drawn >= self.interval or state.global_step == state.max_steps:
            self._drawn = now
            self.bar.set_postfix_str(f"{self.fold_name} step {state.global_step}/{state.max_steps}")

    def __getstate__(self):  # a bar belongs to the process that draws it: a copy sent elsewhere draws nothing
        return {**self.__dict__, "bar": None}


__all__ = ["FOLD_LINE_METRICS", "StepPostfix", "fold_line", "quiet_libraries", "quiet_trainer"]
