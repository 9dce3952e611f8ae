"""The Space under one stranger's load (issue 24), through gradio_client as an attacker would drive it.

Each reproduction of the issue is rerun against the real app in its own process: many classes within the upload
limits, work far beyond what the machine can give, one visitor queueing jobs behind itself, Cancel in every stage,
a job that outgrows its time or memory, a visitor's files outgrowing their quota. The app's own memory is sampled
the whole time (its jobs run in child processes, whose peaks the app logs), and every check is on what the visitor
gets back: the sentence, the images, the files.
"""

from __future__ import annotations

import io
import json
import re
import signal
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
psutil = pytest.importorskip("psutil")
from hub_server import HubServer  # noqa: E402  (tests/ is on sys.path under pytest)
from PIL import Image  # noqa: E402
from artifact_paths import server_paths_in  # noqa: E402
from space_harness import LONG_RUN, ZIP, png, run_args, running_app, wait_until  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MEASURED = Path(__file__).resolve().parents[1] / "outputs" / "space_load.json"
LARGEST: dict[str, int] = {}  # test -> the largest image (pixels) the app sent in it
QUOTA_MB = 60  # the tight app's quota per visitor
CANCEL_S = 10  # the bound: from the Cancel to the job's last word, its process gone
APP_GROWTH_MB = 600  # the app's own resident memory may grow this much over a module of hostile jobs
LONG = dict(strategy="Full fine-tuning", epochs=LONG_RUN["epochs"], sample_cap=LONG_RUN["sample cap (0 = all)"],
            image_size=LONG_RUN["image size (px)"])


