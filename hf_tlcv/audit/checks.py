"""Audit the data with the cross-validation's own predictions: label errors, near-duplicates leaking across folds,
outliers.

Cross-validation leaves behind what data-quality tools need and rarely get honestly: an out-of-sample predicted
probability vector for every row (`CVResults.oof_predictions`). With the pretrained embedding of every row (one
forward pass of the backbone, or the frozen-feature cache of a linear probe), cleanlab's `Datalab` finds

- **label issues**: rows whose given label the out-of-fold model disbelieves (confident learning), ranked by label
  quality (the out-of-fold probability of the given label);
- **near-duplicates**: rows whose embeddings are much closer than typical neighbours are
  (distance < `near_duplicate_threshold` x the median nearest-neighbour distance);
- **outliers**: rows far from all others in embedding space;
- and its dataset-level summary (one score per issue type, label health per class).

What cross-validation adds on top is **leakage**: a near-duplicate pair with one row in a fold's training part and
the other in its eval part lets the fold model "remember" the eval row, which inflates the estimate. [`audit`]
counts, per fold, the eval rows with a near-duplicate in that fold's training part, lists the pairs that straddle
folds, and proposes a group column (connected components of near-duplicates, joined with the run's own groups) that
[`cross_validate_grouped`] uses to run the cross-validation again, grouped, and [`compare_grouped`] sets the two
estimates side by side with a corrected paired test on the same rows.

The audit trains nothing: it reads the run's out-of-fold predictions and folds, plus one embedding pass when no
embeddings are given.

Example:
```python
>>> from hf_tlcv import CVResults
>>> from hf_tlcv.audit import audit
>>> report = audit(CVResults.load("outputs/vit_kfold"), dataset)  # dataset: the rows the folds were cut from
>>> report.label_issues.head()  # row, given / predicted label, their probabilities, label quality
>>> report.fold_leakage         # per fold: eval rows with a near-duplicate in the training part
>>> report.save("outputs/vit_kfold")  # audit.json, audit/issues.parquet, audit/label_issues.png
>>> print(report.to_markdown())

```
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
from transformers.utils import logging

from ..run_dir import (AUDIT_DIR, AUDIT_FILE, AUDIT_MARKDOWN, CARD_FILE, RESULTS_FILE, atomic_path,
                      write_json_atomic)
from ..utils import timed

if TYPE_CHECKING:  # heavy imports stay inside the functions that need them
    import datasets
    import torch

    from ..results import CVResults
    from ..trainer import KFoldTrainer

logger = logging.get_logger(__name__)

ISSUES_FILE = "issues.parquet"
GALLERY_FILE = "label_issues.png"
PAIRS_FILE = "duplicate_pairs.png"
DEFAULT_ISSUE_TYPES = ("label", "near_duplicate", "outlier")
# cleanlab's own default: a pair is a near-duplicate when its distance is below this fraction of the median
# nearest-neighbour distance of the dataset.
DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.13
AUDIT_GROUP_COLUMN = "audit_group"

__all__ = [
    "AUDIT_FILE",
    "AuditReport",
    "audit_run",
    "check_available",
    "GroupedComparison",
    "audit",
    "compare_grouped",
    "compute_embeddings",
    "cross_validate_grouped",
    "embeddings_from_feature_cache",
    "fold_leakage",
    "leaked_evaluations",
    "near_duplicate_groups",
    "oof_probabilities",
    "pool_features",
    "read_audit",
    "straddling_pairs",
]


# ---- out-of-fold probabilities ---------------------------------------------------------------------------------
def oof_probabilities(oof: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One out-of-fold probability vector per evaluated row: the mean over repeats.

    Args:
        oof: `CVResults.oof_predictions` (`row`, `repeat`, `label`, `prob_0`, `prob_1`, ...).

    Returns:
        `(rows, labels, probs)`: the evaluated dataset rows in increasing order, their labels, and their
        probabilities averaged over the repeats that evaluated them (each repeat evaluates a row once; with
        `fold_strategy="timeseries"` the first block is never evaluated and is left out).

    Example:
    ```python
    >>> oof = pd.DataFrame({"row": [1, 0, 1, 0], "repeat": [0, 0, 1, 1], "label": [1, 0, 1, 0],
    ...                     "prob_0": [0.2, 0.9, 0.4, 0.7], "prob_1": [0.8, 0.1, 0.6, 0.3]})
    >>> rows, labels, probs = oof_probabilities(oof)
    >>> rows.tolist(), labels.tolist(), probs.round(2).tolist()
    ([0, 1], [0, 1], [[0.8, 0.2], [0.3, 0.7]])

    ```
    """
    prob_columns = _prob_columns(oof)
    if oof.empty or not prob_columns:
        raise ValueError("The results hold no out-of-fold predictions (prob_<class> columns) to audit; they come "
                         "from KFoldTrainer.cross_validate (oof_predictions.parquet in the run folder).")
    grouped = oof.groupby("row", sort=True)
    labels = grouped["label"].agg(["min", "max"])
    if (labels["min"] != labels["max"]).any():
        bad = int(labels.index[labels["min"] != labels["max"]][0])
        raise ValueError(f"Row {bad} has different labels in different repeats of the out-of-fold predictions: "
                         "the predictions mix runs on different data.")
    probs = grouped[prob_columns].mean().to_numpy(dtype=np.float64)
    return labels.index.to_numpy(dtype=np.int64), labels["min"].to_numpy(dtype=np.int64), probs


def _prob_columns(frame: pd.DataFrame) -> list[str]:
    columns = [c for c in frame.columns if c.startswith("prob_")]
    return sorted(columns, key=lambda c: int(c.removeprefix("prob_")))


# ---- embeddings ----------------------------------------------------------------------------------------------
def pool_features(last_hidden_state: "torch.Tensor | None", *, attention_mask: "torch.Tensor | None" = None,
                  pooler_output: "torch.Tensor | None" = None, text: bool) -> "torch.Tensor":
    """One vector per row from a backbone's output: the rule every embedding in the audit is read by.

    - text: the mean of the token states over the attention mask (how sentence encoders such as all-MiniLM-L6-v2
      are meant to be read, and what their pooling config says), not BERT's `[CLS]` pooler;
    - images: the backbone's pooled output when it has one (EfficientNet, ResNet, ConvNeXt: the features the
      classification head reads), else the spatial mean of a feature map, else the first token (ViT's `[CLS]`,
      which is what `ViTForImageClassification` classifies).

    Args:
        last_hidden_state: `(batch, tokens, hidden)` or `(batch, channels, height, width)`.
        attention_mask: `(batch, tokens)`, for text.
        pooler_output: the backbone's pooled output, when it has one.
        text: whether the rows are token sequences.

    Returns:
        `(batch, hidden)` float tensor.
    """
    if text:
        if last_hidden_state is None or last_hidden_state.dim() != 3:
            raise ValueError("Text embeddings are pooled from token states of shape (batch, tokens, hidden).")
        if attention_mask is None:
            return last_hidden_state.mean(dim=1)
        mask = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)
        return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if pooler_output is not None:
        return pooler_output.flatten(1)
    if last_hidden_state is None:
        raise ValueError("The backbone returned neither a pooled output nor hidden states to pool.")
    if last_hidden_state.dim() == 4:
        return last_hidden_state.mean(dim=(2, 3))
    if last_hidden_state.dim() == 3:
        return last_hidden_state[:, 0]
    return last_hidden_state.flatten(1)


