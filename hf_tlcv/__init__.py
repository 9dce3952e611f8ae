"""hf_tlcv: honest k-fold cross-validation of transfer learning for the Hugging Face stack.

The public names load on first use (PEP 562), so `import hf_tlcv` costs no more than the names you touch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.3.0"

_PUBLIC = {
    "CVResults": ".results",
    "FoldJob": ".fold_job",
    "FoldResult": ".results",
    "KFoldConfig": ".config",
    "KFoldEnsemble": ".ensemble",
    "KFoldTrainer": ".trainer",
    "StudyReport": ".report",
    "TransferStudy": ".study",
    "Verdict": ".report",
    "load_data": ".sources",
    "run_fold": ".fold_job",
}

__all__ = [
    "CVResults", "FoldJob", "FoldResult", "KFoldConfig", "KFoldEnsemble", "KFoldTrainer", "StudyReport",
    "TransferStudy", "Verdict", "__version__", "load_data", "run_fold",
]

if TYPE_CHECKING:  # for type checkers and IDEs only
    from .config import KFoldConfig
    from .ensemble import KFoldEnsemble
    from .fold_job import FoldJob, run_fold
    from .report import StudyReport, Verdict
    from .results import CVResults, FoldResult
    from .sources import load_data
    from .study import TransferStudy
    from .trainer import KFoldTrainer


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_tlcv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
