"""hf_tlcv: honest k-fold cross-validation of transfer learning for the Hugging Face stack.

The public names load on first use (PEP 562), so `import hf_tlcv` costs no more than the names you touch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _imports

__version__ = "0.4.0"

_imports.install()  # the 0.3 import paths of moved modules keep working for one release (hf_tlcv._imports)

_PUBLIC = {
    "CVResults": ".results",
    "FoldJob": ".fold_job",
    "FoldResult": ".results",
    "KFoldConfig": ".config",
    "KFoldEnsemble": ".ensemble",
    "KFoldTrainer": ".trainer",
    "StudyReport": ".studies.report",
    "TransferStudy": ".studies.study",
    "Verdict": ".studies.report",
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
    from .studies.report import StudyReport, Verdict
    from .results import CVResults, FoldResult
    from .sources import load_data
    from .studies.study import TransferStudy
    from .trainer import KFoldTrainer


__getattr__, __dir__ = _imports.lazy_names(__name__, _PUBLIC)