def _backbone(model):
    """The pretrained backbone of a classifier (`PreTrainedModel.base_model`; a PEFT wrapper is looked through)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, "base_model", model)


def _rows_batch(dataset: "datasets.Dataset", start: int, stop: int, input_names: Sequence[str]) -> dict:
    """Rows `start:stop` of a preprocessed dataset as model-input tensors (token rows padded with mask 0)."""
    import torch

    rows = dataset.with_format("numpy")[start:stop]
    batch = {}
    for name in input_names:
        if name not in rows:
            continue
        values = rows[name]
        if isinstance(values, np.ndarray) and values.dtype != object:
            batch[name] = torch.from_numpy(np.ascontiguousarray(values))
            continue
        # Ragged: token sequences of different lengths. Padding with 0 under a zero attention mask changes no
        # other token's state in an encoder, and mean pooling skips it.
        values = [np.asarray(v) for v in values]
        if values[0].ndim != 1:
            raise ValueError(f"Column {name!r} holds arrays of different shapes; give the images one size with "
                             "image_size so they can be batched.")
        width = max(len(v) for v in values)
        padded = np.zeros((len(values), width), dtype=np.int64)
        for i, v in enumerate(values):
            padded[i, : len(v)] = v
        batch[name] = torch.from_numpy(padded)
    if "input_ids" in batch and "attention_mask" not in batch:
        lengths = [len(v) for v in rows["input_ids"]]
        batch["attention_mask"] = torch.as_tensor(
            [[1] * n + [0] * (batch["input_ids"].shape[1] - n) for n in lengths], dtype=torch.long)
    return batch


def compute_embeddings(model, dataset: "datasets.Dataset", processing_class=None, *, label_column: str = "label",
                       image_column: str | None = None, text_column: str | None = None,
                       image_size: int | None = None, max_length: int | None = None, batch_size: int = 64,
                       device: str | None = None, progress: bool = False) -> np.ndarray:
    """The pretrained embedding of every row: one forward pass of the backbone, in eval mode, without gradients.

    The rows go through the same preprocessing as the cross-validation (`hf_tlcv.data.preprocess` with the run's
    `image_size` / `max_length` and the model's processor), and the backbone's output is pooled by
    [`pool_features`].

    Args:
        model: a Hub id, local folder or `builtin:` name (loaded with its processor), or a built classifier or
            backbone (`PreTrainedModel`); a classifier's head is not used.
        dataset: the rows, raw (image / text column) or already preprocessed (`pixel_values` / `input_ids`).
        processing_class: the image processor or tokenizer; loaded with the model when `model` is a name.
        label_column, image_column, text_column, image_size, max_length: as in [`KFoldConfig`].
        batch_size: rows per forward pass.
        device: where the pass runs (default: CUDA when available, else CPU).
        progress: show a progress bar over the rows (cleared when the pass ends).

    Returns:
        `float32` array of shape `(len(dataset), hidden)`, in dataset row order.

    Example:
    ```python
    >>> emb = compute_embeddings("builtin:efficientnet-lite0", load_dataset("builtin:digits"), image_size=64)
    >>> emb.shape
    (1797, 1280)

    ```
    """
    import torch

    from ..data import label_names, num_labels, preprocess
    from ..modeling import load_classifier, load_processor

    from tqdm.auto import tqdm

    if isinstance(model, str):
        name = model
        if processing_class is None:
            processing_class = load_processor(model)
        # Only the backbone is read: the head this builds is never used, so "gets a new classification head" is not
        # said (new_head=False).
        model = load_classifier(model, label_names(dataset, label_column), num_labels(dataset, label_column),
                                new_head=False)
    else:
        name = type(model).__name__
    backbone = _backbone(model)
    rows = preprocess(dataset, processing_class, label_column=label_column, image_column=image_column,
                      text_column=text_column, image_size=image_size, max_length=max_length,
                      desc="Audit: preprocessing the rows to embed")
    text = "input_ids" in rows.column_names
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    accepted = set(inspect.signature(backbone.forward).parameters)
    input_names = [n for n in ("pixel_values", "input_ids", "attention_mask", "token_type_ids") if n in accepted]
    was_training, original_device = backbone.training, next(backbone.parameters()).device
    backbone.eval().to(device)
    out = []
    # leave=False: the bar is gone when the pass ends, as the cache's bar is, so the console keeps one display.
    bar = tqdm(total=len(rows), desc=f"Audit: embedding the rows ({name})", unit="row", disable=not progress,
               leave=False)
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = _rows_batch(rows, start, min(start + batch_size, len(rows)), input_names)
                batch = {k: v.to(device) for k, v in batch.items()}
                output = backbone(**batch)
                pooled = pool_features(getattr(output, "last_hidden_state", None),
                                       attention_mask=batch.get("attention_mask"),
                                       pooler_output=getattr(output, "pooler_output", None), text=text)
                out.append(pooled.to("cpu", torch.float32).numpy())
                bar.update(len(pooled))
    finally:
        bar.close()
        backbone.train(was_training).to(original_device)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def embeddings_from_feature_cache(cache) -> np.ndarray | None:
    """The audit's embeddings read from a linear probe's frozen-feature cache (`hf_tlcv.cache.FeatureCache`),
    without a forward pass; `None` when the cache does not hold them.

    A linear probe's cache holds, per row and in the dataset's row order, the backbone output its head reads
    (`cache.feature`): the pooled output (`"pooler"`), the first token (`"cls"`) or the token states (`"sequence"`).
    For images these are what [`pool_features`] reads (a sequence or feature map is pooled by it). For text the
    audit's embedding is the mean of the token states under the attention mask: a cache holds exactly that when its
    head reads a mean-pooling [`hf_tlcv.pooling.TokenPooler`] (`cache.pooling == ["mean"]`, e.g. all-MiniLM-L6-v2
    read as its folder declares). BERT's own `[CLS]` pooler (a trained projection, not the sentence embedding),
    another pooling mode, or token states padded per batch without their mask give `None`, as does a `"freeze"`
    cache (activations of the bottom blocks only).

    Args:
        cache: a built `FeatureCache` (`plan`, `feature`, `pooling`, `dataset` in the order of the dataset's rows).
    """
    import torch

    plan, table = cache.plan, cache.dataset
    if plan.kind != "probe":
        return None
    if plan.text and (cache.feature != "pooler" or getattr(cache, "pooling", None) != ["mean"]):
        return None
    values = np.asarray(table.with_format("numpy")[plan.input_column], dtype=np.float32)
    if not plan.text and cache.feature == "sequence" and values.ndim >= 3:
        return pool_features(torch.from_numpy(values), text=False).numpy()
    return values.reshape(len(values), -1)


# ---- near-duplicates and folds -------------------------------------------------------------------------------
def near_duplicate_groups(pairs: np.ndarray, n_rows: int, base_groups: Sequence | None = None) -> np.ndarray:
    """A group column that joins near-duplicates: the connected components of the near-duplicate graph.

    Rows linked by a chain of near-duplicate pairs share a group; with `base_groups` (the run's own group column),
    rows that already shared a group stay together too. Rows in no pair get a group of their own. Groups are
    numbered 0, 1, ... in order of their first row.

    Args:
        pairs: `(n_pairs, 2)` dataset row indices.
        n_rows: rows in the dataset.
        base_groups: an existing group value per row (any hashable values), joined with the pairs.

    Example:
    ```python
    >>> near_duplicate_groups(np.array([[0, 3], [3, 4]]), 6).tolist()
    [0, 1, 2, 0, 0, 3]

    ```
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n_rows):
        raise ValueError(f"near-duplicate pairs refer to rows outside 0..{n_rows - 1}.")
    edges = [pairs]
    if base_groups is not None:
        if len(base_groups) != n_rows:
            raise ValueError(f"base_groups has {len(base_groups)} values for {n_rows} rows.")
        codes = pd.factorize(pd.Series(list(base_groups)))[0]
        leader = pd.Series(np.arange(n_rows)).groupby(codes).transform("min").to_numpy()
        edges.append(np.stack([np.arange(n_rows), leader], axis=1))
    edges = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_rows, n_rows))
    _, components = connected_components(graph, directed=False)
    # renumber in order of first appearance, so the ids do not depend on scipy's numbering
    return pd.factorize(components)[0].astype(np.int64)


