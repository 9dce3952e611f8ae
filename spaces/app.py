"""hf_tlcv Space: cross-validate fine-tuning from the browser, compare and tune settings, audit the data, predict
with the fold ensemble, push.

Run it locally from the repository root:

    python spaces/app.py                        # http://127.0.0.1:7860
    python spaces/app.py --port 7861 --host 0.0.0.0
    python spaces/app.py --use-local-token      # for yourself: pushes may use this machine's Hugging Face login
    python spaces/app.py --mock-login           # show Gradio's local stand-in of "Sign in with Hugging Face"

or deploy `spaces/` as a Hugging Face Space (see spaces/README.md, which also holds the threat model). The app is UI
wiring over the library: upload checks and image limits (`hf_tlcv.upload`), training (`KFoldTrainer`), comparisons
(`TransferStudy`), searches (`KFoldTrainer.hyperparameter_search`), audits (`CVResults.audit`), predictions
(`KFoldEnsemble`) and pushes (`CVResults.push_to_hub`). What a visitor's request may
do on this machine is decided in `boundary.py`, next to this file.

Every visitor (Gradio session) gets a private working folder; runs are queued one at a time on the shared machine,
and a run can be cancelled. A visitor acts on the Hub only with their own credentials: "Sign in with Hugging Face"
on a Space, or a token they paste. The Space's own `HF_TOKEN` is never used for a visitor, and the app removes it from
its environment once started.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from boundary import (  # noqa: E402  (spaces/ is the script's folder, first on sys.path)
    BUDGETS,
    RANGES,
    Budgets,
    RunSettings,
    VisitorError,
    bounded,
    check_hub_repo,
    duration,
    size,
    hub_repo_id,
    identity_markdown,
    push_credentials,
    ticked,
    visitor_message,
)
from jobs import (  # noqa: E402
    BUILTIN_DATASET,
    EMBEDDINGS_FILE,
    ISSUE_COLUMNS,
    LEAK_COLUMNS,
    MAX_HUB_DOWNLOAD_BYTES,
    PROGRESS_FILE,
    RESULT_FILE,
    SPEC_FILE,
    check_classes,
    data_spec,
    fold_table,
    load_data,
    read_json,
)

from hf_tlcv import CVResults  # noqa: E402
from hf_tlcv.escaping import escape_markdown, markdown_link  # noqa: E402
from hf_tlcv.assets import is_builtin  # noqa: E402
from hf_tlcv.data import subsample  # noqa: E402
from hf_tlcv.results import FoldResult  # noqa: E402
from hf_tlcv.run_dir import write_json_atomic  # noqa: E402
from hf_tlcv.upload import UploadLimits, class_counts, open_image, preview_samples  # noqa: E402

logger = hf_logging.get_logger("hf_tlcv.space")

# ---- choices shown on the page ------------------------------------------------------------------------------------
DATA_BUILTIN = "Animal-MNIST (built in)"
DATA_ZIP = "Upload a zip"
DATA_HUB = "Hub dataset"
MODEL_BUILTIN = "EfficientNet-Lite0, ImageNet (built in)"
MODEL_HUB = "Hub model id"
BUILTIN_MODEL = "builtin:efficientnet-lite0"
LITE0_BLOCKS = 16
STRATEGIES = {
    "Linear probe (train the head only)": "linear_probe",
    "Freeze the bottom blocks": "freeze",
    "Full fine-tuning": "full",
    "LoRA adapters": "lora",
}
QUESTIONS = {
    "Pretrained vs. from scratch": "pretrained",
    "Pretrained vs. a classical baseline (raw pixels or TF-IDF + logistic regression)": "baseline",
    "How many blocks to freeze": "freeze",
    "Learning rate": "lr",
    "Overfitting (train vs. eval per fold and epoch)": "overfitting",
}
QUESTION_TITLES = {v: k for k, v in QUESTIONS.items()}
# Compare's default: against a classical baseline, which trains in seconds and says whether the pretrained network is
# worth its cost. Pretrained vs. from scratch within the demo's few epochs mostly shows a scratch model at chance level.
COMPARE_DEFAULT = "baseline"
# Tune's default checklist: the two strategies whose trials share the frozen features computed once per trial.
TUNE_STRATEGIES = ["Linear probe (train the head only)", "Freeze the bottom blocks"]
TUNE_TRIALS = 4
# The default run: the demo's recipe (`make demo`: linear probe, 128 px, lr 3e-3, 1,000 images, 5 folds, 3 epochs),
# which reaches 0.925 accuracy; with the frozen-feature cache it takes about a minute on 2 CPU cores.
DEFAULTS = dict(strategy=next(iter(STRATEGIES)), freeze_layers=LITE0_BLOCKS // 2, n_folds=5, n_repeats=1, epochs=3,
                learning_rate=3e-3, sample_cap=1000, image_size=128)
# What a visitor may hand this machine: the zip and its files, and every image however it arrives (a file of the zip,
# an image to classify, a row of a Hub dataset) is held to the same bytes, pixels and decode time.
UPLOAD_LIMITS = UploadLimits(max_zip_bytes=BUDGETS.upload_bytes, max_files=10_000, max_total_bytes=500 * 2**20,
                             max_file_bytes=16 * 2**20, max_image_pixels=25_000_000, max_decode_seconds=5.0)
# The files of a pushed run that Predict downloads: results, configs and safetensors weights. Never pickles (.bin,
# .pt, .pkl) or code (.py) from a stranger's repository.
PREDICT_DOWNLOAD = ("*.json", "*.safetensors", "*.parquet", "*.txt", "*.model")
PREVIEW_PER_CLASS = 4
PREVIEW_CLASSES = 12  # classes whose images the preview shows (all classes are counted in the table)
PREVIEW_PIXELS = 224  # an image to classify smaller than this is shown enlarged
MAX_ENSEMBLES = 2  # fold ensembles kept loaded for Predict, all visitors together
WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth"}  # left out of the results zip (Push carries them)
OWNER_FILE = "app.pid"  # in the app's work folder: the process that owns it
JOB_SCRIPT = Path(__file__).with_name("jobs.py")
# Gradio's copies of uploads and of the files sent to the page: every 10 minutes, those older than 30 minutes go.
CACHE_CLEANUP = (600, 1800)
STATISTICS_TITLE = "How the numbers are computed"
STATISTICS_NOTES = (
    "- **Per fold**: each fold's model is trained on the other folds' images and scored on its own, which it never "
    "saw. The table lists every fold; the summary gives their mean and standard deviation.\n"
    "- **95% interval** of accuracy and the loss: from the spread of the per-image results (right or wrong, and "
    "each image's loss) over all out-of-fold predictions (Bayle et al. 2020), kept inside [0, 1] for accuracy and "
    "above 0 for the loss. When the folds disagree more than their images explain, or the fold models score much "
    "better on their training images than on new ones (an unstable learner), the summary says so and uses the "
    "Nadeau–Bengio corrected interval of the fold scores instead, which allows for the overlap of the folds' "
    "training sets; precision, recall and F1 always get that one. Both were checked by simulation with known "
    "truth.\n"
    "- **Verdicts** (Compare, Tune) compare two settings on the same folds and images: row by row where both runs "
    "allow it, else fold by fold with the corrected paired t-test; the verdict names the test. \"Not "
    "distinguishable\" means the interval of the difference contains zero.\n"
    "- **Pooled out-of-fold**: every image's prediction by the one model that did not train on it, scored together.")
COUNT_COLUMNS = ["class", "images", "used in a run"]
VOTE_COLUMNS = ["fold model", "vote", "its probability"]
POLL_SECONDS = 0.5


def _say(kind: str, text: str = "", markdown: str = "") -> str:
    """A status line: a bold word, then `text` (escaped: it may hold visitor text) and/or trusted `markdown`."""
    # Words rather than emoji: they read the same in every browser and font, and to screen readers.
    prefix = {"error": "Error", "ok": "Done", "info": "Note", "cancel": "Cancelled", "busy": "Running",
              "queued": "Queued", "prediction": "Prediction"}[kind]
    return f"**{prefix}:** {escape_markdown(text)}{markdown}"


CANCEL_ANSWERS = {
    "idle": _say("info", "nothing of yours is queued or running."),
    "queued": _say("cancel", "your job was still waiting in the queue; it will not start."),
    "running": _say("busy", "cancelling: the job stops within a second."),
}


# ---- one visitor's private state ----------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """A finished run of a visitor: its results folder (zipped, pushed), the page's label for it, the dataset name for
    its model card, and its job folder (the rows and embeddings the Audit tab reads; never zipped or pushed)."""

    folder: Path
    label: str
    dataset_name: str | None
    job_folder: Path


@dataclass
class Visitor:
    """What one browser session owns. Everything it writes lives under `root`, which no other session sees."""

    root: Path
    job: "Job | None" = None  # this visitor's one job, waiting or running (at most one: see JobQueue)
    left: bool = False  # the visitor closed the page; `root` goes once their job ended
    data_key: tuple | None = None  # the data the preview loaded (the preview's own cache; jobs load theirs)
    dataset: Any = None
    runs: dict[str, RunRecord] = field(default_factory=dict)
    audits: dict[str, dict] = field(default_factory=dict)  # run name -> what the Audit tab showed of it
    hub_download: tuple[str, Path] | None = None  # (repo id, folder): the one pushed run downloaded for Predict
    counter: int = 0

    @property
    def last_run(self) -> str | None:
        return next(reversed(self.runs), None)

    def own_run(self, name: str | None, none_yet: str) -> str:
        """`name` (default: the last run) if it is one of this visitor's runs of this session, looked up by name
        only (never a path); else a [`VisitorError`] (`none_yet` when there is no run at all)."""
        name = (name or "").strip() or self.last_run
        if name is None:
            raise VisitorError(none_yet)
        if name not in self.runs:
            raise VisitorError(f"There is no run {name[:100]!r} in your session; choose one of your runs from the "
                               "list.", own=repr(name[:100]))
        return name

    def remove_if_left(self) -> None:
        if self.left and self.job is None:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_dir(self, prefix: str, parent: str = "") -> Path:
        self.counter += 1
        path = self.root / parent / f"{prefix}-{self.counter}"
        path.mkdir(parents=True)
        return path


class Visitors:
    """Working folders per Gradio session (keyed by the session hash, which never becomes a path)."""

    def __init__(self, base: Path):
        self.base = base
        self._lock = threading.Lock()
        self._by_session: dict[str, Visitor] = {}

    def get(self, request: gr.Request | None) -> Visitor:
        key = getattr(request, "session_hash", None)
        if not key:  # never a shared fallback visitor: that would be one folder for every such caller
            raise VisitorError("This request belongs to no session; use the page or gradio_client.")
        with self._lock:
            visitor = self._by_session.get(key)
            if visitor is None:
                visitor = Visitor(Path(tempfile.mkdtemp(prefix="visitor-", dir=self.base)))
                self._by_session[key] = visitor
            return visitor

    def remove_all(self) -> None:
        """When the app stops: every visitor's folder goes, also under a `--workdir` that stays."""
        with self._lock:
            visitors, self._by_session = list(self._by_session.values()), {}
        for visitor in visitors:
            shutil.rmtree(visitor.root, ignore_errors=True)

    def drop(self, request: gr.Request | None) -> None:
        key = getattr(request, "session_hash", None)
        with self._lock:
            visitor = self._by_session.pop(key, None) if key else None
        if visitor is not None:
            visitor.left = True
            if visitor.job is not None:
                visitor.job.cancel.set()  # a visitor who left does not keep the machine
            visitor.remove_if_left()  # else their job's end removes it, once its process stopped writing there


