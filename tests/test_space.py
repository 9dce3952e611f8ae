"""The Gradio Space in a real browser (headless Debian Chromium driven by Playwright) and through gradio_client.

One app process and one Chromium serve the module; the app's Hub is the local Hub-protocol server
(`tests/hub_server.py`). Each test opens its own visitors (a fresh browser context each: its own session and
working folder), or takes `visitor_with_a_run`, a visitor who finished a small cross-validation: the shown numbers
of that run must equal its saved `cv_results.json` and its page must be readable at 1400 px; a prediction with its
fold ensemble, a push with a pasted token and a comparison use it. Bad uploads, a second visitor queued behind a run
that is then cancelled, a cancel while queued; then the API path, the queue and per-visitor isolation with
gradio_client, and a clean stop on SIGTERM (on an app of its own). What a stranger must not be able to do is in
`tests/test_space_security.py`. Screenshots land in `outputs/space_screenshots/`.
"""

from __future__ import annotations

import io
import json
import re
import signal
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")
from hub_server import HubServer  # noqa: E402  (tests/ is on sys.path under pytest)
from space_harness import (  # noqa: E402
    ANSWER_MS,
    BUILTIN,
    LONG_RUN,
    PROBE,
    RUN_MS,
    SMALL_RUN,
    ZIP,
    assert_rows_match_results,
    cancelled_after,
    expect,
    finished_runs,
    grid,
    open_visitor,
    png,
    requires_chromium,
    run_args,
    running_app,
    set_image,
    set_number,
    shot,
    small_run,
    start_long_run,
    the_new_one,
    upload_zip,
    visitor_folders,
    wait_until,
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
def visitor_with_a_run(browser, space):
    """A visitor who ran a small cross-validation of the built-in data from the page: `.page`, and `.folder`, the
    run's results folder (the one that appeared during the run)."""
    page = open_visitor(browser, space.url)
    before = finished_runs(space)
    small_run(page)
    yield SimpleNamespace(page=page, folder=the_new_one(before, finished_runs(space), "run folder"))
    page.close()


def boxes_overlap(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"])


# ---- the page --------------------------------------------------------------------------------------------------
def test_page_opens_with_the_builtin_data_previewed_and_the_demo_defaults(visitor):
    page = visitor
    expect(page.locator("#data-status")).to_contain_text("10,000 images in 10 classes")
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


def test_bad_uploads_say_what_is_wrong_and_the_app_goes_on(visitor, tmp_path):
    page = visitor
    page.get_by_label(ZIP).check()
    not_zip = tmp_path / "images.zip"
    not_zip.write_text("this is not a zip archive")
    upload_zip(page, not_zip)
    expect(page.locator("#data-status")).to_contain_text("is not a zip file", timeout=ANSWER_MS)
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
    expect(page.locator("#data-status")).to_contain_text("leaves the extraction folder", timeout=ANSWER_MS)
    assert "Traceback" not in page.content()
    shot(page, "03_bad_upload_zip_slip")

    single = tmp_path / "one_class.zip"
    with zipfile.ZipFile(single, "w") as archive:
        for i in range(3):
            archive.write(png(tmp_path / f"{i}.png", 30 * i), f"cat/{i}.png")
    upload_zip(page, single)
    expect(page.locator("#data-status")).to_contain_text("single class", timeout=ANSWER_MS)
    shot(page, "04_bad_upload_single_class")

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as archive:
        for c, cls in enumerate(("circle", "square")):
            for i in range(6):
                archive.write(png(tmp_path / f"g{c}{i}.png", 60 * c + 5 * i), f"shapes/{cls}/{i}.png")
    upload_zip(page, good)
    expect(page.locator("#data-status")).to_contain_text("12 images in 2 classes", timeout=ANSWER_MS)
    assert [r["class"] for r in grid(page, "#class-counts")] == ["circle", "square"]
    shot(page, "05_good_upload")
    page.get_by_label(BUILTIN).check()
    page.get_by_role("button", name="Load and preview").click()
    expect(page.locator("#data-status")).to_contain_text("10,000 images", timeout=ANSWER_MS)


def test_a_second_visitor_waits_in_the_queue_and_a_run_can_be_cancelled(visitor, browser, space):
    page = visitor
    start_long_run(page)  # its first fold trains: the machine's one training slot is taken

    # Another browser context is another visitor: their run waits for the machine and shows its queue place.
    before = visitor_folders(space)
    other = open_visitor(browser, space.url)
    their_folder = the_new_one(before, visitor_folders(space), "visitor folder")
    for label, value in SMALL_RUN.items():
        set_number(other, label, value)
    other.locator("#run-button").click()
    # Its place in the line is in its status line, readable: not greyed, not drawn over, not over the table.
    place = other.locator("#run-status")
    expect(place).to_contain_text(re.compile(r"Queued: place 1 of 1 in the queue"), timeout=ANSWER_MS)
    assert not boxes_overlap(place.bounding_box(), other.locator("#fold-table").bounding_box())
    assert place.evaluate(UNCOVERED)
    assert other.locator("#run-status").evaluate("e => getComputedStyle(e).opacity") == "1"
    assert other.locator("#run-status [data-testid=status-tracker]:visible").count() == 0  # no loading overlay
    shot(other, "06_second_visitor_queued", full_page=False)

    page.locator("#cancel-button").click()
    finished = cancelled_after(page)
    assert finished < LONG_RUN["folds k"]  # cancelled while its folds trained, not after the last
    assert len(grid(page, "#fold-table")) == finished  # the folds that did finish, nothing more
    shot(page, "07_cancelled")
    # The slot is free again: the queued visitor's run goes ahead, and shows only its own folds.
    expect(other.locator("#run-status")).to_contain_text("2 folds in", timeout=RUN_MS)
    assert len(grid(other, "#fold-table")) == 2

    # A visitor who leaves takes their working folder along.
    assert their_folder.is_dir()
    other.close()
    wait_until(lambda: not their_folder.exists(), "the working folder of the visitor who left to be removed")


def test_cancel_while_queued_says_the_run_will_not_start(visitor, browser, space):
    page = visitor
    start_long_run(page)
    other = open_visitor(browser, space.url)
    other.locator("#run-button").click()
    expect(other.locator("#run-status")).to_contain_text("place 1 of 1 in the queue", timeout=ANSWER_MS)
    other.locator("#cancel-button").click()
    # The queued job leaves the line at once and says so itself (the button's own answer would race with it).
    expect(other.locator("#run-status")).to_contain_text("was still waiting in the queue; it will not start")
    assert "cancelling" not in other.locator("#run-status").inner_text()
    page.locator("#cancel-button").click()
    assert cancelled_after(page) < LONG_RUN["folds k"]
    # Whatever ran meanwhile, the cancelled job stayed out: its status and its empty table are as they were.
    expect(other.locator("#run-status")).to_contain_text("will not start")
    assert grid(other, "#fold-table") == []
    other.close()


def test_small_cross_validation_from_the_page_shows_the_saved_numbers_readably(visitor_with_a_run):
    page = visitor_with_a_run.page
    page.get_by_role("tab", name="Cross-validate").click()
    # How long it took, on what, and where the time went.
    expect(page.locator("#run-status")).to_contain_text(
        re.compile(r"2 folds in (\d+) s \(48 images at 32 px: (\d+) s to load the model and prepare the images, "
                   r"(\d+) s to train and evaluate the folds\)"))
    expect(page.locator("#fold-table [role=gridcell]").first).to_be_visible()
    for plot in ("#plot-scores", "#plot-train", "#plot-confusion"):
        expect(page.locator(f"{plot} img")).to_be_visible(timeout=ANSWER_MS)
    expect(page.locator("#download")).to_contain_text(".zip")
    saved = json.loads((visitor_with_a_run.folder / "cv_results.json").read_text())
    assert_rows_match_results(grid(page, "#fold-table"), saved)
    summary = page.locator("#summary").inner_text()
    accuracy = saved["summary"]["accuracy"]
    assert f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}" in summary
    assert f"[{accuracy['ci95'][0]:.4f}, {accuracy['ci95'][1]:.4f}]" in summary
    assert sorted(p.name for p in (visitor_with_a_run.folder / "plots").glob("*.png")) == [
        "confusion_matrix.png", "fold_scores.png", "per_class_f1.png", "train_vs_eval.png"]
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


def test_predict_with_the_fold_ensemble_of_a_chosen_run(visitor_with_a_run, tmp_path):
    page = visitor_with_a_run.page
    page.get_by_role("tab", name="Predict").click()
    from hf_tlcv.assets import load_dataset

    load_dataset("builtin:animal-mnist")[0]["image"].save(tmp_path / "animal.png")
    set_image(page, "#predict-image", tmp_path / "animal.png")
    expect(page.locator("#predict-status")).to_contain_text("the image was read", timeout=ANSWER_MS)
    expect(page.locator("#predict-preview img")).to_be_visible()
    # This visitor's own runs, newest first; the last one (their only one) is chosen.
    expect(page.get_by_label("Fold models: one of your runs (newest first)")).to_have_value(re.compile(r"^Run 1: "))
    page.locator("#predict-button").click()
    expect(page.locator("#predict-status")).to_contain_text("averaged over 2 fold models", timeout=ANSWER_MS)
    votes = grid(page, "#predict-votes")
    assert [v["fold model"] for v in votes] == ["fold_0_0", "fold_0_1"]
    expect(page.locator("#predict-label")).to_contain_text("%")
    shot(page, "09_predict")


def test_push_with_a_pasted_token_keeps_the_token_secret(visitor_with_a_run, hub, space):
    page = visitor_with_a_run.page
    page.get_by_role("tab", name="Push").click()
    expect(page.locator("#push-identity")).to_contain_text("Pushes use: nobody yet")
    page.get_by_label("Repository id").fill(REPO_ID)
    page.get_by_label("Write token (optional when signed in)").fill(TOKEN)
    expect(page.locator("#push-identity")).to_contain_text("Pushes use: the token you pasted")
    page.locator("#push-button").click()
    expect(page.locator("#push-status")).to_contain_text("pushed to", timeout=RUN_MS)
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


def test_compare_pretrained_with_scratch_and_a_baseline_on_the_same_folds(visitor_with_a_run):
    page = visitor_with_a_run.page  # the small settings of the first tab are set: Compare uses them
    page.get_by_role("tab", name="Cross-validate").click()
    set_number(page, "folds k", 2)
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-button").click()
    expect(page.locator("#compare-status")).to_contain_text(
        "needs at least 3 paired fold scores per variant, and folds k = 2 x repeats = 1 gives 2: set folds k to 3 or "
        "more, or repeats to 2 or more", timeout=ANSWER_MS)
    page.get_by_role("tab", name="Cross-validate").click()
    set_number(page, "folds k", 3)
    page.get_by_role("tab", name="Compare").click()
    baseline = page.get_by_label("Pretrained vs. a classical baseline (raw pixels or TF-IDF + logistic regression)")
    assert baseline.is_checked()  # the default comparison: it trains in seconds and informs
    page.get_by_label("Pretrained vs. from scratch").check()
    page.locator("#compare-button").click()
    # pretrained, from scratch, and the baseline fitted on the same folds
    expect(page.locator("#compare-status")).to_contain_text("3 variants on identical folds", timeout=RUN_MS)
    expect(page.locator("#verdicts")).to_contain_text("Pretrained vs. from scratch")
    expect(page.locator("#verdicts")).to_contain_text("Pretrained vs. a classical baseline")
    expect(page.locator("#verdicts")).to_contain_text(re.compile(r"(corrected t-test|per-row paired test) p="))
    expect(page.locator("#study-plots img").first).to_be_visible()
    shot(page, "11_compare")
    # The pretrained variant read the frozen features the run computed (the visitor's own disk cache, keyed by network,
    # cut and rows): every entry is of the same rows, one per network (the run's pretrained one, and the random one of
    # the linear probe from scratch), so none was computed twice.
    from hf_tlcv.run_dir import read_marker

    markers = [read_marker(p) for p in (visitor_with_a_run.folder.parent / "features").iterdir()]
    assert len({m["data_fingerprint"] for m in markers}) == 1, markers
    assert len({m["model_fingerprint"] for m in markers}) == len(markers) == 2, markers


# ---- the API path ------------------------------------------------------------------------------------------------
def test_gradio_client_runs_queues_and_keeps_visitors_apart(space, tmp_path):
    from gradio_client import Client, handle_file

    slow, quick, stranger = (Client(space.url, verbose=False) for _ in range(3))
    assert {"/preview", "/run", "/cancel", "/compare", "/predict", "/push"} <= set(
        slow.view_api(return_format="dict", print_info=False)["named_endpoints"])

    long_job = slow.submit(*run_args(strategy="Full fine-tuning", epochs=LONG_RUN["epochs"],
                                     sample_cap=LONG_RUN["sample cap (0 = all)"],
                                     image_size=LONG_RUN["image size (px)"]), api_name="/run")
    wait_until(lambda: any(re.search(r"fold 1 of 2 · step \d+/\d+ · training", str(o[0])) for o in long_job.outputs())
               or long_job.done(), "the long run to train its first fold")
    assert not long_job.done(), long_job.outputs()  # it trains: the machine's one training slot is taken
    quick_job = quick.submit(*run_args(), api_name="/run")
    # It waits behind the running job, with its place in the line.
    wait_until(lambda: any("place 1 of 1 in the queue" in str(o[0]) for o in quick_job.outputs()),
               "the quick run to queue")
    assert "cancelling" in slow.predict(api_name="/cancel")
    last = long_job.result(timeout=RUN_MS / 1000)[0]
    assert re.search(r"Cancelled:\*\* stopped after [01] finished fold\(s\)", last), last

    status, table, summary, *plots, download = quick_job.result(timeout=RUN_MS / 1000)
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
    what_to_do = "is not a zip file; upload a .zip of a folder with one sub-folder of images per class"
    assert status.startswith("**Error:**") and what_to_do in status and not gallery, status
    status, *_ = client.predict(*run_args(source=ZIP, upload=handle_file(str(bogus))), api_name="/run")
    assert status.startswith("**Error:**") and what_to_do in status, status


def test_sigterm_stops_the_app_quietly_and_removes_the_working_folders(hub, tmp_path):
    from gradio_client import Client

    with running_app(tmp_path, hub.url) as app:  # its own app: the module's serves the other tests
        assert "nothing of yours" in Client(app.url, verbose=False).predict(api_name="/cancel")
        assert visitor_folders(app), "a visitor's working folder exists before the stop"
        app.process.send_signal(signal.SIGTERM)
        assert app.process.wait(timeout=RUN_MS / 1000) == 0
        log = app.log()
    assert "Stopping." in log and "Traceback" not in log and "SystemExit" not in log
    assert not visitor_folders(app)


# ---- how the page looks (issue 24's visitor view) ------------------------------------------------------------------
# Words of table cells that the browser broke across lines ("tria/l"): a word whose characters sit on two lines.
BROKEN_WORDS = """els => els.filter(e => e.offsetParent !== null).flatMap(th => {
  const broken = [];
  const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.textContent.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
      const lines = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (lines.size > 1) broken.push(m[0]);
    }
  }
  return broken;
})"""
# Boxes beside a Cancel button that show nothing (not a button, no text, no image).
EMPTY_BESIDE_CANCEL = """els => els.flatMap(b => Array.from(b.parentElement.children)).filter(c =>
  c.offsetParent !== null && c.tagName !== 'BUTTON' && !c.querySelector('button, img') && c.innerText.trim() === ''
  && c.getBoundingClientRect().width > 4).map(c => c.outerHTML.slice(0, 120))"""
# An image and the box it is drawn in: how much of the box is empty, and whether the image runs past the box's bottom.
IMAGE_IN_BOX = """img => { const box = img.getBoundingClientRect();
  const block = (img.closest('[id]') || img.parentElement).getBoundingClientRect();
  const drawn = Math.min(box.height, box.width * img.naturalHeight / img.naturalWidth);
  return {empty: box.height - drawn, cut: box.bottom - block.bottom, width: box.width, natural: img.naturalWidth}; }"""


def assert_images_fit(page, selector: str) -> None:
    images = page.locator(f"{selector} img")
    assert images.count() > 0, selector
    for i in range(images.count()):
        fit = images.nth(i).evaluate(IMAGE_IN_BOX)
        assert fit["empty"] < 60 and fit["cut"] <= 2, (selector, fit)  # no grey band, nothing cut at the bottom


def test_every_tab_reads_without_broken_headers_empty_boxes_or_cut_images(visitor_with_a_run, tmp_path):
    page = visitor_with_a_run.page
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.get_by_role("tab", name="Cross-validate").click()
    for selector in ("#plot-scores", "#plot-train", "#plot-confusion"):
        assert_images_fit(page, selector)
    assert page.locator("button:text-is('Cancel')").evaluate_all(EMPTY_BESIDE_CANCEL) == []
    shot(page, "20_view_run")

    # A run whose audit has images to show: dark and light images, two of each folder in the other's colour.
    noisy = tmp_path / "noisy.zip"
    with zipfile.ZipFile(noisy, "w") as archive:
        for folder, values in (("dark", [10 + i for i in range(10)] + [240, 245]),
                               ("light", [230 + i for i in range(10)] + [12, 18])):
            for i, value in enumerate(values):
                buffer = io.BytesIO()
                Image.fromarray(np.full((32, 32), value, dtype=np.uint8), mode="L").save(buffer, "PNG")
                archive.writestr(f"{folder}/{i}.png", buffer.getvalue())
    page.get_by_label(ZIP).check()
    upload_zip(page, noisy)
    expect(page.locator("#data-status")).to_contain_text("24 images in 2 classes", timeout=ANSWER_MS)
    page.get_by_role("tab", name="Cross-validate").click()
    rate = page.get_by_role("spinbutton", name="learning rate")
    rate.fill("0.05")
    rate.press("Enter")
    set_number(page, "epochs", 20)
    page.locator("#run-button").click()
    # (the status line still says the fixture's run is done until this one's first word replaces it)
    expect(page.locator("#run-status")).to_contain_text("(24 images at", timeout=RUN_MS)
    page.get_by_role("tab", name="Audit").click()
    page.locator("#audit-button").click()
    expect(page.locator("#audit-status")).to_contain_text("suspected label errors", timeout=RUN_MS)
    assert "0 suspected label errors" not in page.locator("#audit-status").inner_text()
    shot(page, "21_view_audit")
    assert_images_fit(page, "#audit-gallery")
    assert page.locator("button:text-is('Cancel')").evaluate_all(EMPTY_BESIDE_CANCEL) == []
    shot(page, "21_view_audit")

    page.get_by_role("tab", name="Tune").click()
    page.locator("#tune-button").click()
    expect(page.locator("#tune-status")).to_contain_text("trials in", timeout=RUN_MS)
    assert "docs/" not in page.locator("#tune-report").inner_text()  # nothing a visitor cannot open
    assert page.locator("#tune-report th").count() > 0
    assert page.locator("th, td").evaluate_all(BROKEN_WORDS) == []  # headers ("trial") and cells ("complete")
    assert_images_fit(page, "#tune-history")
    shot(page, "22_view_tune")

    page.get_by_role("tab", name="Predict").click()
    set_image(page, "#predict-image", png(tmp_path / "small.png", size=28))
    expect(page.locator("#predict-status")).to_contain_text("(28x28 pixels)", timeout=ANSWER_MS)
    shown = page.locator("#predict-preview img").evaluate("img => img.getBoundingClientRect().width")
    assert shown >= 150, shown  # a 28 px image is shown enlarged, not as a speck
    shot(page, "23_view_predict")

    page.get_by_role("tab", name="Push").click()
    page.get_by_label("Repository id").fill(REPO_ID)
    page.locator("#push-button").click()
    expect(page.locator("#push-status")).to_contain_text("Paste a write token first", timeout=ANSWER_MS)
    assert "Sign in" not in page.locator("#push-status").inner_text()  # this deployment has no sign-in button
