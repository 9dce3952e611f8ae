"""The Gradio Space in a real browser (headless Debian Chromium driven by Playwright) and through gradio_client.

One app process serves the whole module; its Hub is the local Hub-protocol server (`tests/hub_server.py`). The tests
run in file order on one page: bad uploads and a cancelled run first, then a small cross-validation whose shown
numbers must equal the saved `cv_results.json`, a prediction with its fold ensemble, a push; then the API path, the
queue and per-visitor isolation with gradio_client. Screenshots land in `outputs/space_screenshots/`.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
playwright_api = pytest.importorskip("playwright.sync_api")
from hub_server import HubServer  # noqa: E402  (tests/ is on sys.path under pytest)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("HF_TLCV_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO / "outputs" / "space_screenshots"
TOKEN = "hf_SpaceTestToken0123456789abcdef"
REPO_ID = "tester/animal-mnist-kfold"
SMALL_RUN = {"folds k": 2, "epochs": 1, "sample cap (0 = all)": 48, "image size (px)": 32}
BUILTIN, ZIP = "Animal-MNIST (built in)", "Upload a zip"
LITE0 = "EfficientNet-Lite0, ImageNet (built in)"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: `make install` installs the Debian "
                                                      "package (apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hub():
    server = HubServer().start()
    server.require_token(TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def space(hub, tmp_path_factory):
    """The app in its own process, as `python spaces/app.py` runs it; yields (url, workdir, log path)."""
    root = tmp_path_factory.mktemp("space")
    workdir, log_path = root / "work", root / "app.log"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", HF_ENDPOINT=hub.url,
               HF_HUB_OFFLINE="0", HF_HOME=str(root / "hf_home"), GRADIO_TEMP_DIR=str(root / "gradio"),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(REPO / "spaces" / "app.py"), "--port", str(port),
                                 "--workdir", str(workdir)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"The app did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
    yield url, workdir, log_path, root
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(space):
    url = space[0]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.goto(url)
        yield tab
        browser.close()


def expect(locator):
    return playwright_api.expect(locator)


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(f"number input for {label}") if label != "learning rate" else page.get_by_label(label)
    box.fill(str(value))
    box.press("Enter")


def choose_strategy(page, name: str) -> None:
    page.get_by_label("What trains").click()
    page.get_by_role("option", name=name).click()


def png(path: Path, value: int = 128, size: int = 28) -> Path:
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(path)
    return path


def upload_zip(page, path: Path) -> None:
    clear = page.locator("#data-upload button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#data-upload input[type=file]").set_input_files(str(path))


def grid(page, selector: str) -> list[dict[str, str]]:
    """The rows of a Gradio 6 table (an ARIA grid) as dicts header -> shown text."""
    headers = [h.strip() for h in page.locator(f"{selector} [role=columnheader]").all_inner_texts()]
    cells = [c.strip() for c in page.locator(f"{selector} [role=gridcell]").all_inner_texts()]
    return [dict(zip(headers, cells[i:i + len(headers)])) for i in range(0, len(cells), len(headers))]


def assert_rows_match_results(rows: list[dict], saved: dict) -> None:
    assert len(rows) == len(saved["folds"]) > 0
    for row, fold in zip(rows, saved["folds"]):
        assert int(float(row["fold"])) == fold["fold"] and int(float(row["n_eval"])) == fold["n_eval"]
        for metric in ("accuracy", "f1", "loss"):
            assert float(row[metric]) == pytest.approx(fold["eval_metrics"][metric], abs=6e-5), metric
        assert float(row["train_loss"]) == pytest.approx(fold["train_metrics"]["loss"], abs=6e-5)


# ---- the page --------------------------------------------------------------------------------------------------
def test_page_opens_with_the_builtin_data_previewed(page):
    expect(page.locator("#data-status")).to_contain_text("10,000 images in 10 classes", timeout=120_000)
    expect(page.locator("#data-preview img").first).to_be_visible()
    counts = grid(page, "#class-counts")
    assert [r["class"] for r in counts][:3] == ["bear", "bird", "cat"] and counts[0]["images"] == "1000"
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
    other = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    other.goto(space[0])
    expect(other.locator("#data-status")).to_contain_text("10,000 images", timeout=120_000)
    for label, value in SMALL_RUN.items():
        set_number(other, label, value)
    other.locator("#run-button").click()
    expect(other.get_by_text(re.compile(r"queue: \d+/\d+")).first).to_be_visible(timeout=60_000)
    shot(other, "06_second_visitor_queued")

    page.locator("#cancel-button").click()
    expect(page.locator("#run-status")).to_contain_text("Cancelled", timeout=120_000)
    shot(page, "07_cancelled")
    # The slot is free again: the queued visitor's run goes ahead, and shows only its own folds.
    expect(other.locator("#run-status")).to_contain_text("2 folds in", timeout=240_000)
    assert len(grid(other, "#fold-table")) == 2
    assert grid(page, "#fold-table") == []  # the cancelled visitor's table stays empty

    # A visitor who leaves takes their working folder along.
    workdir = space[1]
    before = set(workdir.glob("visitor-*"))
    other.close()
    deadline = time.time() + 60
    while set(workdir.glob("visitor-*")) == before:
        assert time.time() < deadline, "the working folder of a visitor who left was not removed"
        time.sleep(0.5)
    assert len(set(workdir.glob("visitor-*"))) == len(before) - 1


def test_small_cross_validation_from_the_page_shows_the_saved_numbers(page, space):
    choose_strategy(page, "Linear probe (train the head only)")
    for label, value in SMALL_RUN.items():
        set_number(page, label, value)
    page.locator("#run-button").click()
    expect(page.locator("#run-status")).to_contain_text("2 folds in", timeout=240_000)
    expect(page.locator("#fold-table [role=gridcell]").first).to_be_visible()
    expect(page.locator("#plot-scores img")).to_be_visible(timeout=30_000)
    expect(page.locator("#plot-confusion img")).to_be_visible()
    expect(page.locator("#download")).to_contain_text(".zip")
    saved_files = sorted(space[1].glob("visitor-*/run-*/cv_results.json"), key=lambda p: p.stat().st_mtime)
    saved = json.loads(saved_files[-1].read_text())  # this visitor's run: the latest
    assert_rows_match_results(grid(page, "#fold-table"), saved)
    summary = page.locator("#summary").inner_text()
    accuracy = saved["summary"]["accuracy"]
    assert f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}" in summary
    assert f"[{accuracy['ci95'][0]:.4f}, {accuracy['ci95'][1]:.4f}]" in summary
    assert sorted(p.name for p in (saved_files[-1].parent / "plots").glob("*.png")) == [
        "confusion_matrix.png", "fold_scores.png", "train_vs_eval.png"]
    shot(page, "08_run_done")


def test_predict_with_the_fold_ensemble(page, tmp_path):
    page.get_by_role("tab", name="Predict").click()
    from hf_tlcv.assets import load_dataset

    load_dataset("builtin:animal-mnist")[0]["image"].save(tmp_path / "animal.png")
    page.locator("#predict-image input[type=file]").set_input_files(str(tmp_path / "animal.png"))
    page.locator("#predict-button").click()
    expect(page.locator("#predict-status")).to_contain_text("averaged over 2 fold models", timeout=60_000)
    votes = grid(page, "#predict-votes")
    assert [v["fold model"] for v in votes] == ["fold_0_0", "fold_0_1"]
    expect(page.locator("#predict-label")).to_contain_text("%")
    shot(page, "09_predict")


def test_push_to_the_local_hub_keeps_the_token_secret(page, hub, space):
    page.get_by_role("tab", name="Push").click()
    page.get_by_label("Repository id").fill(REPO_ID)
    page.get_by_label("Write token").fill(TOKEN)
    page.locator("#push-button").click()
    expect(page.locator("#push-status")).to_contain_text("Pushed to", timeout=120_000)
    shot(page, "10_push")
    files = hub.files(REPO_ID)
    assert {"README.md", "cv_results.json", "folds.json", "plots/fold_scores.png"} <= set(files)
    assert any(p.startswith("fold_0_1/") for p in files)
    assert b"builtin:animal-mnist" in files["README.md"]  # the card names the data the run used
    assert TOKEN not in page.content()
    _url, workdir, log_path, root = space
    for path in [log_path, *root.rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"the token was written to {path}"


def test_compare_pretrained_with_scratch_on_the_same_folds(page):
    page.get_by_role("tab", name="Compare").click()  # the small settings of the first tab are still set
    page.locator("#compare-button").click()
    expect(page.locator("#compare-status")).to_contain_text("2 variants on identical folds", timeout=240_000)
    expect(page.locator("#verdicts")).to_contain_text("Pretrained vs. from scratch")
    expect(page.locator("#verdicts")).to_contain_text("corrected t-test p=")
    expect(page.locator("#study-plots img").first).to_be_visible()
    shot(page, "11_compare")


# ---- the API path ------------------------------------------------------------------------------------------------
def run_args(**overrides):
    settings = dict(source=BUILTIN, upload=None, hub_id="", hub_split="train", label_column="label",
                    model_source=LITE0, hub_model="", strategy="Linear probe (train the head only)", freeze_layers=0,
                    n_folds=2, n_repeats=1, epochs=1, learning_rate=1e-3, sample_cap=48, image_size=32)
    settings.update(overrides)
    return list(settings.values())


def test_gradio_client_runs_queues_and_keeps_visitors_apart(space, tmp_path):
    from gradio_client import Client
    from gradio_client.utils import Status

    url = space[0]
    slow, quick, stranger = (Client(url, verbose=False) for _ in range(3))
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
    from gradio_client import handle_file

    message, _probs, _votes = stranger.predict(handle_file(str(image)), "", api_name="/predict")
    assert "Run a cross-validation first" in message
    assert "Run a cross-validation first" in stranger.predict(REPO_ID, TOKEN, False, api_name="/push")[0]
    message, _probs, votes = quick.predict(handle_file(str(image)), "", api_name="/predict")
    assert "averaged over 2 fold models" in message and len(votes["data"]) == 2


def test_upload_errors_reach_api_callers_as_messages(space, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(space[0], verbose=False)
    bogus = tmp_path / "data.zip"
    bogus.write_bytes(b"PK\x03\x04 truncated")
    status, gallery, counts = client.predict(ZIP, handle_file(str(bogus)), "", "train", "label", 5, 0,
                                             api_name="/preview")
    assert status.startswith("**Error:**") and "zip" in status and not gallery
    status, *_ = client.predict(*run_args(source=ZIP, upload=handle_file(str(bogus))), api_name="/run")
    assert status.startswith("**Error:**")