class MemoryWatch:
    """Samples a process's resident memory every 0.2 s in a thread; `peak_growth_mb` over its start."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    @property
    def peak_growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20

    def stop(self):
        self._stop.set()
        self._thread.join()


TOKEN = "hf_LoadTestToken0123456789abcdefghij"
HOSTILE = ["$^^$", "a|b", "<svg onload=alert(3)>", "[click me](javascript:alert(1))"]


@pytest.fixture(scope="module")
def hub():
    server = HubServer().start()
    server.require_token(TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def space(hub, tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("load"), hub.url) as app:
        app.memory = MemoryWatch(app.process.pid)
        yield app
        app.memory.stop()
        # What was measured, for the record (outputs/ is not committed): the app's growth and its jobs' peaks.
        MEASURED.parent.mkdir(parents=True, exist_ok=True)
        MEASURED.write_text(json.dumps({"app_peak_growth_mb": round(app.memory.peak_growth_mb, 1),
                                        "app_start_rss_mb": round(app.memory.start / 2**20, 1),
                                        "job_peaks_mb": job_peaks_mb(app), "largest_image_px": LARGEST}, indent=1))
        # Over everything this module made the app do, the app itself stayed small: the work was in its jobs.
        assert app.memory.peak_growth_mb < APP_GROWTH_MB, app.memory.peak_growth_mb


@pytest.fixture(scope="module")
def tight(hub, tmp_path_factory):
    """An app whose budgets are set low (as an owner would through the environment), so each is reached quickly."""
    env = {"HF_TLCV_SPACE_MAX_JOB_SECONDS": "60", "HF_TLCV_SPACE_VISITOR_DISK_BYTES": str(QUOTA_MB * 2**20)}
    with running_app(tmp_path_factory.mktemp("tight"), hub.url, env=env) as app:
        yield app


def client(space):
    from gradio_client import Client

    return Client(space.url, verbose=False)


def many_classes_zip(path: Path, n_classes: int, per_class: int = 2, names: list[str] | None = None) -> Path:
    rng = np.random.default_rng(n_classes)
    names = names or [f"class_{k:04d}" for k in range(n_classes)]
    with zipfile.ZipFile(path, "w") as archive:
        for k, name in enumerate(names):
            for i in range(per_class):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
                archive.writestr(f"{name}/{i}.png", buffer.getvalue())
    return path


def children(space) -> list:
    """The app's child processes (its jobs' processes) that are still alive."""
    alive = []
    for child in psutil.Process(space.process.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.Error:
            pass
    return alive


def job_peaks_mb(space) -> list[float]:
    return [float(m) for m in re.findall(r"ended after \d+ s, peak memory (\d+) MB", space.log())]


def pixels(path) -> int:
    with Image.open(path) as image:
        return image.width * image.height


def first_status(job, pattern: str, what: str) -> str:
    return wait_until(lambda: next((str(o[0]) for o in job.outputs() if re.search(pattern, str(o[0]))), None)
                      or (job.done() and pytest.fail(f"{what}: the job ended first: {job.outputs()[-1:]}")), what)


# ---- classes -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [300, 1000])
def test_many_classes_are_refused_before_any_training_and_the_app_stays_small(space, tmp_path, n_classes):
    from gradio_client import handle_file

    visitor = client(space)
    upload = handle_file(str(many_classes_zip(tmp_path / "many.zip", n_classes)))
    note, gallery, counts = visitor.predict(ZIP, upload, "", "train", "label", 2, 0, api_name="/preview")
    assert f"{n_classes:,} images" not in note and f"in {n_classes} classes" in note, note
    assert "may have at most 100" in note
    assert len(counts["data"]) == n_classes  # every class is counted ...
    assert len(gallery) <= 12 * 4  # ... but the images of only the first twelve are sent
    LARGEST[f"preview of {n_classes} classes"] = max(
        pixels(item["image"] if isinstance(item["image"], str) else item["image"]["path"]) for item in gallery)
    assert LARGEST[f"preview of {n_classes} classes"] <= 512 * 512

    started = time.time()
    status, table, summary, *plots, download = visitor.predict(
        *run_args(source=ZIP, upload=upload, sample_cap=0), api_name="/run")
    assert status.startswith("**Error:**") and f"has {n_classes:,} classes" in status, status
    assert "at most 100" in status and not table["data"] and not any(plots) and download is None
    assert time.time() - started < 120  # the child loads and counts; nothing trains
    assert not children(space)


def test_a_run_at_the_class_cap_sends_bounded_images(space, tmp_path):
    from gradio_client import handle_file

    upload = handle_file(str(many_classes_zip(tmp_path / "cap.zip", 100)))
    status, table, summary, *plots, download = client(space).predict(
        *run_args(source=ZIP, upload=upload, sample_cap=0), api_name="/run")
    assert "2 folds in" in status, status
    assert all(plots)
    sizes = [pixels(plot) for plot in plots]
    LARGEST["plots of a 100-class run"] = max(sizes)
    assert max(sizes) <= 2000 * 2000, sizes  # the confusion matrix of 100 classes too
    assert job_peaks_mb(space) and max(job_peaks_mb(space)) < 4096, job_peaks_mb(space)


# ---- work ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint, args", [
    ("/tune", ["Animal-MNIST (built in)", None, "", "train", "label", "EfficientNet-Lite0, ImageNet (built in)", "",
               10, 20, 10_000, 224, 10, ["Linear probe (train the head only)", "Freeze the bottom blocks",
                                          "Full fine-tuning", "LoRA adapters"]]),
    ("/run", run_args(strategy="Full fine-tuning", n_folds=10, n_repeats=5, epochs=3, sample_cap=1000,
                      image_size=128)),
])
def test_work_beyond_the_budget_is_refused_before_training(space, endpoint, args):
    started = time.time()
    status = client(space).predict(*args, api_name=endpoint)[0]
    assert status.startswith("**Error:**") and "units of work" in status and "at most 15,000" in status, status
    assert "Lower the sample cap" in status
    assert time.time() - started < 120
    assert not children(space)


# ---- the queue ----------------------------------------------------------------------------------------------------
def test_one_job_per_visitor_and_cancel_empties_the_line_within_seconds(space):
    first, second = client(space), client(space)
    running = first.submit(*run_args(**LONG), api_name="/run")
    first_status(running, r"fold 1 of 2 · step \d+/\d+ · training", "the long run to train")
    # The same visitor cannot queue behind their own job, whatever the tab.
    for endpoint, args in (("/run", run_args()), ("/compare", [*run_args(n_folds=3), ["Learning rate"]])):
        status = first.predict(*args, api_name=endpoint)[0]
        assert "one job per visitor" in status, status
    # Another visitor waits with their place in the line, and can leave it.
    waiting = second.submit(*run_args(), api_name="/run")
    first_status(waiting, r"place 1 of 1 in the queue", "the second visitor's place")
    assert "will not start" in second.predict(api_name="/cancel")
    assert "will not start" in waiting.result(timeout=CANCEL_S)[0]

    asked = time.time()
    assert "cancelling" in first.predict(api_name="/cancel")
    last = running.result(timeout=CANCEL_S)[0]
    assert time.time() - asked < CANCEL_S
    assert re.search(r"Cancelled:\*\* stopped after [01] finished fold\(s\)", last), last
    wait_until(lambda: not children(space), "the job's process to be gone", guard_s=CANCEL_S)
    # Nothing half-written stays where a later job, a zip or a push would read it.
    assert not list(space.workdir.glob("visitor-*/run-*/fold_*")) or all(
        (p / "fold_result.json").exists() for p in space.workdir.glob("visitor-*/run-*/fold_*"))
    assert not list(space.workdir.glob("visitor-*/jobs/run-*"))


@pytest.mark.parametrize("stage", ["preparation", "tune trial"])
def test_cancel_stops_a_job_within_seconds_in_every_stage(space, stage):
    visitor = client(space)
    if stage == "preparation":  # 5,000 images at 160 px: a minute and more of decoding and feature computation
        job = visitor.submit(*run_args(sample_cap=5_000, image_size=160), api_name="/run")
        first_status(job, r"Running:\*\* .*(loading|preparing)", "the job to prepare")
        time.sleep(3)
    else:
        job = visitor.submit("Animal-MNIST (built in)", None, "", "train", "label",
                             "EfficientNet-Lite0, ImageNet (built in)", "", 2, 20, 400, 64, 4, ["Full fine-tuning"],
                             api_name="/tune")
        first_status(job, r"fold 1 of \d+ · step \d+/\d+ · training", "the first trial to train")
    asked = time.time()
    visitor.predict(api_name="/cancel")
    last = job.result(timeout=CANCEL_S)[0]
    assert time.time() - asked < CANCEL_S, last
    assert last.startswith("**Cancelled:**"), last
    wait_until(lambda: not children(space), "the job's process to be gone", guard_s=CANCEL_S)


# ---- time, memory, disk ---------------------------------------------------------------------------------------------
def test_a_job_past_its_time_limit_is_stopped_with_a_sentence(tight):
    started = time.time()
    status = client(tight).predict(*run_args(**LONG), api_name="/run")[0]
    assert "limit of 60 s per job" in status, status
    assert time.time() - started < 60 + CANCEL_S + 30  # the queue and the start, then the limit
    wait_until(lambda: not children(tight), "the job's process to be gone", guard_s=CANCEL_S)


def test_a_visitors_files_stay_within_their_quota(tight, tmp_path):
    from gradio_client import handle_file

    visitor = client(tight)
    # Fully fine-tuned, each run keeps its 2 fold models (about 27 MB): two fit the quota, three do not.
    for _ in range(3):
        status = visitor.predict(*run_args(strategy="Full fine-tuning"), api_name="/run")[0]
        assert "2 folds in" in status, status
    folders = list(tight.workdir.glob("visitor-*"))
    assert len(folders) == 1
    used = sum(p.stat().st_size for p in folders[0].rglob("*") if p.is_file())
    assert used <= QUOTA_MB * 2**20, used / 2**20
    runs = sorted(int(p.name.split("-")[1]) for p in folders[0].glob("run-*"))
    assert len(runs) == 2, runs  # the oldest run went, the newest stayed
    # and the newest run's zip, which the page has just offered for download
    assert (folders[0] / "downloads" / f"hf_tlcv-run-{runs[-1]}.zip").is_file()
    # The page's list of runs follows: the evicted run is no longer offered for Audit or Predict.
    image = handle_file(str(png(tmp_path / "probe.png")))
    assert "There is no run 'run-1'" in visitor.predict(image, "run-1", "", api_name="/predict")[0]
    assert "averaged over 2 fold models" in visitor.predict(image, f"run-{runs[-1]}", "", api_name="/predict")[0]


def test_a_job_past_its_memory_limit_is_stopped_and_the_app_goes_on(hub, tmp_path):
    # 500 MB: more than the app needs to start a job, less than a job's process once it has loaded its libraries.
    env = {"HF_TLCV_SPACE_MAX_JOB_MEMORY_BYTES": str(500 * 2**20)}
    with running_app(tmp_path, hub.url, env=env) as app:
        visitor = client(app)
        status = visitor.predict(*run_args(), api_name="/run")[0]
        assert "memory limit of 500 MB per job" in status, status
        wait_until(lambda: not children(app), "the job's process to be gone", guard_s=CANCEL_S)
        assert "Cancelled" not in status and not list(app.workdir.glob("visitor-*/run-*"))
        # The app itself is untouched: the same visitor is served at once.
        note = visitor.predict("Animal-MNIST (built in)", None, "", "train", "label", 2, 0, api_name="/preview")[0]
        assert "10,000 images in 10 classes" in note


# ---- what leaves the server ---------------------------------------------------------------------------------------
def zip_files(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {f"{Path(path).name}/{n}": archive.read(n) for n in archive.namelist()}


def test_what_visitors_download_and_push_names_no_server_path_and_keeps_names_as_text(space, hub, tmp_path):
    import tempfile

    from gradio_client import handle_file
    from markdown_it import MarkdownIt

    visitor = client(space)
    upload = handle_file(str(many_classes_zip(tmp_path / "hostile.zip", len(HOSTILE), per_class=6, names=HOSTILE)))
    status, _table, _summary, *plots, run_zip = visitor.predict(
        *run_args(source=ZIP, upload=upload, sample_cap=0), api_name="/run")
    assert "2 folds in" in status and all(plots), status  # the confusion matrix too, whatever the names
    compare = visitor.predict(*run_args(source=ZIP, upload=upload, sample_cap=0, n_folds=3),
                              ["Pretrained vs. a classical baseline (raw pixels or TF-IDF + logistic regression)"],
                              api_name="/compare")
    assert "variants on identical folds" in compare[0], compare[0]
    audit = visitor.predict("", api_name="/audit")
    assert audit[0].startswith("**Done:**"), audit[0]
    tune = visitor.predict(*[ZIP, upload, "", "train", "label", "EfficientNet-Lite0, ImageNet (built in)", "", 2, 1,
                             0, 32, 4, ["Linear probe (train the head only)"]], api_name="/tune")
    assert "4 trials in" in tune[0], tune[0]
    pushed = visitor.predict("tester/hostile-names", TOKEN, False, api_name="/push")[0]
    assert "pushed to" in pushed, pushed

    files = {**zip_files(run_zip), **zip_files(compare[-1]), **zip_files(tune[-1])}
    assert not [n for n in files if n.endswith(".safetensors")]  # the zips carry no weights: Push does
    pushed = tmp_path / "pushed"
    for name, data in hub.files("tester/hostile-names").items():
        (pushed / name).parent.mkdir(parents=True, exist_ok=True)
        (pushed / name).write_bytes(data)
    files.update({f"hub/{p.relative_to(pushed)}": p.read_bytes() for p in pushed.rglob("*") if p.is_file()})
    roots = [space.root, space.workdir, tempfile.gettempdir(), Path.home(), "tlcv-space-", "visitor-",
             ".cache/hf_tlcv", ".cache/huggingface"]
    for artifact in (run_zip, compare[-1], tune[-1], pushed):
        assert server_paths_in(artifact, roots) == [], artifact

    card = files["hub/README.md"].decode()
    assert "audit" in card.lower()
    tokens = MarkdownIt("commonmark", {"html": True}).enable("table").parse(card.split("---", 2)[-1])
    inline = [c for t in tokens if t.children for c in t.children]
    assert not [t for t in tokens + inline if t.type in ("html_block", "html_inline")]
    assert not [t for t in inline if t.type == "link_open" and "javascript" in (t.attrGet("href") or "")]
    shown = " ".join("".join(c.content for c in t.children if c.type == "text") for t in tokens if t.children)
    assert all(name in shown for name in HOSTILE), [n for n in HOSTILE if n not in shown]


def test_an_upload_over_the_cap_is_refused_by_the_upload_route(space, tmp_path):
    """Gradio's upload route takes files without a session; its `max_file_size` is the Space's upload budget."""
    import httpx

    small, large = tmp_path / "small.zip", tmp_path / "large.zip"
    small.write_bytes(b"x" * 1024)
    with open(large, "wb") as handle:
        handle.truncate(50 * 2**20 + 1)  # one byte over 50 MB
    for path, expected in ((small, 200), (large, 413)):
        with open(path, "rb") as handle:
            answer = httpx.post(f"{space.url}gradio_api/upload", files={"files": (path.name, handle)}, timeout=120)
        assert answer.status_code == expected, (path.name, answer.status_code, answer.text[:200])
    assert not list((space.root / "gradio").rglob("large.zip"))  # nothing of it kept


def test_a_job_does_not_outlive_an_app_killed_for_memory(hub, tmp_path):
    """An app killed outright (the kernel's OOM killer, SIGKILL) cannot clean up: its job notices it is orphaned and
    ends within seconds, and the next start of the app removes the dead app's work folder."""
    with running_app(tmp_path, hub.url) as app:
        job = client(app).submit(*run_args(**LONG), api_name="/run")
        first_status(job, r"Running:\*\*", "the job to start")
        jobs = children(app)
        assert jobs, "the job runs in a process of its own"
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(timeout=30)

        def gone():
            return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in jobs)

        wait_until(gone, "the orphaned job's process to end", guard_s=CANCEL_S)
