"""hf_tlcv: honest k-fold cross-validation of transfer learning for the Hugging Face stack."""

__version__ = "0.1.0"

from .config import KFoldConfig  # noqa: E402
from .ensemble import KFoldEnsemble  # noqa: E402
from .report import StudyReport, Verdict  # noqa: E402
from .results import CVResults  # noqa: E402
from .study import TransferStudy  # noqa: E402
from .trainer import KFoldTrainer  # noqa: E402

__all__ = ["CVResults", "KFoldConfig", "KFoldEnsemble", "KFoldTrainer", "StudyReport", "TransferStudy", "Verdict",
           "__version__"]
