"""The Gradio Space in a real browser (headless Debian Chromium driven by Playwright) and through gradio_client.

One app process serves the whole module; its Hub is the local Hub-protocol server (`tests/hub_server.py`). The tests
run in file order on one page: bad uploads, a second visitor queued behind a run that is then cancelled, a small
cross-validation whose shown numbers must equal the saved `cv_results.json` and whose page must be readable at
1400 px, a prediction with its fold ensemble, a push with a pasted token; then the API path, the queue and
per-visitor isolation with gradio_client, and a clean stop on SIGTERM. What a stranger must not be able to do is in
`tests/test_space_security.py`. Screenshots land in `outputs/space_screenshots/`.
"""

from __future__ import annotations

import io
import json
import re
import signal
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")
from hub_server import HubServer  # noqa: E402  (tests/ is on sys.path under pytest)
from space_harness import (  # noqa: E402
    BUILTIN,
    PROBE,
    SMALL_RUN,
    VIEWPORT,
    ZIP,
    assert_rows_match_results,
    browser_page,
    choose_strategy,
    expect,
    grid,
    png,
    requires_chromium,
    run_args,
    running_app,
    set_number,
    shot,
    small_run,
    upload_zip,
)

TOKEN = "hf_SpaceTestToken0123456789abcdef"
REPO_ID = "tester/animal-mnist-kfold"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), requires_chromium]
# In the browser: whether the element's centre shows the element itself (nothing drawn over it).
UNCOVERED = ("e => { const r = e.getBoundingClientRect(); "
             "return e.contains(document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2)); }")


