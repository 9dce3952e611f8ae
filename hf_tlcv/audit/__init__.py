"""The data audit of a finished run (`CVResults.audit`, a recipe's `--audit`): label issues, near-duplicates leaking
across folds and outliers, from the out-of-fold predictions and pretrained embeddings (cleanlab's Datalab).

- `checks`: [`audit`], [`AuditReport`], and the grouped re-run that measures what the leakage inflated;
- `plots`: the galleries of suspected label issues and duplicate pairs;
- `injection`: known label noise and near-duplicates planted in a dataset, to measure what the audit detects.

A feature on top of the core: it reaches `hf_tlcv` only through the core's public API (docs/concepts.md).
"""

from .checks import (
    AUDIT_FILE,
    AuditReport,
    GroupedComparison,
    audit,
    audit_run,
    check_available,
    compare_grouped,
    compute_embeddings,
    cross_validate_grouped,
    embeddings_from_feature_cache,
    fold_leakage,
    leaked_evaluations,
    near_duplicate_groups,
    oof_probabilities,
    pool_features,
    read_audit,
    straddling_pairs,
)

__all__ = ["AUDIT_FILE", "AuditReport", "GroupedComparison", "audit", "audit_run", "check_available", "compare_grouped",
           "compute_embeddings", "cross_validate_grouped", "embeddings_from_feature_cache", "fold_leakage",
           "leaked_evaluations", "near_duplicate_groups", "oof_probabilities", "pool_features", "read_audit",
           "straddling_pairs"]