# ---- the queue: one job at a time, one job per visitor ------------------------------------------------------------
JOB_WORDS = {"run": "cross-validation", "study": "comparison", "tune": "search", "audit": "audit"}
BUTTONS = {"run": "Run", "study": "Compare", "tune": "Search", "audit": "Audit"}


@dataclass(eq=False)
class Job:
    """One visitor's request for the machine, from the moment it is queued until its process ended."""

    visitor: Visitor
    kind: str
    cancel: threading.Event = field(default_factory=threading.Event)
    queued: float = field(default_factory=time.time)
    folder: Path | None = None  # its job folder (spec, progress, result), once its process started
    peak_memory: int = 0  # bytes: the largest resident memory of its process tree seen while it ran


class JobQueue:
    """First come, first served; the job at the head of the line has the machine. A visitor has at most one job in
    the line, and the line holds at most `max_waiting` jobs: a request beyond either is refused at once, with a
    sentence, instead of waiting behind itself."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._line: list[Job] = []

    def join(self, job: Job) -> None:
        with self._lock:
            current = job.visitor.job
            if current is not None:
                raise VisitorError(f"Your {JOB_WORDS[current.kind]} is still queued or running: one job per visitor. "
                                   "Wait for it to finish, or press Cancel, then start this one.")
            if len(self._line) > self.max_waiting:
                raise VisitorError(f"The Space is busy: {len(self._line) - 1} jobs are waiting for the machine. Try "
                                   "again in a few minutes.")
            self._line.append(job)
            job.visitor.job = job

    def place(self, job: Job) -> tuple[int, int]:
        """(jobs ahead of `job`, jobs waiting in all): `(0, n)` means `job` has the machine."""
        with self._lock:
            return self._line.index(job), len(self._line) - 1

    def leave(self, job: Job) -> None:
        with self._lock:
            if job in self._line:
                self._line.remove(job)
            if job.visitor.job is job:
                job.visitor.job = None


def _kill(process: subprocess.Popen) -> None:
    """End a job's process and everything it started (its own process group), and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _memory(process: subprocess.Popen) -> int:
    """Resident bytes of a job's process and its children (0 once it has gone)."""
    import psutil

    try:
        parent = psutil.Process(process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
    except psutil.Error:
        return 0


def _folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def progress_status(progress: dict, label: str, total_folds: int, started: float) -> str:
    """The status line of a running job, from the `progress.json` its process writes."""
    done = len(progress.get("folds", []))
    total = progress.get("total_folds") or total_folds
    elapsed = time.time() - started
    stage = progress.get("stage", "Starting")
    if not progress.get("training_started"):
        return _say("busy", f"{label}{stage.lower()} · {elapsed:.0f} s elapsed")
    current = min(done + 1, total) if total else done + 1
    of = f" of {total}" if total else ""
    steps = (f" · step {progress['step']}/{progress['max_steps']}" if progress.get("max_steps")
             and stage == "Training" else "")
    return _say("busy", f"{label}fold {current}{of}{steps} · {stage.lower()} · {elapsed:.0f} s elapsed · "
                        f"{done} fold(s) done")


def finished_folds(progress: dict) -> list[FoldResult]:
    return [FoldResult.from_dict(fold) for fold in progress.get("folds", [])]


RUN_EMPTY = (fold_table([]), "", None, None, None, None)  # table, summary, 3 plots, download
STUDY_EMPTY = ("", "", [], None)  # verdicts, report, plots, download
TUNE_EMPTY = ("", None, None)  # report, history plot, download
AUDIT_EMPTY = ("", [], pd.DataFrame(columns=ISSUE_COLUMNS), pd.DataFrame(columns=LEAK_COLUMNS))


def summary_markdown(results: CVResults) -> str:
    """Mean ± std and the 95% interval per metric, as a markdown table, with how the intervals were made."""
    n = len(results.folds)
    method, *fallbacks = results.interval_notes()
    lines = [f"**Summary over {n} folds** (95% interval: {escape_markdown(method)}"
             + "".join(f"; {escape_markdown(note)}" for note in fallbacks) + ")", "",
             "| metric | mean ± std | 95% interval | train mean | pooled out-of-fold |", "|---|---|---|---|---|"]
    for name, s in results.summary.items():
        low, high = s["ci95"]
        train = results.train_summary.get(name, {}).get("mean")
        pooled = results.oof_metrics.get(name)
        cells = [escape_markdown(name), f"{s['mean']:.4f} ± {s['std']:.4f}", f"[{low:.4f}, {high:.4f}]",
                 "" if train is None else f"{train:.4f}", f"{pooled:.4f}" if isinstance(pooled, float) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- the app ------------------------------------------------------------------------------------------------------
class SpaceApp:
    """The handlers behind the page; `build()` lays them out. One instance serves every visitor.

    Args:
        workdir: folder for the visitors' working folders (default: a new temporary folder).
        limits: what a visitor may upload, and the limits on every image however it arrives.
        local_token: this machine's Hugging Face token, for pushes only when nothing else is given; set only by
            `--use-local-token`, which is refused on a Space.
        local_account: the account of `local_token`, for the page.
        oauth: whether the page offers "Sign in with Hugging Face" (a Space with `hf_oauth: true`, or
            `--mock-login`).
        budgets: what one job and one visitor may take of the machine (`boundary.Budgets`).
    """

    def __init__(self, workdir: str | os.PathLike | None = None, limits: UploadLimits = UPLOAD_LIMITS, *,
                 local_token: str | None = None, local_account: str | None = None, oauth: bool = False,
                 budgets: Budgets = BUDGETS):
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tlcv-space-"))
        base.mkdir(parents=True, exist_ok=True)
        (base / OWNER_FILE).write_text(str(os.getpid()))  # a later start removes the folder if this process died
        self.workdir = base
        self.visitors = Visitors(base)
        self.limits = limits
        self.budgets = budgets
        self.local_token, self.local_account, self.oauth = local_token, local_account, oauth
        self.queue = JobQueue(budgets.max_waiting)
        self._processes: set[subprocess.Popen] = set()  # the jobs' processes now running (at most one, by the line)
        # Fold ensembles loaded for Predict, all visitors together (each holds k models in memory): the newest few.
        self._ensembles: OrderedDict[tuple, Any] = OrderedDict()
        self._ensembles_lock = threading.Lock()

    def _error(self, exc: BaseException, *secrets: str | None) -> str:
        """Every exception a visitor sees goes through `boundary.visitor_message`."""
        return _say("error", markdown=visitor_message(exc, secrets=[*secrets, self.local_token],
                                                      roots=[self.workdir]))

    # ---- data ------------------------------------------------------------------------------------------------
    @staticmethod
    def _data_spec(source, upload, hub_id, hub_split, label_column) -> dict:
        return data_spec(source, upload, hub_id, hub_split, label_column, zip_kind=DATA_ZIP, hub_kind=DATA_HUB,
                         builtin_kind=DATA_BUILTIN)

    def preview(self, source, upload, hub_id, hub_split, label_column, n_folds, sample_cap,
                oauth_token: gr.OAuthToken | None = None, request: gr.Request = None):
        """Load the chosen data and show a few images of the first classes with the class counts."""
        token = oauth_token.token if oauth_token else None
        try:
            visitor = self.visitors.get(request)
            n_folds, sample_cap = bounded("n_folds", n_folds), bounded("sample_cap", sample_cap)
            spec = self._data_spec(source, upload, hub_id, hub_split, label_column)
            key = tuple(sorted(spec.items()))
            if visitor.data_key != key or visitor.dataset is None:
                self._make_room(visitor)
                dataset = load_data(spec, visitor.new_dir("upload", "previews"), self.limits, min_per_class=n_folds,
                                    token=token or False)
                visitor.data_key, visitor.dataset = key, dataset
            dataset, label = visitor.dataset, spec["label"]
            counts = class_counts(dataset, label)
            used = class_counts(subsample(dataset, sample_cap, label), label)
            samples = preview_samples(_first_classes(dataset, label, PREVIEW_CLASSES), PREVIEW_PER_CLASS, label,
                                      limits=self.limits, allowed_dirs=[visitor.root])
        except Exception as exc:  # noqa: BLE001 - every failure is shown on the page
            return self._error(exc, token), [], pd.DataFrame(columns=COUNT_COLUMNS)
        table = pd.DataFrame(dict(zip(COUNT_COLUMNS, (list(counts), list(counts.values()),
                                                      [used.get(c, 0) for c in counts]))))
        total, n_used = sum(counts.values()), sum(used.values())
        note = (f"{total:,} images in {len(counts)} classes"
                + (f"; a run uses a class-stratified sample of {n_used:,} (sample cap)" if n_used < total else "")
                + (f"; images of the first {PREVIEW_CLASSES} classes shown" if len(counts) > PREVIEW_CLASSES else ""))
        try:
            check_classes(len(counts))
        except VisitorError as exc:
            return _say("error", f"{note}. {exc}"), samples, table
        return note, samples, table

    # ---- settings --------------------------------------------------------------------------------------------
    @staticmethod
    def _settings(strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap,
                  image_size) -> RunSettings:
        return RunSettings.from_inputs(strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                                       sample_cap, image_size, strategies=STRATEGIES)

    @staticmethod
    def _model(model_source: str, hub_model: str, token: str | bool = False) -> str:
        if model_source == MODEL_HUB:
            repo = hub_repo_id(hub_model, "model", "google/vit-base-patch16-224-in21k")
            check_hub_repo(repo, "model", token, MAX_HUB_DOWNLOAD_BYTES)
            return repo
        if model_source != MODEL_BUILTIN:
            raise VisitorError(f"Choose the pretrained model among: {MODEL_BUILTIN}, {MODEL_HUB}.")
        return BUILTIN_MODEL

    def _spec(self, kind: str, settings: RunSettings, data: dict, model: str, output_dir: Path, **extra) -> dict:
        values = asdict(settings)
        values["strategy"] = STRATEGIES[settings.strategy]
        return {"kind": kind, "settings": values, "data": data, "model": model, "output_dir": str(output_dir),
                "limits": asdict(self.limits), "roots": [str(self.workdir)], **extra}

    # ---- disk ------------------------------------------------------------------------------------------------
    def _make_room(self, visitor: Visitor, target: float = 0.5) -> None:
        """Keep the visitor's files within their quota: while they take more than `target` of it, the oldest result
        zips go first, then a downloaded pushed run, then the oldest runs (never the newest run, nor the newest zip:
        the one the page has just offered)."""
        quota = self.budgets.visitor_disk_bytes * target
        if _folder_bytes(visitor.root) <= quota:
            return
        evictable = sorted((visitor.root / "downloads").glob("*.zip"), key=lambda p: p.stat().st_mtime)[:-1]
        evictable += sorted((visitor.root / "previews").glob("upload-*"), key=lambda p: p.stat().st_mtime)[:-1]
        if visitor.hub_download is not None:
            evictable.append(visitor.hub_download[1])
        # Cached frozen features are recomputed when needed: they go before any run, but not while a job of this
        # visitor may be reading or writing them (a preview during the visitor's running job).
        if visitor.job is None or visitor.job.folder is None:
            evictable += sorted((visitor.root / "features").glob("*"), key=lambda p: p.stat().st_mtime)
        evictable += [visitor.runs[name].folder for name in list(visitor.runs)[:-1]]
        for path in evictable:
            if _folder_bytes(visitor.root) <= quota:
                break
            self._remove(visitor, path)
            logger.info("Disk quota: removed %s of a visitor", path.name)

    def _remove(self, visitor: Visitor, path: Path) -> None:
        for name, record in list(visitor.runs.items()):
            if record.folder == path:
                del visitor.runs[name]
                visitor.audits.pop(name, None)
                self._forget_ensemble(visitor, ("run", name))
                shutil.rmtree(record.job_folder, ignore_errors=True)
        if visitor.hub_download is not None and visitor.hub_download[1] == path:
            self._forget_ensemble(visitor, ("hub", visitor.hub_download[0]))
            visitor.hub_download = None
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    @staticmethod
    def _archive(visitor: Visitor, out: Path) -> str:
        """A zip of a results folder for the page: everything but the fold models' weights (Push carries those to
        the Hub), so that a download stays small whatever the run."""
        target = visitor.root / "downloads" / f"hf_tlcv-{out.name}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.rglob("*")):
                if path.is_file() and path.suffix not in WEIGHT_SUFFIXES:
                    archive.write(path, path.relative_to(out).as_posix())
        return str(target)

    # ---- jobs --------------------------------------------------------------------------------------------------
    def _request_cancel(self, request) -> str:
        """Ask this visitor's job to stop; returns what it was doing: "running", "queued" or "idle"."""
        visitor = self.visitors.get(request)
        job = visitor.job
        if job is None:
            return "idle"
        job.cancel.set()
        try:
            ahead, _ = self.queue.place(job)
        except ValueError:  # it ended meanwhile
            return "idle"
        return "queued" if ahead else "running"

    def cancel(self, request: gr.Request) -> str:
        """Cancel this visitor's job: a running one is stopped within a second, a queued one never starts. The
        answer says which."""
        try:
            return CANCEL_ANSWERS[self._request_cancel(request)]
        except VisitorError as exc:
            return self._error(exc)

    def cancel_from_page(self, request: gr.Request = None):
        """The Cancel buttons. A job, queued or running, writes its own status line (it says "Cancelled" as soon as
        it left the line or its process has gone), so the button leaves that line to it: an answer arriving after the
        job's last word would otherwise overwrite it."""
        try:
            state = self._request_cancel(request)
        except VisitorError as exc:
            return self._error(exc)
        return CANCEL_ANSWERS[state] if state == "idle" else gr.skip()

    def _queued(self, request, kind: str, empty: tuple, work: Callable[[Visitor, Job], Iterator[tuple]],
                ) -> Iterator[tuple]:
        """Queue a job of this visitor (refused when they have one already, or the line is full), show its place
        until it has the machine, then run `work`; a job cancelled while it waits never starts."""
        try:
            visitor = self.visitors.get(request)
            job = Job(visitor, kind)
            self.queue.join(job)
        except VisitorError as exc:
            yield (self._error(exc), *empty)
            return
        try:
            while True:
                if job.cancel.is_set():
                    yield (CANCEL_ANSWERS["queued"], *empty)
                    return
                ahead, waiting = self.queue.place(job)
                if not ahead:
                    break
                yield (_say("queued", f"place {ahead} of {waiting} in the queue ({time.time() - job.queued:.0f} s "
                                      "waiting). One job runs at a time on this machine; Cancel takes you out of the "
                                      "queue."), *empty)
                job.cancel.wait(POLL_SECONDS)
            yield from work(visitor, job)
        finally:
            self.queue.leave(job)
            visitor.remove_if_left()

    def _process(self, job: Job, spec: dict, token: str | None) -> Iterator[tuple[str, Any, dict]]:
        """Run a job's process (`jobs.py`) and follow it: `("progress", None, progress)` every poll, then
        `("done", result, progress)` or `("stopped", why, progress)` with `why` one of "cancel", "time", "memory".

        When the page goes away (the generator is closed), the process is killed."""
        visitor = job.visitor
        folder = job.folder = visitor.new_dir(spec["kind"], "jobs")
        write_json_atomic(folder / SPEC_FILE, spec)
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env.update(HF_HUB_DISABLE_IMPLICIT_TOKEN="1", HF_TLCV_FEATURE_CACHE=str(visitor.root / "features"),
                   PYTHONUNBUFFERED="1")
        started = time.time()
        process = subprocess.Popen([sys.executable, str(JOB_SCRIPT), str(folder), str(os.getpid())],
                                   stdin=subprocess.PIPE, env=env,
                                   start_new_session=True, text=True)
        self._processes.add(process)
        try:
            process.stdin.write((token or "") + "\n")  # the visitor's token: on a pipe, never on disk
            process.stdin.close()
            progress: dict = {}
            while process.poll() is None:
                job.peak_memory = max(job.peak_memory, _memory(process))
                why = ("cancel" if job.cancel.is_set() else
                       "time" if time.time() - started > self.budgets.max_job_seconds else
                       "memory" if job.peak_memory > self.budgets.max_job_memory_bytes else None)
                progress = read_json(folder / PROGRESS_FILE) or progress
                if why:
                    _kill(process)
                    self.queue.leave(job)  # the machine is free before the page hears of it
                    logger.info("Stopped a %s job (%s) after %.0f s, peak memory %.0f MB", spec["kind"], why,
                                time.time() - started, job.peak_memory / 2**20)
                    yield ("stopped", why, progress)
                    return
                yield ("progress", None, progress)
                job.cancel.wait(POLL_SECONDS)
            # The machine is free once the process has ended: the visitor may start their next job the moment the
            # page shows this one's result (which a generator's last step would otherwise hold back).
            self.queue.leave(job)
            progress = read_json(folder / PROGRESS_FILE) or progress
            result = read_json(folder / RESULT_FILE)
            if result is None:  # it died without a word: killed from outside, or out of memory in one step
                logger.error("A %s job's process ended with code %s and no result", spec["kind"], process.returncode)
                result = {"ok": False, "message": escape_markdown(
                    "The job's process ended unexpectedly (it may have run out of memory). Try smaller settings.")}
            logger.info("A %s job ended after %.0f s, peak memory %.0f MB", spec["kind"], time.time() - started,
                        job.peak_memory / 2**20)
            yield ("done", result, progress)
        finally:
            if process.poll() is None:
                _kill(process)
            self._processes.discard(process)

    def stop_jobs(self) -> None:
        """When the app stops: every job's process group is killed (they run in groups of their own, so a signal to
        the app does not reach them)."""
        for process in list(self._processes):
            _kill(process)

    def _stopped(self, why: str, folds: int, what: str) -> str:
        """The sentence for a job its process was stopped: Cancel, the time limit or the memory limit."""
        done = f"after {folds} finished fold(s)" if what == "run" else ""
        if why == "cancel":
            return _say("cancel", f"stopped {done or 'at once'}; nothing else was changed. Press {BUTTONS[what]} to "
                                  "start again.")
        if why == "time":
            return _say("error", f"stopped {done + ' ' if done else ''}at the Space's limit of "
                                 f"{duration(self.budgets.max_job_seconds)} per job. Lower the sample cap, the image "
                                 "size, the epochs or the folds.")
        return _say("error", f"stopped {done + ' ' if done else ''}at the Space's memory limit of "
                             f"{size(self.budgets.max_job_memory_bytes)} per job. Lower the image size or the sample "
                             "cap, or use fewer classes.")

    # ---- run ---------------------------------------------------------------------------------------------------
    def run(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy, freeze_layers,
            n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, oauth_token: gr.OAuthToken | None = None,
            request: gr.Request = None):
        """Cross-validate; yields (status, fold table, summary, score plot, confusion plot, train-vs-eval plot,
        download) as folds finish."""
        token = oauth_token.token if oauth_token else None
        yield from self._queued(request, "run", RUN_EMPTY, lambda visitor, job: self._run(
            visitor, job, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
            freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, token))

    def _run(self, visitor, job, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
             freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, token):
        try:
            settings = self._settings(strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                                      sample_cap, image_size)
            data = self._data_spec(source, upload, hub_id, hub_split, label_column)
            model = self._model(model_source, hub_model, token or False)
            self._make_room(visitor)
            out = visitor.new_dir("run")
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc, token), *RUN_EMPTY)
            return
        started, total = time.time(), settings.n_folds * settings.n_repeats
        yield from self._follow(
            job, self._spec("run", settings, data, model, out), token, out=out,
            busy=lambda progress: progress_status(progress, "", total, started),
            finish=lambda outcome: self._finished_run(visitor, job, out, settings, data, outcome, started),
            rest=lambda progress: (fold_table(finished_folds(progress)), *RUN_EMPTY[1:]))

    def _follow(self, job: Job, spec: dict, token: str | None, *, busy: Callable[[dict], str],
                finish: Callable[[dict], tuple], rest: Callable[[dict], tuple], out: Path | None = None,
                ) -> Iterator[tuple]:
        """The page's side of a job's process (`_process`): `busy(progress)` as the status line while it runs, then
        `finish(result)` (the page's outputs) once it succeeded, else the sentence of its stop or its error;
        `rest(progress)` fills the other outputs meanwhile. A job that did not succeed leaves nothing behind (its job
        folder, and `out`, go); one that did is followed by the visitor's disk quota."""
        for kind, outcome, progress in self._process(job, spec, token):
            if kind == "progress":
                yield (busy(progress), *rest(progress))
            elif kind == "stopped" or not outcome["ok"]:
                self._discard(job, *((out,) if out is not None else ()))
                status = (self._stopped(outcome, len(finished_folds(progress)), spec["kind"]) if kind == "stopped"
                          else _say("error", markdown=outcome["message"]))
                yield (status, *rest(progress))
            else:
                try:
                    yield finish(outcome)
                except Exception as exc:  # noqa: BLE001
                    yield (self._error(exc, token), *rest(progress))
                self._make_room(job.visitor, target=1.0)

    @staticmethod
    def _discard(job: Job, *folders: Path) -> None:
        """A job that did not finish leaves nothing behind that a later job, the zip or a push would read."""
        for folder in (*folders, getattr(job, "folder", None)):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _finished_run(self, visitor: Visitor, job: Job, out: Path, settings: RunSettings, data: dict,
                      outcome: dict, started: float) -> tuple:
        """Record a finished run as the visitor's (for Audit, Predict and Push) and render what the page shows."""
        results = CVResults.load(out)
        elapsed = time.time() - started
        # The dataset's name for the model card: the builtin's or the Hub id; an upload has none to give.
        dataset_name = {"builtin": BUILTIN_DATASET, "hub": data.get("repo")}.get(data["kind"])
        accuracy = results.summary.get("accuracy", {}).get("mean")
        label = (f"Run {len(visitor.runs) + 1}: {STRATEGIES[settings.strategy].replace('_', ' ')}, "
                 f"{len(results.folds)} folds" + (f", accuracy {accuracy:.3f}" if accuracy is not None else ""))
        visitor.runs[out.name] = RunRecord(out, label, dataset_name, job.folder)
        plots = out / "plots"
        archive = self._archive(visitor, out)
        prepared = (outcome.get("training_started") or started) - started
        status = _say("ok", f"{len(results.folds)} folds in {elapsed:.0f} s ({outcome['n_rows']:,} images at "
                            f"{settings.image_size} px: {prepared:.0f} s to load the model and prepare the images, "
                            f"{elapsed - prepared:.0f} s to train and evaluate the folds). The fold models are ready "
                            "for the Audit, Predict and Push tabs.")
        return (status, fold_table(results.folds), summary_markdown(results), _existing(plots / "fold_scores.png"),
                _existing(plots / "confusion_matrix.png"), _existing(plots / "train_vs_eval.png"), archive)

    # ---- compare -----------------------------------------------------------------------------------------------
    def compare(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
                freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions,
                oauth_token: gr.OAuthToken | None = None, request: gr.Request = None):
        """Run a TransferStudy on the same data and settings; yields (status, verdicts, report, plots, download)."""
        token = oauth_token.token if oauth_token else None
        yield from self._queued(request, "study", STUDY_EMPTY, lambda visitor, job: self._compare(
            visitor, job, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
            freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions, token))

    def _compare(self, visitor, job, source, upload, hub_id, hub_split, label_column, model_source, hub_model,
                 strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size,
                 questions, token):
        try:
            chosen = ticked(questions, QUESTIONS, "question to compare")
            settings = self._settings(strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                                      sample_cap, image_size)
            if settings.n_folds * settings.n_repeats < 3 and set(chosen) != {"overfitting"}:
                # TransferStudy refuses this too, in its own terms; say it in the page's, before any data is read.
                raise VisitorError(f"A comparison needs at least 3 paired fold scores per variant, and folds k = "
                                   f"{settings.n_folds} x repeats = {settings.n_repeats} gives "
                                   f"{settings.n_folds * settings.n_repeats}: set folds k to 3 or more, or repeats "
                                   "to 2 or more.")
            data = self._data_spec(source, upload, hub_id, hub_split, label_column)
            model = self._model(model_source, hub_model, token or False)
            self._make_room(visitor)
            out = visitor.new_dir("study")
            spec = self._spec("study", settings, data, model, out, questions=list(chosen))
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc, token), *STUDY_EMPTY)
            return
        started = time.time()

        def finish(outcome: dict) -> tuple:
            shutil.rmtree(job.folder, ignore_errors=True)
            plots = sorted((out / "plots").glob("*.png"))
            markdown = (out / "report.md").read_text(encoding="utf-8") if (out / "report.md").exists() else ""
            verdicts = outcome["verdicts"] + (f"\n\n**Note:** {outcome['chance']}" if outcome["chance"] else "")
            return (_say("ok", f"{outcome['n_variants']} variants on identical folds in "
                               f"{time.time() - started:.0f} s."), verdicts, _visitor_markdown(markdown),
                    [(str(p), p.stem.replace("_", " ")) for p in plots], self._archive(visitor, out))

        yield from self._follow(job, spec, token, out=out, finish=finish, rest=lambda _: STUDY_EMPTY,
                                busy=lambda progress: progress_status(progress, "comparison · ", 0, started))

    # ---- tune --------------------------------------------------------------------------------------------------
    def tune(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, n_folds, epochs,
             sample_cap, image_size, n_trials, strategies, oauth_token: gr.OAuthToken | None = None,
             request: gr.Request = None):
        """A small hyperparameter search (`KFoldTrainer.hyperparameter_search`, every trial a cross-validation on the
        same folds, the median pruner); yields (status, report, optimisation-history plot, download)."""
        token = oauth_token.token if oauth_token else None
        yield from self._queued(request, "tune", TUNE_EMPTY, lambda visitor, job: self._tune(
            visitor, job, source, upload, hub_id, hub_split, label_column, model_source, hub_model, n_folds, epochs,
            sample_cap, image_size, n_trials, strategies, token))

    def _tune(self, visitor, job, source, upload, hub_id, hub_split, label_column, model_source, hub_model, n_folds,
              epochs, sample_cap, image_size, n_trials, strategies, token):
        from hf_tlcv.run_dir import PLOTS_DIR
        from hf_tlcv.search.report import PLOT_FILES

        try:
            n_trials = bounded("n_trials", n_trials)
            chosen = ticked(strategies, STRATEGIES, "strategy to search")
            # The first tab's strategy and learning rate are what the search chooses; its epochs bound a trial's.
            settings = self._settings(DEFAULTS["strategy"], 0, n_folds, 1, epochs, DEFAULTS["learning_rate"],
                                      sample_cap, image_size)
            data = self._data_spec(source, upload, hub_id, hub_split, label_column)
            model = self._model(model_source, hub_model, token or False)
            self._make_room(visitor)
            out = visitor.new_dir("tune")
            spec = self._spec("tune", settings, data, model, out,
                              tune={"n_trials": n_trials, "strategies": list(chosen)})
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc, token), *TUNE_EMPTY)
            return
        started = time.time()
        label = f"search of {n_trials} trials (pruned trials stop early) · "

        def finish(outcome: dict) -> tuple:
            shutil.rmtree(job.folder, ignore_errors=True)
            return (_say("ok", f"{outcome['n_trials']} trials in {time.time() - started:.0f} s; {outcome['best']}"
                               + self._against_last_run(visitor, outcome["metric"], outcome["best_value"])),
                    _visitor_markdown(outcome["report"]), _existing(out / PLOTS_DIR / PLOT_FILES["history"]),
                    self._archive(visitor, out))

        yield from self._follow(job, spec, token, out=out, finish=finish, rest=lambda _: TUNE_EMPTY,
                                busy=lambda progress: progress_status(progress, label, n_trials * settings.n_folds,
                                                                      started))

    @staticmethod
    def _against_last_run(visitor: Visitor, metric: str, best: float) -> str:
        """How the search's best compares with the visitor's last run of the first tab (its own settings), when its
        mean is higher: a search of a few trials need not find better settings than the ones already tried."""
        if visitor.last_run is None:
            return ""
        record = visitor.runs[visitor.last_run]
        try:
            mean = CVResults.load(record.folder).summary[metric]["mean"]
        except Exception:  # noqa: BLE001 - the comparison is a courtesy; a run without the metric has none
            return ""
        if mean <= best:
            return ""
        return (f" Your {record.label.split(':')[0]} scored {mean:.4f} with the first tab's settings: these trials did "
                "not find better ones (try more trials, or keep those settings). The data and folds may differ if "
                "you changed them since.")

    # ---- audit -------------------------------------------------------------------------------------------------
    def audit(self, run_name, request: gr.Request = None):
        """Audit the data of one of the visitor's runs with its out-of-fold predictions (`CVResults.audit`); yields
        (status, numbers, gallery, label issues, leakage per fold)."""
        try:
            visitor = self.visitors.get(request)
            name = visitor.own_run(run_name, "Run a cross-validation first (Cross-validate tab); then audit it here.")
            from hf_tlcv.audit.checks import check_available

            check_available()
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc), *AUDIT_EMPTY)
            return
        if name in visitor.audits:  # audited already: the report is shown again, nothing is computed
            yield self._audit_outputs(visitor.audits[name], visitor.runs[name].label)
            return
        yield from self._queued(request, "audit", AUDIT_EMPTY, lambda visitor, job: self._audit(visitor, job, name))

    def _audit(self, visitor: Visitor, job: Job, name: str) -> Iterator[tuple]:
        record = visitor.runs[name]
        how = ("the embeddings from the run's frozen-feature cache" if (record.job_folder / EMBEDDINGS_FILE).exists()
               else "one embedding pass of the pretrained model")
        spec = {"kind": "audit", "output_dir": str(record.folder), "run_job": str(record.job_folder),
                "roots": [str(self.workdir)]}
        started = time.time()

        def finish(outcome: dict) -> tuple:
            shutil.rmtree(job.folder, ignore_errors=True)
            visitor.audits[name] = outcome
            return self._audit_outputs(outcome, record.label)

        # The audit writes into the run's folder, which stays whatever happens: only its job folder is discarded.
        yield from self._follow(job, spec, None, finish=finish, rest=lambda _: AUDIT_EMPTY,
                                busy=lambda _: _say("busy", f"auditing {record.label} with {how} · "
                                                            f"{time.time() - started:.0f} s elapsed"))

    @staticmethod
    def _audit_outputs(outcome: dict, run_label: str) -> tuple:
        status = _say("ok", f"{run_label}: {outcome['counts']}. The run's results folder (and its model card, for "
                            "Push) now holds the audit.")
        return (status, outcome["numbers"], [tuple(item) for item in outcome["gallery"]],
                pd.DataFrame(outcome["issues"], columns=ISSUE_COLUMNS),
                pd.DataFrame(outcome["leakage"], columns=LEAK_COLUMNS))


    # ---- predict -----------------------------------------------------------------------------------------------
    def run_choices(self, request: gr.Request = None):
        """The visitor's own runs, newest first, for the Audit and Predict tabs' lists."""
        try:
            visitor = self.visitors.get(request)
        except VisitorError:
            return gr.update(choices=[], value=None)
        choices = [(record.label, name) for name, record in reversed(visitor.runs.items())]
        return gr.update(choices=choices, value=visitor.last_run)

    def check_image(self, image_file, request: gr.Request = None):
        """Decode the uploaded image within the limits and show it, or say why it cannot be used. A small image is
        shown enlarged with square pixels (a 28 px image would be a speck), a large one reduced."""
        if not image_file:
            return "", None
        try:
            image = open_image(image_file, self.limits)
        except Exception as exc:  # noqa: BLE001
            return self._error(exc), None
        width, height = image.size
        if max(width, height) < PREVIEW_PIXELS:
            factor = max(1, PREVIEW_PIXELS // max(width, height))
            image = image.resize((width * factor, height * factor), resample=0)  # nearest: the pixels as they are
        image.thumbnail((512, 512))
        return _say("info", f"the image was read ({width}x{height} pixels). Press Predict."), image

    def _ensemble(self, visitor: Visitor, run_name: str | None, repo_text: str | None, token: str | None):
        from hf_tlcv.ensemble import KFoldEnsemble

        if (repo_text or "").strip():
            repo = hub_repo_id(repo_text, "model repository", "your-name/animal-mnist-kfold")
            key = ("hub", repo)
            if visitor.hub_download is None or visitor.hub_download[0] != repo:
                if visitor.hub_download is not None:  # one downloaded run per visitor: the previous one goes
                    self._remove(visitor, visitor.hub_download[1])
                visitor.hub_download = (repo, self._download_run(visitor, repo, token))
            folder = visitor.hub_download[1]
        else:
            name = visitor.own_run(run_name, "Run a cross-validation first (Cross-validate tab), or type the Hub id "
                                             "of a run pushed with hf_tlcv.")
            key, folder = ("run", name), visitor.runs[name].folder
        with self._ensembles_lock:
            ensemble = self._ensembles.pop((visitor.root, key), None)
        if ensemble is None:
            ensemble = KFoldEnsemble.from_pretrained(folder)
        with self._ensembles_lock:  # the newest few, all visitors together: each holds its k fold models in memory
            self._ensembles[(visitor.root, key)] = ensemble
            while len(self._ensembles) > MAX_ENSEMBLES:
                self._ensembles.popitem(last=False)
        return ensemble

    def _forget_ensemble(self, visitor: Visitor, key: tuple) -> None:
        with self._ensembles_lock:
            self._ensembles.pop((visitor.root, key), None)

    def _download_run(self, visitor: Visitor, repo: str, token: str | None) -> Path:
        """A pushed run, downloaded into the visitor's folder (results, configs and safetensors weights only), with
        the base model it names checked like a model id typed on the page."""
        from huggingface_hub import snapshot_download

        check_hub_repo(repo, "model", token or False, MAX_HUB_DOWNLOAD_BYTES, patterns=PREDICT_DOWNLOAD)
        self._make_room(visitor)
        folder = Path(snapshot_download(repo, local_dir=visitor.new_dir("hub"), allow_patterns=list(PREDICT_DOWNLOAD),
                                        token=token or False))
        if not (folder / "cv_results.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            raise VisitorError(f"{repo} is not a run pushed by hf_tlcv (it has no cv_results.json).")
        base = CVResults.load(folder).config.get("model_name_or_path")
        if base and not is_builtin(base):
            # The run names its base model; a stranger's repository must not make this machine load a local folder.
            check_hub_repo(hub_repo_id(base, "base model", "google/vit-base-patch16-224-in21k"), "model",
                           token or False, MAX_HUB_DOWNLOAD_BYTES)
        return folder

    def predict(self, image_file, run_name, repo_id, oauth_token: gr.OAuthToken | None = None,
                request: gr.Request = None):
        """The fold ensemble's averaged probabilities and each fold's vote for one image."""
        token = oauth_token.token if oauth_token else None
        try:
            visitor = self.visitors.get(request)
            if not image_file:
                raise VisitorError("Upload an image to classify.")
            image = open_image(image_file, self.limits).convert("RGB")
            ensemble = self._ensemble(visitor, run_name, repo_id, token)
            out = ensemble.predict([image])
        except Exception as exc:  # noqa: BLE001
            return self._error(exc, token), None, pd.DataFrame(columns=VOTE_COLUMNS)
        names = ensemble.label_names or [str(i) for i in range(out.probabilities.shape[1])]
        probs = {names[i]: float(p) for i, p in enumerate(out.probabilities[0])}
        votes = pd.DataFrame({
            VOTE_COLUMNS[0]: out.fold_names,
            VOTE_COLUMNS[1]: [names[int(v)] for v in out.votes[:, 0]],
            VOTE_COLUMNS[2]: [round(float(out.fold_probabilities[i, 0, int(v)]), 4)
                              for i, v in enumerate(out.votes[:, 0])],
        })
        agree = float(out.agreement[0])
        return (_say("prediction", f"{out.labels[0]} ({probs[out.labels[0]]:.1%} averaged over {len(ensemble)} fold "
                                   f"models; {agree:.0%} of them vote for it)."), probs, votes)

    # ---- push --------------------------------------------------------------------------------------------------
    def identity(self, token_text, profile: gr.OAuthProfile | None = None):
        """Whose identity a push will use, shown before the button is pressed."""
        creds = push_credentials(token_text, "signed-in" if profile else None, self.local_token)
        account = {"oauth": getattr(profile, "username", None), "local": self.local_account}.get(creds.source)
        return identity_markdown(creds.source, account, self.oauth)

    def push(self, repo_id, token, private, oauth_token: gr.OAuthToken | None = None, request: gr.Request = None):
        """Push the visitor's last run with its model card, with the visitor's own credentials only."""
        from huggingface_hub import HfApi

        creds = push_credentials(token, oauth_token.token if oauth_token else None, self.local_token)
        try:
            visitor = self.visitors.get(request)
            if creds.token is None:
                how = "Sign in with Hugging Face or paste" if self.oauth else "Paste"
                raise VisitorError(f"{how} a write token first: a push writes to the Hub as you, and this Space never "
                                   "pushes with its own credentials.")
            repo = hub_repo_id(repo_id, "model repository", "your-name/animal-mnist-kfold")
            if visitor.last_run is None:
                raise VisitorError("Run a cross-validation first (Cross-validate tab); then push it here.")
            record = visitor.runs[visitor.last_run]
            folder, dataset_name = record.folder, record.dataset_name
            account = HfApi().whoami(token=creds.token).get("name")
            info = CVResults.load(folder).push_to_hub(repo, token=creds.token, private=bool(private),
                                                      dataset_name=dataset_name)
        except Exception as exc:  # noqa: BLE001
            return self._error(exc, creds.token), ""  # the token field is emptied once used, so it does not linger
        url = str(getattr(info, "repo_url", "") or "")
        where = markdown_link(repo, url) if url.startswith(("http://", "https://")) else escape_markdown(repo)
        return _say("ok", markdown=f"pushed to {where} as {escape_markdown(account or 'your account')}, with its "
                                   "model card."), ""

    def leave(self, request: gr.Request = None):
        self.visitors.drop(request)

    # ---- layout ------------------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        no_latex: list = []  # visitor text is never LaTeX: `$` stays a dollar sign
        with gr.Blocks(title="hf_tlcv: cross-validate fine-tuning", analytics_enabled=False,
                       delete_cache=CACHE_CLEANUP) as demo:
            with gr.Row():
                gr.Markdown(
                    "# hf_tlcv: k-fold cross-validation of fine-tuning\n"
                    "How well does a pretrained model transfer to your images, and which fine-tuning setting is "
                    "best? Each fold trains a fresh copy of the pretrained model; the result is a mean, a spread and "
                    "an honest 95% interval instead of one lucky split. Jobs are queued: one at a time on this "
                    f"machine, one per visitor. {self.budgets.describe()}",
                    latex_delimiters=no_latex, elem_id="intro")
                if self.oauth:
                    gr.LoginButton(size="md", scale=0, min_width=260, elem_id="login-button")
            with gr.Tab("Cross-validate"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=450):
                        gr.Markdown("### 1. Data")
                        source = gr.Radio([DATA_BUILTIN, DATA_ZIP, DATA_HUB], value=DATA_BUILTIN, label="Images",
                                          elem_id="data-source")
                        upload = gr.File(label="Zip of an image folder: one sub-folder of images per class",
                                         visible=False, type="filepath", file_types=[".zip"], elem_id="data-upload")
                        limits_note = gr.Markdown(f"Limits: {self.limits.describe()}.", visible=False)
                        with gr.Row(visible=False) as hub_row:
                            hub_id = gr.Textbox(label="Hub dataset id", placeholder="beans", max_length=96)
                            hub_split = gr.Textbox(value="train", label="split", max_length=64)
                            label_column = gr.Textbox(value="label", label="label column", max_length=128)
                        load = gr.Button("Load and preview", size="sm")
                        data_status = gr.Markdown(elem_id="data-status", latex_delimiters=no_latex)
                        gallery = gr.Gallery(label="A few images per class", columns=PREVIEW_PER_CLASS, height=260,
                                             elem_id="data-preview")
                        counts = gr.Dataframe(pd.DataFrame(columns=COUNT_COLUMNS), label="Images per class",
                                              interactive=False, max_height=220, elem_id="class-counts")
                        gr.Markdown("### 2. Model")
                        model_source = gr.Radio([MODEL_BUILTIN, MODEL_HUB], value=MODEL_BUILTIN,
                                                label="Pretrained model")
                        hub_model = gr.Textbox(label="Hub model id", placeholder="google/vit-base-patch16-224-in21k",
                                               visible=False, max_length=96)
                        gr.Markdown("### 3. Settings")
                        strategy = gr.Dropdown(list(STRATEGIES), value=DEFAULTS["strategy"], label="What trains")
                        freeze_layers = _slider("freeze_layers", DEFAULTS["freeze_layers"],
                                                label=f"Blocks frozen (Lite0 has {LITE0_BLOCKS})", visible=False)
                        with gr.Row():
                            n_folds = _slider("n_folds", DEFAULTS["n_folds"])
                            n_repeats = _slider("n_repeats", DEFAULTS["n_repeats"])
                            epochs = _slider("epochs", DEFAULTS["epochs"])
                        with gr.Row():
                            learning_rate = gr.Number(value=DEFAULTS["learning_rate"], label="learning rate",
                                                      minimum=RANGES["learning_rate"][0],
                                                      maximum=RANGES["learning_rate"][1])
                            sample_cap = _slider("sample_cap", DEFAULTS["sample_cap"], step=10,
                                                 label="sample cap (0 = all)")
                            image_size = _slider("image_size", DEFAULTS["image_size"], step=32,
                                                 label="image size (px)")
                        gr.Markdown("The defaults are the demo's recipe: a linear probe on the frozen pretrained "
                                    "network, 1,000 images at 128 px. It reaches about 0.92 accuracy and takes about "
                                    "a minute on the Space's 2 CPU cores when nobody else is training.",
                                    elem_id="defaults-note")
                    with gr.Column(scale=4, min_width=560):
                        with gr.Row(equal_height=True):
                            run = gr.Button("Run cross-validation", variant="primary", elem_id="run-button",
                                            scale=2)
                            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-button", scale=1)
                        status = gr.Markdown("Choose data, model and settings, then press Run.", elem_id="run-status",
                                             latex_delimiters=no_latex)
                        table = gr.Dataframe(fold_table([]), label="Per fold (fills in as folds finish)",
                                             interactive=False, elem_id="fold-table")
                        summary = gr.Markdown(elem_id="summary", latex_delimiters=no_latex)
                        # One plot per row, at the column's full width: their titles, ticks and cell counts are
                        # read at the size shown.
                        plot_scores = _plot("Per-fold scores", "plot-scores")
                        plot_train = _plot("Train vs. eval per fold", "plot-train")
                        plot_confusion = _plot("Pooled confusion matrix", "plot-confusion", height=640)
                        download = gr.File(label="Results folder (zip)", elem_id="download")
            with gr.Tab("Compare"):
                gr.Markdown("Cross-validate variants of the settings on the **same folds** and get verdicts backed by "
                            "paired statistics. Uses the data, model and settings of the first tab; each variant is a "
                            "full cross-validation, so keep the sample cap small.")
                questions = gr.CheckboxGroup(list(QUESTIONS), value=[QUESTION_TITLES[COMPARE_DEFAULT]], label="Questions")
                with gr.Row(equal_height=True):
                    compare = gr.Button("Compare", variant="primary", elem_id="compare-button", scale=2)
                    compare_cancel = gr.Button("Cancel", variant="stop", scale=1)
                compare_status = gr.Markdown(elem_id="compare-status", latex_delimiters=no_latex)
                verdicts = gr.Markdown(elem_id="verdicts", latex_delimiters=no_latex)
                study_plots = gr.Gallery(label="Study plots", columns=2, height="auto", object_fit="contain",
                                         fit_columns=False, elem_id="study-plots")
                with gr.Accordion("Full report: every variant, per fold", open=False):
                    report = gr.Markdown(elem_id="study-report", latex_delimiters=no_latex)
                study_download = gr.File(label="Study folder (zip)")
            with gr.Tab("Tune"):
                gr.Markdown("Search the settings with a small budget: Optuna chooses what trains, the learning rate, "
                            "the freeze depth (with freezing), the LoRA rank (with LoRA), layer-wise decay and the "
                            "epochs (up to the first tab's), and **every trial is a whole cross-validation on the same "
                            "folds**. The median pruner stops a trial after a fold when its running mean is below the "
                            "median of the earlier trials at that fold. Uses the data, model, folds k, sample cap and "
                            "image size of the first tab (one repeat); keep the sample cap small.")
                tune_strategies = gr.CheckboxGroup(list(STRATEGIES), value=TUNE_STRATEGIES,
                                                   label="Strategies to search", elem_id="tune-strategies")
                n_trials = _slider("n_trials", TUNE_TRIALS)
                with gr.Row(equal_height=True):
                    tune = gr.Button("Search", variant="primary", elem_id="tune-button", scale=2)
                    tune_cancel = gr.Button("Cancel", variant="stop", scale=1, elem_id="tune-cancel")
                tune_status = gr.Markdown(elem_id="tune-status", latex_delimiters=no_latex)
                tune_history = _plot("Optimisation history", "tune-history")
                tune_report = gr.Markdown(elem_id="tune-report", latex_delimiters=no_latex)
                tune_download = gr.File(label="Search folder (zip)", elem_id="tune-download")
            with gr.Tab("Audit") as audit_tab:
                gr.Markdown("Audit the data of one of your runs with the run's own out-of-fold predictions "
                            "(cleanlab's Datalab): rows whose label the models that never trained on them disbelieve, "
                            "near-duplicates and outliers, and the near-duplicates that sat on both sides of a fold "
                            "(leakage: it inflates the estimate). It trains nothing: it reads the run's predictions "
                            "and folds, and the pretrained embeddings of its rows (a linear probe's frozen features, "
                            "else one forward pass of the model).")
                audit_choice = gr.Dropdown([], label="Run to audit: one of your runs (newest first)",
                                           allow_custom_value=True, elem_id="audit-run")
                with gr.Row(equal_height=True):
                    audit_button = gr.Button("Audit", variant="primary", elem_id="audit-button", scale=2)
                    audit_cancel = gr.Button("Cancel", variant="stop", scale=1, elem_id="audit-cancel")
                audit_status = gr.Markdown(elem_id="audit-status", latex_delimiters=no_latex)
                audit_numbers = gr.Markdown(elem_id="audit-numbers", latex_delimiters=no_latex)
                audit_gallery = gr.Gallery(label="Suspected label errors, and near-duplicates split across folds",
                                           columns=1, height="auto", object_fit="contain", elem_id="audit-gallery")
                audit_issues = gr.Dataframe(AUDIT_EMPTY[2], label="Suspected label errors (lowest label quality "
                                            "first)", interactive=False, elem_id="audit-issues")
                audit_leakage = gr.Dataframe(AUDIT_EMPTY[3], label="Leakage per fold", interactive=False,
                                             elem_id="audit-leakage")
            with gr.Tab("Predict") as predict_tab:
                gr.Markdown("Classify an image with the fold ensemble of one of your runs (or of a run pushed to the "
                            "Hub): the class probabilities are averaged over the k fold models, and each fold's vote "
                            f"is listed. Images: at most {self.limits.describe_image()}, "
                            f"{self.limits.max_file_bytes // 2**20} MB.")
                with gr.Row():
                    with gr.Column():
                        image_file = gr.File(label="Image to classify", file_types=["image"], type="filepath",
                                             elem_id="predict-image")
                        image_shown = gr.Image(label="The image as read", interactive=False, height=220,
                                               buttons=[], elem_id="predict-preview")
                        predict_run = gr.Dropdown([], label="Fold models: one of your runs (newest first)",
                                                  allow_custom_value=True, elem_id="predict-run")
                        predict_repo = gr.Textbox(label="or a Hub repository pushed by hf_tlcv (namespace/name)",
                                                  max_length=96, elem_id="predict-repo")
                        predict = gr.Button("Predict", variant="primary", elem_id="predict-button")
                    with gr.Column():
                        predict_status = gr.Markdown(elem_id="predict-status", latex_delimiters=no_latex)
                        probabilities = gr.Label(label="Ensemble probabilities", num_top_classes=5,
                                                 elem_id="predict-label")
                        votes = gr.Dataframe(pd.DataFrame(columns=VOTE_COLUMNS), label="Each fold's vote",
                                             interactive=False, elem_id="predict-votes")
            with gr.Tab("Push"):
                gr.Markdown("Push your last run (results, plots, fold models, model card) to a Hub model repository, "
                            "as yourself. A pasted token is used for this push only: it is not logged, shown or "
                            "stored." + (" Signing in reloads the page, which starts a new session: sign in before "
                                         "you run." if self.oauth else ""))
                identity = gr.Markdown(identity_markdown("none", oauth_available=self.oauth),
                                       elem_id="push-identity", latex_delimiters=no_latex)
                repo_id = gr.Textbox(label="Repository id", placeholder="your-name/animal-mnist-kfold",
                                     max_length=96, elem_id="push-repo")
                token = gr.Textbox(label="Write token (optional when signed in)", type="password",
                                   placeholder="hf_…", max_length=256, elem_id="push-token")
                private = gr.Checkbox(label="Private repository", value=False)
                push = gr.Button("Push to the Hub", variant="primary", elem_id="push-button")
                push_status = gr.Markdown(elem_id="push-status", latex_delimiters=no_latex)

            with gr.Accordion(STATISTICS_TITLE, open=False, elem_id="statistics-notes"):
                gr.Markdown(STATISTICS_NOTES, latex_delimiters=no_latex)

            data_inputs = [source, upload, hub_id, hub_split, label_column]
            settings = [model_source, hub_model, strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                        sample_cap, image_size]
            preview_outputs = [data_status, gallery, counts]

            source.change(lambda s: (gr.update(visible=s == DATA_ZIP), gr.update(visible=s == DATA_ZIP),
                                     gr.update(visible=s == DATA_HUB)),
                          source, [upload, limits_note, hub_row], api_visibility="private", queue=False)
            model_source.change(lambda s: gr.update(visible=s == MODEL_HUB), model_source, hub_model,
                                api_visibility="private", queue=False)
            strategy.change(lambda s: gr.update(visible=STRATEGIES.get(s) == "freeze"), strategy, freeze_layers,
                            api_visibility="private", queue=False)
            preview_inputs = [*data_inputs, n_folds, sample_cap]
            load.click(self.preview, preview_inputs, preview_outputs, api_name="preview", concurrency_limit=4)
            upload.upload(self.preview, preview_inputs, preview_outputs, api_visibility="private",
                          concurrency_limit=4)
            demo.load(self.preview, preview_inputs, preview_outputs, api_visibility="private", concurrency_limit=4)

            run_outputs = [status, table, summary, plot_scores, plot_confusion, plot_train, download]
            # Jobs queue in the app (JobQueue: one at a time, one per visitor, their place in the status line), so
            # Gradio lets every job's request in at once, up to the line's length.
            jobs = dict(concurrency_limit=self.budgets.max_waiting + 1, concurrency_id="jobs", show_progress="hidden")
            run.click(self.run, [*data_inputs, *settings], run_outputs, api_name="run", **jobs)
            cancel.click(self.cancel_from_page, None, status, api_visibility="private", queue=False)
            gr.api(self.cancel, api_name="cancel", queue=False)
            compare_outputs = [compare_status, verdicts, report, study_plots, study_download]
            compare.click(self.compare, [*data_inputs, *settings, questions], compare_outputs, api_name="compare",
                          **jobs)
            compare_cancel.click(self.cancel_from_page, None, compare_status, api_visibility="private", queue=False)
            tune.click(self.tune, [*data_inputs, model_source, hub_model, n_folds, epochs, sample_cap, image_size,
                                   n_trials, tune_strategies], [tune_status, tune_report, tune_history, tune_download],
                       api_name="tune", **jobs)
            tune_cancel.click(self.cancel_from_page, None, tune_status, api_visibility="private", queue=False)
            audit_tab.select(self.run_choices, None, audit_choice, api_visibility="private", queue=False)
            audit_button.click(self.audit, audit_choice, [audit_status, audit_numbers, audit_gallery, audit_issues,
                                                          audit_leakage], api_name="audit", **jobs)
            audit_cancel.click(self.cancel_from_page, None, audit_status, api_visibility="private", queue=False)
            predict_tab.select(self.run_choices, None, predict_run, api_visibility="private", queue=False)
            image_file.upload(self.check_image, image_file, [predict_status, image_shown], api_visibility="private",
                              concurrency_limit=2)
            image_file.clear(lambda: ("", None), None, [predict_status, image_shown], api_visibility="private",
                             queue=False)
            predict.click(self.predict, [image_file, predict_run, predict_repo], [predict_status, probabilities, votes],
                          api_name="predict", concurrency_limit=2)
            demo.load(self.identity, token, identity, api_visibility="private", queue=False)
            token.change(self.identity, token, identity, api_visibility="private", queue=False)
            push.click(self.push, [repo_id, token, private], [push_status, token], api_name="push",
                       concurrency_limit=2)
            demo.unload(self.leave)
        return demo


def _slider(name: str, value, step: int = 1, label: str | None = None, visible: bool = True) -> gr.Slider:
    low, high, title = RANGES[name]
    return gr.Slider(low, high, value=value, step=step, label=label or title, visible=visible)


def _plot(label: str, elem_id: str, height: int | None = None) -> gr.Image:
    # The plot's own title says what it is: no label badge or buttons drawn over it (the zip holds the files).
    return gr.Image(label=label, show_label=False, type="filepath", buttons=[], height=height, alt_text=label,
                    elem_id=elem_id)


def _first_classes(dataset, label: str, n: int):
    """The rows of the first `n` classes (class ids for a `ClassLabel`, else values in order of appearance)."""
    labels = np.asarray(dataset[label])
    kept = list(range(n)) if hasattr(dataset.features[label], "names") else list(dict.fromkeys(labels.tolist()))[:n]
    mask = np.isin(labels, kept)
    return dataset if mask.all() else dataset.select(np.flatnonzero(mask))


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


def _visitor_markdown(markdown: str) -> str:
    """A report for the page: without its image links (the plots are shown beside it; relative links do not
    resolve), and with the project's documentation files, which a visitor cannot open, pointed to the page's own
    notes on the statistics."""
    lines = [line for line in markdown.splitlines() if not line.lstrip().startswith("![")]
    text = "\n".join(lines)
    text = re.sub(r"\[([^\]]*)\]\((?:\.\./)*docs/[\w./-]+\.md\)", r"\1", text)
    return re.sub(r"(?:see )?docs/statistics\.md", f"see '{STATISTICS_TITLE}' at the bottom of the page", text)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def ensure_space_assets() -> None:
    """On a Hugging Face Space: install the package that carries the Animal-MNIST files, without the tensorflow it
    declares but does not need. A requirements file cannot say --no-deps, so this happens at start-up, once."""
    import importlib.util
    import subprocess

    if os.environ.get("SPACE_ID") and importlib.util.find_spec("animal_mnist") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "animal-mnist==0.4"], check=False)


