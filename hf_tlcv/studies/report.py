"""The outcome of a [`TransferStudy`]: verdicts in words backed by numbers, per-variant results, markdown, plots.

A [`StudyReport`] is a plain Python object (`report.verdicts`, `report.variants`), a self-contained markdown
page (`report.to_markdown()`, images linked as `plots/...`) and a folder (`report.save(dir)`:
`report.md`, `study_report.json` with every number, `plots/*.png`) that [`StudyReport.load`] reads back.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..escaping import escape_markdown
from ..results import CVResults
from ..run_dir import PLOTS_DIR, write_json_atomic, write_text_atomic
from ..utils import fmt, to_plain

REPORT_FILE = "report.md"
REPORT_JSON = "study_report.json"
# Printed verdict lines stay readable in a terminal and a diff: a headline, then short indented lines.
BLOCK_WIDTH = 100

QUESTION_TITLES = {
    "pretrained": "Pretrained vs. from scratch",
    "baseline": "Pretrained vs. a classical baseline",
    "freeze": "Freeze depth",
    "lr": "Learning rate",
    "custom": "Variants",
    "overfitting": "Overfitting",
}


@dataclass
class Verdict:
    """The answer to one question of a study.

    Attributes:
        question: `"pretrained"`, `"freeze"`, `"lr"`, `"custom"`, `"overfitting"`, or `"<question> (nested)"`.
        text: the answer in words, with the numbers it rests on.
        numbers: those numbers (and more), as plain JSON values.
        headline: the answer in one short line (empty in reports saved before it existed).
        details: the numbers behind the headline, one short line each (see [`Verdict.block`]).
        degenerate: the variants of this verdict whose out-of-fold predictions are one class on every fold.
    """

    question: str
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)
    headline: str = ""
    details: list[str] = field(default_factory=list)
    degenerate: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"[{self.question}] {self.text}"

    def block_lines(self, width: int = BLOCK_WIDTH) -> list[str]:
        """The verdict as a headline and indented detail lines, none longer than `width` characters.

        A verdict loaded from a report saved before headlines existed has only `text`: it is wrapped instead.
        """
        if not self.headline:
            return _wrap(f"[{self.question}] {self.text}", width)
        lines = _wrap(f"[{self.question}] {self.headline}", width)
        for detail in self.details:
            lines += _wrap(detail, width, indent="  ")
        return lines

    def block(self, width: int = BLOCK_WIDTH) -> str:
        """[`block_lines`] joined by newlines: what the recipe prints.

        Example:
        ```python
        >>> print(report.verdict("pretrained").block())
        [pretrained] pretrained beats scratch by +0.330 accuracy (0.430 vs 0.100).
          95% interval of the difference [+0.223, +0.437]; corrected t-test p=0.00104; 5 paired folds
          ...
        ```
        """
        return "\n".join(self.block_lines(width))


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    # Hyphenated labels ("layer-wise", "one-class") stay whole; continuation lines sit deeper than the first.
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_on_hyphens=False)


def _fmt(value: Any, digits: int = 4) -> str:
    return fmt(value, digits, missing="–")


def _md(value) -> str:
    """A name in the report's Markdown (a model id, a metric, a variant: the user's choice) as the text it is."""
    return escape_markdown(str(value))


def _interval(ci) -> str:
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return "–"
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


class StudyReport:
    """What a [`TransferStudy`] found.

    Attributes:
        verdicts (`list[Verdict]`): one per question (plus one per nested selection).
        variants (`dict[str, CVResults]`): every variant's cross-validation results, by variant name. Two names
            with the same effective settings share one run (see `variant_info[name]["run"]`).
        questions (`dict[str, list[str]]`): the variants each question compares.
        variant_info (`dict[str, dict]`): per variant, its `overrides`, a readable `label`, its position `x` on the
            question's curve (frozen blocks, learning rate) and the `run` folder that holds its results.
        metric (`str`): the score compared.
        overfitting (`dict[str, list[dict]]`): per run, one [`OverfittingDiagnosis`] dict per fold.
        nested (`dict[str, dict]`): per selection question run with `nested=True`, the selection in each outer
            fold and the unbiased estimate.
        settings (`dict`): how the study was run (model, rows, folds, seeds, test settings).

    Example:
    ```python
    >>> report = study.run()
    >>> for verdict in report.verdicts:
    ...     print(verdict)
    >>> report.save("study"); StudyReport.load("study")

    ```
    """

    def __init__(self, verdicts: list[Verdict], variants: dict[str, CVResults], questions: dict[str, list[str]],
                 variant_info: dict[str, dict], metric: str, overfitting: dict[str, list[dict]] | None = None,
                 nested: dict[str, dict] | None = None, settings: dict | None = None):
        self.verdicts = list(verdicts)
        self.variants = dict(variants)
        self.questions = dict(questions)
        self.variant_info = dict(variant_info)
        self.metric = metric
        self.overfitting = dict(overfitting or {})
        self.nested = dict(nested or {})
        self.settings = dict(settings or {})

    def verdict(self, question: str) -> Verdict:
        """The verdict of `question` (e.g. `"freeze"` or `"freeze (nested)"`)."""
        for v in self.verdicts:
            if v.question == question:
                return v
        raise KeyError(f"No verdict for {question!r}; this report has {[v.question for v in self.verdicts]}.")

    def __repr__(self) -> str:
        return f"StudyReport({len(self.variants)} variants, questions={list(self.questions)})"

    # ---- markdown ----------------------------------------------------------------------------------------
    def _variant_row(self, name: str) -> str:
        cv = self.variants[name]
        s = cv.summary.get(self.metric, {})
        t = cv.train_summary.get(self.metric, {})
        folds = ", ".join(f"{f.eval_metrics.get(self.metric, math.nan):.3f}" for f in cv.folds)
        info = self.variant_info.get(name, {})
        return (f"| {_md(name)} | {_md(info.get('label', ''))} | {_fmt(s.get('mean'))} | {_interval(s.get('ci95'))} | "
                f"{_fmt(t.get('mean'))} | {folds} |")

    def _comparison_table(self, question: str) -> list[str]:
        verdict = next((v for v in self.verdicts if v.question == question), None)
        rows = (verdict.numbers.get("comparisons") if verdict else None) or []
        if not rows:
            return []
        best = verdict.numbers.get("best")
        lines = [f"Each variant against the best ({_md(best)}); p adjusted with "
                 f"{verdict.numbers.get('p_adjust', 'holm')} over {len(rows)} comparisons.", "",
                 f"| variant | {_md(self.metric)} | difference to best | 95% interval | p | p adjusted | P(best better) "
                 "| test |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            test = {"row": "per-row", "corrected": "corrected t"}.get(r.get("method", "corrected"), r.get("method"))
            if r.get("fallback"):
                test += f" ({_md(r['fallback'])})"
            lines.append(f"| {_md(r['variant'])} | {_fmt(r['mean'])} | {r['mean_diff']:+.4f} | {_interval(r['ci95'])} | "
                         f"{r['p_value']:.3g} | {r['p_adjusted']:.3g} | {r['p_best_better']:.2f} | {test} |")
        return lines + [""]

    def verdicts_markdown(self) -> str:
        """The verdicts as a markdown list: per question its headline, then its numbers as a nested list."""
        lines = []
        for v in self.verdicts:
            title = QUESTION_TITLES.get(v.question, v.question)
            if v.headline:
                lines.append(f"- **{title}**: {v.headline}")
                lines += [f"  - {detail}" for detail in v.details]
            else:  # a report saved before verdicts had headlines
                lines.append(f"- **{title}**: {v.text}")
        return "\n".join(lines)

    def _dependence_markdown(self) -> list[str]:
        """A paragraph naming the variants whose out-of-fold errors were dependent in space or time (see
        `hf_tlcv.dependence`): the shared folds are random, so every comparison may be optimistic for new data."""
        from ..escaping import escape_markdown

        flagged = {name: cv.diagnostics["dependence"] for name, cv in self.variants.items()
                   if (cv.diagnostics.get("dependence") or {}).get("significant")}
        if not flagged:
            return []
        first = next(iter(flagged.values()))
        proposal = (first.get("proposal") or {}).get("command")
        text = ("**Where k-fold may flatter.** The out-of-fold errors of " + ", ".join(
            f"{escape_markdown(name)} ({found['statistic']} {found['value']:.3f}, p = {found['p_value']:.2g})"
            for name, found in flagged.items()) + f" are autocorrelated in {first['kind']}: random folds put near "
            "neighbours in training and evaluation, so these scores are likely optimistic for new data.")
        if proposal:
            text += f" Run the study again with blocked folds: `{proposal}`."
        return [text, ""]

    def to_markdown(self, plots_dir: str = PLOTS_DIR) -> str:
        """The report as markdown: verdicts, tables, and the plots linked as `plots_dir/<name>.png`."""
        st = self.settings
        lines = [f"# Transfer-learning study: {_md(st.get('model', 'model'))} on {st.get('n_rows', '?')} rows", ""]
        lines.append(
            f"{st.get('n_folds', '?')}-fold x {st.get('n_repeats', 1)} cross-validation; every variant ran on the "
            f"same folds (fingerprint `{str(st.get('folds_fingerprint', '?'))[:12]}`) with the same training seed "
            f"({st.get('seed', '?')}). Metric: {_md(self.metric)}. 95% intervals and p: the paired per-row test "
            f"(Bayle et al.; McNemar's exact test as a floor) where both runs allow it, else the Nadeau-Bengio "
            f"corrected resampled t-test (df = k*r - 1); the tables say which; {st.get('p_adjust', 'holm')}-adjusted "
            f"within a question; "
            f"P(better): Bayesian correlated t-test with a region of practical equivalence of "
            f"±{st.get('rope', 0.01):g}.")
        lines += ["", "## Verdicts", "", self.verdicts_markdown()]
        lines += ["", "## Variants", "",
                  f"| variant | setting | {_md(self.metric)} | 95% interval | train {_md(self.metric)} | per fold |",
                  "|---|---|---|---|---|---|"]
        lines += [self._variant_row(name) for name in self.variants]
        lines.append("")
        lines += self._dependence_markdown()
        for question, names in self.questions.items():
            if question == "overfitting":
                continue
            lines += [f"## {QUESTION_TITLES.get(question, question)}", ""]
            lines += self._comparison_table(question)
            lines += [f"![{question}: score per variant]({plots_dir}/variant_scores_{question}.png)", ""]
            if question == "freeze":
                lines += [f"![freeze-depth curve]({plots_dir}/freeze_curve.png)", ""]
            if question == "lr":
                lines += [f"![learning-rate curve]({plots_dir}/lr_curve.png)", ""]
            nested = self.nested.get(question)
            if nested:
                lines += [f"### {QUESTION_TITLES.get(question, question)}: nested cross-validation", "",
                          f"Inner {nested['inner_folds']}-fold CV on each outer-train part selects; the selected "
                          "variant is trained on the outer-train part and scored on the outer-eval part, which the "
                          "selection never saw.", "",
                          "| outer fold | selected | inner means | outer score |", "|---|---|---|---|"]
                for row in nested["outer_folds"]:
                    inner = ", ".join(f"{k} {v:.3f}" for k, v in row["inner_means"].items())
                    lines.append(f"| {row['fold']} | {_md(row['selected'])} | {_md(inner)} | {row['outer_score']:.4f} |")
                est = nested["estimate"]
                lines += ["", f"Unbiased estimate: {self.metric} {est['mean']:.4f} (95% interval "
                          f"{_interval(est['ci95'])}); the best variant read off the same folds: "
                          f"{nested['naive_best']} {nested['naive_mean']:.4f}.", ""]
        if self.overfitting:
            lines += ["## Overfitting", "",
                      "| variant | fold | overfitting | from epoch | best epoch | eval loss min -> last | "
                      f"train-eval gap ({self.metric}) |", "|---|---|---|---|---|---|---|"]
            for run, diagnoses in self.overfitting.items():
                for d in diagnoses:
                    losses = (f"{d['eval_loss_min']:.3f} -> {d['eval_loss_last']:.3f}"
                              if d.get("eval_loss_min") is not None else "–")
                    gap = f"{d['gap']:+.3f}" if d.get("gap") is not None else "–"
                    lines.append(f"| {_md(run)} | {d['fold']} | {'yes' if d['overfitting'] else 'no'} | "
                                 f"{_fmt(d.get('onset_epoch'))} | {_fmt(d.get('best_epoch'))} | {losses} | {gap} |")
            lines.append("")
            for run in self.overfitting:
                lines += [f"![learning curves of {run}]({plots_dir}/learning_curves_{run}.png)", ""]
        return "\n".join(lines)

    # ---- persistence -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        runs = {}
        for name, info in self.variant_info.items():
            runs.setdefault(info.get("run", name), name)
        return to_plain({
            "metric": self.metric,
            "settings": self.settings,
            "questions": self.questions,
            "variant_info": self.variant_info,
            "verdicts": [asdict(v) for v in self.verdicts],
            "overfitting": self.overfitting,
            "nested": self.nested,
            "runs": {run: self.variants[name].to_dict() for run, name in runs.items() if name in self.variants},
        })

    def save(self, directory: str | os.PathLike, plots: bool = True) -> Path:
        """Write `report.md`, `study_report.json` and (with `plots=True`) `plots/*.png` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if plots:
            from .plots import save_study_plots

            save_study_plots(self, directory / PLOTS_DIR)
        write_json_atomic(directory / REPORT_JSON, self.to_dict(), indent=2)
        write_text_atomic(directory / REPORT_FILE, self.to_markdown() + "\n")
        return directory / REPORT_FILE

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "StudyReport":
        """Read back what [`save`] wrote (per-fold predictions are not part of a report)."""
        path = Path(directory) / REPORT_JSON
        if not path.exists():
            raise FileNotFoundError(f"No {REPORT_JSON} in {directory}: is it the output_dir of a finished study?")
        data = json.loads(path.read_text(encoding="utf-8"))
        runs = {run: CVResults.from_dict(d, str(path)) for run, d in data["runs"].items()}
        variants = {name: runs[info["run"]] for name, info in data["variant_info"].items() if info["run"] in runs}
        return cls([Verdict(**v) for v in data["verdicts"]], variants, data["questions"], data["variant_info"],
                   data["metric"], data.get("overfitting"), data.get("nested"), data.get("settings"))


__all__ = ["StudyReport", "Verdict"]
