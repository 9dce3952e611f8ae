"""Is a fold overfitting? Pure functions over what a fold recorded: its log history and its train/eval metrics.

Two signs are looked for, each with the epoch it starts at:

- **loss divergence**: the eval loss reaches its minimum at some epoch and then rises by more than
  `loss_rise` (relative) while the training loss keeps falling: the model is fitting its training rows
  at the expense of unseen ones. Needs an eval loss per epoch (`eval_strategy="epoch"`).
- **generalisation gap**: at the end of training the score on the fold's own training rows exceeds the
  score on its eval rows by more than `gap_threshold` (needs `eval_on_train=True`).

Both are heuristics with explicit thresholds, reported with the numbers they were decided on, so a reader can
judge them. They work on a [`FoldResult`] or on the raw pieces (`log_history`, `train_metrics`, `eval_metrics`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["LossCurves", "OverfittingDiagnosis", "detect_overfitting", "diagnose_fold", "loss_curves"]


@dataclass
class LossCurves:
    """Per-epoch losses of one fold, read from a Trainer log history.

    Attributes:
        epochs: the epochs (1-based) with an eval loss or a train loss.
        train_loss: mean training loss logged during each epoch (`nan` when nothing was logged in it).
        eval_loss: eval loss logged at the end of each epoch (`nan` when none).
        eval_metrics: per epoch, the other `eval_*` values logged with the eval loss (e.g. accuracy).
    """

    epochs: list[int]
    train_loss: list[float]
    eval_loss: list[float]
    eval_metrics: list[dict[str, float]] = field(default_factory=list)


def loss_curves(log_history: list[dict]) -> LossCurves:
    """Group a log history into per-epoch train and eval losses.

    Training losses are logged every `logging_steps` with a fractional `epoch`; the ones logged in `(e - 1, e]`
    are averaged into epoch `e`. Eval entries (with `eval_loss`) are placed at `round(epoch)`.

    Example:
    ```python
    >>> curves = loss_curves([{"loss": 1.0, "epoch": 0.5}, {"loss": 0.8, "epoch": 1.0},
    ...                       {"eval_loss": 0.9, "epoch": 1.0}])
    >>> curves.epochs, curves.train_loss, curves.eval_loss
    ([1], [0.9], [0.9])

    ```
    """
    train: dict[int, list[float]] = {}
    evals: dict[int, float] = {}
    extras: dict[int, dict[str, float]] = {}
    for entry in log_history:
        epoch = entry.get("epoch")
        if epoch is None:
            continue
        if "eval_loss" in entry:
            e = max(1, int(round(float(epoch))))
            evals[e] = float(entry["eval_loss"])
            extras[e] = {k.removeprefix("eval_"): float(v) for k, v in entry.items()
                         if k.startswith("eval_") and k != "eval_loss" and isinstance(v, (int, float))
                         and not k.endswith(("_runtime", "_per_second"))}
        elif "loss" in entry and "train_runtime" not in entry:
            e = max(1, math.ceil(float(epoch) - 1e-9))
            train.setdefault(e, []).append(float(entry["loss"]))
    epochs = sorted(set(train) | set(evals))
    return LossCurves(
        epochs=epochs,
        train_loss=[sum(train[e]) / len(train[e]) if e in train else math.nan for e in epochs],
        eval_loss=[evals.get(e, math.nan) for e in epochs],
        eval_metrics=[extras.get(e, {}) for e in epochs],
    )


@dataclass
class OverfittingDiagnosis:
    """The verdict on one fold.

    Attributes:
        fold: the fold's name (`fold_{repeat}_{fold}`).
        overfitting: whether any sign was found.
        reasons: one sentence per sign found, with its numbers.
        onset_epoch: the first epoch at which the eval loss was above its minimum while the train loss kept
            falling (`None` without divergence).
        best_epoch: the epoch with the lowest eval loss (`None` without per-epoch eval losses).
        gap: train score minus eval score at the end (`None` without train metrics).
        metric: the score the gap is measured on.
        eval_loss_min, eval_loss_last, train_loss_at_best, train_loss_last: the losses the divergence rule used.
    """

    fold: str
    overfitting: bool
    reasons: list[str] = field(default_factory=list)
    onset_epoch: int | None = None
    best_epoch: int | None = None
    gap: float | None = None
    metric: str | None = None
    eval_loss_min: float | None = None
    eval_loss_last: float | None = None
    train_loss_at_best: float | None = None
    train_loss_last: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(values: list[float]) -> list[tuple[int, float]]:
    return [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]


def detect_overfitting(log_history: list[dict], train_metrics: dict | None = None,
                       eval_metrics: dict | None = None, *, metric: str = "accuracy", gap_threshold: float = 0.1,
                       loss_rise: float = 0.1, fold: str = "") -> OverfittingDiagnosis:
    """Diagnose one fold from its log history and final train/eval metrics.

    Args:
        log_history: the fold's `Trainer` log history (`FoldResult.log_history`).
        train_metrics, eval_metrics: the fold's final metrics on its training and eval rows.
        metric: the score whose train-eval gap is checked (`loss` works too: the gap is then eval minus train).
        gap_threshold: flag when train score - eval score exceeds this (score units).
        loss_rise: flag when the last eval loss exceeds the minimum eval loss by more than this fraction of it
            while the training loss fell over the same epochs.
        fold: the fold's name, copied into the diagnosis.

    Returns:
        [`OverfittingDiagnosis`].

    Example:
    ```python
    >>> history = [{"loss": 1.0, "epoch": 1.0}, {"eval_loss": 0.8, "epoch": 1.0},
    ...            {"loss": 0.5, "epoch": 2.0}, {"eval_loss": 0.7, "epoch": 2.0},
    ...            {"loss": 0.1, "epoch": 3.0}, {"eval_loss": 1.2, "epoch": 3.0}]
    >>> d = detect_overfitting(history, {"accuracy": 1.0}, {"accuracy": 0.7})
    >>> d.overfitting, d.onset_epoch, round(d.gap, 2)
    (True, 3, 0.3)

    ```
    """
    if gap_threshold < 0 or loss_rise < 0:
        raise ValueError(f"gap_threshold and loss_rise must be >= 0 (got {gap_threshold}, {loss_rise}).")
    diagnosis = OverfittingDiagnosis(fold=fold, overfitting=False, metric=metric)
    curves = loss_curves(log_history)
    evals = _finite(curves.eval_loss)
    if len(evals) >= 2:
        best_i, best = min(evals, key=lambda iv: iv[1])
        last_i, last = evals[-1]
        diagnosis.best_epoch = curves.epochs[best_i]
        diagnosis.eval_loss_min, diagnosis.eval_loss_last = best, last
        trains = _finite(curves.train_loss)
        # the latest train loss logged at or before each of the two epochs
        at_best = [v for i, v in trains if i <= best_i]
        at_last = [v for i, v in trains if i <= last_i]
        train_best = at_best[-1] if at_best else None
        train_last = at_last[-1] if at_last else None
        diagnosis.train_loss_at_best, diagnosis.train_loss_last = train_best, train_last
        train_falling = train_best is None or train_last is None or train_last < train_best
        if last_i > best_i and last > best * (1 + loss_rise) and train_falling:
            # the first epoch after the minimum: from there on the eval loss only got worse than its best
            diagnosis.onset_epoch = curves.epochs[best_i + 1]
            train_part = (f" while the train loss fell from {train_best:.3f} to {train_last:.3f}"
                          if train_best is not None and train_last is not None else "")
            diagnosis.reasons.append(
                f"eval loss rose from {best:.3f} (epoch {diagnosis.best_epoch}) to {last:.3f} "
                f"(epoch {curves.epochs[last_i]}, +{(last / best - 1) * 100:.0f}%){train_part}; "
                f"overfitting from epoch {diagnosis.onset_epoch}"
            )
    train_metrics, eval_metrics = train_metrics or {}, eval_metrics or {}
    if metric in train_metrics and metric in eval_metrics:
        train_score, eval_score = float(train_metrics[metric]), float(eval_metrics[metric])
        gap = eval_score - train_score if metric == "loss" else train_score - eval_score
        diagnosis.gap = gap
        if gap > gap_threshold:
            diagnosis.reasons.append(
                f"train {metric} {train_score:.3f} vs eval {eval_score:.3f}: gap {gap:+.3f} > {gap_threshold:g}"
            )
    diagnosis.overfitting = bool(diagnosis.reasons)
    return diagnosis


def diagnose_fold(result, **kwargs) -> OverfittingDiagnosis:
    """[`detect_overfitting`] on a [`FoldResult`]."""
    return detect_overfitting(result.log_history, result.train_metrics, result.eval_metrics,
                              fold=f"fold_{result.repeat}_{result.fold}", **kwargs)