# Study plots and audit images are wide figures: each is shown whole in a cell of its own shape instead of being cropped
# to a square thumbnail. Table cells break between words only ("trial", never "tria/l"; "complete", never "complet/e").
CSS = """
#study-plots .thumbnail-item, #audit-gallery .thumbnail-item { aspect-ratio: auto !important; height: auto !important; }
#study-plots img, #audit-gallery img { object-fit: contain !important; height: auto !important; width: 100% !important; }
#audit-gallery .grid-wrap, #study-plots .grid-wrap { height: auto !important; min-height: 0 !important;
  max-height: none !important; overflow: visible !important; }
th, th *, td, td * { word-break: keep-all !important; overflow-wrap: normal !important; hyphens: none !important; }
"""


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_credentials(use_local_token: bool, host: str) -> tuple[str | None, str | None]:
    """(token, account) of this machine's Hugging Face login, only when asked for and safe to use.

    Raises:
        SystemExit: `--use-local-token` on a Space (`SPACE_ID` is set: every visitor would push as the owner), with
            a host other than the loopback interface (anyone who reaches the page would), or without a login.
    """
    if not use_local_token:
        return None, None
    if os.environ.get("SPACE_ID"):
        raise SystemExit("--use-local-token is refused on a Space (SPACE_ID is set): every visitor would push with "
                         "the Space owner's token. Visitors sign in or paste their own token instead.")
    if not _loopback(host):
        raise SystemExit(f"--use-local-token is refused with --host {host}: anyone who can reach the page could "
                         "push as you. Serve it on 127.0.0.1 for yourself.")
    from huggingface_hub import get_token, whoami

    token = get_token()
    if token is None:
        raise SystemExit("--use-local-token: this machine has no Hugging Face login; run `hf auth login` first.")
    try:
        account = whoami(token=token).get("name")
    except Exception:  # noqa: BLE001 - the Hub may be unreachable; the page then names no account
        account = None
    return token, account