def _fold_masks(fold, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    is_eval, is_train = np.zeros(n_rows, bool), np.zeros(n_rows, bool)
    is_eval[fold.eval_indices] = True
    is_train[fold.train_indices] = True
    return is_eval, is_train


def leaked_evaluations(folds: Sequence, pairs: np.ndarray, n_rows: int) -> pd.DataFrame:
    """The evaluations of a row that has a near-duplicate in the same fold's training part.

    Args:
        folds: the run's folds (`hf_tlcv.folds.Fold`: `repeat`, `fold`, `train_indices`, `eval_indices`).
        pairs: `(n_pairs, 2)` near-duplicate dataset rows (either order).
        n_rows: rows in the dataset.

    Returns:
        One row per leaked evaluation: `repeat`, `fold`, `row`.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    a = np.concatenate([pairs[:, 0], pairs[:, 1]])
    b = np.concatenate([pairs[:, 1], pairs[:, 0]])
    frames = []
    for fold in folds:
        is_eval, is_train = _fold_masks(fold, n_rows)
        leaked = np.unique(a[is_eval[a] & is_train[b]])
        frames.append(pd.DataFrame({"repeat": np.full(len(leaked), fold.repeat, dtype=np.int64),
                                    "fold": np.full(len(leaked), fold.fold, dtype=np.int64), "row": leaked}))
    columns = ["repeat", "fold", "row"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def fold_leakage(folds: Sequence, pairs: np.ndarray, n_rows: int) -> pd.DataFrame:
    """Per fold, how many eval rows have a near-duplicate in that fold's training part.

    Args:
        folds, pairs, n_rows: as in [`leaked_evaluations`].

    Returns:
        One row per fold: `repeat`, `fold`, `n_eval`, `n_leaked` (eval rows with a near-duplicate among the
        fold's training rows) and `share` (`n_leaked / n_eval`).
    """
    return _leakage_table(folds, leaked_evaluations(folds, pairs, n_rows))


def _leakage_table(folds: Sequence, leaked: pd.DataFrame) -> pd.DataFrame:
    counts = leaked.groupby(["repeat", "fold"]).size()
    records = []
    for fold in folds:
        n_eval, n_leaked = len(fold.eval_indices), int(counts.get((fold.repeat, fold.fold), 0))
        records.append({"repeat": fold.repeat, "fold": fold.fold, "n_eval": n_eval, "n_leaked": n_leaked,
                        "share": n_leaked / n_eval if n_eval else 0.0})
    return pd.DataFrame(records, columns=["repeat", "fold", "n_eval", "n_leaked", "share"])


def straddling_pairs(folds: Sequence, pairs: np.ndarray, n_rows: int) -> pd.DataFrame:
    """The near-duplicate pairs split between a fold's training part and its eval part, in at least one fold.

    Returns:
        One row per such pair: `row_a`, `row_b`, `n_folds` (folds in which one row trains while the other is
        evaluated), `fold_a`, `fold_b` (the first repeat's eval fold of each row; -1 when never evaluated).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    counts = np.zeros(len(pairs), dtype=np.int64)
    first_fold = np.full(n_rows, -1, dtype=np.int64)
    first_repeat = min((f.repeat for f in folds), default=0)
    for fold in folds:
        is_eval, is_train = _fold_masks(fold, n_rows)
        a, b = pairs[:, 0], pairs[:, 1]
        counts += (is_eval[a] & is_train[b]) | (is_eval[b] & is_train[a])
        if fold.repeat == first_repeat:
            first_fold[fold.eval_indices] = fold.fold
    keep = counts > 0
    return pd.DataFrame({"row_a": pairs[keep, 0], "row_b": pairs[keep, 1], "n_folds": counts[keep],
                         "fold_a": first_fold[pairs[keep, 0]], "fold_b": first_fold[pairs[keep, 1]]})


def _folds_of(results: "CVResults", n_rows: int) -> list:
    """The run's folds: `folds.json` in its folder, else rebuilt from the out-of-fold rows (eval part) and their
    complement (training part), which is what every strategy but `timeseries` trains on."""
    from ..folds import Fold, load_folds

    if results.directory is not None and (Path(results.directory) / "folds.json").exists():
        return load_folds(Path(results.directory) / "folds.json")[0]
    if results.config.get("resolved_fold_strategy", results.config.get("fold_strategy")) == "timeseries":
        raise ValueError("A timeseries run trains on a prefix, not on the complement of the eval rows: pass "
                         "folds=load_folds(output_dir/'folds.json')[0] or results loaded from the run folder.")
    everything = np.arange(n_rows)
    return [Fold(repeat=f.repeat, fold=f.fold, eval_indices=f.predictions["row"].to_numpy(),
                 train_indices=np.setdiff1d(everything, f.predictions["row"].to_numpy()))
            for f in results.folds if f.predictions is not None]


# ---- the report ------------------------------------------------------------------------------------------------
@dataclass
class AuditReport:
    """What [`audit`] found.

    Attributes:
        issues: one row per audited dataset row: `row`, `label`, `prediction` (argmax of the out-of-fold
            probabilities averaged over repeats), `prob_label`, `prob_prediction`, `label_score` (label quality,
            low = suspect), `is_label_issue`, `near_duplicate_score`, `is_near_duplicate_issue`, `outlier_score`,
            `is_outlier_issue` (the columns of the issue types that ran), and `group` (the proposed group).
        issue_summary: cleanlab's dataset-level summary: `issue_type`, `score` (0-1, higher = cleaner; for `label`
            the overall label health), `num_issues`.
        class_label_quality: per class: `class`, `label_issues`, `label_noise`, `label_quality` (cleanlab's
            `classes_by_label_quality`).
        near_duplicate_pairs: `row_a`, `row_b`, `distance` (in the metric cleanlab used, `metric`).
        fold_leakage: per fold, eval rows with a near-duplicate in the training part (see [`fold_leakage`]).
        leaked: every such evaluation: `repeat`, `fold`, `row` (see [`leaked_evaluations`]).
        straddling_pairs: near-duplicate pairs split between train and eval in some fold, with their labels.
        groups: the proposed group per dataset row (see [`near_duplicate_groups`]), for [`cross_validate_grouped`].
        label_names: class names. n_rows: rows in the dataset. n_repeats: repeats the probabilities average over.
        embeddings_from: where the embeddings came from (`"given"`, a model name, or `"feature cache"`).
        metric, near_duplicate_threshold: how near-duplicates were decided.
        seconds: time spent on the embedding pass and in cleanlab.
        texts: for text datasets, the text of the rows the report shows (row -> text).
        dataset: the audited dataset (not saved), used to draw the gallery.
        embeddings: the embeddings the audit used, one per dataset row (not saved), to audit again without a pass.
        grouped: the grouped cross-validation's comparison with this run, once [`audit_run`] (or the caller) has
            run it; saved and shown with the audit.
    """

    issues: pd.DataFrame
    issue_summary: pd.DataFrame
    class_label_quality: pd.DataFrame
    near_duplicate_pairs: pd.DataFrame
    fold_leakage: pd.DataFrame
    leaked: pd.DataFrame
    straddling_pairs: pd.DataFrame
    groups: np.ndarray
    label_names: list[str]
    n_rows: int
    n_repeats: int
    embeddings_from: str | None
    metric: str | None = None
    near_duplicate_threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD
    seconds: dict[str, float] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    image_column: str | None = None
    dataset: Any = field(default=None, repr=False, compare=False)
    embeddings: np.ndarray | None = field(default=None, repr=False, compare=False)
    grouped: "GroupedComparison | None" = None

    # -- views --
    @property
    def label_issues(self) -> pd.DataFrame:
        """The flagged label issues, lowest label quality first, with class names."""
        if "is_label_issue" not in self.issues:
            return self.issues.iloc[:0]
        flagged = self.issues[self.issues["is_label_issue"]].sort_values(["label_score", "row"])
        names = np.asarray(self.label_names, dtype=object)
        return flagged.assign(given=names[flagged["label"]], predicted=names[flagged["prediction"]]).reset_index(
            drop=True)

    @property
    def outliers(self) -> pd.DataFrame:
        if "is_outlier_issue" not in self.issues:
            return self.issues.iloc[:0]
        return self.issues[self.issues["is_outlier_issue"]].sort_values(["outlier_score", "row"]).reset_index(
            drop=True)

    @property
    def near_duplicate_sets(self) -> list[list[int]]:
        """Sets of rows joined by near-duplicate pairs (connected components with more than one row)."""
        rows = np.unique(self.near_duplicate_pairs[["row_a", "row_b"]].to_numpy())
        sets: dict[int, list[int]] = {}
        for row in rows:
            sets.setdefault(int(self.groups[row]), []).append(int(row))
        return [sorted(s) for s in sets.values() if len(s) > 1]

    @property
    def n_leaked(self) -> int:
        """Eval rows, over all folds, with a near-duplicate in their fold's training part."""
        return int(self.fold_leakage["n_leaked"].sum())

    def count(self, issue_type: str) -> int:
        row = self.issue_summary[self.issue_summary["issue_type"] == issue_type]
        return int(row["num_issues"].iloc[0]) if len(row) else 0

    # -- serialisation --
    def to_dict(self, top_k: int = 50) -> dict:
        """JSON-safe summary: the dataset-level numbers, the `top_k` worst rows per issue, leakage per fold, the
        near-duplicate pairs and sets, and the proposed groups."""
        from ..utils import to_plain

        def records(frame: pd.DataFrame) -> list[dict]:
            return to_plain(frame.to_dict(orient="records"))

        label_issues = self.label_issues.head(top_k)
        leak = self.fold_leakage
        return to_plain({
            "n_rows": self.n_rows,
            "n_audited": len(self.issues),
            "n_repeats": self.n_repeats,
            "embeddings_from": self.embeddings_from,
            "metric": self.metric,
            "near_duplicate_threshold": self.near_duplicate_threshold,
            "label_names": self.label_names,
            "issue_summary": records(self.issue_summary),
            "class_label_quality": records(self.class_label_quality),
            "label_issues": records(label_issues.drop(columns=[c for c in label_issues if c.startswith("is_")])),
            "outliers": records(self.outliers.head(top_k)[["row", "label", "outlier_score"]])
            if "outlier_score" in self.issues else [],
            "leakage": {
                "n_leaked": self.n_leaked,
                "n_eval": int(leak["n_eval"].sum()),
                "share": float(self.n_leaked / max(int(leak["n_eval"].sum()), 1)),
                "per_fold": records(leak),
                "straddling_pairs": records(self.straddling_pairs),
            },
            "near_duplicate_pairs": records(self.near_duplicate_pairs),
            "near_duplicate_sets": self.near_duplicate_sets,
            "proposed_groups": {"column": AUDIT_GROUP_COLUMN, "n_groups": int(len(np.unique(self.groups))),
                                "values": self.groups},
            "grouped_cross_validation": self.grouped.to_dict() if self.grouped is not None else None,
            "seconds": self.seconds,
            "texts": {str(k): v for k, v in self.texts.items()},
        })

    def save(self, directory: str | os.PathLike, *, top_k: int = 50, gallery_size: int = 16) -> dict[str, Path]:
        """Write `audit.json` into `directory` (the run folder) and `audit/`: `issues.parquet` (every audited row),
        `audit.md` (the markdown section) and, for image datasets, `label_issues.png` and `duplicate_pairs.png`.

        When `directory` is a run folder with its README (the run's model card), the README is rendered again with
        the audit's section ([`hf_tlcv.hub.card.audit_section`]); a push of the run then carries it to the Hub
        with `audit.json` and `audit/`.

        The gallery needs the dataset the report was made from; a drawing or rendering problem is logged, never
        raised: the numbers are on disk by then.

        Returns:
            name -> path of what was written.
        """
        directory = Path(directory)
        folder = directory / AUDIT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        with atomic_path(folder / ISSUES_FILE) as tmp:
            self.issues.to_parquet(tmp, index=False)
        written["issues"] = folder / ISSUES_FILE
        if self.image_column is not None and self.dataset is not None:
            from .plots import SAVE_DPI, plot_duplicate_pairs, plot_label_issues

            for name, filename, draw, size in (("gallery", GALLERY_FILE, plot_label_issues, gallery_size),
                                               ("pairs", PAIRS_FILE, plot_duplicate_pairs, gallery_size // 2)):
                try:
                    figure = draw(self, max_items=size)
                    if figure is None:
                        continue
                    with atomic_path(folder / filename) as tmp:
                        figure.savefig(tmp, dpi=SAVE_DPI, format="png")
                    written[name] = folder / filename
                except Exception as exc:  # noqa: BLE001 - a drawing problem must not lose the audit
                    logger.warning(f"Could not draw {filename}: {exc}")
        markdown = self.to_markdown(images={k: f"{AUDIT_DIR}/{p.name}" for k, p in written.items()
                                            if k in ("gallery", "pairs")})
        with atomic_path(folder / AUDIT_MARKDOWN) as tmp:
            Path(tmp).write_text(markdown, encoding="utf-8")
        written["markdown"] = folder / AUDIT_MARKDOWN
        write_json_atomic(directory / AUDIT_FILE, self.to_dict(top_k=top_k), indent=2)  # last: marks a full audit
        written["json"] = directory / AUDIT_FILE
        if (directory / CARD_FILE).exists() and (directory / RESULTS_FILE).exists():
            written.update(_rewrite_card(directory))
        return written

    def to_markdown(self, max_rows: int = 10, images: dict[str, str] | None = None, heading: str = "##") -> str:
        """The audit as a markdown section for the run's README and the Hub model card.

        Args:
            max_rows: rows shown per table.
            images: `{"gallery": path, "pairs": path}` relative to where the markdown is read (what `save` wrote).
            heading: the section's heading level.
        """
        # Class names, the embedding model's name and the rows' texts are users' strings: each goes through
        # escape_markdown (a table cell stays one cell, HTML and links stay text).
        from ..escaping import escape_markdown as escape

        images = images or {}
        sub = heading + "#"
        n_eval = int(self.fold_leakage["n_eval"].sum())
        lines = [f"{heading} Data audit", "",
                 f"cleanlab `Datalab` on the out-of-fold probabilities of this cross-validation"
                 f"{f' (mean over {self.n_repeats} repeats)' if self.n_repeats > 1 else ''}"
                 + (f" and the pretrained embeddings ({escape(self.embeddings_from)})"
                    if self.embeddings_from else "")
                 + f": {len(self.issues)} rows audited. No model was trained for it.", "",
                 "| issue | rows flagged | share | score (1 = clean) |", "|---|---:|---:|---:|"]
        for rec in self.issue_summary.itertuples():
            lines.append(f"| {escape(rec.issue_type)} | {rec.num_issues} | "
                         f"{rec.num_issues / max(len(self.issues), 1):.1%} | {rec.score:.3f} |")
        issues = self.label_issues
        if len(issues):
            lines += ["", f"{sub} Suspected label errors", "",
                      f"{len(issues)} rows whose given label the out-of-fold model disbelieves (confident learning), "
                      "lowest label quality first:", ""]
            text = bool(self.texts)
            lines += ["| row | given | predicted | p(predicted) | p(given) |" + (" text |" if text else ""),
                      "|---:|---|---|---:|---:|" + ("---|" if text else "")]
            for rec in issues.head(max_rows).itertuples():
                cell = f" {_md_text(self.texts.get(int(rec.row), ''))} |" if text else ""
                lines.append(f"| {rec.row} | {escape(rec.given)} | {escape(rec.predicted)} | "
                             f"{rec.prob_prediction:.3f} | {rec.prob_label:.3f} |{cell}")
            if "gallery" in images:
                lines += ["", f"![suspected label errors]({images['gallery']})"]
        lines += ["", f"{sub} Near-duplicates across folds (leakage)", "",
                  f"{len(self.near_duplicate_pairs)} near-duplicate pairs ({escape(self.metric or 'embedding')} "
                  "distance below "
                  f"{self.near_duplicate_threshold:g} x the median nearest-neighbour distance) in "
                  f"{len(self.near_duplicate_sets)} sets. {self.n_leaked} of {n_eval} evaluations "
                  f"({self.n_leaked / max(n_eval, 1):.1%}) were of a row with a near-duplicate in its fold's "
                  "training part:", "",
                  "| repeat | fold | eval rows | with a near-duplicate in train | share |",
                  "|---:|---:|---:|---:|---:|"]
        for rec in self.fold_leakage.itertuples():
            lines.append(f"| {rec.repeat} | {rec.fold} | {rec.n_eval} | {rec.n_leaked} | {rec.share:.1%} |")
        straddling = self.straddling_pairs
        if len(straddling):
            names = self.label_names
            lines += ["", f"Pairs split between training and evaluation ({len(straddling)}; closest first):", "",
                      "| row a | row b | distance | fold a | fold b | label a | label b |",
                      "|---:|---:|---:|---:|---:|---|---|"]
            for rec in straddling.head(max_rows).itertuples():
                lines.append(f"| {rec.row_a} | {rec.row_b} | {rec.distance:.4f} | {rec.fold_a} | {rec.fold_b} | "
                             f"{escape(names[rec.label_a])} | {escape(names[rec.label_b])} |")
            if "pairs" in images:
                lines += ["", f"![near-duplicates split across folds]({images['pairs']})"]
            n_groups = len(np.unique(self.groups))
            lines += ["", f"Proposed group column `{AUDIT_GROUP_COLUMN}`: {n_groups} groups for {self.n_rows} rows "
                      "(near-duplicates joined). `hf_tlcv.audit.cross_validate_grouped` runs the cross-validation "
                      "again with it and compares the two estimates."]
        if self.grouped is not None:
            lines += ["", f"{sub} Grouped by near-duplicates", "", self.grouped.to_markdown()]
        return "\n".join(lines) + "\n"


def _rewrite_card(directory: Path) -> dict[str, Path]:
    """Render the run folder's README (its model card) again, now with the audit's section. A rendering problem is
    logged, never raised: the audit is on disk by then."""
    from ..hub.card import write_model_card
    from ..results import CVResults

    try:
        return {"card": write_model_card(CVResults.load(directory), directory)}
    except Exception as exc:  # noqa: BLE001
        logger.warning(f"Could not add the audit to {directory / CARD_FILE}: {exc}")
        return {}


def _md_text(text: str, width: int = 90) -> str:
    """A row's text as one table cell: whitespace runs as one space, shortened to `width` characters, escaped."""
    from ..escaping import escape_markdown

    text = " ".join(str(text).split())
    return escape_markdown(text if len(text) <= width else text[: width - 1] + "…")


# ---- the audit -----------------------------------------------------------------------------------------------
def check_available() -> None:
    """Raise a clear `ImportError` when cleanlab is missing: call it before training, so that `--audit` never fails
    after an hour of cross-validation."""
    import importlib.util

    if importlib.util.find_spec("cleanlab") is None:
        raise ImportError('The data audit needs cleanlab: pip install "hf_tlcv[audit]" (cleanlab==2.9.0).')


def _load_results(results) -> "CVResults":
    from ..results import CVResults

    if isinstance(results, CVResults):
        return results
    if isinstance(results, (str, os.PathLike)):
        return CVResults.load(results)
    raise TypeError(f"results must be a CVResults or the folder of a finished run, got {type(results).__name__}.")


def _check_dataset(results: "CVResults", dataset, label_column: str, rows: np.ndarray,
                   labels: np.ndarray) -> "datasets.Dataset":
    """The dataset must be the one the folds were cut from: same number of rows, same label on every row. String
    labels are encoded as `KFoldTrainer` encodes them (`hf_tlcv.validation`); the encoded dataset is returned."""
    import datasets

    from ..data import recorded_for
    from ..validation import validate_dataset

    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"dataset must be the datasets.Dataset the folds were cut from, got {type(dataset).__name__}.")
    expected = results.metadata.get("n_rows")
    if expected is not None and expected != len(dataset):
        raise ValueError(f"The run's folds were cut from {expected} rows but the dataset has {len(dataset)}: pass the "
                         "same dataset (after the same max_samples subset) that was cross-validated.")
    # Checked (and string labels encoded) as KFoldTrainer checks them: hf_tlcv.validation.
    dataset = validate_dataset(dataset, label_column=label_column, inputs="if_present", name="the audited dataset")
    if len(rows) and rows.max() >= len(dataset):
        raise ValueError(f"The out-of-fold predictions refer to row {rows.max()}, but the dataset has {len(dataset)} "
                         "rows: pass the dataset that was cross-validated.")
    given = np.asarray(dataset.with_format(None)[label_column], dtype=object)[rows]
    mismatch = np.flatnonzero(given.astype(np.int64) != labels) if len(rows) else []
    if len(mismatch):
        r = int(rows[mismatch[0]])
        raise ValueError(f"{len(mismatch)} rows have another label in the dataset than in the run (row {r}: "
                         f"{given[mismatch[0]]} vs {labels[mismatch[0]]}): the dataset is not the one the folds "
                         "were cut from (another subset, order or labelling).")
    fingerprint = results.metadata.get("data_fingerprint")
    # The run records the content fingerprint of its (label-encoded) rows: hf_tlcv.data.describe_dataset.
    if fingerprint and not recorded_for(dataset, fingerprint):
        logger.info("The dataset's fingerprint differs from the run's (it was loaded or built anew); its rows and "
                    "labels match the run's, so the audit goes on.")
    return dataset


def _pair_distances(graph, pairs: np.ndarray) -> np.ndarray:
    if not len(pairs):
        return np.zeros(0)
    a, b = pairs[:, 0], pairs[:, 1]
    # cleanlab stores each pair in the row of the example that found it; an exact duplicate is an explicit 0.
    return np.maximum(np.asarray(graph[a, b]).ravel(), np.asarray(graph[b, a]).ravel())


def audit(results, dataset: "datasets.Dataset", embeddings: np.ndarray | None = None, *, model=None,
          processing_class=None, folds: Sequence | None = None, issue_types: dict | Sequence[str] | None = None,
          near_duplicate_threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD, batch_size: int = 64,
          device: str | None = None, embeddings_from: str = "given", progress: bool | None = None) -> AuditReport:
    """Audit the cross-validated dataset with cleanlab's `Datalab`, from the run's out-of-fold probabilities and the
    pretrained embeddings; count the near-duplicates that leak across its folds.

    Args:
        results: the run's [`CVResults`], or its folder.
        dataset: the dataset the folds were cut from (same rows, same order; checked against the run's labels).
        embeddings: `(len(dataset), d)` embeddings of every row. When `None`, one forward pass of the pretrained
            backbone computes them ([`compute_embeddings`], with the run's preprocessing); pass
            `embeddings_from_feature_cache(cache)` to reuse a linear probe's cache.
        model: the model to embed with (default: the run's `model_name_or_path`); needed when the run was given a
            built model and no embeddings are passed.
        processing_class: its image processor or tokenizer (loaded with the model when it is a name).
        folds: the run's folds (default: `folds.json` in the run folder, else rebuilt from the predictions).
        issue_types: the cleanlab issue types to look for (names, or `Datalab.find_issues`' dict of settings);
            default `label`, `near_duplicate`, `outlier`. Without embeddings only `label` can run.
        near_duplicate_threshold: a pair is a near-duplicate when its embedding distance is below this fraction of
            the median nearest-neighbour distance (cleanlab's rule and default).
        batch_size, device: of the embedding pass.
        embeddings_from: where the given `embeddings` came from, as the report says it (e.g. `"feature cache"`);
            unused when the audit computes them (the report then names the model).
        progress: show a progress bar over the embedding pass (default: unless the run was made with
            `disable_tqdm`).

    Returns:
        [`AuditReport`]; `report.save(output_dir)` writes `audit.json` and the gallery beside the run's results.

    Raises:
        ImportError: cleanlab is not installed (`pip install "hf_tlcv[audit]"`).
        ValueError: the dataset is not the one the run was made on, or no model is known to embed with.
    """
    check_available()
    from ..data import label_names as dataset_label_names

    results = _load_results(results)
    config = results.config
    label_column = config.get("label_column", "label")
    oof = results.oof_predictions
    rows, labels, probs = oof_probabilities(oof)
    dataset = _check_dataset(results, dataset, label_column, rows, labels)
    if near_duplicate_threshold <= 0:
        raise ValueError(f"near_duplicate_threshold must be > 0 (got {near_duplicate_threshold}); cleanlab's "
                         f"default is {DEFAULT_NEAR_DUPLICATE_THRESHOLD}.")
    names = dataset_label_names(dataset, label_column) or results.label_names or [
        str(i) for i in range(probs.shape[1])]
    if len(names) != probs.shape[1]:
        raise ValueError(f"The dataset has {len(names)} classes but the predictions {probs.shape[1]}.")
    lab = _datalab(labels, names)
    settings = _issue_settings(issue_types, near_duplicate_threshold, lab.list_possible_issue_types())
    folds = list(folds) if folds is not None else _folds_of(results, len(dataset))

    seconds = {}
    if embeddings is None and any(k != "label" for k in settings):
        model = model if model is not None else config.get("model_name_or_path")
        if model is None:
            raise ValueError("The run was given a built model, so the audit does not know which backbone to embed "
                             "the rows with: pass model= (a name or the pretrained model) or embeddings=, or "
                             "issue_types=['label'] for label issues only.")
        with timed(seconds, "embeddings"):
            embeddings = compute_embeddings(
                model, dataset, processing_class, label_column=label_column, image_column=config.get("image_column"),
                text_column=config.get("text_column"), image_size=config.get("image_size"),
                max_length=config.get("max_length"), batch_size=batch_size, device=device,
                progress=not config.get("disable_tqdm", False) if progress is None else progress)
        embeddings_from = model if isinstance(model, str) else type(model).__name__
    elif embeddings is not None:
        embeddings = _checked_embeddings(embeddings, len(dataset))
    else:
        embeddings_from = None

    with timed(seconds, "cleanlab"):
        lab.find_issues(pred_probs=probs, features=None if embeddings is None else embeddings[rows],
                        issue_types=settings)

    issues = pd.DataFrame({"row": rows, "label": labels, "prediction": probs.argmax(axis=1),
                           "prob_label": probs[np.arange(len(rows)), labels], "prob_prediction": probs.max(axis=1)})
    found = lab.get_issues()
    for column in found.columns:
        issues[column] = found[column].to_numpy()
    pair_frame, metric = _near_duplicate_pairs(lab, rows) if "near_duplicate" in settings else (
        pd.DataFrame({"row_a": [], "row_b": [], "distance": []}).astype({"row_a": "int64", "row_b": "int64"}), None)
    pairs = pair_frame[["row_a", "row_b"]].to_numpy()

    group_column = config.get("group_column")
    base_groups = dataset[group_column] if group_column and group_column in dataset.column_names else None
    groups = near_duplicate_groups(pairs, len(dataset), base_groups)
    issues["group"] = groups[rows]
    leaked = leaked_evaluations(folds, pairs, len(dataset))
    all_labels = np.asarray(dataset.with_format(None)[label_column], dtype=np.int64)
    straddling = straddling_pairs(folds, pairs, len(dataset)).merge(pair_frame, on=["row_a", "row_b"])
    straddling = straddling.sort_values(["distance", "row_a", "row_b"]).reset_index(drop=True)
    straddling["label_a"] = all_labels[straddling["row_a"].to_numpy()]
    straddling["label_b"] = all_labels[straddling["row_b"].to_numpy()]

    report = AuditReport(
        issues=issues,
        issue_summary=lab.get_issue_summary()[["issue_type", "score", "num_issues"]].reset_index(drop=True),
        class_label_quality=_class_label_quality(lab) if "label" in settings else pd.DataFrame(),
        near_duplicate_pairs=pair_frame, fold_leakage=_leakage_table(folds, leaked), leaked=leaked,
        straddling_pairs=straddling, groups=groups, label_names=list(names), n_rows=len(dataset),
        n_repeats=int(oof["repeat"].nunique()), embeddings_from=embeddings_from, metric=metric,
        near_duplicate_threshold=float(settings.get("near_duplicate", {}).get("threshold", near_duplicate_threshold)),
        seconds=seconds, dataset=dataset, embeddings=embeddings)
    _attach_inputs(report, dataset, config)
    return report


def _datalab(labels: np.ndarray, names: Sequence[str]):
    """A `Datalab` over the labels alone (the audit passes probabilities and features, never the raw inputs). The
    `ClassLabel` keeps class `i` at column `i` of the probabilities; plain integers would be renumbered over the
    classes present."""
    import datasets
    from cleanlab import Datalab

    data = datasets.Dataset.from_dict(
        {"label": labels}, features=datasets.Features({"label": datasets.ClassLabel(names=list(names))}))
    return Datalab(data, label_name="label", verbosity=0)


def _checked_embeddings(embeddings, n_rows: int) -> np.ndarray:
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != n_rows:
        raise ValueError(f"embeddings must have shape (len(dataset), d) = ({n_rows}, d), got {embeddings.shape}.")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings hold nan or inf values.")
    return embeddings


def _near_duplicate_pairs(lab, rows: np.ndarray) -> tuple[pd.DataFrame, str | None]:
    """cleanlab's near-duplicate sets as pairs of dataset rows with their distance, closest first."""
    info = lab.get_info("near_duplicate")
    metric = info.get("metric")
    metric = metric if isinstance(metric, str) or metric is None else getattr(metric, "__name__", str(metric))
    local = np.asarray([(i, j) for i, js in enumerate(info["near_duplicate_sets"]) for j in js if i < j],
                       dtype=np.int64).reshape(-1, 2)
    distances = _pair_distances(lab.get_info("statistics")["weighted_knn_graph"], local)
    pairs = rows[local]
    order = np.lexsort((pairs[:, 1], pairs[:, 0], distances))
    return pd.DataFrame({"row_a": pairs[order, 0], "row_b": pairs[order, 1], "distance": distances[order]}), metric


def _class_label_quality(lab) -> pd.DataFrame:
    by_class = lab.get_info("label")["classes_by_label_quality"]
    return pd.DataFrame({"class": by_class["Class Name"].astype(str), "label_issues": by_class["Label Issues"],
                         "label_noise": by_class["Label Noise"], "label_quality": by_class["Label Quality Score"]})


def _attach_inputs(report: AuditReport, dataset, config: dict) -> None:
    """What the report shows of the rows themselves: the image column (for the galleries) or the texts."""
    from ..data import find_column

    if config.get("text_column") is None:
        report.image_column = find_column(dataset, "image", config.get("image_column"))
    if report.image_column is None:
        text_column = find_column(dataset, "text", config.get("text_column"))
        if text_column is not None:
            straddling = report.straddling_pairs
            shown = set(report.label_issues["row"].head(50)) | set(straddling["row_a"].head(50)) | set(
                straddling["row_b"].head(50))
            report.texts = {int(r): dataset[int(r)][text_column] for r in sorted(shown)}


def _issue_settings(issue_types, threshold: float, possible: Sequence[str]) -> dict[str, dict]:
    if issue_types is None:
        issue_types = DEFAULT_ISSUE_TYPES
    if isinstance(issue_types, str):
        issue_types = [issue_types]
    settings = {k: copy.deepcopy(dict(v)) for k, v in issue_types.items()} if isinstance(issue_types, dict) else {
        k: {} for k in issue_types}
    if not settings:
        raise ValueError("issue_types is empty: name at least one, e.g. ['label', 'near_duplicate', 'outlier'].")
    unknown = sorted(set(settings) - set(possible))
    if unknown:
        raise ValueError(f"Unknown issue type(s) {unknown}; cleanlab knows {', '.join(sorted(possible))}.")
    if "near_duplicate" in settings:
        settings["near_duplicate"].setdefault("threshold", threshold)
    if "label" in settings:
        # cleanlab's label search forks a pool of workers by default, which can deadlock in a process that already runs
        # threads (a web server, torch's intra-op threads): seen in the Space. One job unless the caller asks for more.
        clean = settings["label"].setdefault("clean_learning_kwargs", {})
        clean.setdefault("find_label_issues_kwargs", {}).setdefault("n_jobs", 1)
    return settings


# ---- grouped cross-validation against the ungrouped one ------------------------------------------------------
@dataclass
class GroupedComparison:
    """The cross-validation estimate without and with the proposed groups, and the test of their difference.

    Attributes:
        metric: the score compared (`accuracy`).
        ungrouped, grouped: per run, `mean`, `std`, `ci95` (its own corrected interval over its folds) and `pooled`
            (the metric over all its out-of-fold predictions).
        test: `hf_tlcv.stats.corrected_paired_ttest` of ungrouped minus grouped on the same rows (see
            [`compare_grouped`]): `mean_diff` (the inflation), `ci95`, `t`, `df`, `p_value`.
        n_parts: the number of paired scores (the grouped run's folds).
        pairing: how the scores were paired, in words.
    """

    metric: str
    ungrouped: dict[str, Any]
    grouped: dict[str, Any]
    test: dict[str, Any]
    n_parts: int
    pairing: str

    @property
    def inflation(self) -> float:
        return float(self.test["mean_diff"])

    def to_dict(self) -> dict:
        from ..utils import to_plain

        return to_plain(dataclasses.asdict(self))

    def to_markdown(self) -> str:
        def interval(s):
            return f"[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"

        from ..escaping import escape_markdown

        t = self.test
        return "\n".join([
            f"| {escape_markdown(self.metric)} | mean over folds | 95% interval | pooled out-of-fold |",
            "|---|---:|---|---:|",
            f"| ungrouped (as run) | {self.ungrouped['mean']:.4f} | {interval(self.ungrouped)} | "
            f"{self.ungrouped['pooled']:.4f} |",
            f"| grouped by near-duplicates | {self.grouped['mean']:.4f} | {interval(self.grouped)} | "
            f"{self.grouped['pooled']:.4f} |", "",
            f"Inflation (ungrouped - grouped, paired on the same rows over {self.n_parts} parts): "
            f"{t['mean_diff']:+.4f}, 95% interval [{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}], corrected t = "
            f"{t['t']:.2f}, p = {t['p_value']:.3g}.", ""])


def _run_summary(results: "CVResults", metric: str, correct: pd.Series) -> dict[str, Any]:
    summary = results.summary.get(metric)
    if summary is None:
        raise ValueError(f"Metric {metric!r} is not in the results (they have {', '.join(results.summary)}).")
    return {"mean": summary["mean"], "std": summary["std"], "ci95": summary["ci95"], "pooled": float(correct.mean())}


def compare_grouped(ungrouped: "CVResults", grouped: "CVResults", metric: str = "accuracy") -> GroupedComparison:
    """Set the ungrouped estimate beside the grouped one and test their difference, paired on the same rows.

    The two runs cut different folds, so fold `j` of one and fold `j` of the other hold different rows and their
    scores cannot be paired. Both, however, predict every row once per repeat, each from a model that did not
    train on it. The rows are therefore split once, by the grouped run's folds (repeat `r`, fold `j`), and on each
    part both runs are scored with their own repeat-`r` out-of-fold predictions of exactly those rows. The
    difference per part (ungrouped minus grouped) carries no between-row variance, its mean is the inflation, and
    `hf_tlcv.stats.corrected_paired_ttest` tests it with the Nadeau-Bengio correction for the overlap of the
    grouped folds' training sets (`n_train`, `n_eval` of the grouped run). Only accuracy is decomposable over rows
    this way (`metric="accuracy"`).

    Args:
        ungrouped: the run as it was (rows of one near-duplicate set may straddle folds).
        grouped: the same run with the proposed groups (`cross_validate_grouped`), on the same rows.
        metric: `"accuracy"`.
    """
    from ..stats import corrected_paired_ttest

    if metric != "accuracy":
        raise ValueError(f"compare_grouped pairs the runs row by row, which only the accuracy allows (got {metric!r}).")
    a, b = ungrouped.oof_predictions, grouped.oof_predictions
    if a.empty or b.empty:
        raise ValueError("Both runs need out-of-fold predictions.")
    if set(a["row"]) != set(b["row"]):
        raise ValueError("The two runs evaluated different rows: compare runs on the same dataset.")
    repeats = sorted(set(a["repeat"]) & set(b["repeat"]))
    if not repeats:
        raise ValueError("The two runs share no repeat index to pair their predictions by.")
    a_correct = (a["prediction"] == a["label"]).set_axis(pd.MultiIndex.from_frame(a[["repeat", "row"]]))
    b_correct = (b["prediction"] == b["label"]).set_axis(pd.MultiIndex.from_frame(b[["repeat", "row"]]))
    scores_a, scores_b, n_train, n_eval, discordant = [], [], [], [], 0
    for f in grouped.folds:
        if f.repeat not in repeats or f.predictions is None:
            continue
        index = pd.MultiIndex.from_arrays([np.full(len(f.predictions), f.repeat), f.predictions["row"].to_numpy()])
        right_a, right_b = a_correct.loc[index].to_numpy(), b_correct.loc[index].to_numpy()
        scores_a.append(float(right_a.mean()))
        scores_b.append(float(right_b.mean()))
        discordant += int(np.count_nonzero(right_a != right_b))
        n_train.append(f.n_train)
        n_eval.append(f.n_eval)
    # Accuracy lies in [0, 1]: the McNemar floor of the rows on which exactly one run is right (issue 14).
    test = corrected_paired_ttest(scores_a, scores_b, n_train=float(np.mean(n_train)), n_eval=float(np.mean(n_eval)),
                                  bounded=True, n_rows=float(a["row"].nunique()),
                                  n_discordant=discordant / len(repeats))
    pairing = (f"accuracy of each run's out-of-fold predictions on the same rows, the rows split by the grouped run's "
               f"{len(scores_a)} folds (repeats {repeats[0]}..{repeats[-1]}, each run's predictions of that repeat)")
    return GroupedComparison(
        metric=metric,
        ungrouped=_run_summary(ungrouped, metric, a_correct[a_correct.index.get_level_values(0).isin(repeats)]),
        grouped=_run_summary(grouped, metric, b_correct[b_correct.index.get_level_values(0).isin(repeats)]),
        test=test, n_parts=len(scores_a), pairing=pairing)


def cross_validate_grouped(trainer: "KFoldTrainer", groups: Sequence[int], *, baseline: "CVResults | None" = None,
                           output_dir: str | None = None, group_column: str = AUDIT_GROUP_COLUMN,
                           metric: str = "accuracy") -> tuple["CVResults", GroupedComparison]:
    """Run the cross-validation of `trainer` again with the proposed groups and compare it with the ungrouped run.

    The grouped run is `trainer.derive(...)`: the same model, data and settings, except `group_column` (the proposed
    groups, added to the rows as `group_column`), `fold_strategy` (`"stratified_group"` for a classification label
    column, else `"group"`) and `output_dir` (default: `<output_dir>-grouped`). Near-duplicates then never straddle
    train and eval.

    Args:
        trainer: the `KFoldTrainer` of the ungrouped run.
        groups: one group id per row, e.g. `AuditReport.groups`.
        baseline: the ungrouped run's results (default: `trainer.cv_results`, else loaded from its `output_dir`).
        output_dir: where the grouped run goes.
        group_column: the name the groups get in the dataset.
        metric: compared by [`compare_grouped`].

    Returns:
        `(grouped_results, comparison)`.
    """
    from ..results import CVResults

    config, dataset = trainer.cv_args, trainer.raw_dataset
    groups = np.asarray(groups)
    if len(groups) != len(dataset):
        raise ValueError(f"groups has {len(groups)} values for {len(dataset)} rows: pass one group per dataset row "
                         "(AuditReport.groups).")
    if group_column in dataset.column_names:
        raise ValueError(f"The dataset already has a column {group_column!r}; choose another group_column.")
    if baseline is None:
        baseline = trainer.cv_results if trainer.cv_results is not None else CVResults.load(config.output_dir)
    n_groups = len(np.unique(groups))
    if n_groups < config.n_folds:
        raise ValueError(f"{n_groups} groups cannot fill {config.n_folds} folds.")
    grouped_trainer = trainer.derive(
        train_dataset=dataset.add_column(group_column, groups.tolist()), group_column=group_column,
        fold_strategy="stratified_group" if trainer.class_names is not None else "group",
        output_dir=output_dir or f"{str(config.output_dir).rstrip('/')}-grouped")
    grouped = grouped_trainer.cross_validate()
    return grouped, compare_grouped(baseline, grouped, metric)


def read_audit(directory: str | os.PathLike) -> dict | None:
    """The `audit.json` of a run folder, or `None` when the run was not audited (for the card and the Space)."""
    path = Path(directory) / AUDIT_FILE
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def audit_run(trainer: "KFoldTrainer", *, embedding_model=None, regroup: bool = False, save: bool = True,
              **audit_kwargs) -> AuditReport:
    """What a recipe's `--audit` does after the cross-validation of `trainer`: audit its results and rows, save the
    audit beside the results, and with `regroup` cross-validate again grouped by the near-duplicates found and add
    the comparison to the saved audit.

    Args:
        trainer: the `KFoldTrainer` whose `cross_validate()` has run (its results, rows, settings and, when it holds
            the pretrained embeddings, its frozen-feature cache are used).
        embedding_model: the pretrained model to embed with (default: the trainer's `model_name_or_path`); a
            from-scratch run is audited with its pretrained counterpart's embeddings.
        regroup: also run [`cross_validate_grouped`] (into `<output_dir>-grouped`).
        save: write the audit (default: on the main process only).
        audit_kwargs: passed to [`audit`].
    """
    from ..results import CVResults

    config = trainer.cv_args
    results = trainer.cv_results if trainer.cv_results is not None else CVResults.load(config.output_dir)
    if embedding_model is None:
        embedding_model = trainer.model_name_or_path
    feature_cache = trainer.feature_cache
    embeddings = embeddings_from_feature_cache(feature_cache) if feature_cache is not None else None
    if feature_cache is not None and embeddings is None:
        logger.info("The run's frozen-feature cache does not hold the rows' pretrained embeddings (see "
                    "embeddings_from_feature_cache), so the audit embeds them with one forward pass.")
    save = save and trainer.is_world_process_zero()
    report = audit(results, trainer.raw_dataset, model=embedding_model, embeddings=embeddings,
                   embeddings_from="feature cache", **audit_kwargs)
    if save:
        report.save(config.output_dir)
    if regroup:
        if report.straddling_pairs.empty:
            logger.info("No near-duplicate pair straddles the folds: the grouped cross-validation would cut the "
                        "same kind of folds, so it is not run.")
        else:
            _, report.grouped = cross_validate_grouped(trainer, report.groups, baseline=results)
            if save:
                report.save(config.output_dir)
    return report
