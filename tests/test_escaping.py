"""Names strangers choose (class folders, metric and parameter names, file names) reach the model card, the audit's
Markdown and every plot as the characters they are: no HTML element, no link, no extra table column, no mathtext,
and no image lost to a name."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hf_tlcv.audit.checks import AuditReport
from hf_tlcv.hub.card import CVCardData, build_model_card
from hf_tlcv.plots.cv import (
    PLOT_FILES,
    plot_confusion_matrix,
    plot_per_class_f1,
    save_plots,
    short_label,
)
from hf_tlcv.results import CVResults, FoldResult, predictions_frame
from hf_tlcv.search.report import SearchReport

markdown_it = pytest.importorskip("markdown_it")

HOSTILE = [
    "<svg onload=alert(3)>",
    "[click me](javascript:alert(1))",
    "a|b",
    "$^^$",
    "**bold**",
    "back`tick",
    "two\nlines",
    "# heading",
    "x" * 150,
]


def _visible(name: str) -> str:
    """What a reader sees: the name on one line (a line break in a name cannot start a new Markdown line)."""
    return name.replace("\n", " ")


def _results(names: list[str], metadata: dict | None = None) -> CVResults:
    n = len(names)
    rng = np.random.default_rng(0)
    folds = []
    for k in range(2):
        rows = np.arange(k * 3 * n, (k + 1) * 3 * n)
        labels = np.tile(np.arange(n), 3)
        probs = rng.dirichlet(np.ones(n), 3 * n)
        probs[np.arange(2 * n), labels[: 2 * n]] += 1.0  # mostly right, some confusions
        frame = predictions_frame(rows, 0, k, labels, probs / probs.sum(axis=1, keepdims=True))
        acc = float((frame["prediction"] == frame["label"]).mean())
        folds.append(FoldResult(0, k, 3 * n, 3 * n, {"loss": 1.0, "accuracy": acc, "$^^$ <b>|": acc},
                                {"loss": 0.5, "accuracy": 0.9, "$^^$ <b>|": 0.9}, [], frame))
    return CVResults(folds, config={"n_folds": 2, "n_repeats": 1}, label_names=list(names),
                     metadata=metadata or {})


def _audit(names: list[str]) -> AuditReport:
    """An audit (as `hf_tlcv.audit.checks.audit` returns it, without running cleanlab) that flags one label error per
    class and a near-duplicate pair between every two neighbouring classes, over a small image dataset."""
    n = len(names)
    rows = np.arange(2 * n)
    labels, predictions = rows % n, (rows + 1) % n
    issues = pd.DataFrame({"row": rows, "label": labels, "prediction": predictions, "prob_label": 0.1,
                           "prob_prediction": 0.8, "label_score": np.linspace(0, 1, 2 * n),
                           "is_label_issue": rows < n})
    pairs = pd.DataFrame({"row_a": rows[:n], "row_b": rows[:n] + n, "distance": 0.01})
    straddling = pairs.assign(n_folds=1, fold_a=0, fold_b=1, label_a=labels[:n], label_b=predictions[:n])
    image = Image.new("RGB", (8, 8), (200, 30, 30))
    return AuditReport(
        issues=issues,
        issue_summary=pd.DataFrame({"issue_type": ["label", "near_duplicate"], "score": [0.5, 0.9],
                                    "num_issues": [n, n]}),
        class_label_quality=pd.DataFrame({"class": names, "label_issues": 1, "label_noise": 0.5,
                                          "label_quality": 0.5}),
        near_duplicate_pairs=pairs,
        fold_leakage=pd.DataFrame({"repeat": [0, 0], "fold": [0, 1], "n_eval": [n, n], "n_leaked": [1, 1],
                                   "share": [1 / n, 1 / n]}),
        leaked=pd.DataFrame({"repeat": [0, 0], "fold": [0, 1], "row": [0, n]}),
        straddling_pairs=straddling,
        groups=rows,
        label_names=list(names),
        n_rows=2 * n,
        n_repeats=1,
        embeddings_from="<img src=x onerror=alert(2)>",
        metric="cosine",
        image_column="image",
        dataset=[{"image": image} for _ in rows],
    )


# ---- Markdown, as a renderer reads it ----------------------------------------------------------------------------
def _tokens(markdown: str):
    # The YAML header of a card is metadata (the Hub renders the Markdown after it); html=True: any raw HTML the
    # Markdown still held comes out as html_inline / html_block tokens.
    if markdown.startswith("---\n"):
        markdown = markdown.split("\n---\n", 1)[1]
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").parse(markdown)


def _text(inline) -> str:
    return "".join(child.content for child in inline.children or [] if child.type != "softbreak")


def _tables(tokens) -> list[list[list[str]]]:
    """Every table as rows of cell texts (header row first)."""
    tables, rows, row = [], None, None
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            rows = []
        elif token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            row.append(_text(tokens[i + 1]))
        elif token.type == "tr_close":
            rows.append(row)
        elif token.type == "table_close":
            tables.append(rows)
    return tables


def _assert_inert(tokens) -> None:
    """No HTML, no link and no heading came from a name, and every table row has its header's cells. (Emphasis
    would show as a name's cell text losing its `**`: the tests compare that text.)"""
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    assert not kinds & {"html_inline", "html_block", "link_open"}, kinds
    assert "heading" not in [_text(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "heading_open"]
    for rows in _tables(tokens):
        assert len({len(r) for r in rows}) == 1, rows  # no name added a column


def _column(tables, header: str) -> list[str]:
    return [row[rows[0].index(header)] for rows in tables if header in rows[0] for row in rows[1:]]


def test_card_shows_hostile_names_as_text():
    data = {"name": "my`data <b>x</b>", "data_files": ["<img src=x onerror=alert(1)>.csv", "``", "a|b.csv"]}
    cv = _results(HOSTILE, metadata={"data": data, "label_column": "lab`el|<i>", "group_column": "`<b>g</b>`",
                                     "fold_strategy": "stratified_group"})
    card = str(build_model_card(cv, CVCardData(dataset_name="[x](javascript:alert(4))")))
    tokens = _tokens(card)
    _assert_inert(tokens)
    tables = _tables(tokens)
    assert sorted(_column(tables, "class")) == sorted(map(_visible, HOSTILE))
    assert "$^^$ <b>|" in _column(tables, "metric")  # a metric name is a user's too
    codes = [c.content for t in tokens for c in t.children or [] if c.type == "code_inline"]
    assert {"my`data <b>x</b>", "<img src=x onerror=alert(1)>.csv", "``", "a|b.csv", "lab`el|<i>",
            "`<b>g</b>`"} <= set(codes)
    classes = next(_text(tokens[i + 1]) for i, t in enumerate(tokens)
                   if t.type == "paragraph_open" and _text(tokens[i + 1]).startswith("Classes"))
    assert all(_visible(name) in classes for name in HOSTILE)


def test_audit_markdown_and_card_section_show_hostile_names_as_text(tmp_path):
    report = _audit(HOSTILE)
    written = report.save(tmp_path)
    markdown = written["markdown"].read_text(encoding="utf-8")
    tokens = _tokens(markdown)
    _assert_inert(tokens)
    tables = _tables(tokens)
    visible = sorted(map(_visible, HOSTILE))
    assert sorted(_column(tables, "given")) == visible and sorted(_column(tables, "predicted")) == visible
    assert sorted(_column(tables, "label a")) == visible and sorted(_column(tables, "label b")) == visible
    assert "<img src=x onerror=alert(2)>" in _text(tokens[[t.type for t in tokens].index("paragraph_open") + 1])
    # the card of the run folder carries the section as it is
    card = str(build_model_card(_results(HOSTILE), CVCardData(), tmp_path))
    assert markdown.strip() in card
    _assert_inert(_tokens(card))


def test_search_report_markdown_shows_hostile_parameter_names_as_text():
    trials = [{"trial": 0, "state": "complete", "value": 0.5, "fold_scores": [0.5], "summary": {}, "retry_of": None,
               "settings": {"<b>p|q</b>": "[a](javascript:1)"}, "last_intermediate": None}]
    report = SearchReport(backend="optuna", metric="$^^$", direction="maximize", n_folds=1, best=None,
                          trials=trials, importance={"<svg onload=alert(3)>": 1.0})
    tokens = _tokens(report.to_markdown(plots_dir=None))
    _assert_inert(tokens)
    assert _column(_tables(tokens), "settings") == ["<b>p|q</b>=[a](javascript:1)"]
    for name, figure in (("importance", report.plot_importance()), ("history", report.plot_history())):
        png = io.BytesIO()
        figure.savefig(png, format="png")  # draws every text: a mathtext error would raise here
        assert png.getvalue()[:4] == b"\x89PNG", name
    ticks = [t.get_text() for t in report.plot_importance().axes[0].get_yticklabels()]
    assert ticks == ["<svg onload=alert(3)>"]


# ---- plots: every image written, every name drawn as its characters ------------------------------------------------
def _drawn(name: str) -> str:
    return short_label(name)


def test_plots_draw_hostile_names_literally(tmp_path):
    cv = _results(HOSTILE)
    written = save_plots(cv, tmp_path)
    assert set(PLOT_FILES) <= set(written)  # "$^^$" once made the confusion matrix fail to draw
    ax = plot_confusion_matrix(cv).axes[0]
    expected = [_drawn(name) for name in HOSTILE]
    assert [t.get_text() for t in ax.get_yticklabels()] == expected
    assert [t.get_text() for t in ax.get_xticklabels()] == expected
    short = [name for name in HOSTILE if len(name) <= 28 and "\n" not in name]
    assert all(_drawn(name) == name for name in short) and _drawn("x" * 150) == "x" * 27 + "…"
    assert not any(t.get_parse_math() for t in ax.get_yticklabels())
    per_class = [t.get_text() for t in plot_per_class_f1(cv).axes[0].get_yticklabels()]
    assert sorted(per_class) == sorted(expected)


def test_audit_galleries_are_drawn_with_hostile_names(tmp_path):
    report = _audit(HOSTILE)
    written = report.save(tmp_path)
    assert {"gallery", "pairs"} <= set(written)  # both images, not lost to a name
    from hf_tlcv.audit.plots import plot_duplicate_pairs, plot_label_issues

    titles = [ax.get_title() for ax in plot_label_issues(report, max_items=len(HOSTILE)).axes if ax.get_title()]
    for title, rec in zip(titles, report.label_issues.itertuples()):
        assert f"given: {short_label(rec.given, 20)}" in title
    pairs = [ax.get_title().split("\n")[1] for ax in plot_duplicate_pairs(report, max_items=4).axes if ax.get_title()]
    assert pairs[:2] == [short_label(HOSTILE[0], 20), short_label(HOSTILE[1], 20)]


def test_study_plots_draw_hostile_variant_names_literally(tmp_path):
    from hf_tlcv.studies.report import StudyReport
    from hf_tlcv.studies.plots import plot_lr_curve, plot_variant_scores, save_study_plots

    names = HOSTILE[:5]
    variants = {name: _results(["cat", "dog"]) for name in names}
    info = {name: {"run": name, "label": "", "x": 1e-4 * (i + 1), "tick": name} for i, name in enumerate(names)}
    report = StudyReport([], variants, {"lr": names}, info, "$^^$ <b>|")
    written = save_study_plots(report, tmp_path)
    assert set(written) == {"variant_scores_lr", "lr_curve"} and all(p.stat().st_size for p in written.values())
    ax = plot_variant_scores(report, "lr").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [short_label(n) for n in names]
    assert ax.get_ylabel() == "eval $^^$ <b>|"
    ax = plot_lr_curve(report).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [short_label(n) for n in names]


def test_a_card_of_many_classes_lists_the_first_ones_and_counts_the_rest():
    from hf_tlcv.hub.card import CARD_CLASSES

    names = [f"class {k}" for k in range(CARD_CLASSES + 70)]
    card = str(build_model_card(_results(names), CVCardData()))
    line = next(line for line in card.splitlines() if line.startswith("- Classes ("))
    assert line.startswith(f"- Classes ({CARD_CLASSES + 70}): class 0, class 1,")
    assert f"class {CARD_CLASSES - 1}, … and 70 more" in line and f"class {CARD_CLASSES}," not in line


def test_study_report_names_are_text():
    from hf_tlcv.studies.report import StudyReport

    cv = _results(["a", "b"])
    report = StudyReport([], {"<b>x</b>|y": cv}, {"custom": ["<b>x</b>|y"]},
                         {"<b>x</b>|y": {"label": "[l](javascript:alert(1))"}}, "accuracy",
                         settings={"model": "<img src=x onerror=alert(1)>"})
    tokens = _tokens(report.to_markdown())
    _assert_inert(tokens)
    assert "<b>x</b>|y" in _column(_tables(tokens), "variant")