@pytest.fixture(scope="module")
def hub():
    server = HubServer().start()
    server.require_token(TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def space(hub, tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("space"), hub.url) as app:
        yield app


@pytest.fixture(scope="module")
def page(space):
    with browser_page(space.url) as tab:
        yield tab


def boxes_overlap(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"])


# ---- the page --------------------------------------------------------------------------------------------------
def test_page_opens_with_the_builtin_data_previewed_and_the_demo_defaults(page):
    expect(page.locator("#data-status")).to_contain_text("10,000 images in 10 classes", timeout=180_000)
    expect(page.locator("#data-status")).to_contain_text("sample of 1,000")
    expect(page.locator("#data-preview img").first).to_be_visible()
    counts = grid(page, "#class-counts")
    assert [r["class"] for r in counts][:3] == ["bear", "bird", "cat"] and counts[0]["images"] == "1000"
    # The defaults are the demo's recipe (make demo: 0.925 accuracy), not a toy setting.
    assert page.get_by_label("What trains").input_value() == PROBE
    assert page.get_by_label("number input for image size (px)").input_value() == "128"
    assert float(page.get_by_label("learning rate").input_value()) == pytest.approx(3e-3)
    assert page.get_by_label("number input for sample cap (0 = all)").input_value() == "1000"
    shot(page, "01_start")


def test_bad_uploads_say_what_is_wrong_and_the_app_goes_on(page, tmp_path):
    page.get_by_label(ZIP).check()
    not_zip = tmp_path / "images.zip"
    not_zip.write_text("this is not a zip archive")
    upload_zip(page, not_zip)
    expect(page.locator("#data-status")).to_contain_text("is not a zip file", timeout=30_000)
    shot(page, "02_bad_upload_not_a_zip")

    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as archive:
        for cls in ("cat", "dog"):
            for i in range(3):
                buffer = io.BytesIO()
                Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(buffer, format="PNG")
                archive.writestr(f"{cls}/{i}.png", buffer.getvalue())
        archive.writestr("../../escaped.png", b"x")
    upload_zip(page, slip)
    expect(page.locator("#data-status")).to_contain_text("leaves the extraction folder", timeout=30_000)
    assert "Traceback" not in page.content()
    shot(page, "03_bad_upload_zip_slip")

    single = tmp_path / "one_class.zip"
    with zipfile.ZipFile(single, "w") as archive:
        for i in range(3):
            archive.write(png(tmp_path / f"{i}.png", 30 * i), f"cat/{i}.png")
    upload_zip(page, single)
    expect(page.locator("#data-status")).to_contain_text("single class", timeout=30_000)
    shot(page, "04_bad_upload_single_class")

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as archive:
        for c, cls in enumerate(("circle", "square")):
            for i in range(6):
                archive.write(png(tmp_path / f"g{c}{i}.png", 60 * c + 5 * i), f"shapes/{cls}/{i}.png")
    upload_zip(page, good)
    expect(page.locator("#data-status")).to_contain_text("12 images in 2 classes", timeout=30_000)
    assert [r["class"] for r in grid(page, "#class-counts")] == ["circle", "square"]
    shot(page, "05_good_upload")
    page.get_by_label(BUILTIN).check()
    page.get_by_role("button", name="Load and preview").click()
    expect(page.locator("#data-status")).to_contain_text("10,000 images", timeout=60_000)


def test_a_second_visitor_waits_in_the_queue_and_a_run_can_be_cancelled(page, space):
    choose_strategy(page, "Full fine-tuning")
    for label, value in {"folds k": 2, "epochs": 20, "sample cap (0 = all)": 400, "image size (px)": 64}.items():
        set_number(page, label, value)
    page.locator("#run-button").click()
    expect(page.locator("#run-status")).to_contain_text("fold 1 of 2", timeout=120_000)

    # Another browser context is another visitor: their run waits for the machine and shows its queue place.
    other = page.context.browser.new_page(viewport=VIEWPORT)
    other.goto(space.url)
    expect(other.locator("#data-status")).to_contain_text("10,000 images", timeout=120_000)
    for label, value in SMALL_RUN.items():
        set_number(other, label, value)
    other.locator("#run-button").click()
    place = other.get_by_text(re.compile(r"queue: \d+/\d+")).first
    expect(place).to_be_visible(timeout=60_000)
    # The queue place is drawn beside the buttons, not over the table; the status line stays readable, not greyed.
    assert not boxes_overlap(place.bounding_box(), other.locator("#fold-table").bounding_box())
    assert place.evaluate(UNCOVERED)  # and nothing is drawn over it
    expect(other.locator("#run-status")).to_contain_text("Queued")
    assert other.locator("#run-status").evaluate("e => getComputedStyle(e).opacity") == "1"
    assert other.locator("#run-status [data-testid=status-tracker]:visible").count() == 0  # no loading overlay
    shot(other, "06_second_visitor_queued", full_page=False)

    page.locator("#cancel-button").click()
    expect(page.locator("#run-status")).to_contain_text("Cancelled", timeout=120_000)
    expect(page.locator("#run-status")).to_contain_text("stopped after 0 finished fold(s)")
    shot(page, "07_cancelled")
    # The slot is free again: the queued visitor's run goes ahead, and shows only its own folds.
    expect(other.locator("#run-status")).to_contain_text("2 folds in", timeout=240_000)
    assert len(grid(other, "#fold-table")) == 2
    assert grid(page, "#fold-table") == []  # the cancelled visitor's table stays empty

    # A visitor who leaves takes their working folder along.
    before = set(space.workdir.glob("visitor-*"))
    other.close()
    deadline = time.time() + 60
    while set(space.workdir.glob("visitor-*")) == before:
        assert time.time() < deadline, "the working folder of a visitor who left was not removed"
        time.sleep(0.5)
    assert len(set(space.workdir.glob("visitor-*"))) == len(before) - 1


def test_cancel_while_queued_says_the_run_will_not_start(page, space):
    set_number(page, "epochs", 20)
    choose_strategy(page, "Full fine-tuning")
    set_number(page, "sample cap (0 = all)", 400)
    page.locator("#run-button").click()
    expect(page.locator("#run-status")).to_contain_text("fold 1 of 2", timeout=120_000)
    other = page.context.browser.new_page(viewport=VIEWPORT)
    other.goto(space.url)
    expect(other.locator("#data-status")).to_contain_text("10,000 images", timeout=120_000)
    other.locator("#run-button").click()
    expect(other.get_by_text(re.compile(r"queue: \d+/\d+")).first).to_be_visible(timeout=60_000)
    other.locator("#cancel-button").click()
    expect(other.locator("#run-status")).to_contain_text("was still waiting in the queue; it will not start")
    assert "next training step" not in other.locator("#run-status").inner_text()
    page.locator("#cancel-button").click()
    expect(page.locator("#run-status")).to_contain_text("Cancelled", timeout=120_000)
    expect(other.locator("#run-status")).to_contain_text("stopped before it started", timeout=120_000)
    other.close()


def test_small_cross_validation_from_the_page_shows_the_saved_numbers_readably(page, space):
    small_run(page)
    # How long it took, on what, and where the time went.
    expect(page.locator("#run-status")).to_contain_text(
        re.compile(r"2 folds in (\d+) s \(48 images at 32 px: (\d+) s to load the model and prepare the images, "
                   r"(\d+) s to train and evaluate the folds\)"))
    expect(page.locator("#fold-table [role=gridcell]").first).to_be_visible()
    for plot in ("#plot-scores", "#plot-train", "#plot-confusion"):
        expect(page.locator(f"{plot} img")).to_be_visible(timeout=30_000)
    expect(page.locator("#download")).to_contain_text(".zip")
    saved_files = sorted(space.workdir.glob("visitor-*/run-*/cv_results.json"), key=lambda p: p.stat().st_mtime)
    saved = json.loads(saved_files[-1].read_text())  # this visitor's run: the latest
    assert_rows_match_results(grid(page, "#fold-table"), saved)
    summary = page.locator("#summary").inner_text()
    accuracy = saved["summary"]["accuracy"]
    assert f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}" in summary
    assert f"[{accuracy['ci95'][0]:.4f}, {accuracy['ci95'][1]:.4f}]" in summary
    assert sorted(p.name for p in (saved_files[-1].parent / "plots").glob("*.png")) == [
        "confusion_matrix.png", "fold_scores.png", "train_vs_eval.png"]
    # Readable at 1400 px: the fold table needs no sideways scrolling, and each plot is shown at least 600 px wide
    # with nothing (label badge, buttons) drawn over it.
    scroll, visible = page.locator("#fold-table").evaluate(
        "e => { const s = [...e.querySelectorAll('*')].filter(x => x.scrollWidth > x.clientWidth + 1 && "
        "getComputedStyle(x).overflowX !== 'visible'); return [s.length, e.getBoundingClientRect().width]; }")
    assert scroll == 0 and visible > 500
    for plot in ("#plot-scores", "#plot-train", "#plot-confusion"):
        image = page.locator(f"{plot} img")
        image.scroll_into_view_if_needed()
        box = image.bounding_box()
        assert max(box["width"], box["height"]) >= 600, (plot, box)
        # Along the top band, where the plot's title is, the topmost element is the image itself.
        covered = image.evaluate("img => { const r = img.getBoundingClientRect(); return [0.1, 0.3, 0.5, 0.7, 0.9]"
                                 ".map(f => document.elementFromPoint(r.left + f * r.width, r.top + 12))"
                                 ".filter(e => e !== img).map(e => e.outerHTML.slice(0, 80)); }")
        assert covered == [], (plot, covered)
    shot(page, "08_run_done")


def test_predict_with_the_fold_ensemble_of_a_chosen_run(page, tmp_path):
    page.get_by_role("tab", name="Predict").click()
    from hf_tlcv.assets import load_dataset

    load_dataset("builtin:animal-mnist")[0]["image"].save(tmp_path / "animal.png")
    page.locator("#predict-image input[type=file]").set_input_files(str(tmp_path / "animal.png"))
    expect(page.locator("#predict-status")).to_contain_text("the image was read", timeout=30_000)
    expect(page.locator("#predict-preview img")).to_be_visible()
    # This visitor's own runs, newest first; the last one is chosen.
    expect(page.get_by_label("Fold models: one of your runs (newest first)")).to_have_value(re.compile(r"^Run 1: "))
    page.locator("#predict-button").click()
    expect(page.locator("#predict-status")).to_contain_text("averaged over 2 fold models", timeout=60_000)
    votes = grid(page, "#predict-votes")
    assert [v["fold model"] for v in votes] == ["fold_0_0", "fold_0_1"]
    expect(page.locator("#predict-label")).to_contain_text("%")
    shot(page, "09_predict")


def test_push_with_a_pasted_token_keeps_the_token_secret(page, hub, space):
    page.get_by_role("tab", name="Push").click()
    expect(page.locator("#push-identity")).to_contain_text("Pushes use: nobody yet")
    page.get_by_label("Repository id").fill(REPO_ID)
    page.get_by_label("Write token (optional when signed in)").fill(TOKEN)
    expect(page.locator("#push-identity")).to_contain_text("Pushes use: the token you pasted")
    page.locator("#push-button").click()
    expect(page.locator("#push-status")).to_contain_text("pushed to", timeout=120_000)
    expect(page.locator("#push-status")).to_contain_text("as tester")
    shot(page, "10_push")
    files = hub.files(REPO_ID)
    assert {"README.md", "cv_results.json", "folds.json", "plots/fold_scores.png"} <= set(files)
    assert any(p.startswith("fold_0_1/") for p in files)
    assert b"builtin:animal-mnist" in files["README.md"]  # the card names the data the run used
    assert TOKEN not in page.content()
    assert page.get_by_label("Write token (optional when signed in)").input_value() == ""  # emptied once used
    for path in [space.log_path, *space.root.rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"the token was written to {path}"


def test_compare_pretrained_with_scratch_and_a_baseline_on_the_same_folds(page):
    page.get_by_role("tab", name="Compare").click()  # the small settings of the first tab are still set: 2 folds
    page.locator("#compare-button").click()
    expect(page.locator("#compare-status")).to_contain_text(
        "needs at least 3 paired fold scores per variant, and folds k = 2 x repeats = 1 gives 2", timeout=60_000)
    page.get_by_role("tab", name="Cross-validate").click()
    set_number(page, "folds k", 3)
    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Pretrained vs. a classical baseline (raw pixels or TF-IDF + logistic regression)").check()
    page.locator("#compare-button").click()
    # pretrained, from scratch, and the baseline fitted on the same folds
    expect(page.locator("#compare-status")).to_contain_text("3 variants on identical folds", timeout=300_000)
    expect(page.locator("#verdicts")).to_contain_text("Pretrained vs. from scratch")
    expect(page.locator("#verdicts")).to_contain_text("Pretrained vs. a classical baseline")
    expect(page.locator("#verdicts")).to_contain_text("corrected t-test p=")
    expect(page.locator("#study-plots img").first).to_be_visible()
    shot(page, "11_compare")


# ---- the API path ------------------------------------------------------------------------------------------------
def test_gradio_client_runs_queues_and_keeps_visitors_apart(space, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    slow, quick, stranger = (Client(space.url, verbose=False) for _ in range(3))
    assert {"/preview", "/run", "/cancel", "/compare", "/predict", "/push"} <= set(
        slow.view_api(return_format="dict", print_info=False)["named_endpoints"])

    long_job = slow.submit(*run_args(strategy="Full fine-tuning", epochs=20, sample_cap=400, image_size=64),
                           api_name="/run")
    deadline = time.time() + 120
    while not any("fold 1 of" in str(o[0]) for o in long_job.outputs()):
        assert time.time() < deadline and not long_job.done(), long_job.outputs()
        time.sleep(0.3)
    quick_job = quick.submit(*run_args(), api_name="/run")
    deadline = time.time() + 60
    while (status := quick_job.status()).code != Status.IN_QUEUE:  # waits behind the running job, with its place
        assert time.time() < deadline, status
        time.sleep(0.2)
    assert status.rank is not None and status.rank >= 0
    assert "cancelling" in slow.predict(api_name="/cancel")
    assert "Cancelled" in long_job.result(timeout=120)[0]

    status, table, summary, *plots, download = quick_job.result(timeout=240)
    assert "2 folds in" in status and all(plots)
    with zipfile.ZipFile(download) as archive:  # the results folder the visitor downloads
        saved = json.loads(archive.read("cv_results.json"))
    rows = [dict(zip(table["headers"], map(str, row))) for row in table["data"]]
    assert_rows_match_results(rows, saved)
    assert f"{saved['summary']['accuracy']['mean']:.4f}" in summary

    # Another visitor sees none of it: no run to predict with, no run to push.
    image = png(tmp_path / "probe.png")
    message, _probs, _votes = stranger.predict(handle_file(str(image)), "", "", api_name="/predict")
    assert "Run a cross-validation first" in message
    assert "Run a cross-validation first" in stranger.predict(REPO_ID, TOKEN, False, api_name="/push")[0]
    message, _probs, votes = quick.predict(handle_file(str(image)), "", "", api_name="/predict")
    assert "averaged over 2 fold models" in message and len(votes["data"]) == 2


def test_upload_errors_reach_api_callers_as_messages(space, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(space.url, verbose=False)
    bogus = tmp_path / "data.zip"
    bogus.write_bytes(b"PK\x03\x04 truncated")
    status, gallery, counts = client.predict(ZIP, handle_file(str(bogus)), "", "train", "label", 5, 0,
                                             api_name="/preview")
    assert status.startswith("**Error:**") and "zip" in status and not gallery
    status, *_ = client.predict(*run_args(source=ZIP, upload=handle_file(str(bogus))), api_name="/run")
    assert status.startswith("**Error:**")


def test_sigterm_stops_the_app_quietly_and_removes_the_working_folders(space):
    space.process.send_signal(signal.SIGTERM)
    assert space.process.wait(timeout=60) == 0
    log = space.log()
    assert "Stopping." in log and "Traceback" not in log and "SystemExit" not in log
    assert not list(space.workdir.glob("visitor-*"))
