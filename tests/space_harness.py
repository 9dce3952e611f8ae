"""What the Space's browser and API tests share: the app in its own process, headless Chromium, page helpers.

`tests/test_space.py` (what a visitor does) and `tests/test_space_security.py` (what a stranger must not be able to
do) each start one app process and one Chromium for their module with [`running_app`] and [`chromium`], and drive
them with Playwright (Debian's Chromium, never `playwright install`) and `gradio_client`. Each test opens its own
visitors with [`open_visitor`] (or takes a module fixture's visitor with a finished run), so any test runs alone.

Waits are on events (a status line, a file, a queue place); their timeouts are hang guards, far above what the event
takes even on a loaded machine, never a race against the clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("HF_TLCV_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = REPO / "outputs" / "space_screenshots"
VIEWPORT = {"width": 1400, "height": 1000}
BUILTIN, ZIP, HUB = "Animal-MNIST (built in)", "Upload a zip", "Hub dataset"
LITE0 = "EfficientNet-Lite0, ImageNet (built in)"
PROBE = "Linear probe (train the head only)"
# A run small enough for a test: 48 images at 32 px, 2 folds, 1 epoch (a few seconds with the feature cache).
SMALL_RUN = {"folds k": 2, "epochs": 1, "sample cap (0 = all)": 48, "image size (px)": 32}

# A run that does not finish while a test looks at it: full fine-tuning, 2 folds of 400 images at 64 px for 20 epochs
# (140 training steps per fold). The tests cancel it once it trains, and accept any number of folds finished before.
LONG_RUN = {"folds k": 2, "epochs": 20, "sample cap (0 = all)": 400, "image size (px)": 64}
FULL = "Full fine-tuning"
# Hang guards (Playwright's milliseconds): an answer of the page (an upload read, a tab's status), and a training run.
ANSWER_MS = 120_000
RUN_MS = 300_000
T = TypeVar("T")

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: `make install` installs the Debian package "
                                  "(apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class App:
    url: str
    workdir: Path  # the visitors' working folders
    log_path: Path  # the app's stdout and stderr
    root: Path  # everything the app may write: workdir, Gradio's cache, HF_HOME
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_app(root: Path, hub_url: str, *, env: dict | None = None, args: tuple[str, ...] = (),
                cwd: Path = REPO) -> Iterator[App]:
    """`python spaces/app.py` in its own process, its Hub pointed at `hub_url`.

    The environment is the test's without any Hub token, plus `env`; the app's log (stdout and stderr) is kept.
    """
    workdir, log_path = root / "work", root / "app.log"
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    base.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", HF_ENDPOINT=hub_url,
                HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_HOME=str(root / "hf_home"),
                GRADIO_TEMP_DIR=str(root / "gradio"),
                OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    base.update(env or {})
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(REPO / "spaces" / "app.py"), "--port", str(port),
                                 "--workdir", str(workdir), *args], cwd=cwd, env=base, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"The app did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
    try:
        yield App(url, workdir, log_path, root, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright's `Browser`), closed at the end."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def push_from_page(page, repo_id: str, token: str | None = None) -> None:
    """On the Push tab: name the repository, paste `token` (none: the visitor's sign-in is the credential), push."""
    page.get_by_role("tab", name="Push").click()
    page.get_by_label("Repository id").fill(repo_id)
    if token is not None:
        page.get_by_label("Write token (optional when signed in)").fill(token)
    page.locator("#push-button").click()


def open_visitor(browser, url: str, wait: bool = True):
    """A new visitor: a page in a fresh browser context (its own cookies, so its own Gradio session and working
    folder) at `url`, 1400 x 1000 (the size the layout is checked at); with `wait`, once the built-in data is
    previewed. `page.close()` is the visitor leaving."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    if wait:
        wait_for_start(page)
    return page


def wait_until(condition: Callable[[], T], what: str, guard_s: float = 300, poll_s: float = 0.2) -> T:
    """Poll `condition` until it returns something true, and return that. `guard_s` only stops a hang: the event
    it waits for comes long before."""
    deadline = time.monotonic() + guard_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"hang guard: waited {guard_s:.0f} s for {what}")
        time.sleep(poll_s)
    return value


def visitor_folders(app: App) -> set[Path]:
    return set(app.workdir.glob("visitor-*"))


def finished_runs(app: App) -> set[Path]:
    """The run folders of every visitor that hold a saved `cv_results.json`."""
    return {p.parent for p in app.workdir.glob("visitor-*/run-*/cv_results.json")}


def the_new_one(before: set[Path], after: set[Path], what: str) -> Path:
    new = after - before
    assert len(new) == 1, f"expected one new {what}, found {sorted(map(str, new))}"
    return new.pop()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def wait_for_start(page) -> None:
    """The page has loaded and previewed the built-in data (its first event)."""
    expect(page.locator("#data-status")).to_contain_text("images in", timeout=RUN_MS)


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(f"number input for {label}") if label != "learning rate" else page.get_by_label(label)
    box.fill(str(value))
    box.press("Enter")


def choose_strategy(page, name: str) -> None:
    page.get_by_label("What trains").click()
    page.get_by_role("option", name=name).click()


def small_run(page, expect_text: str = "2 folds in") -> None:
    """A 2-fold run of the page's current data with the small settings; waits for `expect_text` in the status."""
    page.get_by_role("tab", name="Cross-validate").click()
    choose_strategy(page, PROBE)
    for label, value in SMALL_RUN.items():
        set_number(page, label, value)
    page.locator("#run-button").click()
    expect(page.locator("#run-status")).to_contain_text(expect_text, timeout=RUN_MS)


def start_long_run(page) -> None:
    """Start [`LONG_RUN`] from the page and wait until its first fold trains (the status shows its steps)."""
    page.get_by_role("tab", name="Cross-validate").click()
    choose_strategy(page, FULL)
    for label, value in LONG_RUN.items():
        set_number(page, label, value)
    page.locator("#run-button").click()
    expect(page.locator("#run-status")).to_contain_text(re.compile(r"fold 1 of 2 · step \d+/\d+ · training"),
                                                        timeout=RUN_MS)


def cancelled_after(page) -> int:
    """Wait for the page's run to end cancelled; the number of finished folds its status line gives."""
    status = page.locator("#run-status")
    expect(status).to_contain_text("Cancelled", timeout=RUN_MS)
    expect(status).to_contain_text(re.compile(r"stopped after \d+ finished fold\(s\)"))
    return int(re.search(r"stopped after (\d+) finished fold", status.inner_text()).group(1))


def png(path: Path, value: int = 128, size: int = 28) -> Path:
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(path)
    return path


def set_image(page, selector: str, path: Path) -> None:
    """Put the file at `path` in the image input `selector`, replacing any image already there."""
    clear = page.locator(f"{selector} button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator(f"{selector} input[type=file]").set_input_files(str(path))


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
    """The fold table shown (page or API) against the run's saved `cv_results.json`."""
    assert len(rows) == len(saved["folds"]) > 0
    for row, fold in zip(rows, saved["folds"]):
        assert int(float(row["fold"])) == fold["fold"] and int(float(row["eval n"])) == fold["n_eval"]
        for metric in ("accuracy", "f1", "loss"):
            assert float(row[metric]) == pytest.approx(fold["eval_metrics"][metric], abs=6e-5), metric
        assert float(row["train loss"]) == pytest.approx(fold["train_metrics"]["loss"], abs=6e-5)


def run_args(**overrides) -> list:
    """The /run endpoint's inputs, in order, for a small built-in run."""
    settings = dict(source=BUILTIN, upload=None, hub_id="", hub_split="train", label_column="label",
                    model_source=LITE0, hub_model="", strategy=PROBE, freeze_layers=0, n_folds=2, n_repeats=1,
                    epochs=1, learning_rate=1e-3, sample_cap=48, image_size=32)
    settings.update(overrides)
    return list(settings.values())
