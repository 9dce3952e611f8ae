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
import functools
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from boundary import (  # noqa: E402  (spaces/ is the script's folder, first on sys.path)
    RANGES,
    RunSettings,
    VisitorError,
    bounded,
    check_hub_repo,
    hub_repo_id,
    identity_markdown,
    push_credentials,
    ticked,
    visitor_message,
)
from hf_tlcv import CVResults, KFoldConfig, KFoldTrainer  # noqa: E402
from hf_tlcv._markdown import escape_markdown, markdown_link  # noqa: E402
from hf_tlcv.assets import is_builtin, load_dataset  # noqa: E402
from hf_tlcv.data import subsample  # noqa: E402
from hf_tlcv.upload import (  # noqa: E402
    UploadLimits,
    check_image_rows,
    class_counts,
    load_image_zip,
    open_image,
    preview_samples,
)

logger = hf_logging.get_logger("hf_tlcv.space")

# ---- choices shown on the page ------------------------------------------------------------------------------------
DATA_BUILTIN = "Animal-MNIST (built in)"
DATA_ZIP = "Upload a zip"
DATA_HUB = "Hub dataset"
MODEL_BUILTIN = "EfficientNet-Lite0, ImageNet (built in)"
MODEL_HUB = "Hub model id"
BUILTIN_DATASET = "builtin:animal-mnist"
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
# Tune's default checklist: the two strategies whose trials share the frozen features computed once per trial.
TUNE_STRATEGIES = ["Linear probe (train the head only)", "Freeze the bottom blocks"]
TUNE_TRIALS = 4
# The default run: the demo's recipe (`make demo`: linear probe, 128 px, lr 3e-3, 1,000 images, 5 folds, 3 epochs),
# which reaches 0.925 accuracy; with the frozen-feature cache it takes about a minute on 2 CPU cores.
DEFAULTS = dict(strategy=next(iter(STRATEGIES)), freeze_layers=LITE0_BLOCKS // 2, n_folds=5, n_repeats=1, epochs=3,
                learning_rate=3e-3, sample_cap=1000, image_size=128)
# What a visitor may hand this machine: the zip and its files, and every image however it arrives (a file of the zip,
# an image to classify, a row of a Hub dataset) is held to the same bytes, pixels and decode time.
UPLOAD_LIMITS = UploadLimits(max_zip_bytes=100 * 2**20, max_files=10_000, max_total_bytes=500 * 2**20,
                             max_file_bytes=16 * 2**20, max_image_pixels=25_000_000, max_decode_seconds=5.0)
MAX_HUB_DOWNLOAD_BYTES = 1024 * 2**20  # one visitor's Hub model, dataset or pushed run
MAX_HUB_ROWS = int(RANGES["sample_cap"][1])  # rows of a Hub dataset a run may use (the sample cap's maximum)
# The files of a pushed run that Predict downloads: results, configs and safetensors weights. Never pickles (.bin,
# .pt, .pkl) or code (.py) from a stranger's repository.
PREDICT_DOWNLOAD = ("*.json", "*.safetensors", "*.parquet", "*.txt", "*.model")
PREVIEW_PER_CLASS = 4
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
    "queued": _say("cancel", "your run was still waiting in the queue; it will not start."),
    "running": _say("busy", "cancelling: the run stops at its next training step."),
}


# ---- one visitor's private state ----------------------------------------------------------------------------------
@dataclass
class Visitor:
    """What one browser session owns. Everything it writes lives under `root`, which no other session sees."""

    root: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    active: bool = False  # a run or study of this visitor is queued or running
    running: bool = False  # ... and it holds the training slot
    left: bool = False  # the visitor closed the page; `root` goes once nothing runs for them
    data_key: tuple | None = None
    dataset: Any = None
    runs: dict[str, tuple[Path, str, str | None]] = field(default_factory=dict)  # name -> (folder, label, dataset)
    # name -> (the rows the run's folds were cut from, their embeddings from its frozen-feature cache or None): Audit
    rows: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    audits: dict[str, tuple[Any, dict]] = field(default_factory=dict)  # name -> (AuditReport, files it saved)
    ensemble: tuple[tuple, Any] | None = None
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
                               "list.")
        return name

    def remove_if_left(self) -> None:
        if self.left and not self.active:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_dir(self, prefix: str) -> Path:
        self.counter += 1
        path = self.root / f"{prefix}-{self.counter}"
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
            visitor.cancel.set()  # a visitor who left does not keep the training slot
            visitor.remove_if_left()  # else the run's end removes it, once its thread stopped writing there


# ---- live progress and cancellation -------------------------------------------------------------------------------
class RunCancelled(Exception):
    """Raised inside training when the visitor pressed Cancel."""


