"""Set-up shared by the test suite and the docstring examples (`pytest --doctest-modules hf_tlcv`, run by `make static`).

Every docstring example runs, except those listed in `NOT_DOCTESTED` (as transformers lists its own in
`utils/not_doctested.txt`): they train or load a real model, read a finished run or a user's file, or reach the Hub,
so they are shown to the reader and skipped here with the reason. Tests exercise each of those paths.
"""

from __future__ import annotations

import pytest

_NEEDS_A_RUN = "needs a trainer, a finished run or a study (a fragment of a longer example; covered by tests/)"
_NEEDS_A_MODEL = "loads or trains a real model (covered by the integration tier of tests/)"
_NEEDS_A_FILE = "reads a user's file"

NOT_DOCTESTED = {
    "hf_tlcv.audit.checks": _NEEDS_A_RUN,
    "hf_tlcv.audit.checks.compute_embeddings": _NEEDS_A_MODEL,
    "hf_tlcv.studies.baselines": _NEEDS_A_RUN,
    "hf_tlcv.cache.FeatureCache": _NEEDS_A_RUN,
    "hf_tlcv.ensemble.KFoldEnsemble": _NEEDS_A_RUN,
    "hf_tlcv.execution.RayExecutor": _NEEDS_A_RUN,
    "hf_tlcv.execution.WorkerProcess": _NEEDS_A_RUN,
    "hf_tlcv.execution.run_on_ray": _NEEDS_A_RUN,
    "hf_tlcv.fold_job": _NEEDS_A_RUN,
    "hf_tlcv.pooling": _NEEDS_A_MODEL,
    "hf_tlcv.studies.report.StudyReport": _NEEDS_A_RUN,
    "hf_tlcv.studies.report.Verdict.block": _NEEDS_A_RUN,
    "hf_tlcv.results.CVResults": _NEEDS_A_RUN,
    "hf_tlcv.results.CVResults.push_to_hub": "pushes to the Hugging Face Hub (tests/test_hub.py uses a local Hub)",
    "hf_tlcv.search.run": _NEEDS_A_RUN,
    "hf_tlcv.search.run.default_hp_space": _NEEDS_A_RUN,
    "hf_tlcv.search.report.SearchReport.card_section": _NEEDS_A_RUN,
    "hf_tlcv.sources.hub_errors": "reaches the Hugging Face Hub",
    "hf_tlcv.studies.study.TransferStudy": _NEEDS_A_MODEL,
    "hf_tlcv.studies.study.degenerate_predictions": _NEEDS_A_RUN,
    "hf_tlcv.trainer.KFoldTrainer": _NEEDS_A_MODEL,
    "hf_tlcv.trainer.KFoldTrainer.derive": _NEEDS_A_MODEL,
    "hf_tlcv.trainer.KFoldTrainer.hyperparameter_search": _NEEDS_A_RUN,
    "hf_tlcv.upload": _NEEDS_A_FILE,
    "hf_tlcv.upload.open_image": _NEEDS_A_FILE,
    "hf_tlcv.validation": _NEEDS_A_FILE,
}


def pytest_collection_modifyitems(config, items):
    from _pytest.doctest import DoctestItem

    for item in items:
        if isinstance(item, DoctestItem) and item.name in NOT_DOCTESTED:
            item.add_marker(pytest.mark.skip(reason=f"docstring example not executed: {NOT_DOCTESTED[item.name]}"))
