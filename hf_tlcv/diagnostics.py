"""What a run found out about its own rows: the one field (`CVResults.diagnostics`) that the interval code and the
dependence checks share.

`diagnostics` is a plain dict, saved in `cv_results.json` under `"diagnostics"` and read back by `CVResults.load`.
Its keys, each optional:

- `"dependence"`: written by the dependence checks. `{"source": "folds" | "detected", "kind": "group" | "time" |
  "space", "statistic": name, "value": float, "p_value": float, "detail": str}`. When present and its `"source"` is
  `"folds"`, or `"detected"` with a significant p-value, the rows are not independent.
- `"instability"`: written by the interval code when it measures how much the fold models disagree.
- `"interval"`: written by the interval code: the method the summary used and, when it fell back, why.

[`rows_dependence`] is the single question the interval code asks: may the rows be treated as independent?
"""

from __future__ import annotations

# Fold strategies whose evaluation rows are dependent by design: rows of one group, one stretch of time or one block
# of space go to the same fold, so a per-row variance would treat correlated rows as independent evidence.
DEPENDENT_FOLD_STRATEGIES = {
    "group": "rows of one group are evaluated together",
    "stratified_group": "rows of one group are evaluated together",
    "timeseries": "rows are ordered in time",
    "spatial": "rows are blocked in space",
}


def rows_dependence(config: dict | None, diagnostics: dict | None) -> str | None:
    """Why the rows of a run cannot be treated as independent (one short clause), or `None` when they can.

    Example:
    ```python
    >>> rows_dependence({"fold_strategy": "timeseries"}, {})
    'rows are ordered in time'
    >>> rows_dependence({"fold_strategy": "stratified"}, {}) is None
    True
    >>> rows_dependence({"fold_strategy": "kfold"}, {"dependence": {"source": "detected", "kind": "space",
    ...                  "p_value": 0.001, "detail": "out-of-fold errors are autocorrelated in space"}})
    'out-of-fold errors are autocorrelated in space'

    ```
    """
    strategy = (config or {}).get("fold_strategy")
    if strategy in DEPENDENT_FOLD_STRATEGIES:
        return DEPENDENT_FOLD_STRATEGIES[strategy]
    found = (diagnostics or {}).get("dependence")
    if not found:
        return None
    if found.get("source") == "folds":
        return found.get("detail") or f"rows are dependent ({found.get('kind')})"
    p_value = found.get("p_value")
    if found.get("source") == "detected" and p_value is not None and p_value < SIGNIFICANCE:
        return found.get("detail") or f"dependence detected in {found.get('kind')}"
    return None


SIGNIFICANCE = 0.05  # p-value under which a detected dependence counts
