"""The report of a hyperparameter search on cross-validation: what was tried, what won, by how much, at what cost.

A [`SearchReport`] is built from the search's Optuna study and the trials' own run folders
(`output_dir/trials/<run>/`): the best trial's settings and corrected interval, the trial table (pruned trials
marked, never scored), the corrected paired comparison of the best trial with the runner-up on their shared folds,
the fold trainings pruning saved, the frozen-feature caches computed and reused, the parameter importances, and, for
a nested search, the honest estimate of "tune, then train" against the best trial's own mean. It is a plain object, a
markdown page (`to_markdown()`, for the run's card) and files: `output_dir/search_report.{md,json}` and
`output_dir/plots/search_{history,importance}.png`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..run_dir import FOLDS_FILE, PLOTS_DIR, RESULTS_FILE, fold_dirs, fold_is_complete, read_json
from ..run_dir import write_json_atomic, write_text_atomic
from ..utils import fmt, to_plain

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from ..folds import Fold
    from .run import TrialRunner

REPORT_MD = "search_report.md"
REPORT_JSON = "search_report.json"
PLOT_FILES = {"history": "search_history.png", "importance": "search_importance.png"}


def _fmt(value: Any, digits: int = 4) -> str:
    return fmt(value, digits, missing="–")


def _interval(ci) -> str:
    if not ci or any(v is None or not math.isfinite(v) for v in ci):
        return "–"
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _trial_folds(run_dir: Path, metric: str) -> tuple[list[float], int]:
    """The finished folds of a trial folder: their `metric` scores in fold order, and how many there are."""
    scores = []
    names = sorted((p for p in fold_dirs(run_dir) if fold_is_complete(p)),
                   key=lambda p: tuple(int(x) for x in p.name.split("_")[1:]))
    for path in names:
        metrics = read_json(path / "fold_result.json").get("eval_metrics", {})
        scores.append(float(metrics[metric]) if metric in metrics else float("nan"))
    return scores, len(names)


@dataclass
class SearchReport:
    """What a hyperparameter search on cross-validation found.

    Attributes:
        backend: `"optuna"` or `"ray"`.
        metric, direction: the score compared and which way it improves (the objective is its cross-validated mean
            unless a `compute_objective` was given).
        n_folds: folds per trial (`n_folds * n_repeats`), the same folds for every trial.
        best: the best trial: `trial`, `run` (its folder under `trials/`), `value`, `settings`, `params`, `summary`
            (mean, std and corrected 95% interval of `metric` over its folds).
        trials: one row per attempt of a trial: `trial` (the number users see: `hf_tlcv.search.trial_run`, the same
            as in an uninterrupted search, and the folder `trials/<trial>/`), `study_trial` (Optuna's `trial.number`),
            `state` (`complete`, `pruned`, `fail`, `running`, `waiting`, or `interrupted` for an attempt stopped and
            retried as the same trial), `value` (complete trials only), `params`, `settings`, `run`, `retry_of`
            (Optuna's number of the first attempt, for a retry), `fold_scores` (the folds finished when the attempt
            ended, in fold order), `summary`, `feature_cache`.
        comparison: the best trial against the runner-up on their shared folds (`hf_tlcv.studies.study.compare`:
            difference, corrected interval, corrected t-test, Bayesian correlated t-test), or `None` with fewer than
            two.
        pruning: `n_pruned`, `fold_trainings` (folds trained), `fold_trainings_unpruned` (what the same trials would
            have trained without pruning: trials x folds), `fold_trainings_saved` and `pruner` (the pruner, e.g.
            `"MedianPruner(n_startup_trials=1, ...)"`; `None` with Ray Tune's scheduler or in an older report).
        feature_cache: frozen-feature caches `computed` and `reused` by the trials (trials of one strategy cut share
            one cache).
        importance: Optuna's parameter importances (`optuna.importance.get_param_importances`), `{}` when they cannot
            be computed (`importance_note` says why).
        nested: with `nested=True`, per outer fold the inner search's winner, its inner best and its outer score,
            the honest `estimate` (mean and corrected interval of the outer scores) and the `optimism` of the best
            trial's own mean; `None` otherwise.
        same_folds: whether every trial ran on the search's folds (`folds_fingerprint`).
        seconds: wall time of the call that wrote the report.
    """

    backend: str
    metric: str
    direction: str
    n_folds: int
    best: dict | None
    trials: list[dict]
    comparison: dict | None = None
    pruning: dict = field(default_factory=dict)
    feature_cache: dict = field(default_factory=dict)
    importance: dict = field(default_factory=dict)
    importance_note: str | None = None
    nested: dict | None = None
    folds_fingerprint: str | None = None
    same_folds: bool = True
    seconds: float = 0.0

    # ---- building ----------------------------------------------------------------------------------------------
    @classmethod
    def from_study(cls, study: "optuna.Study", runner: "TrialRunner", folds: list["Fold"], backend: str = "optuna",
                   nested: dict | None = None, seconds: float = 0.0) -> "SearchReport":
        """Read the study and the trial folders of a search (see `hf_tlcv.search.run_search`)."""
        from ..folds import folds_fingerprint, load_folds
        from ..results import CVResults
        from .run import RUN_ATTR, SETTINGS_ATTR, TRIAL_FILE, best_trial, describe_pruner, trial_run

        metric = runner.objective.metric
        fingerprint = folds_fingerprint(folds)
        rows, runs_seen, same = [], {}, True
        trials = study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        for t in sorted(trials, key=lambda t: t.number):
            run = t.user_attrs.get(RUN_ATTR)
            run_dir = runner.run_dir(run) if run is not None else None
            scores, n_done = _trial_folds(run_dir, metric) if run_dir is not None and run_dir.is_dir() else ([], 0)
            state = t.state.name.lower()
            if t.number in retried:
                # An attempt stopped (Ctrl-C, a killed process) and retried in the same folder: the folder holds its
                # retry's folds too; its own are those it reported before it stopped.
                state = "interrupted"
                scores = scores[:len(t.intermediate_values)]
            summary = None
            if state == "complete" and run_dir is not None and (run_dir / RESULTS_FILE).exists():
                cv = CVResults.load(run_dir)
                summary = cv.summary.get(metric)
            if run_dir is not None and (run_dir / FOLDS_FILE).exists() and run not in runs_seen:
                same &= folds_fingerprint(load_folds(run_dir / FOLDS_FILE)[0]) == fingerprint
            trial_file = run_dir / TRIAL_FILE if run_dir is not None else None
            cache = read_json(trial_file).get("feature_cache") if trial_file and trial_file.exists() else None
            if run is not None:
                runs_seen[run] = (state, n_done)  # the latest trial of a folder decides its state
            rows.append({"trial": run if run is not None else trial_run(study, t), "study_trial": t.number,
                         "state": state, "value": t.value if state == "complete" else None,
                         "params": to_plain(dict(t.params)), "settings": to_plain(t.user_attrs.get(SETTINGS_ATTR, {})),
                         "run": run, "retry_of": t.system_attrs.get("failed_trial"), "fold_scores": scores,
                         "summary": summary, "feature_cache": cache,
                         "last_intermediate": (t.intermediate_values[max(t.intermediate_values)]
                                               if t.intermediate_values else None)})
        rows.sort(key=lambda r: (r["trial"], r["study_trial"]))  # an interrupted attempt just before its retry
        best = best_trial(study)
        best_row = next((r for r in rows if best is not None and r["study_trial"] == best.number), None)
        report = cls(backend=backend, metric=metric, direction=runner.objective.direction, n_folds=runner.n_folds,
                     best=None if best_row is None else {k: best_row[k] for k in (
                         "trial", "run", "value", "settings", "params", "summary")},
                     trials=rows, nested=nested, folds_fingerprint=fingerprint, same_folds=bool(same),
                     seconds=float(seconds))
        report.pruning = {**_pruning(runs_seen, runner.n_folds),
                          "pruner": describe_pruner(study.pruner) if backend == "optuna" else None}
        report.feature_cache = _cache_use(rows)
        report.comparison = _compare_best(rows, runner, report.direction)
        report.importance, report.importance_note = _importance(study)
        if nested is not None:
            report.nested = _nested_summary(nested, best_row, report.direction, metric)
        return report

    # ---- output ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return to_plain(asdict(self))

    def save(self, directory: str | os.PathLike, plots: bool = True) -> Path:
        """Write `search_report.md`, `search_report.json` and (with `plots=True`) `plots/search_*.png`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if plots:
            from ..plots.cv import DPI

            (directory / PLOTS_DIR).mkdir(exist_ok=True)
            for name, figure in (("history", self.plot_history()), ("importance", self.plot_importance())):
                if figure is not None:
                    figure.savefig(directory / PLOTS_DIR / PLOT_FILES[name], dpi=DPI)
        write_json_atomic(directory / REPORT_JSON, self.to_dict(), indent=2)
        write_text_atomic(directory / REPORT_MD, self.to_markdown() + "\n")
        return directory / REPORT_MD

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SearchReport":
        """Read back what [`save`] wrote."""
        path = Path(directory) / REPORT_JSON
        if not path.exists():
            raise FileNotFoundError(f"No {REPORT_JSON} in {directory}: is it the output_dir of a finished search?")
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    @property
    def trial_table(self):
        """The trials as a `pandas.DataFrame`, one row per trial (pruned trials marked, without a value)."""
        import pandas as pd

        return pd.DataFrame([{"trial": r["trial"], "state": r["state"], "value": r["value"],
                              "folds": len(r["fold_scores"]), **r["settings"]} for r in self.trials])

    def card_section(self) -> str:
        """The report as a section of a model card (`study_report=` of `CVResults.push_to_hub`): headings one level
        down, under the card's "Study", and no plots (they live in the search's folder, not in the pushed run's).

        Example:
        ```python
        >>> best = trainer.hyperparameter_search(n_trials=20)
        >>> run = CVResults.load(f"{args.output_dir}/trials/{best.run_summary.best['run']}")   # the winner's folds
        >>> run.push_to_hub("me/tuned-run", study_report=best.run_summary.card_section())

        ```
        """
        lines = self.to_markdown(plots_dir=None).splitlines()
        return "\n".join("#" + line if line.startswith("#") else line for line in lines)

    def to_markdown(self, plots_dir: str | None = PLOTS_DIR) -> str:
        """The report as markdown (`search_report.md`), plots linked as `plots_dir/...` (`None`: no plots)."""
        from ..escaping import escape_markdown as text  # the metric's and the search space's names are users'

        done = [r for r in self.trials if r["state"] in ("complete", "pruned")]
        arrow = "higher" if self.direction == "maximize" else "lower"
        lines = ["# Hyperparameter search on cross-validation", "",
                 f"{len(done)} trials ({self.backend}), each a {self.n_folds}-fold cross-validation on the same folds "
                 f"(fingerprint `{str(self.folds_fingerprint)[:12]}`"
                 + ("" if self.same_folds else ", **but some trials ran on other folds**")
                 + f"); objective: cross-validated mean of {text(self.metric)} ({arrow} is better). Intervals: "
                   f"corrected for the overlapping training sets ({self._ci_method()}; see docs/statistics.md).", ""]
        lines += ["## Best trial", ""]
        if self.best is None:
            lines += ["No trial finished unpruned.", ""]
        else:
            summary = self.best.get("summary") or {}
            lines += [f"Trial {self.best['trial']}: {text(self.metric)} {_fmt(self.best['value'])} (95% interval "
                      f"{_interval(summary.get('ci95'))}), folder `trials/{self.best['run']}`.", "",
                      "| setting | value |", "|---|---|"]
            lines += [f"| {text(k)} | {text(_fmt(v, 6))} |" for k, v in self.best["settings"].items()]
            lines.append("")
        if self.comparison is not None:
            c = self.comparison
            lines += ["## Best vs. runner-up (paired, on shared folds)", "", c["text"], ""]
        lines += ["## Trials", "",
                  f"| trial | state | {text(self.metric)} (mean) | 95% interval | folds | settings |",
                  "|---|---|---|---|---|---|"]
        for r in self.trials:
            summary = r["summary"] or {}
            state = (f"interrupted, retried as trial {r['trial']}" if r["state"] == "interrupted" else
                     r["state"] + (" (resumed)" if r["retry_of"] is not None else ""))
            value = _fmt(r["value"]) if r["state"] == "complete" else "–"
            settings = _settings_markdown(r["settings"])
            lines.append(f"| {r['trial']} | {state} | {value} | {_interval(summary.get('ci95'))} | "
                         f"{len(r['fold_scores'])}/{self.n_folds} | {settings} |")
        lines += ["", "## Pruning", "", self.pruning_text(), ""]
        fc = self.feature_cache
        if fc.get("computed") or fc.get("reused"):
            lines += ["## Frozen-feature cache", "",
                      f"Trials with a frozen part computed {fc['computed']} cache(s) and reused one in {fc['reused']} "
                      "trial(s) (same model, cut and data).", ""]
        lines += ["## Parameter importance", ""]
        if self.importance:
            lines += [f"- {text(k)}: {v:.3f}" for k, v in self.importance.items()]
        else:
            lines.append(self.importance_note or "Not computed.")
        if plots_dir is not None:
            lines += ["", f"![optimisation history]({plots_dir}/{PLOT_FILES['history']})"]
            if self.importance:
                lines.append(f"![parameter importance]({plots_dir}/{PLOT_FILES['importance']})")
        if self.nested is not None:
            lines += ["", *self._nested_markdown()]
        return "\n".join(lines)

    def pruning_text(self) -> str:
        """What pruning saved, in one paragraph (the report's "Pruning" section, and the recipe's console summary)."""
        p = self.pruning
        trained, unpruned = p.get("fold_trainings", 0), p.get("fold_trainings_unpruned", 0)
        saved = p.get("fold_trainings_saved", unpruned - trained)
        share = f" ({saved / unpruned:.0%} of the search)" if unpruned else ""
        pruner = f" by {p['pruner']}" if p.get("pruner") else ""
        return (f"{p.get('n_pruned', 0)} trials pruned{pruner} after their first folds: {trained} fold trainings "
                f"instead of the {unpruned} a search without pruning would have run ({saved} saved{share}). Pruned "
                "trials are never scored: their partial means are not compared with complete ones.")

    def _ci_method(self) -> str:
        """How the trials' intervals were computed (`hf_tlcv.stats.summarize`'s `ci_method`)."""
        methods = {(r["summary"] or {}).get("ci_method") for r in self.trials} - {None}
        return ", ".join(sorted(methods)) or "corrected_t"

    def _nested_markdown(self) -> list[str]:
        from ..escaping import escape_markdown

        n = self.nested
        est = n["estimate"]
        lines = ["## Nested search: the honest estimate of tuning", "",
                 f"The search ran again inside each of {len(n['outer_folds'])} outer folds ({n['inner_folds']}-fold "
                 "inner cross-validation on the outer-train rows only); each outer fold scored its winner on rows no "
                 f"trial of its search saw ({'checked' if n['isolated'] else '**NOT isolated**'}, `nested/*/rows.json`).",
                 "", f"- Estimate of tune-then-train: {escape_markdown(self.metric)} {_fmt(est['mean'])} (95% interval "
                     f"{_interval(est.get('ci95'))})",
                 f"- Best trial's own cross-validated mean: {_fmt(n.get('selected_mean'))} (optimism "
                 f"{_fmt(n.get('optimism'))})",
                 f"- Mean inner best over the outer folds: {_fmt(n['inner_mean'])}", "",
                 "| outer fold | winner | inner best | outer score | settings |", "|---|---|---|---|---|"]
        for r in n["outer_folds"]:
            settings = _settings_markdown(r["settings"])
            lines.append(f"| {r['fold']} | trial {r['best_trial']} | {_fmt(r['inner_best'])} | "
                         f"{_fmt(r['outer_score'])} | {settings} |")
        return lines

    # ---- plots (drawn on matplotlib Figures, no pyplot state) ------------------------------------------------------
    def plot_history(self) -> "Figure":
        """The objective per trial in order (complete: dots; pruned: crosses at their last running mean) and the best
        so far."""
        from ..plots.cv import LITERAL_TEXT, bounded_figure, short_label

        fig = bounded_figure(7, 4)
        ax = fig.subplots()
        complete = [(r["trial"], r["value"]) for r in self.trials if r["state"] == "complete"]
        pruned = [(r["trial"], r["last_intermediate"]) for r in self.trials
                  if r["state"] == "pruned" and r["last_intermediate"] is not None]
        if complete:
            x, y = zip(*complete)
            ax.scatter(x, y, color="#08519c", s=24, label="complete", zorder=3)
            best = np.maximum.accumulate(y) if self.direction == "maximize" else np.minimum.accumulate(y)
            ax.step(x, best, where="post", color="#e6550d", label="best so far", zorder=2)
        if pruned:
            x, y = zip(*pruned)
            ax.scatter(x, y, marker="x", color="#969696", s=30, label="pruned (running mean when stopped)", zorder=3)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel(f"cross-validated {short_label(self.metric)}", **LITERAL_TEXT)
        ax.set_title("Optimisation history")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def plot_importance(self) -> "Figure | None":
        """Optuna's parameter importances as horizontal bars (`None` when there are none)."""
        if not self.importance:
            return None
        from ..plots.cv import LITERAL_TEXT, bounded_figure, short_label

        names = list(self.importance)[::-1]
        fig = bounded_figure(6, 0.5 + 0.45 * len(names))
        ax = fig.subplots()
        # Numeric positions with the names as fixed tick labels: a categorical axis would draw them as mathtext.
        ax.barh(range(len(names)), [self.importance[n] for n in names], color="#3182bd")
        ax.set_yticks(range(len(names)), [short_label(n) for n in names], **LITERAL_TEXT)
        ax.set_xlabel("importance (share of the objective's variance)")
        ax.set_title("Parameter importance")
        fig.tight_layout()
        return fig


def _settings_markdown(settings: dict) -> str:
    """A trial's settings as one table cell (names and values escaped: a search space may hold any string)."""
    from ..escaping import escape_markdown

    return escape_markdown(", ".join(f"{k}={_fmt(v, 6)}" for k, v in settings.items()))


def _pruning(runs: dict[Any, tuple[str, int]], n_folds: int) -> dict:
    """Fold trainings of the trial folders (each folder's folds are trained once, whatever retried it)."""
    counted = {run: (state, n) for run, (state, n) in runs.items() if state in ("complete", "pruned")}
    trained = sum(n for _, n in counted.values())
    unpruned = n_folds * len(counted)
    return {"n_pruned": sum(state == "pruned" for state, _ in counted.values()), "fold_trainings": trained,
            "fold_trainings_unpruned": unpruned, "fold_trainings_saved": unpruned - trained}


def _cache_use(rows: list[dict]) -> dict:
    seen = {}
    for r in rows:
        if r["feature_cache"] is not None and r["run"] not in seen:
            seen[r["run"]] = r["feature_cache"]
    return {"computed": sum(not c["reused"] for c in seen.values()), "reused": sum(c["reused"] for c in seen.values())}


def _compare_best(rows: list[dict], runner: "TrialRunner", direction: str) -> dict | None:
    """The best complete trial against the runner-up, paired on their folds (`hf_tlcv.studies.study.compare`)."""
    from ..results import CVResults
    from ..studies.study import compare

    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    if len(complete) < 2:
        return None
    ordered = sorted(complete, key=lambda r: -r["value"] if direction == "maximize" else r["value"])
    best, runner_up = ordered[0], ordered[1]
    metric = runner.objective.metric
    try:
        c = compare(CVResults.load(runner.run_dir(best["run"])), CVResults.load(runner.run_dir(runner_up["run"])),
                    metric)
    except (FileNotFoundError, ValueError) as exc:
        return {"best": best["trial"], "runner_up": runner_up["trial"], "text": f"Not compared: {exc}"}
    lo, hi = c["ci95"]
    better = c["p_a_better"] if direction == "maximize" else c["p_b_better"]
    text = (f"Trial {best['trial']} ({metric} {c['mean_a']:.4f}) vs. trial {runner_up['trial']} ({c['mean_b']:.4f}): "
            f"difference {c['mean_diff']:+.4f}, 95% corrected interval [{lo:+.4f}, {hi:+.4f}], corrected t-test "
            f"p={c['p_value']:.3g}, P(best better) = {better:.2f} over {len(c['fold_diffs'])} paired folds -> "
            + ("the best is distinguishable from the runner-up." if c["p_value"] < 0.05 else
               "the best is NOT distinguishable from the runner-up: either would do."))
    return {"best": best["trial"], "runner_up": runner_up["trial"], "text": text, **to_plain(c)}


def _importance(study: "optuna.Study") -> tuple[dict, str | None]:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, "Needs at least two complete trials."
    try:
        with warnings.catch_warnings():  # "few trials in a regime of a conditional parameter": expected here
            warnings.simplefilter("ignore", UserWarning)
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}, None
    except (RuntimeError, ValueError) as exc:
        return {}, f"Not computed: {exc}"


def _nested_summary(nested: dict, best_row: dict | None, direction: str, metric: str) -> dict:
    from ..stats import is_bounded_metric, summarize

    rows = nested["outer_folds"]
    scores = [r["outer_score"] for r in rows]
    n_train = float(np.mean([r["n_train"] for r in rows]))
    n_eval = float(np.mean([r["n_eval"] for r in rows]))
    estimate = summarize(scores, n_train=n_train, n_eval=n_eval, bounded=is_bounded_metric(metric, scores))
    selected = best_row["value"] if best_row is not None else None
    sign = 1 if direction == "maximize" else -1
    return {**nested, "estimate": estimate, "inner_mean": float(np.mean([r["inner_best"] for r in rows])),
            "selected_mean": selected,
            "optimism": None if selected is None else sign * (selected - estimate["mean"]),
            "isolated": all(r["isolated"] for r in rows)}


__all__ = ["PLOT_FILES", "REPORT_JSON", "REPORT_MD", "SearchReport"]