class LiveProgress(TrainerCallback):
    """Collects what the page shows while folds train, and stops training at the next step once cancelled.

    Written by the training thread, read by the page's polling loop; plain attribute writes are atomic in CPython.
    """

    def __init__(self, total_folds: int, cancel: threading.Event, label: str = ""):
        self.total_folds, self.cancel, self.label = total_folds, cancel, label
        self.started = time.time()
        self.training_started: float | None = None  # when the first fold began to train: preparation ends there
        self.finished: list = []  # FoldResult per finished fold
        self.step = self.max_steps = 0
        self.stage = "Loading the model and preprocessing the images"

    def check(self):
        if self.cancel.is_set():
            raise RunCancelled()

    def on_train_begin(self, args, state, control, **kwargs):
        self.check()
        self.training_started = self.training_started or time.time()
        self.step, self.max_steps = 0, state.max_steps
        self.stage = "Training"

    def on_step_end(self, args, state, control, **kwargs):
        self.step, self.max_steps = state.global_step, state.max_steps
        self.check()

    def on_train_end(self, args, state, control, **kwargs):
        self.stage = "Evaluating"

    def on_fold_end(self, args, state, control, fold=None, fold_dir=None, result=None, resumed=False, trainer=None,
                    **kwargs):
        self.finished.append(result)
        self.stage = "Fold finished"
        self.check()

    def status(self) -> str:
        if self.cancel.is_set():
            return CANCEL_ANSWERS["running"]
        done = len(self.finished)
        current = min(done + 1, self.total_folds)
        elapsed = time.time() - self.started
        steps = f" · step {self.step}/{self.max_steps}" if self.max_steps and self.stage == "Training" else ""
        prefix = f"{self.label} · " if self.label else ""
        return _say("busy", f"{prefix}fold {current} of {self.total_folds}{steps} · {self.stage.lower()} · "
                            f"{elapsed:.0f} s elapsed · {done} fold(s) done")


# The per-fold table: the eval metrics a reader compares across folds, and the training side of accuracy and loss (the
# overfitting gap). Precision and recall are in the summary and in the results zip. With these short headers the
# nine columns fit the page at 1400 px on one line each, without sideways scrolling.
TABLE_COLUMNS = {"repeat": "repeat", "fold": "fold", "n_train": "train n", "n_eval": "eval n", "accuracy": "accuracy",
                 "f1": "f1", "loss": "loss", "train_accuracy": "train acc.", "train_loss": "train loss"}


def fold_table(folds: list) -> pd.DataFrame:
    """The per-fold table the page shows: the library's `CVResults.to_pandas`, metrics with 4 decimals."""
    if not folds:
        return pd.DataFrame(columns=list(TABLE_COLUMNS.values()))
    frame = CVResults(folds).to_pandas()
    frame = frame[[c for c in TABLE_COLUMNS if c in frame.columns]]
    for column in frame.columns:
        if column not in ("repeat", "fold", "n_train", "n_eval"):
            frame[column] = [f"{v:.4f}" for v in frame[column]]
    return frame.rename(columns=TABLE_COLUMNS)


RUN_EMPTY = (fold_table([]), "", None, None, None, None)  # table, summary, 3 plots, download
STUDY_EMPTY = ("", "", [], None)  # verdicts, report, plots, download
TUNE_EMPTY = ("", None, None)  # report, history plot, download
ISSUE_COLUMNS = ["row", "given", "predicted", "p(predicted)", "p(given)", "label quality"]
LEAK_COLUMNS = ["repeat", "fold", "eval rows", "with a near-duplicate in train", "share"]
AUDIT_EMPTY = ("", [], pd.DataFrame(columns=ISSUE_COLUMNS), pd.DataFrame(columns=LEAK_COLUMNS))
AUDIT_ROWS = 50  # label issues listed on the page: those audit.json keeps (AuditReport.save's top_k)


