"""Results of a cross-validation: per-fold metrics, their summary, out-of-fold predictions, save and load."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .per_class import format_per_class, n_classes_of, per_class_fold_scores, summarize_per_class
from .run_dir import (
    FOLD_PREDICTIONS_FILE,
    FOLD_RESULT_FILE,
    FOLD_TEST_PREDICTIONS_FILE,
    FORMAT_VERSION,
    OOF_FILE,
    RESULTS_FILE,
    atomic_path,
    fold_is_complete,
    format_version,
    read_json,
    write_json_atomic,
)
from .diagnostics import rows_dependence
from .row_values import ROW_METRICS, per_row_values, reproduces
from .stats import is_bounded_metric, row_interval, summarize
from .utils import fmt, to_plain


def predictions_frame(rows: np.ndarray, repeat: int, fold: int, labels: np.ndarray | None,
                      probs: np.ndarray) -> pd.DataFrame:
    """Predictions of one fold: row index, fold, label (when known), predicted class and class probabilities."""
    columns = {"row": np.asarray(rows, dtype=np.int64), "repeat": np.int64(repeat), "fold": np.int64(fold)}
    if labels is not None:
        columns["label"] = np.asarray(labels, dtype=np.int64)
    columns["prediction"] = probs.argmax(axis=-1).astype(np.int64)
    frame = pd.DataFrame(columns)
    for c in range(probs.shape[-1]):
        frame[f"prob_{c}"] = probs[:, c].astype(np.float64)
    return frame


def _known_fields(cls, data: dict, where: str) -> dict:
    """`data` restricted to the fields of dataclass `cls`; fields this version does not know are reported once."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names - {"format_version"})
    if unknown:
        warnings.warn(f"{where} has fields this hf_tlcv version does not know ({', '.join(unknown)}); they are "
                      "ignored. It was probably written by a newer version.", stacklevel=3)
    return {k: v for k, v in data.items() if k in names}


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
        test_metrics: the fold model's metrics on the held-out test set (`eval_dataset`), when one was given.
        test_predictions: the fold model's predictions on the test set (`row` indexes the test set).
        seconds: where the fold's time went, in wall-clock seconds: `train` (`Trainer.train`), `eval` (the eval
            rows), `train_eval` (the extra pass over the training rows of `eval_on_train`), `test` (the test set).
    """

    repeat: int
    fold: int
    n_train: int
    n_eval: int
    eval_metrics: dict[str, float]
    train_metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    test_predictions: pd.DataFrame | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"fold_{self.repeat}_{self.fold}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        out.pop("test_predictions")
        return to_plain(out)

    def save(self, directory: str | os.PathLike) -> None:
        """Save into `directory`; `fold_result.json` is written last, so its presence marks a finished fold."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for frame, name in ((self.predictions, FOLD_PREDICTIONS_FILE),
                            (self.test_predictions, FOLD_TEST_PREDICTIONS_FILE)):
            if frame is not None:
                with atomic_path(directory / name) as tmp:
                    frame.to_parquet(tmp, index=False)
        write_json_atomic(directory / FOLD_RESULT_FILE, {"format_version": FORMAT_VERSION, **self.to_dict()},
                          indent=2)

    @classmethod
    def from_dict(cls, data: dict, where: str = "a fold result") -> "FoldResult":
        return cls(**_known_fields(cls, data, where))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "FoldResult":
        directory = Path(directory)
        data = read_json(directory / FOLD_RESULT_FILE)
        for name, key in ((FOLD_PREDICTIONS_FILE, "predictions"), (FOLD_TEST_PREDICTIONS_FILE, "test_predictions")):
            path = directory / name
            data[key] = pd.read_parquet(path) if path.exists() else None
        return cls.from_dict(data, str(directory / FOLD_RESULT_FILE))

    @staticmethod
    def is_complete(directory: str | os.PathLike) -> bool:
        return fold_is_complete(directory)