def lock_down_credentials() -> None:
    """After start-up, nothing in this process may use a token implicitly: `HF_TOKEN` (a Space secret) leaves the
    environment, and huggingface_hub stops attaching the login cache to requests (its documented
    `HF_HUB_DISABLE_IMPLICIT_TOKEN` switch). Every Hub call made for a visitor passes the visitor's token, or none."""
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        os.environ.pop(name, None)
    os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    constants.HF_HUB_DISABLE_IMPLICIT_TOKEN = True


def oauth_available(mock_login: bool) -> bool:
    """Whether "Sign in with Hugging Face" can work: on a Space with `hf_oauth: true` (which sets OAUTH_CLIENT_ID),
    or locally with `--mock-login` (Gradio then signs you in as this machine's login, with a placeholder token)."""
    if os.environ.get("SPACE_ID"):
        if not os.environ.get("OAUTH_CLIENT_ID"):
            logger.warning("This Space has no OAuth app (add `hf_oauth: true` to README.md): visitors can only push "
                           "with a pasted token.")
            return False
        return True
    return mock_login


def remove_stale_workdirs() -> list[Path]:
    """Work folders of earlier runs of the app whose process has died without cleaning up (killed for memory, or by
    SIGKILL): their visitors' files would otherwise stay on the disk. Only folders that name a dead owner go."""
    import psutil

    removed = []
    for folder in Path(tempfile.gettempdir()).glob("tlcv-space-*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not psutil.pid_exists(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The hf_tlcv Space: cross-validate fine-tuning from the browser.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--workdir", default=None, help="Folder for the visitors' working folders (default: a new "
                                                        "temporary folder, deleted when the app stops).")
    parser.add_argument("--use-local-token", action="store_true",
                        help="Let pushes use this machine's Hugging Face login when the visitor gives no token: for "
                             "running the app for yourself. Refused on a Space and with a non-loopback --host.")
    parser.add_argument("--mock-login", action="store_true",
                        help="Show 'Sign in with Hugging Face' outside a Space, with Gradio's local stand-in (needs a "
                             "login on this machine, whose name it shows; the token it hands out is a placeholder).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    try:
        local_token, local_account = local_credentials(args.use_local_token, args.host)
    except SystemExit as refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    ensure_space_assets()
    for folder in remove_stale_workdirs():
        logger.info("Removed the work folder of an app that died: %s", folder.name)
    app = SpaceApp(args.workdir, local_token=local_token, local_account=local_account,
                   oauth=oauth_available(args.mock_login))
    demo = app.build()
    demo.queue(default_concurrency_limit=1)
    # SIGTERM (`kill`, a Space restart) and Ctrl-C end the app the same quiet way: the server closes and the
    # visitors' working folders are removed.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    extra_paths = [] if str(app.workdir.resolve()).startswith(tempfile.gettempdir()) else [str(app.workdir)]
    try:
        demo.launch(server_name=args.host, server_port=args.port, show_error=False, run_history=False,
                    max_file_size=app.budgets.upload_bytes, allowed_paths=extra_paths, footer_links=["api"],
                    css=CSS, prevent_thread_lock=True)
        # Gradio's local sign-in stand-in read this machine's login while starting; from here on nothing may.
        lock_down_credentials()
        logger.info("Serving; stop with Ctrl-C or SIGTERM.")
        while not stop.wait(0.5):
            pass
        logger.info("Stopping.")
    finally:
        app.stop_jobs()
        demo.close()
        app.visitors.remove_all()
        if args.workdir is None:
            shutil.rmtree(app.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
