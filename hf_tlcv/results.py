"""Results of a cross-validation: per-fold metrics, their summary, out-of-fold predictions, save and load."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import atomic_path, write_json_atomic
from .stats import is_bounded_metric, summarize

RESULTS_FILE = "cv_results.json"
OOF_FILE = "oof_predictions.parquet"
FOLD_RESULT_FILE = "fold_result.json"
FOLD_PREDICTIONS_FILE = "predictions.parquet"


def _plain(value: Any) -> Any:
    """numpy / torch scalars and containers -> JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def predictions_frame(rows: np.ndarray, repeat: int, fold: int, labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Out-of-fold predictions of one fold: row index, fold, label, predicted class and class probabilities."""
    frame = pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "repeat": np.int64(repeat),
            "fold": np.int64(fold),
            "label": np.asarray(labels, dtype=np.int64),
            "prediction": probs.argmax(axis=-1).astype(np.int64),
        }
    )
    for c in range(probs.shape[-1]):
        frame[f"prob_{c}"] = probs[:, c].astype(np.float64)
    return frame


@dataclass
class FoldResult:
    """What one fold produced.

    Attributes:
        repeat, fold: position of the fold (0-based).
        n_train, n_eval: rows trained on and evaluated on.
        eval_metrics: metrics on the eval rows (`loss` included).
        train_metrics: the same metrics on the training rows (empty when `eval_on_train=False`).
        log_history: the Trainer's log history of the fold (losses per logging step, learning rate, ...).
        predictions: out-of-fold predictions of the fold's eval rows (see [`predictions_frame`]).
    """

    repeat: int
    fold: int
    n_train: int
    n_eval: int
    eval_metrics: dict[str, float]
    train_metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict] = field(default_factory=list)
    predictions: pd.DataFrame | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        return _plain(out)

    def save(self, directory: str | os.PathLike) -> None:
        """Save into `directory`; `fold_result.json` is written last, so its presence marks a finished fold."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.predictions is not None:
            with atomic_path(directory / FOLD_PREDICTIONS_FILE) as tmp:
                self.predictions.to_parquet(tmp, index=False)
        write_json_atomic(directory / FOLD_RESULT_FILE, self.to_dict(), indent=2)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "FoldResult":
        directory = Path(directory)
        with open(directory / FOLD_RESULT_FILE) as fh:
            data = json.load(fh)
        preds = directory / FOLD_PREDICTIONS_FILE
        data["predictions"] = pd.read_parquet(preds) if preds.exists() else None
        return cls(**data)

    @staticmethod
    def is_complete(directory: str | os.PathLike) -> bool:
        return (Path(directory) / FOLD_RESULT_FILE).exists()


def fold_sizes(folds: list[FoldResult]) -> tuple[float, float, float]:
    """Training and evaluation rows per fold (averages) and rows evaluated per repeat (every row, for k-fold).

    The first two set the Nadeau–Bengio correction, the third the binomial / McNemar floor of `hf_tlcv.stats`.
    """
    return (float(np.mean([f.n_train for f in folds])), float(np.mean([f.n_eval for f in folds])),
            sum(f.n_eval for f in folds) / len({f.repeat for f in folds}))


class CVResults:
    """The outcome of [`KFoldTrainer.cross_validate`].

    Attributes:
        folds: one [`FoldResult`] per fold, in fold order (repeat-major).
        summary: per eval metric, `{"mean", "std", "ci95": [low, high], "ci_method"}`. `std` is the sample standard
            deviation over folds; `ci95` is built on the Nadeau–Bengio corrected variance
            `s² * (1/J + n_eval/n_train)` of the J = k * r fold scores, wider than the naive `s² / J` because the
            training sets of different folds overlap: for metrics in [0, 1] (accuracy, precision, recall, F1) a
            Wilson-type interval that stays in [0, 1] and is never narrower than the Wilson interval of the
            evaluated rows (`ci_method="corrected_wilson"`), for the others (the loss) `mean ± t_{0.975, J-1} * se`
            (`"corrected_t"`). See `hf_tlcv.stats` and docs/statistics.md.
        train_summary: the same over the training-part metrics (when computed).
        oof_predictions: every fold's eval predictions in one frame (`row`, `repeat`, `fold`, `label`,
            `prediction`, `prob_<class id>`).
        oof_metrics: the metrics computed once on all out-of-fold predictions pooled.
        config: the settings of the run. label_names: class names, when the labels are a `ClassLabel`.

    Example:
    ```python
    >>> results = trainer.cross_validate()
    >>> results.summary["accuracy"]
    {'mean': 0.93, 'std': 0.012, 'ci95': [0.91, 0.95], 'ci_method': 'corrected_wilson'}
    >>> results.to_pandas()  # one row per fold
    >>> results.save("cv-out"); CVResults.load("cv-out")
    ```
    """

    def __init__(self, folds: list[FoldResult], oof_metrics: dict[str, float] | None = None,
                 config: dict | None = None, label_names: list[str] | None = None,
                 metadata: dict | None = None):
        if not folds:
            raise ValueError("CVResults needs at least one finished fold.")
        self.folds = list(folds)
        self.oof_metrics = dict(oof_metrics or {})
        self.config = dict(config or {})
        self.label_names = label_names
        self.metadata = dict(metadata or {})
        self.directory: Path | None = None  # where save() wrote / load() read the run; push_to_hub uploads it

    # ---- aggregation -------------------------------------------------------------------------------------
    @staticmethod
    def _summarize(folds: list[FoldResult], attr: str) -> dict[str, dict]:
        n_train, n_eval, n_rows = fold_sizes(folds)
        keys = [k for k in getattr(folds[0], attr) if all(k in getattr(f, attr) for f in folds)]
        out = {}
        for key in keys:
            values = [getattr(f, attr)[key] for f in folds]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                out[key] = summarize(values, n_train=n_train, n_eval=n_eval, bounded=is_bounded_metric(key, values),
                                     n_rows=n_rows)
        return out

    @property
    def summary(self) -> dict[str, dict]:
        return self._summarize(self.folds, "eval_metrics")

    @property
    def train_summary(self) -> dict[str, dict]:
        return self._summarize(self.folds, "train_metrics") if self.folds[0].train_metrics else {}

    @property
    def fold_metrics(self) -> list[dict[str, float]]:
        return [dict(f.eval_metrics) for f in self.folds]

    @property
    def oof_predictions(self) -> pd.DataFrame:
        frames = [f.predictions for f in self.folds if f.predictions is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def to_pandas(self) -> pd.DataFrame:
        """One row per fold: `repeat`, `fold`, `n_train`, `n_eval`, the eval metrics and `train_<metric>`."""
        rows = []
        for f in self.folds:
            row = {"repeat": f.repeat, "fold": f.fold, "n_train": f.n_train, "n_eval": f.n_eval}
            row.update(f.eval_metrics)
            row.update({f"train_{k}": v for k, v in f.train_metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    # ---- display -----------------------------------------------------------------------------------------
    def format_table(self) -> str:
        """The per-fold table and the summary as plain text."""
        frame = self.to_pandas()
        lines = [frame.to_string(index=False, float_format=lambda x: f"{x:.4f}"), ""]
        k = self.config.get("n_folds", len({f.fold for f in self.folds}))
        r = self.config.get("n_repeats", 1)
        lines.append(f"Summary over {len(self.folds)} folds ({k}-fold x {r} repeat(s)); "
                     "95% interval: Nadeau-Bengio corrected (Wilson-type in [0, 1] for bounded metrics)")
        for name, s in self.summary.items():
            lo, hi = s["ci95"]
            line = f"  {name:<12} {s['mean']:.4f} ± {s['std']:.4f}   95% CI [{lo:.4f}, {hi:.4f}]"
            train = self.train_summary.get(name)
            if train is not None:
                line += f"   train {train['mean']:.4f}"
            lines.append(line)
        if self.oof_metrics:
            pooled = ", ".join(f"{k}={v:.4f}" for k, v in self.oof_metrics.items() if isinstance(v, float))
            lines.append(f"  pooled out-of-fold: {pooled}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        means = ", ".join(f"{k}={v['mean']:.4f}" for k, v in self.summary.items())
        return f"CVResults({len(self.folds)} folds: {means})"

    # ---- persistence -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _plain(
            {
                "config": self.config,
                "label_names": self.label_names,
                "metadata": self.metadata,
                "folds": [f.to_dict() for f in self.folds],
                "summary": self.summary,
                "train_summary": self.train_summary,
                "oof_metrics": self.oof_metrics,
            }
        )

    def save(self, directory: str | os.PathLike) -> None:
        """Write `cv_results.json` and `oof_predictions.parquet` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        oof = self.oof_predictions
        if not oof.empty:
            with atomic_path(directory / OOF_FILE) as tmp:
                oof.to_parquet(tmp, index=False)
        write_json_atomic(directory / RESULTS_FILE, self.to_dict(), indent=2)
        self.directory = directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CVResults":
        """Load what [`save`] wrote (the summary is recomputed from the per-fold metrics)."""
        directory = Path(directory)
        path = directory / RESULTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"No {RESULTS_FILE} in {directory}: is it the output_dir of a finished run?")
        with open(path) as fh:
            data = json.load(fh)
        oof_path = directory / OOF_FILE
        oof = pd.read_parquet(oof_path) if oof_path.exists() else None
        folds = []
        for fd in data["folds"]:
            fd = dict(fd)
            if oof is not None:
                mask = (oof["repeat"] == fd["repeat"]) & (oof["fold"] == fd["fold"])
                fd["predictions"] = oof[mask].reset_index(drop=True)
            folds.append(FoldResult(**fd))
        results = cls(folds, oof_metrics=data.get("oof_metrics"), config=data.get("config"),
                      label_names=data.get("label_names"), metadata=data.get("metadata"))
        results.directory = directory
        return results

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    revision: str | None = None, push_fold_models: str | None = None,
                    commit_message: str | None = None, **card_kwargs):
        """Push the run these results were saved in / loaded from to the Hub repository `repo_id`, with its card.

        The whole run directory is uploaded (results, plots, fold folders with their models as `push_fold_models`
        allows; default: the run's setting), and `README.md` is written into it first. Files the Hub already has are
        skipped, so this also completes an interrupted push.

        Args:
            repo_id: `"namespace/name"`.
            token: write token (`None`: `HF_TOKEN` or the login cache).
            private, revision, commit_message: as in `HfApi.create_repo` / `create_commit`.
            push_fold_models: `"none"`, `"trainable"` or `"full"`.
            card_kwargs: `dataset_name`, `task`, `study_report`, `license`, `language` (see `hf_tlcv.hub.push_cv`).

        Example:
        ```python
        >>> CVResults.load("outputs/vit_kfold").push_to_hub("me/vit-kfold-animal-mnist")
        ```
        """
        from .hub import push_cv

        if self.directory is None:
            raise ValueError("These results have no run directory to push: save() them into the run's output_dir "
                             "or load them with CVResults.load(output_dir) first.")
        return push_cv(self.directory, repo_id, token=token, private=private, revision=revision,
                       push_fold_models=push_fold_models or self.config.get("push_fold_models", "trainable"),
                       commit_message=commit_message, results=self, **card_kwargs)