NO_ROWS = "the run kept no labelled out-of-fold predictions to take per-row values from"


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
        test_summary: the same over every fold model's score on the held-out test set (when `eval_dataset` was
            given); `test_metrics` holds the fold ensemble's score on it (mean of the fold models' probabilities).
        oof_predictions: every fold's eval predictions in one frame (`row`, `repeat`, `fold`, `label`,
            `prediction`, `prob_<class id>`).
        oof_metrics: the metrics computed once on all out-of-fold predictions pooled.
        nested: with `ci_method="nested"`, the nested intervals (`metrics`: accuracy and, when it is the plain
            cross-entropy, the loss; see `hf_tlcv.stats.nested_cv_interval`) and their cost (`extra_fits`,
            `fit_seconds`, `fold_seconds`); `summary` then reports them for those metrics.
        config: the settings of the run. label_names: class names, when the labels are a `ClassLabel`.
        metadata: how the folds were made (`fold_strategy`, `n_rows`, fingerprints...), the `data` and `model`
            records (what was cross-validated), and `processes` (process count, processes per fold, global batch).
        diagnostics: what the run found out about its own rows (dependence, instability, the interval used); see
            `hf_tlcv.diagnostics`.

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
                 metadata: dict | None = None, test_metrics: dict[str, float] | None = None,
                 nested: dict | None = None, diagnostics: dict | None = None):
        if not folds:
            raise ValueError("CVResults needs at least one finished fold.")
        self.folds = list(folds)
        self.oof_metrics = dict(oof_metrics or {})
        self.config = dict(config or {})
        self.label_names = label_names
        self.metadata = dict(metadata or {})
        self.test_metrics = dict(test_metrics or {})
        self.nested = dict(nested) if nested else None
        self.diagnostics = dict(diagnostics or {})  # see hf_tlcv.diagnostics: shared by the interval and dependence
        self._row_cache: tuple | str | None = None  # per-row values of the folds' predictions, computed once
        self._saved_summary: dict = {}  # the summary from_dict read: per-row intervals of a run loaded without rows
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
                                     n_rows=n_rows, positive=key == "loss")
        return out

    @property
    def ci_method(self) -> str:
        """The interval method of this run (`KFoldConfig.ci_method`): `"row"`, `"corrected"` or `"nested"`.

        A run's saved config keeps the method it was made with; a saved config without the field predates the
        choice, when every run used `"corrected"`. Results built in code without a config get the default, `"row"`.
        """
        if not self.config:
            return "row"
        return self.config.get("ci_method", "corrected")

    def row_values(self, metric: str) -> tuple[list[np.ndarray], list[np.ndarray]] | str:
        """Per fold, the per-row values of `metric` (one of `ROW_METRICS`) and their row ids, sorted by row; or, as a
        sentence, why they cannot stand for the fold scores (dependent rows, no predictions, not a per-row mean)."""
        # The strategy the folds were cut with ("auto" resolves to "group" with a group column, for instance).
        config = {**self.config, "fold_strategy": self.config.get("resolved_fold_strategy",
                                                                  self.config.get("fold_strategy"))}
        why = rows_dependence(config, self.diagnostics)
        if why is not None:
            return (f"rows are not independent ({why}); the corrected interval takes whole folds, which keep "
                    "dependent rows together, as its units")
        if len(self.folds) < 2:
            return "a single fold"
        if self._row_cache is None:
            frames = [f.predictions for f in self.folds]
            if any(frame is None or frame.empty or "label" not in frame for frame in frames):
                self._row_cache = NO_ROWS
            else:
                frames = [frame.sort_values("row", kind="stable") for frame in frames]
                values = [per_row_values(frame) for frame in frames]
                self._row_cache = ({m: [v[m] for v in values] for m in ROW_METRICS},
                                   [frame["row"].to_numpy() for frame in frames])
        if isinstance(self._row_cache, str):
            return self._row_cache
        values, rows = self._row_cache[0][metric], self._row_cache[1]
        if not all(reproduces(v, f.eval_metrics.get(metric)) for v, f in zip(values, self.folds)):
            return (f"the per-row values do not reproduce the folds' {metric} (not a plain mean of per-row values, "
                    "e.g. label smoothing or class weights)")
        return values, rows

    def _row_summary(self, name: str, corrected: dict) -> dict:
        """`corrected` (the corrected summary of metric `name`) replaced by its per-row interval, or with the reason
        it is kept (`fallback`)."""
        found = self.row_values(name)
        saved = self._saved_summary.get(name, {})
        if found == NO_ROWS and str(saved.get("ci_method", "")).startswith("row_"):
            return dict(saved)  # a run saved with its per-row interval, read back without its predictions (a report)
        if isinstance(found, str):
            return {**corrected, "fallback": found}
        values, rows = found
        optimism = None
        if all(name in f.train_metrics for f in self.folds):  # eval_on_train: how much better the training rows fit
            optimism = float(np.mean([f.train_metrics[name] - f.eval_metrics[name] for f in self.folds]))
            optimism = -optimism if name == "loss" else optimism
        result = row_interval(values, rows, [f.repeat for f in self.folds], bounded=name == "accuracy",
                              positive=name == "loss" and all(np.all(v > 0) for v in values),
                              n_train=fold_sizes(self.folds)[0], optimism=optimism)
        instability = result["instability"]
        if instability["unstable"]:
            return {**corrected, "instability": instability,
                    "fallback": f"unstable: {instability['unstable']}"}
        return {**corrected, "ci95": result["ci95"], "ci_method": result["ci_method"], "se": result["se"],
                "instability": instability}

    @property
    def summary(self) -> dict[str, dict]:
        """Per eval metric, the mean, spread and 95% interval ([`ci_method`]). With `"row"` (the default), accuracy
        and the loss carry the per-row interval of `hf_tlcv.stats.row_interval` (`ci_method` `"row_wilson"` /
        `"row_log"`, with the run's `instability`), or keep the corrected one and say why under `fallback`; with
        `"nested"`, they carry the nested interval (`mean`: its bias-corrected estimate for the model trained on all
        rows, `cv_mean`: the plain mean of the folds; `std` stays the spread of the fold scores). Other metrics
        (macro precision, recall, F1: not means of per-row values) always get the corrected interval."""
        out = self._summarize(self.folds, "eval_metrics")
        if self.ci_method == "row":
            for name in ROW_METRICS:
                if name in out:
                    out[name] = self._row_summary(name, out[name])
        for name, interval in (self.nested or {}).get("metrics", {}).items():
            if name in out:
                out[name] = {**interval, "std": out[name]["std"], "per_row_std": interval["std"]}
        return out

    def interval_diagnostics(self) -> dict:
        """`diagnostics["interval"]` (the method, and per metric the interval used and any fallback) and
        `diagnostics["instability"]` (of accuracy's per-row interval), as `to_dict` saves them."""
        summary = self.summary
        used = {name: {k: s[k] for k in ("ci_method", "fallback") if k in s}
                for name, s in summary.items() if name in ROW_METRICS}
        out = {"interval": {"ci_method": self.ci_method, "metrics": used}}
        if "instability" in summary.get("accuracy", {}):
            out["instability"] = summary["accuracy"]["instability"]
        return out

    @property
    def train_summary(self) -> dict[str, dict]:
        return self._summarize(self.folds, "train_metrics") if self.folds[0].train_metrics else {}

    @property
    def test_summary(self) -> dict[str, dict]:
        return self._summarize(self.folds, "test_metrics") if self.folds[0].test_metrics else {}

    @property
    def seconds(self) -> dict[str, float]:
        """Wall-clock seconds summed over the folds, per part of a fold (see [`FoldResult`]): what `eval_on_train`
        costs is `seconds["train_eval"]`. Empty for runs saved before hf_tlcv recorded it."""
        out: dict[str, float] = {}
        for f in self.folds:
            for part, value in f.seconds.items():
                out[part] = out.get(part, 0.0) + value
        return out

    @property
    def fold_metrics(self) -> list[dict[str, float]]:
        return [dict(f.eval_metrics) for f in self.folds]

    @property
    def oof_predictions(self) -> pd.DataFrame:
        frames = [f.predictions for f in self.folds if f.predictions is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def per_class_folds(self) -> pd.DataFrame:
        """Precision, recall, F1 and support of every class in every fold, long format (`repeat`, `fold`,
        `class_id`, `class`, ...), computed from `oof_predictions` (see `hf_tlcv.per_class.per_class_fold_scores`).
        Empty when the run kept no labelled predictions."""
        oof = self.oof_predictions
        scores = per_class_fold_scores(oof, n_classes_of(oof, self.label_names) if not oof.empty else None)
        names = self.label_names or []
        scores.insert(3, "class", [names[c] if c < len(names) else str(c) for c in scores["class_id"]])
        return scores

    @property
    def per_class(self) -> pd.DataFrame:
        """One row per class (`class_id`, `class` from `label_names`): the mean over folds of its precision, recall
        and F1, each with its 95% interval (`<metric>_low`, `<metric>_high`), and its mean `support` per fold.

        The interval follows the summary's rule: with `ci_method="row"`, when accuracy keeps its per-row interval
        (independent rows, a stable learner), precision and recall (means of per-row values over the class's rows) get
        the per-row interval, F1 the corrected one (`interval` says which); see
        `hf_tlcv.per_class.summarize_per_class`."""
        n_train, n_eval, _ = fold_sizes(self.folds)
        # the run's own verdict on its rows and its learner (accuracy's fall-back) holds for every class too
        rows = (self.ci_method == "row" and not isinstance(self.row_values("accuracy"), str)
                and "fallback" not in self.summary.get("accuracy", {}))
        return summarize_per_class(self.per_class_folds.drop(columns="class"), n_train, n_eval, self.label_names,
                                   predictions=self.oof_predictions if rows else None)

    @property
    def test_predictions(self) -> pd.DataFrame:
        """Every fold model's predictions on the held-out test set (`row` indexes the test set)."""
        frames = [f.test_predictions for f in self.folds if f.test_predictions is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def processes(self) -> dict:
        """`world_size` (processes of the launch), `fold_processes` (processes training one fold together: 1 with
        `parallel_folds`), and `global_train_batch_size` (rows per optimisation step of a fold)."""
        return dict(self.metadata.get("processes", {}))

    def to_pandas(self) -> pd.DataFrame:
        """One row per fold: `repeat`, `fold`, `n_train`, `n_eval`, the eval metrics, `train_<metric>` and
        `test_<metric>`."""
        rows = []
        for f in self.folds:
            row = {"repeat": f.repeat, "fold": f.fold, "n_train": f.n_train, "n_eval": f.n_eval}
            row.update(f.eval_metrics)
            row.update({f"train_{k}": v for k, v in f.train_metrics.items()})
            row.update({f"test_{k}": v for k, v in f.test_metrics.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    # ---- display -----------------------------------------------------------------------------------------
    def header(self) -> str:
        """One line: folds, repeats, and how training was laid out over processes."""
        k = self.config.get("n_folds", len({f.fold for f in self.folds}))
        r = self.config.get("n_repeats", 1)
        line = f"{len(self.folds)} folds ({k}-fold x {r} repeat(s))"
        procs = self.processes
        if procs:
            per_fold = procs.get("fold_processes", 1)
            layout = "1 process" if procs.get("world_size", 1) == 1 else (
                f"{procs['world_size']} processes, " + ("whole folds per process (parallel_folds)" if per_fold == 1
                                                        else f"each fold on {per_fold} processes (DDP)"))
            line += f"; {layout}; global train batch {procs.get('global_train_batch_size')}"
        return line

    def interval_notes(self) -> list[str]:
        """How the summary's 95% intervals were made, as plain text: the run's method first, then one note per metric
        whose interval fell back to the corrected one, with the reason (the console, the card and the Space show
        these)."""
        methods = {"row": "per-row (Bayle et al.) for accuracy and loss, Nadeau-Bengio corrected for the others",
                   "corrected": "Nadeau-Bengio corrected (Wilson-type in [0, 1] for bounded metrics)",
                   "nested": "nested CV for accuracy and loss, Nadeau-Bengio corrected for the others"}
        notes = [methods.get(self.ci_method, self.ci_method)]
        notes += [f"{name}: the corrected interval, because {s['fallback']}" for name, s in self.summary.items()
                  if "fallback" in s]
        return notes

    def format_table(self) -> str:
        """The per-fold table, the summary and the per-class table (the lowest F1 only, for many classes) as plain
        text."""
        frame = self.to_pandas()
        lines = [frame.to_string(index=False, float_format=lambda x: f"{x:.4f}"), ""]
        method, *fallbacks = self.interval_notes()
        lines.append(f"Summary over {self.header()}; 95% interval: {method}")
        lines += [f"  ({note})" for note in fallbacks]
        if self.nested:
            nested = self.nested
            lines.append(f"  nested CV interval (Bates, Hastie & Tibshirani) for {' and '.join(nested['metrics'])}, for "
                         f"the model trained on all rows: {nested['extra_fits']} extra fits, "
                         f"{nested['fit_seconds']:.1f} s of training (the folds: {nested['fold_seconds']:.1f} s)")
        for name, s in self.summary.items():
            lo, hi = s["ci95"]
            line = f"  {name:<12} {fmt(s['mean'])} ± {fmt(s['std'])}   95% CI [{fmt(lo)}, {fmt(hi)}]"
            train = self.train_summary.get(name)
            if train is not None:
                line += f"   train {fmt(train['mean'])}"
            lines.append(line)
        if self.oof_metrics:
            pooled = ", ".join(f"{k}={fmt(v)}" for k, v in self.oof_metrics.items() if isinstance(v, float))
            lines.append(f"  pooled out-of-fold: {pooled}")
        seconds = self.seconds
        if seconds:
            parts = {"train": "training", "eval": "eval", "train_eval": "eval on the training rows (eval_on_train)",
                     "test": "test set"}
            lines.append("  time over the folds: " + ", ".join(f"{parts.get(k, k)} {v:.1f} s"
                                                             for k, v in seconds.items()))
        per_class = format_per_class(self.per_class)
        if per_class:
            lines += ["", *per_class]
        from .dependence import dependence_lines

        dependence = dependence_lines(self.diagnostics)
        if dependence:
            lines += ["", *dependence]
        if self.test_summary:
            n_test = self.metadata.get("n_test_rows")
            lines.append(f"Held-out test set ({n_test} rows, never used to choose anything): mean of the fold models "
                         "| fold ensemble")
            for name, s in self.test_summary.items():
                ensemble = self.test_metrics.get(name)
                lines.append(f"  {name:<12} {fmt(s['mean'])} ± {fmt(s['std'])}   | {fmt(ensemble)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        means = ", ".join(f"{k}={v['mean']:.4f}" for k, v in self.summary.items())
        return f"CVResults({len(self.folds)} folds: {means})"

    # ---- persistence -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return to_plain(
            {
                "format_version": FORMAT_VERSION,
                "config": self.config,
                "label_names": self.label_names,
                "metadata": self.metadata,
                "folds": [f.to_dict() for f in self.folds],
                "summary": self.summary,
                "train_summary": self.train_summary,
                "oof_metrics": self.oof_metrics,
                "test_summary": self.test_summary,
                "test_metrics": self.test_metrics,
                "nested": self.nested,
                "diagnostics": {**self.diagnostics, **self.interval_diagnostics()},
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
    def from_dict(cls, data: dict, where: str = "cross-validation results") -> "CVResults":
        """Results from [`to_dict`]'s output (fold predictions, when wanted, added to each fold's dict first)."""
        folds = [FoldResult.from_dict(fd, where) for fd in data["folds"]]
        results = cls(folds, oof_metrics=data.get("oof_metrics"), config=data.get("config"),
                      label_names=data.get("label_names"), metadata=data.get("metadata"),
                      test_metrics=data.get("test_metrics"), nested=data.get("nested"),
                      diagnostics=data.get("diagnostics"))
        results._saved_summary = dict(data.get("summary") or {})
        return results

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CVResults":
        """Load what [`save`] wrote (the summaries are recomputed from the per-fold metrics).

        Reads every format version of `cv_results.json` (see `hf_tlcv.run_dir.FORMAT_VERSION`); fields written by a
        newer version are ignored with a warning."""
        directory = Path(directory)
        path = directory / RESULTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"No {RESULTS_FILE} in {directory}: is it the output_dir of a finished run?")
        data = read_json(path)
        if format_version(data) > FORMAT_VERSION:
            warnings.warn(f"{path} was written in format {format_version(data)} by a newer hf_tlcv (this one reads up "
                          f"to {FORMAT_VERSION}); what it cannot read is ignored.", stacklevel=2)
        oof_path = directory / OOF_FILE
        oof = pd.read_parquet(oof_path) if oof_path.exists() else None
        data["folds"] = [dict(fd) for fd in data["folds"]]
        for fd in data["folds"]:
            if oof is not None:
                mask = (oof["repeat"] == fd["repeat"]) & (oof["fold"] == fd["fold"])
                fd["predictions"] = oof[mask].reset_index(drop=True)
            test_path = directory / f"fold_{fd['repeat']}_{fd['fold']}" / FOLD_TEST_PREDICTIONS_FILE
            if test_path.exists():
                fd["test_predictions"] = pd.read_parquet(test_path)
        results = cls.from_dict(data, str(path))
        results.directory = directory
        return results

    def audit(self, dataset, **kwargs):
        """Audit `dataset` (the rows these folds were cut from) with these out-of-fold predictions: label issues,
        near-duplicates leaking across folds, outliers. See [`hf_tlcv.audit.audit`] for the arguments."""
        from .integrations import audit

        return audit(self, dataset, **kwargs)

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    revision: str | None = None, push_fold_models: str | None = None,
                    commit_message: str | None = None, **card_kwargs):
        """Push the run these results were saved in / loaded from to the Hub repository `repo_id`, with its card.

        The whole run directory is uploaded (results, plots, fold folders with their models as `push_fold_models`
        allows; default: the run's setting), and `README.md` (the card, rendered for `repo_id`) is written into it
        first. Files the Hub already has are skipped, so this also completes an interrupted push.

        Args:
            repo_id: `"namespace/name"`.
            token: write token (`None`: `HF_TOKEN` or the login cache).
            private, revision, commit_message: as in `HfApi.create_repo` / `create_commit`.
            push_fold_models: `"none"`, `"trainable"` or `"full"`.
            card_kwargs: `dataset_name`, `task`, `study_report`, `license`, `language`, `extra_tags` (see
                `hf_tlcv.hub.CVCardData`).

        Raises:
            hf_tlcv.hub.HubPushError: the push failed; the message says why and how to retry.

        Example:
        ```python
        >>> CVResults.load("outputs/vit_kfold").push_to_hub("me/vit-kfold-animal-mnist")

        ```
        """
        from .integrations import push_results

        return push_results(self, repo_id, token=token, private=private, revision=revision,
                            push_fold_models=push_fold_models, commit_message=commit_message, **card_kwargs)
