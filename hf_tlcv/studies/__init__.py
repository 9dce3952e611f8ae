"""Transfer-learning studies: the four questions answered by cross-validating variants of one setup on the same folds.

- `study`: [`TransferStudy`] plans the variants (pretrained vs. scratch, a classical baseline, freeze depths, learning
  rates, your own), derives a [`~hf_tlcv.KFoldTrainer`] for each from one base trainer, and turns their results into
  verdicts with paired tests;
- `report`: [`StudyReport`] and [`Verdict`], saved as `report.md` and `study_report.json`;
- `selection`: the nested cross-validation of the variant a study selects (`nested=True`);
- `overfitting`: the per-fold train/eval gap and loss-curve detector;
- `baselines`: the classical baselines fitted on a run's folds;
- `plots`: the study's figures (matplotlib is imported only here).

A feature on top of the core: it reaches `hf_tlcv` only through the core's public API (docs/concepts.md).
"""

from .baselines import BASELINE_KINDS, baseline_kind, classical_baseline
from .overfitting import LossCurves, OverfittingDiagnosis, detect_overfitting, diagnose_fold, loss_curves
from .report import StudyReport, Verdict
from .selection import nested_selection
from .study import QUESTIONS, TransferStudy, Variant

__all__ = ["BASELINE_KINDS", "LossCurves", "OverfittingDiagnosis", "QUESTIONS", "StudyReport", "TransferStudy",
           "Variant", "Verdict", "baseline_kind", "classical_baseline", "detect_overfitting", "diagnose_fold",
           "loss_curves", "nested_selection"]