def summary_markdown(results: CVResults) -> str:
    """Mean ± std and the corrected 95% interval per metric, as a markdown table."""
    n = len(results.folds)
    lines = [f"**Summary over {n} folds** (95% interval: Nadeau–Bengio corrected, which allows for the overlap "
             "of the training sets; Wilson-type, within [0, 1], for bounded metrics)", "", "| metric | mean ± std | 95% interval | train mean | pooled out-of-fold |",
             "|---|---|---|---|---|"]
    for name, s in results.summary.items():
        low, high = s["ci95"]
        train = results.train_summary.get(name, {}).get("mean")
        pooled = results.oof_metrics.get(name)
        cells = [escape_markdown(name), f"{s['mean']:.4f} ± {s['std']:.4f}", f"[{low:.4f}, {high:.4f}]",
                 "" if train is None else f"{train:.4f}", f"{pooled:.4f}" if isinstance(pooled, float) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cached_embeddings(trainer: KFoldTrainer):
    """The audit's embeddings from a linear probe's frozen-feature cache, which the run has built already (no extra
    pass), or `None`: the audit then makes one embedding pass. Never raises: a finished run is not lost to this."""
    if trainer.cv_args.finetune_strategy != "linear_probe":
        return None
    try:
        from hf_tlcv.audit import embeddings_from_feature_cache

        cache = trainer.feature_cache
        return embeddings_from_feature_cache(cache) if cache is not None else None
    except Exception as exc:  # noqa: BLE001
        logger.info("No embeddings from the feature cache (the audit will compute them): %s", exc)
        return None


def audit_outputs(report, written: dict, run_label: str) -> tuple:
    """What the Audit section shows of an `AuditReport`: a status line, the numbers, the gallery, the label issues
    and the leakage per fold. Class names come from the visitor's data: they reach the page escaped, or in tables."""
    n_rows = len(report.issues)
    n_eval = int(report.fold_leakage["n_eval"].sum())
    lines = [f"**{n_rows:,} rows audited** with the out-of-fold predictions of the cross-validation"
             + (f" (mean over {report.n_repeats} repeats)" if report.n_repeats > 1 else "")
             + (f" and the pretrained embeddings ({escape_markdown(report.embeddings_from)})"
                if report.embeddings_from else "") + "; no model was trained for it.", "",
             "| issue | rows flagged | share | score (1 = clean) |", "|---|---:|---:|---:|"]
    lines += [f"| {escape_markdown(str(r.issue_type))} | {r.num_issues} | {r.num_issues / max(n_rows, 1):.1%} | "
              f"{r.score:.3f} |" for r in report.issue_summary.itertuples()]
    lines += ["", f"**Leakage across folds:** {report.n_leaked} of {n_eval} evaluations "
                  f"({report.n_leaked / max(n_eval, 1):.1%}) were of a row with a near-duplicate in its fold's "
                  f"training part; {len(report.near_duplicate_pairs)} near-duplicate pairs, "
                  f"{len(report.straddling_pairs)} of them split between training and evaluation."]
    issues = report.label_issues.head(AUDIT_ROWS)
    table = pd.DataFrame({ISSUE_COLUMNS[0]: issues["row"].astype(int), ISSUE_COLUMNS[1]: issues["given"],
                          ISSUE_COLUMNS[2]: issues["predicted"],
                          ISSUE_COLUMNS[3]: [f"{v:.4f}" for v in issues["prob_prediction"]],
                          ISSUE_COLUMNS[4]: [f"{v:.4f}" for v in issues["prob_label"]],
                          ISSUE_COLUMNS[5]: [f"{v:.4f}" for v in issues["label_score"]]}, columns=ISSUE_COLUMNS)
    leak = report.fold_leakage
    leakage = pd.DataFrame(dict(zip(LEAK_COLUMNS, (leak["repeat"], leak["fold"], leak["n_eval"], leak["n_leaked"],
                                                   [f"{v:.1%}" for v in leak["share"]]))), columns=LEAK_COLUMNS)
    gallery = [(str(written[k]), caption) for k, caption in (("gallery", "suspected label errors"),
                                                              ("pairs", "near-duplicates split across folds"))
               if k in written]
    status = _say("ok", f"{run_label}: {report.count('label')} suspected label errors, "
                        f"{len(report.near_duplicate_pairs)} near-duplicate pairs, {report.n_leaked} leaked "
                        "evaluations. The run's results folder (and its model card, for Push) now holds the audit.")
    return status, "\n".join(lines), gallery, table, leakage


def run_in_thread(job: Callable[[], Any], progress: LiveProgress, render: Callable[[LiveProgress], tuple],
                  ) -> Iterator[tuple]:
    """Run `job` on a worker thread and yield `render(progress)` while it runs; the last item is
    `("done", result)`, `("cancelled", None)` or `("error", exc)`.

    When the page goes away (the generator is closed), the run is cancelled and waited for, so a visitor who
    left never holds the training slot.
    """
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = job()
        except BaseException as exc:  # noqa: BLE001 - reported to the page
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="hf_tlcv-space-run")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(POLL_SECONDS)
            yield render(progress)  # every poll: the elapsed time moves even when nothing else does
    finally:
        if worker.is_alive():
            progress.cancel.set()
            worker.join()
    error = box.get("error")
    if isinstance(error, RunCancelled):
        yield ("cancelled", None)
    elif error is not None:
        yield ("error", error)
    else:
        yield ("done", box.get("result"))


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
    """

    def __init__(self, workdir: str | os.PathLike | None = None, limits: UploadLimits = UPLOAD_LIMITS, *,
                 local_token: str | None = None, local_account: str | None = None, oauth: bool = False):
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tlcv-space-"))
        base.mkdir(parents=True, exist_ok=True)
        self.workdir = base
        self.visitors = Visitors(base)
        self.limits = limits
        self.local_token, self.local_account, self.oauth = local_token, local_account, oauth
        # Belt and braces beside the queue's concurrency_limit=1: one training at a time on this machine.
        self.training_slot = threading.Lock()

    def _error(self, exc: BaseException, *secrets: str | None) -> str:
        """Every exception a visitor sees goes through `boundary.visitor_message`."""
        return _say("error", markdown=visitor_message(exc, secrets=[*secrets, self.local_token],
                                                      roots=[self.workdir]))

    # ---- data ------------------------------------------------------------------------------------------------
    def _dataset(self, visitor: Visitor, source: str, upload: str | None, hub_id: str, hub_split: str,
                 label_column: str, n_folds: int, token: str | bool = False):
        if source == DATA_ZIP:
            if not upload:
                raise VisitorError("Choose a .zip file to upload first (one sub-folder of images per class).")
            path = Path(upload)
            key = (source, str(path), path.stat().st_size if path.exists() else 0)
        elif source == DATA_HUB:
            repo = hub_repo_id(hub_id, "dataset", "beans")
            split = (hub_split or "train").strip()
            if not split.replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise VisitorError("Type the split's name (e.g. train, validation, test).")
            key = (source, repo, split, (label_column or "label").strip())
        elif source == DATA_BUILTIN:
            key = (DATA_BUILTIN,)
        else:
            raise VisitorError(f"Choose the images among: {DATA_BUILTIN}, {DATA_ZIP}, {DATA_HUB}.")
        if visitor.data_key == key and visitor.dataset is not None:
            return visitor.dataset
        if source == DATA_ZIP:
            dataset = load_image_zip(upload, visitor.new_dir("upload"), min_per_class=int(n_folds),
                                     limits=self.limits)
        elif source == DATA_HUB:
            check_hub_repo(key[1], "dataset", token, MAX_HUB_DOWNLOAD_BYTES)
            dataset = load_dataset(key[1], split=key[2], token=token)
            if key[3] not in dataset.column_names:
                raise VisitorError(f"The dataset has no column {key[3]!r} (its columns: "
                                   f"{', '.join(dataset.column_names)}); type the name of its label column.")
        else:
            dataset = load_dataset(BUILTIN_DATASET)
        visitor.data_key, visitor.dataset = key, dataset
        return dataset

    def _sample(self, dataset, source: str, sample_cap: int, label: str):
        """The rows a run uses; rows of a Hub dataset are decoded within the image limits before training sees them."""
        if source == DATA_HUB and not sample_cap and len(dataset) > MAX_HUB_ROWS:
            raise VisitorError(f"The dataset has {len(dataset):,} rows; set a sample cap of at most {MAX_HUB_ROWS:,} "
                               "to use a class-stratified sample of it.")
        dataset = subsample(dataset, int(sample_cap or 0), label)
        if source == DATA_HUB:
            check_image_rows(dataset, self.limits)
        return dataset

    def preview(self, source, upload, hub_id, hub_split, label_column, n_folds, sample_cap,
                oauth_token: gr.OAuthToken | None = None, request: gr.Request = None):
        """Load the chosen data and show a few images per class with the class counts."""
        label = (label_column or "label").strip() if source == DATA_HUB else "label"
        token = oauth_token.token if oauth_token else None
        try:
            visitor = self.visitors.get(request)
            n_folds, sample_cap = bounded("n_folds", n_folds), bounded("sample_cap", sample_cap)
            dataset = self._dataset(visitor, source, upload, hub_id, hub_split, label_column, n_folds, token or False)
            counts = class_counts(dataset, label)
            used = class_counts(subsample(dataset, sample_cap, label), label)
            samples = preview_samples(dataset, PREVIEW_PER_CLASS, label, limits=self.limits,
                                      allowed_dirs=[visitor.root])
        except Exception as exc:  # noqa: BLE001 - every failure is shown on the page
            return self._error(exc, token), [], pd.DataFrame(columns=COUNT_COLUMNS)
        table = pd.DataFrame(dict(zip(COUNT_COLUMNS, (list(counts), list(counts.values()),
                                                      [used.get(c, 0) for c in counts]))))
        total, n_used = sum(counts.values()), sum(used.values())
        note = (f"{total:,} images in {len(counts)} classes"
                + (f"; a run uses a class-stratified sample of {n_used:,} (sample cap)" if n_used < total else ""))
        return note, samples, table

    # ---- settings --------------------------------------------------------------------------------------------
    @staticmethod
    def _settings(strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap,
                  image_size) -> RunSettings:
        return RunSettings.from_inputs(strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                                       sample_cap, image_size, strategies=STRATEGIES)

    @staticmethod
    def _config(output_dir: Path, settings: RunSettings, label_column: str = "label",
                save_fold_models: bool = True, feature_cache: str = "auto") -> KFoldConfig:
        finetune = STRATEGIES[settings.strategy]
        return KFoldConfig(
            output_dir=str(output_dir), n_folds=settings.n_folds, n_repeats=settings.n_repeats,
            num_train_epochs=float(settings.epochs), learning_rate=settings.learning_rate, finetune_strategy=finetune,
            freeze_layers=settings.freeze_layers if finetune == "freeze" else 0, image_size=settings.image_size,
            label_column=label_column, per_device_train_batch_size=32, per_device_eval_batch_size=64,
            logging_steps=5, report_to="none", disable_tqdm=True, save_strategy="no", seed=42,
            dataloader_pin_memory=False, use_cpu=not _has_cuda(), save_fold_models=save_fold_models,
            feature_cache=feature_cache,
        )

    @staticmethod
    def _model(model_source: str, hub_model: str, token: str | bool = False) -> str:
        if model_source == MODEL_HUB:
            repo = hub_repo_id(hub_model, "model", "google/vit-base-patch16-224-in21k")
            check_hub_repo(repo, "model", token, MAX_HUB_DOWNLOAD_BYTES)
            return repo
        if model_source != MODEL_BUILTIN:
            raise VisitorError(f"Choose the pretrained model among: {MODEL_BUILTIN}, {MODEL_HUB}.")
        return BUILTIN_MODEL

    # ---- run ---------------------------------------------------------------------------------------------------
    def mark_queued(self, request: gr.Request = None):
        """Called (unqueued) the moment Run is pressed, so Cancel also works while the run waits in the queue."""
        try:
            visitor = self.visitors.get(request)
        except VisitorError as exc:
            return self._error(exc)
        visitor.cancel.clear()
        visitor.active = True
        return _say("queued", "the run starts when the machine is free (one training at a time; your place in "
                              "the queue shows beside the Cancel button).")

    def _request_cancel(self, request) -> str:
        """Ask this visitor's run to stop; returns what it was doing: "running", "queued" or "idle"."""
        visitor = self.visitors.get(request)
        if not visitor.active:
            return "idle"
        visitor.cancel.set()
        return "running" if visitor.running else "queued"

    def cancel(self, request: gr.Request) -> str:
        """Cancel this visitor's run or comparison: a running one stops at its next training step, a queued one
        never starts. The answer says which."""
        try:
            return CANCEL_ANSWERS[self._request_cancel(request)]
        except VisitorError as exc:
            return self._error(exc)

    def cancel_from_page(self, request: gr.Request = None):
        """The Cancel buttons. A running run writes its own status line (it says "cancelling" from its next poll,
        then "Cancelled"), so the button leaves that line to it: an answer arriving after the run's last word would
        otherwise overwrite it."""
        try:
            state = self._request_cancel(request)
        except VisitorError as exc:
            return self._error(exc)
        return gr.skip() if state == "running" else CANCEL_ANSWERS[state]

    def run(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy, freeze_layers,
            n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, oauth_token: gr.OAuthToken | None = None,
            request: gr.Request = None):
        """Cross-validate; yields (status, fold table, summary, score plot, confusion plot, train-vs-eval plot,
        download) as folds finish."""
        token = oauth_token.token if oauth_token else None
        yield from self._exclusive(request, RUN_EMPTY, lambda visitor: self._run(
            visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
            freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, token))

    def _exclusive(self, request, empty: tuple, work: Callable[[Visitor], Iterator[tuple]]) -> Iterator[tuple]:
        """Run `work` (a run or a study) in the machine's one training slot, unless cancelled while queued."""
        try:
            visitor = self.visitors.get(request)
        except VisitorError as exc:
            yield (self._error(exc), *empty)
            return
        visitor.active = True
        try:
            if visitor.cancel.is_set():
                yield (_say("cancel", "stopped before it started."), *empty)
                return
            yield (_say("queued", "waiting for the machine (one training at a time)…"), *empty)
            with self.training_slot:
                visitor.running = True
                yield from work(visitor)
        finally:
            visitor.running = visitor.active = False
            visitor.cancel.clear()
            visitor.remove_if_left()

    def _prepare(self, visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model,
                 settings: RunSettings, token):
        label = (label_column or "label").strip() if source == DATA_HUB else "label"
        dataset = self._dataset(visitor, source, upload, hub_id, hub_split, label_column, settings.n_folds,
                                token or False)
        dataset = self._sample(dataset, source, settings.sample_cap, label)
        model = self._model(model_source, hub_model, token or False)
        return dataset, model, label

    def _run(self, visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
             freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, token):
        try:
            settings = self._settings(strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                                      sample_cap, image_size)
            dataset, model, label = self._prepare(visitor, source, upload, hub_id, hub_split, label_column,
                                                  model_source, hub_model, settings, token)
            out = visitor.new_dir("run")
            config = self._config(out, settings, label)
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc, token), *RUN_EMPTY)
            return
        progress = LiveProgress(config.n_folds * config.n_repeats, visitor.cancel)

        def job():
            trainer = KFoldTrainer(model, config, train_dataset=dataset, callbacks=[progress])
            progress.check()
            return trainer.cross_validate(), cached_embeddings(trainer)

        for item in run_in_thread(job, progress, lambda p: (p.status(), fold_table(p.finished), *RUN_EMPTY[1:])):
            if item[0] == "done":
                try:
                    results, embeddings = item[1]
                    visitor.rows[out.name] = (dataset, embeddings)
                    yield self._finished_run(visitor, out, results, progress, settings, source, len(dataset))
                except Exception as exc:  # noqa: BLE001
                    yield (self._error(exc, token), fold_table(progress.finished), *RUN_EMPTY[1:])
            elif item[0] == "cancelled":
                done = len(progress.finished)
                yield (_say("cancel", f"stopped after {done} finished fold(s); nothing else was changed. Press Run "
                                      "to start again."), fold_table(progress.finished), *RUN_EMPTY[1:])
            elif item[0] == "error":
                yield (self._error(item[1], token), fold_table(progress.finished), *RUN_EMPTY[1:])
            else:
                yield item

    def _finished_run(self, visitor: Visitor, out: Path, results: CVResults, progress: LiveProgress,
                      settings: RunSettings, source: str, n_rows: int) -> tuple:
        """Record a finished run as the visitor's (for Predict and Push) and render what the page shows."""
        elapsed = time.time() - progress.started
        # The dataset's name for the model card: the builtin's or the Hub id; an upload has none to give.
        dataset_name = (BUILTIN_DATASET if source == DATA_BUILTIN else visitor.data_key[1] if source == DATA_HUB
                        else None)
        accuracy = results.summary.get("accuracy", {}).get("mean")
        label = (f"Run {len(visitor.runs) + 1}: {STRATEGIES[settings.strategy].replace('_', ' ')}, "
                 f"{len(results.folds)} folds" + (f", accuracy {accuracy:.3f}" if accuracy is not None else ""))
        visitor.runs[out.name] = (out, label, dataset_name)
        plots = out / "plots"
        archive = shutil.make_archive(str(visitor.root / "downloads" / f"hf_tlcv-{out.name}"), "zip", root_dir=out)
        prepared = (progress.training_started or progress.started) - progress.started
        status = _say("ok", f"{len(results.folds)} folds in {elapsed:.0f} s ({n_rows:,} images at "
                            f"{settings.image_size} px: {prepared:.0f} s to load the model and prepare the images, "
                            f"{elapsed - prepared:.0f} s to train and evaluate the folds). The fold models are ready "
                            "for the Predict and Push tabs.")
        return (status, fold_table(results.folds), summary_markdown(results), _existing(plots / "fold_scores.png"),
                _existing(plots / "confusion_matrix.png"), _existing(plots / "train_vs_eval.png"), archive)

    # ---- compare -----------------------------------------------------------------------------------------------
    def compare(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
                freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions,
                oauth_token: gr.OAuthToken | None = None, request: gr.Request = None):
        """Run a TransferStudy on the same data and settings; yields (status, verdicts, report, plots, download)."""
        token = oauth_token.token if oauth_token else None
        yield from self._exclusive(request, STUDY_EMPTY, lambda visitor: self._compare(
            visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
            freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions, token))

    def _compare(self, visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
                 freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions, token):
        from hf_tlcv.study import TransferStudy

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
            dataset, model, label = self._prepare(visitor, source, upload, hub_id, hub_split, label_column,
                                                  model_source, hub_model, settings, token)
            out = visitor.new_dir("study")
            # A study compares scores; its variants' fold models are not needed (Predict uses the runs).
            config = self._config(out, settings, label, save_fold_models=False)
            progress = LiveProgress(0, visitor.cancel)
            study = TransferStudy(model, dataset, config, questions=chosen, callbacks=[progress])
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc, token), *STUDY_EMPTY)
            return
        # The classical baseline is fitted in seconds after the trained variants, on their folds: no folds to follow.
        n_runs = len([run for run in dict.fromkeys(study.runs.values()) if not study.variants[run].classical])
        progress.total_folds = n_runs * config.n_folds * config.n_repeats
        progress.label = f"{n_runs} variants"

        yield from self._follow(study.run, progress, STUDY_EMPTY, "the study stopped. Press Compare to start again.",
                                lambda report: self._finished_study(visitor, out, report, progress), token)

    def _follow(self, job: Callable[[], Any], progress: LiveProgress, empty: tuple, cancelled: str,
                finish: Callable[[Any], tuple], token: str | None) -> Iterator[tuple]:
        """Run `job` in a thread (see `run_in_thread`), showing its status line until it ends; then `finish(result)`,
        or the cancellation sentence `cancelled`, or the error, each with the `empty` rest of the outputs."""
        for item in run_in_thread(job, progress, lambda p: (p.status(), *empty)):
            if item[0] == "done":
                try:
                    yield finish(item[1])
                except Exception as exc:  # noqa: BLE001
                    yield (self._error(exc, token), *empty)
            elif item[0] == "cancelled":
                yield (_say("cancel", cancelled), *empty)
            elif item[0] == "error":
                yield (self._error(item[1], token), *empty)
            else:
                yield item

    @staticmethod
    def _finished_study(visitor: Visitor, out: Path, report, progress: LiveProgress) -> tuple:
        verdicts = report.verdicts_markdown()
        plots = sorted((out / "plots").glob("*.png"))
        archive = shutil.make_archive(str(visitor.root / "downloads" / f"hf_tlcv-{out.name}"), "zip", root_dir=out)
        markdown = (out / "report.md").read_text(encoding="utf-8") if (out / "report.md").exists() else ""
        elapsed = time.time() - progress.started
        return (_say("ok", f"{len(report.variants)} variants on identical folds in {elapsed:.0f} s."), verdicts,
                _strip_images(markdown), [(str(p), p.stem.replace("_", " ")) for p in plots], archive)

    # ---- tune --------------------------------------------------------------------------------------------------
    def tune(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, n_folds, epochs,
             sample_cap, image_size, n_trials, strategies, oauth_token: gr.OAuthToken | None = None,
             request: gr.Request = None):
        """A small hyperparameter search (`KFoldTrainer.hyperparameter_search`, every trial a cross-validation on the
        same folds, the median pruner); yields (status, report, optimisation-history plot, download)."""
        token = oauth_token.token if oauth_token else None
        yield from self._exclusive(request, TUNE_EMPTY, lambda visitor: self._tune(
            visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, n_folds, epochs,
            sample_cap, image_size, n_trials, strategies, token))

    def _tune(self, visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, n_folds,
              epochs, sample_cap, image_size, n_trials, strategies, token):
        try:
            n_trials = bounded("n_trials", n_trials)
            chosen = ticked(strategies, STRATEGIES, "strategy to search")
            # The first tab's strategy and learning rate are what the search chooses; its epochs bound a trial's.
            settings = self._settings(DEFAULTS["strategy"], 0, n_folds, 1, epochs, DEFAULTS["learning_rate"],
                                      sample_cap, image_size)
            dataset, model, label = self._prepare(visitor, source, upload, hub_id, hub_split, label_column,
                                                  model_source, hub_model, settings, token)
            out = visitor.new_dir("tune")
            # Trials compare scores: no fold models. Frozen features stay in memory, one pass per trial: the search's
            # default disk cache is shared by every process of the machine and never cleaned, so on a Space it would
            # keep every visitor's features.
            config = self._config(out, settings, label, save_fold_models=False, feature_cache="memory")
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc, token), *TUNE_EMPTY)
            return
        progress = LiveProgress(n_trials * config.n_folds, visitor.cancel,
                                label=f"search of {n_trials} trials (pruned trials stop early)")

        def job():
            import optuna
            from hf_tlcv.search import model_hp_space

            trainer = KFoldTrainer(model, config, train_dataset=dataset, callbacks=[progress])
            progress.check()
            # default_hp_space bounded by the model's blocks, narrowed to the ticked strategies and the page's epochs.
            space = functools.partial(model_hp_space(trainer), strategies=chosen,
                                      num_train_epochs=(1, settings.epochs))
            # The median pruner, judged from the second trial on: with 4 to 10 trials, Optuna's default of 5 startup
            # trials would leave little to prune.
            return trainer.hyperparameter_search(hp_space=space, n_trials=n_trials,
                                                 pruner=optuna.pruners.MedianPruner(n_startup_trials=2))

        yield from self._follow(job, progress, TUNE_EMPTY, "the search stopped. Press Search to start again.",
                                lambda best: self._finished_tune(visitor, out, best.run_summary, progress), token)

    @staticmethod
    def _finished_tune(visitor: Visitor, out: Path, report, progress: LiveProgress) -> tuple:
        from hf_tlcv.run_dir import PLOTS_DIR
        from hf_tlcv.search_report import PLOT_FILES

        archive = shutil.make_archive(str(visitor.root / "downloads" / f"hf_tlcv-{out.name}"), "zip", root_dir=out)
        elapsed = time.time() - progress.started
        pruning = report.pruning
        best = report.best
        status = _say("ok", f"{len(report.trials)} trials in {elapsed:.0f} s; best: trial {best['trial']}, "
                            f"{report.metric} {best['value']:.4f}; {pruning.get('n_pruned', 0)} pruned "
                            f"({pruning.get('fold_trainings_saved', 0)} fold trainings saved).")
        return (status, report.to_markdown(plots_dir=None), _existing(out / PLOTS_DIR / PLOT_FILES["history"]), archive)

    # ---- audit -------------------------------------------------------------------------------------------------
    def audit(self, run_name, request: gr.Request = None):
        """Audit the data of one of the visitor's runs with its out-of-fold predictions (`CVResults.audit`); yields
        (status, numbers, gallery, label issues, leakage per fold)."""
        yield from self._exclusive(request, AUDIT_EMPTY, lambda visitor: self._audit(visitor, run_name))

    def _audit(self, visitor: Visitor, run_name) -> Iterator[tuple]:
        try:
            from hf_tlcv.audit import check_available

            name = visitor.own_run(run_name, "Run a cross-validation first (Cross-validate tab); then audit it here.")
            check_available()
        except Exception as exc:  # noqa: BLE001
            yield (self._error(exc), *AUDIT_EMPTY)
            return
        if name in visitor.audits:  # audited already: the report is shown again, nothing is computed
            yield audit_outputs(*visitor.audits[name], visitor.runs[name][1])
            return
        folder = visitor.runs[name][0]
        rows, embeddings = visitor.rows[name]
        how = ("the embeddings from the run's frozen-feature cache" if embeddings is not None
               else "one embedding pass of the pretrained model")
        progress = LiveProgress(0, visitor.cancel)

        def job():
            # The library's issue types; it runs cleanlab's label search in this process (a worker pool can deadlock
            # in a threaded server).
            report = CVResults.load(folder).audit(rows, embeddings=embeddings, embeddings_from="feature cache")
            return report, report.save(folder)  # audit.json and audit/ beside the run's results; the card gains it

        def busy(p: LiveProgress) -> tuple:
            return (_say("busy", f"auditing {len(rows):,} rows with {how} · {time.time() - p.started:.0f} s elapsed"),
                    *AUDIT_EMPTY)

        for item in run_in_thread(job, progress, busy):
            if item[0] == "done":
                visitor.audits[name] = item[1]
                yield audit_outputs(*item[1], visitor.runs[name][1])
            elif item[0] == "error":
                yield (self._error(item[1]), *AUDIT_EMPTY)
            elif item[0] == "cancelled":  # only when the page went away: the audit itself has no training step
                yield (_say("cancel", "the audit stopped."), *AUDIT_EMPTY)
            else:
                yield item

    # ---- predict -----------------------------------------------------------------------------------------------
    def run_choices(self, request: gr.Request = None):
        """The visitor's own runs, newest first, for the Predict tab's list."""
        try:
            visitor = self.visitors.get(request)
        except VisitorError:
            return gr.update(choices=[], value=None)
        choices = [(label, name) for name, (_, label, _) in reversed(visitor.runs.items())]
        return gr.update(choices=choices, value=visitor.last_run)

    def check_image(self, image_file, request: gr.Request = None):
        """Decode the uploaded image within the limits and show it, or say why it cannot be used."""
        if not image_file:
            return "", None
        try:
            image = open_image(image_file, self.limits)
        except Exception as exc:  # noqa: BLE001
            return self._error(exc), None
        image.thumbnail((512, 512))
        return _say("info", f"the image was read ({image.width}x{image.height} shown). Press Predict."), image

    def _ensemble(self, visitor: Visitor, run_name: str | None, repo_text: str | None, token: str | None):
        from hf_tlcv.ensemble import KFoldEnsemble

        if (repo_text or "").strip():
            repo = hub_repo_id(repo_text, "model repository", "your-name/animal-mnist-kfold")
            key = ("hub", repo)
            if visitor.ensemble is None or visitor.ensemble[0] != key:
                folder = self._download_run(visitor, repo, token)
                visitor.ensemble = (key, KFoldEnsemble.from_pretrained(folder))
            return visitor.ensemble[1]
        name = visitor.own_run(run_name, "Run a cross-validation first (Cross-validate tab), or type the Hub id of a "
                                         "run pushed with hf_tlcv.")
        key = ("run", name)
        if visitor.ensemble is None or visitor.ensemble[0] != key:
            visitor.ensemble = (key, KFoldEnsemble.from_pretrained(visitor.runs[name][0]))
        return visitor.ensemble[1]

    def _download_run(self, visitor: Visitor, repo: str, token: str | None) -> Path:
        """A pushed run, downloaded into the visitor's folder (results, configs and safetensors weights only), with
        the base model it names checked like a model id typed on the page."""
        from huggingface_hub import snapshot_download

        check_hub_repo(repo, "model", token or False, MAX_HUB_DOWNLOAD_BYTES, patterns=PREDICT_DOWNLOAD)
        folder = Path(snapshot_download(repo, local_dir=visitor.new_dir("hub"), allow_patterns=list(PREDICT_DOWNLOAD),
                                        token=token or False))
        if not (folder / "cv_results.json").is_file():
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
                raise VisitorError("Sign in with Hugging Face or paste a write token first: a push writes to the Hub "
                                   "as you, and this Space never pushes with its own credentials.")
            repo = hub_repo_id(repo_id, "model repository", "your-name/animal-mnist-kfold")
            if visitor.last_run is None:
                raise VisitorError("Run a cross-validation first (Cross-validate tab); then push it here.")
            folder, _, dataset_name = visitor.runs[visitor.last_run]
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
                       delete_cache=(3600, 3600)) as demo:
            with gr.Row():
                gr.Markdown(
                    "# hf_tlcv: k-fold cross-validation of fine-tuning\n"
                    "How well does a pretrained model transfer to your images, and which fine-tuning setting is "
                    "best? Each fold trains a fresh copy of the pretrained model; the result is a mean, a spread and "
                    "an honest 95% interval instead of one lucky split. Runs are queued: one training at a time.",
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
                            # Gradio's queue place and timer are drawn here, not over the table or the status line.
                            run_progress = gr.HTML("", elem_id="run-progress", min_height=40, scale=2)
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
                questions = gr.CheckboxGroup(list(QUESTIONS), value=[next(iter(QUESTIONS))], label="Questions")
                with gr.Row(equal_height=True):
                    compare = gr.Button("Compare", variant="primary", elem_id="compare-button", scale=2)
                    compare_cancel = gr.Button("Cancel", variant="stop", scale=1)
                    compare_progress = gr.HTML("", elem_id="compare-progress", min_height=40, scale=2)
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
                    tune_progress = gr.HTML("", elem_id="tune-progress", min_height=40, scale=2)
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
                    audit_progress = gr.HTML("", elem_id="audit-progress", min_height=40, scale=3)
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
            run.click(self.mark_queued, None, status, api_visibility="private", queue=False).then(
                self.run, [*data_inputs, *settings], run_outputs, api_name="run", concurrency_limit=1,
                concurrency_id="training", show_progress="full", show_progress_on=run_progress)
            cancel.click(self.cancel_from_page, None, status, api_visibility="private", queue=False)
            gr.api(self.cancel, api_name="cancel", queue=False)
            compare_outputs = [compare_status, verdicts, report, study_plots, study_download]
            compare.click(self.mark_queued, None, compare_status, api_visibility="private", queue=False).then(
                self.compare, [*data_inputs, *settings, questions], compare_outputs, api_name="compare",
                concurrency_limit=1, concurrency_id="training", show_progress="full",
                show_progress_on=compare_progress)
            compare_cancel.click(self.cancel_from_page, None, compare_status, api_visibility="private", queue=False)
            tune.click(self.mark_queued, None, tune_status, api_visibility="private", queue=False).then(
                self.tune, [*data_inputs, model_source, hub_model, n_folds, epochs, sample_cap, image_size, n_trials,
                            tune_strategies], [tune_status, tune_report, tune_history, tune_download],
                api_name="tune", concurrency_limit=1, concurrency_id="training", show_progress="full",
                show_progress_on=tune_progress)
            tune_cancel.click(self.cancel_from_page, None, tune_status, api_visibility="private", queue=False)
            audit_tab.select(self.run_choices, None, audit_choice, api_visibility="private", queue=False)
            audit_button.click(self.audit, audit_choice, [audit_status, audit_numbers, audit_gallery, audit_issues,
                                                          audit_leakage], api_name="audit", concurrency_limit=1,
                               concurrency_id="training", show_progress="full", show_progress_on=audit_progress)
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


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


def _strip_images(markdown: str) -> str:
    """The report without its image links (the plots are shown in the gallery; relative links do not resolve)."""
    return "\n".join(line for line in markdown.splitlines() if not line.lstrip().startswith("!["))


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


# Study plots are wide figures: show each whole in a wide cell instead of cropping it to a square thumbnail. The
# queue place and timer sit in their own small box beside the Cancel button (not over the table, and without greying
# out the status line), as plain text without the spinner.
PROGRESS = ":is(#run-progress, #compare-progress, #tune-progress, #audit-progress)"  # the boxes beside Cancel
CSS = """
#study-plots .thumbnail-item { aspect-ratio: 3 / 2 !important; }
#study-plots img { object-fit: contain !important; }
PROGRESS { border: none !important; background: transparent !important; }
PROGRESS [data-testid=status-tracker] { position: relative !important; top: auto !important;
  left: auto !important; height: 100% !important; background: transparent !important; display: flex !important;
  align-items: center; justify-content: flex-start !important; }
PROGRESS .progress-text { position: static !important; transform: none !important;
  white-space: nowrap; text-align: left; font-size: var(--text-md) !important; font-weight: 600;
  color: var(--body-text-color) !important; }
PROGRESS svg { display: none; }
""".replace("PROGRESS", PROGRESS)


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
                    max_file_size=app.limits.max_zip_bytes, allowed_paths=extra_paths, footer_links=["api"],
                    css=CSS, prevent_thread_lock=True)
        # Gradio's local sign-in stand-in read this machine's login while starting; from here on nothing may.
        lock_down_credentials()
        logger.info("Serving; stop with Ctrl-C or SIGTERM.")
        while not stop.wait(0.5):
            pass
        logger.info("Stopping.")
    finally:
        demo.close()
        app.visitors.remove_all()
        if args.workdir is None:
            shutil.rmtree(app.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
