"""The two places where hf_tlcv relies on behaviour of transformers that has no public API, kept here, each pinned
by a test (`tests/test_compat.py`) so that a transformers upgrade that changes it fails loudly instead of silently.

- `Trainer` multiplies the loss by the number of processes for models whose `forward` takes `**kwargs`
  (`Trainer.model_accepts_loss_kwargs`), expecting a loss summed over `num_items_in_batch`. Classification heads
  return a per-row mean, so [`use_mean_loss`] switches that off for a Trainer.
- `from_pretrained` logs a "LOAD REPORT" through the `transformers.modeling_utils` logger, also when the only
  difference is the classification head replaced on purpose. [`held_load_report`] holds those records back so that the
  caller decides whether to show them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

LOAD_REPORT_LOGGER = "transformers.modeling_utils"
LOAD_REPORT_MARK = "LOAD REPORT"


def use_mean_loss(trainer) -> None:
    """Make `trainer` treat the model's loss as a per-row mean (no `num_items_in_batch`, no scaling by the process
    count); DDP then averages the processes' means, which is exact."""
    trainer.model_accepts_loss_kwargs = False


class _HoldLoadReport(logging.Filter):
    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if LOAD_REPORT_MARK in record.getMessage():
            self.held.append(record)
            return False
        return True

    def release(self) -> None:
        """Show what was held back, through the logger it was meant for."""
        for record in self.held:
            logging.getLogger(LOAD_REPORT_LOGGER).handle(record)


@contextlib.contextmanager
def held_load_report() -> Iterator[_HoldLoadReport]:
    """Within the block, transformers' LOAD REPORT records are held (`.held`) instead of logged; `.release()` logs
    them."""
    target = logging.getLogger(LOAD_REPORT_LOGGER)
    hold = _HoldLoadReport()
    target.addFilter(hold)
    try:
        yield hold
    finally:
        target.removeFilter(hold)
