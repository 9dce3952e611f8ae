"""The Space's Tune and Audit sections, end to end through gradio_client on the smallest settings.

One app process serves the module (as in `tests/test_space.py`), without a browser: the integration tier. Each section runs once, and what it shows is checked
against the files it saved in the visitor's folder, and those against an independent computation from the trials'
or the run's own `cv_results.json`. Each section also gets the stranger's try: a trial count outside the page's
range sent through the API, a run of another visitor named for an audit.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("optuna")
from hub_server import HubServer  # noqa: E402  (tests/ is on sys.path under pytest)
from space_harness import BUILTIN, LITE0, PROBE, ZIP, png, run_args, running_app  # noqa: E402

FREEZE = "Freeze the bottom blocks"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    hub = HubServer().start()
    try:
        with running_app(tmp_path_factory.mktemp("tabs"), hub.url) as app:
            yield app
    finally:
        hub.stop()


def client(space):
    from gradio_client import Client

    return Client(space.url, verbose=False)


def tune_args(**overrides) -> list:
    """The /tune endpoint's inputs, in order: the first tab's data and model, a 2-fold search of 48 images at 32 px."""
    settings = dict(source=BUILTIN, upload=None, hub_id="", hub_split="train", label_column="label",
                    model_source=LITE0, hub_model="", n_folds=2, epochs=1, sample_cap=48, image_size=32, n_trials=4,
                    strategies=[PROBE, FREEZE])
    settings.update(overrides)
    return list(settings.values())


def latest(space, pattern: str):
    found = sorted(space.workdir.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


# ---- Tune --------------------------------------------------------------------------------------------------------
def test_tune_runs_a_small_search_and_shows_the_saved_report(space):
    from hf_tlcv.search.report import SearchReport

    status, report, history, download = client(space).predict(*tune_args(), api_name="/tune")
    assert status.startswith("**Done:** 4 trials in"), status
    folder = latest(space, "visitor-*/tune-*/search_report.json").parent
    saved = SearchReport.load(folder)
    # What the page shows is the saved report, without its plot links (the plot is shown beside it), and with the
    # project's documentation file, which a visitor cannot open, pointed to the page's own notes.
    assert "docs/" not in report
    assert report == saved.to_markdown(plots_dir=None).replace(
        "see docs/statistics.md", "see 'How the numbers are computed' at the bottom of the page")
    assert len(saved.trials) == 4 and saved.n_folds == 2 and saved.metric == "accuracy"
    for trial in saved.trials:
        # The space is the ticked strategies and the first tab's epochs.
        assert trial["settings"]["finetune_strategy"] in ("linear_probe", "freeze")
        assert trial["settings"]["num_train_epochs"] == 1
        assert trial["state"] in ("complete", "pruned")
        run = json.loads((folder / "trials" / str(trial["run"]) / "cv_results.json").read_text()) if (
            folder / "trials" / str(trial["run"]) / "cv_results.json").exists() else None
        if trial["state"] == "complete":  # its value is the mean of its own folds' accuracies, recomputed here
            scores = [f["eval_metrics"]["accuracy"] for f in run["folds"]]
            assert len(scores) == 2 and trial["value"] == pytest.approx(np.mean(scores), abs=1e-9)
    best = max((t for t in saved.trials if t["state"] == "complete"), key=lambda t: t["value"])
    assert saved.best["trial"] == best["trial"]
    assert f"best: trial {best['trial']}, accuracy {best['value']:.4f}" in status
    assert f"Trial {best['trial']}: accuracy {best['value']:.4f}" in report
    assert history.endswith("search_history.png")
    with zipfile.ZipFile(download) as archive:
        assert {"search_report.json", "search_report.md", "plots/search_history.png"} <= set(archive.namelist())


@pytest.mark.parametrize("overrides, refusal", [
    (dict(n_trials=11), r"trials must be a whole number between 4 and 10|greater than maximum value 10"),
    (dict(n_trials=1), r"trials must be a whole number between 4 and 10|less than minimum value 4"),
    (dict(n_trials=4.5), r"The trials must be a whole number between 4 and 10 \(got 4.5\)"),
    (dict(strategies=["rm -rf /"]), r"Tick at least one strategy to search, among:|not in the list of choices"),
    (dict(strategies=[]), "Tick at least one strategy to search, among:"),
    (dict(n_folds=500), r"folds k must be a whole number between 2 and 10|greater than maximum value 10"),
])
def test_tune_settings_outside_the_page_are_refused_through_the_api(space, overrides, refusal):
    from gradio_client.exceptions import AppError

    before = set(space.workdir.glob("visitor-*/tune-*"))
    try:  # either layer may refuse: Gradio's slider range, then the app's boundary (`bounded`, `ticked`)
        status, *shown = client(space).predict(*tune_args(**overrides), api_name="/tune")
    except AppError as exc:
        status, shown = f"**Error:** {exc}", ["", None, None]
    assert status.startswith("**Error:**") and re.search(refusal, status.replace("\\", "")), status
    assert shown == ["", None, None]
    assert set(space.workdir.glob("visitor-*/tune-*")) <= before  # refused before any folder or training


# ---- Audit -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_run(space, tmp_path_factory):
    """A visitor with one finished small run (a linear probe: its frozen features serve as the audit's embeddings) on
    an uploaded zip of near-identical dark and bright squares, one bright square filed as dark."""
    pytest.importorskip("cleanlab")
    from gradio_client import handle_file

    folder = tmp_path_factory.mktemp("zip")
    archive = folder / "squares.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for i in range(12):
            out.write(png(folder / f"d{i}.png", 10 + 3 * i), f"dark/{i}.png")
            out.write(png(folder / f"b{i}.png", 200 + 3 * i), f"bright/{i}.png")
        out.write(png(folder / "wrong.png", 240), "dark/wrong.png")
    visitor = client(space)
    status, *_ = visitor.predict(*run_args(source=ZIP, upload=handle_file(str(archive)), sample_cap=0, epochs=3,
                                           learning_rate=0.03), api_name="/run")
    assert "2 folds in" in status, status
    return visitor, latest(space, "visitor-*/run-*/cv_results.json").parent


def shown_rows(table: dict) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def test_audit_of_a_visitors_run_shows_the_saved_numbers(own_run):
    import pandas as pd

    from hf_tlcv.folds import load_folds

    visitor, folder = own_run
    status, numbers, gallery, issues, leakage = visitor.predict("", api_name="/audit")  # "": the last run
    assert status.startswith("**Done:** Run 1:"), status
    saved = json.loads((folder / "audit.json").read_text())
    assert saved["n_audited"] == 25 and saved["embeddings_from"] == "feature cache"  # no extra embedding pass
    assert "**25 rows audited**" in numbers and "(feature cache)" in numbers
    for rec in saved["issue_summary"]:  # markdown escapes aside, one row per issue type with its count and score
        assert f"| {rec['issue_type']} | {rec['num_issues']} |" in numbers.replace("\\", "")
        assert f"| {rec['score']:.3f} |" in numbers
    flagged = pd.read_parquet(folder / "audit" / "issues.parquet")["is_label_issue"]
    assert f"{int(flagged.sum())} suspected label errors" in status

    # The label issues shown are audit.json's, and p(given) is the run's own out-of-fold probability of the label.
    rows = shown_rows(issues)
    assert [int(r["row"]) for r in rows] == [r["row"] for r in saved["label_issues"]] and len(rows) == flagged.sum()
    oof = pd.read_parquet(folder / "oof_predictions.parquet").set_index("row")
    for row in rows:
        label = int(oof.loc[int(row["row"]), "label"])
        assert float(row["p(given)"]) == pytest.approx(oof.loc[int(row["row"]), f"prob_{label}"], abs=6e-5)
        assert row["given"] == saved["label_names"][label]

    # Leakage per fold, recomputed from folds.json and the near-duplicate pairs found.
    pairs = [(p["row_a"], p["row_b"]) for p in saved["near_duplicate_pairs"]]
    folds = load_folds(folder / "folds.json")[0]
    shown = shown_rows(leakage)
    assert len(shown) == len(folds) == 2
    for fold, row in zip(folds, shown):
        evaluated, trained = set(fold.eval_indices.tolist()), set(fold.train_indices.tolist())
        leaked = {a for a, b in pairs if a in evaluated and b in trained} | {
            b for a, b in pairs if b in evaluated and a in trained}
        assert (int(row["fold"]), int(row["eval rows"])) == (fold.fold, len(evaluated))
        assert int(row["with a near-duplicate in train"]) == len(leaked)
    assert f"{saved['leakage']['n_leaked']} of {saved['leakage']['n_eval']} evaluations" in numbers

    # The gallery is the images the audit saved beside the run's results.
    assert sorted(Path(item["image"]).name for item in gallery) == sorted(
        p.name for p in (folder / "audit").glob("*.png"))

    # Asked again, the same report comes back without a second audit.
    stamp = (folder / "audit.json").stat().st_mtime_ns
    assert visitor.predict("", api_name="/audit")[0] == status
    assert (folder / "audit.json").stat().st_mtime_ns == stamp


def test_a_stranger_cannot_audit_another_visitors_run(space, own_run):
    _, folder = own_run
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    audits_before = set(space.workdir.glob("visitor-*/run-*/audit.json"))
    stranger = client(space)
    for name in ("", folder.name, f"../{folder.parent.name}/{folder.name}", str(folder)):
        status, numbers, gallery, issues, leakage = stranger.predict(name, api_name="/audit")
        assert status.startswith("**Error:**") and not numbers and not gallery, status
        assert ("Run a cross-validation first" in status if not name else "There is no run" in status), status
        assert str(space.workdir) not in status
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # the owner's run is untouched
    assert set(space.workdir.glob("visitor-*/run-*/audit.json")) == audits_before  # nor was any other run audited
