"""hf_tlcv Space: cross-validate fine-tuning from the browser, compare settings, predict with the fold ensemble, push.

Run it locally from the repository root:

    python spaces/app.py                       # http://127.0.0.1:7860
    python spaces/app.py --port 7861 --host 0.0.0.0

or deploy `spaces/` as a Hugging Face Space (see spaces/README.md). The app is UI wiring only: data loading and
upload checks (`hf_tlcv.upload`), training (`KFoldTrainer`), comparisons (`TransferStudy`), predictions
(`KFoldEnsemble`) and pushes (`hf_tlcv.hub`) all come from the library.

Every visitor (Gradio session) gets a private working folder; runs are queued one at a time on the shared machine,
and a run can be cancelled at the next training step.
"""

from __future__ import annotations

import argparse
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

from hf_tlcv import CVResults, KFoldConfig, KFoldTrainer  # noqa: E402
from hf_tlcv.assets import load_dataset  # noqa: E402
from hf_tlcv.data import subsample  # noqa: E402
from hf_tlcv.upload import UploadError, UploadLimits, class_counts, load_image_zip, preview_samples  # noqa: E402

logger = logging.getLogger("hf_tlcv.space")

# ---- choices shown on the page ------------------------------------------------------------------------------------
DATA_BUILTIN = "Animal-MNIST (built in)"
DATA_ZIP = "Upload a zip"
DATA_HUB = "Hub dataset"
MODEL_BUILTIN = "EfficientNet-Lite0, ImageNet (built in)"
MODEL_HUB = "Hub model id"
BUILTIN_DATASET = "builtin:animal-mnist"
BUILTIN_MODEL = "builtin:efficientnet-lite0"
LITE0_BLOCKS = 16
MAX_FREEZE = 48  # deep enough for large Hub models; the library says when a model has fewer blocks
STRATEGIES = {
    "Linear probe (train the head only)": "linear_probe",
    "Freeze the bottom blocks": "freeze",
    "Full fine-tuning": "full",
    "LoRA adapters": "lora",
}
QUESTIONS = {
    "Pretrained vs. from scratch": "pretrained",
    "How many blocks to freeze": "freeze",
    "Learning rate": "lr",
    "Overfitting (train vs. eval per fold and epoch)": "overfitting",
}
QUESTION_TITLES = {v: k for k, v in QUESTIONS.items()}
UPLOAD_LIMITS = UploadLimits(max_zip_bytes=100 * 2**20, max_files=10_000, max_total_bytes=500 * 2**20,
                             max_file_bytes=16 * 2**20)
PREVIEW_PER_CLASS = 4
COUNT_COLUMNS = ["class", "images", "used in a run"]
VOTE_COLUMNS = ["fold model", "vote", "probability of its vote"]
POLL_SECONDS = 0.5


def _message(kind: str, text: str) -> str:
    # Words rather than emoji: they read the same in every browser and font, and to screen readers.
    prefix = {"error": "Error", "ok": "Done", "info": "Note", "cancel": "Cancelled", "busy": "Running",
              "prediction": "Prediction"}[kind]
    return f"**{prefix}:** {text}"


def explain(exc: BaseException, token: str | None = None) -> str:
    """A message for the page: what went wrong, never a stack trace (and never a token)."""
    from hf_tlcv.hub import HubPushError, scrub

    # Errors about the visitor's input, including OSError: what transformers and datasets raise for a Hub id that
    # does not exist or cannot be reached (HubUnreachableError is one).
    if isinstance(exc, (UploadError, ValueError, TypeError, OSError, HubPushError)):
        text = str(exc)
    else:
        logger.error("Unexpected %s: %s", type(exc).__name__, scrub(str(exc), token))
        text = f"Something unexpected went wrong ({type(exc).__name__}: {exc}). The app is still usable; try again."
    return _message("error", scrub(text, token))


# ---- one visitor's private state ----------------------------------------------------------------------------------
@dataclass
class Visitor:
    """What one browser session owns. Everything it writes lives under `root`, which no other session sees."""

    root: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    active: bool = False  # a run or study of this visitor is queued or running
    left: bool = False  # the visitor closed the page; `root` goes once nothing runs for them
    data_key: tuple | None = None
    dataset: Any = None
    last_run: Path | None = None
    last_dataset: str | None = None  # its name for the model card: builtin or Hub id (None for an upload)
    ensemble: tuple[Path, Any] | None = None
    counter: int = 0

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
        key = getattr(request, "session_hash", None) or "local"
        with self._lock:
            visitor = self._by_session.get(key)
            if visitor is None:
                visitor = Visitor(Path(tempfile.mkdtemp(prefix="visitor-", dir=self.base)))
                self._by_session[key] = visitor
            return visitor

    def drop(self, request: gr.Request | None) -> None:
        key = getattr(request, "session_hash", None) or "local"
        with self._lock:
            visitor = self._by_session.pop(key, None)
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
        self.finished: list = []  # FoldResult per finished fold
        self.step = self.max_steps = 0
        self.stage = "Loading the model and preprocessing the images"

    def _check(self):
        if self.cancel.is_set():
            raise RunCancelled()

    def on_train_begin(self, args, state, control, **kwargs):
        self._check()
        self.step, self.max_steps = 0, state.max_steps
        self.stage = "Training"

    def on_step_end(self, args, state, control, **kwargs):
        self.step, self.max_steps = state.global_step, state.max_steps
        self._check()

    def on_train_end(self, args, state, control, **kwargs):
        self.stage = "Evaluating"

    def on_fold_end(self, args, state, control, fold=None, fold_dir=None, result=None, resumed=False, trainer=None,
                    **kwargs):
        self.finished.append(result)
        self.stage = "Fold finished"
        self._check()

    def status(self) -> str:
        done = len(self.finished)
        current = min(done + 1, self.total_folds)
        elapsed = time.time() - self.started
        steps = f" · step {self.step}/{self.max_steps}" if self.max_steps and self.stage == "Training" else ""
        prefix = f"{self.label} · " if self.label else ""
        return (f"**Running:** {prefix}fold {current} of {self.total_folds}{steps} · {self.stage.lower()} · "
                f"{elapsed:.0f} s elapsed · {done} fold(s) done")


TABLE_COLUMNS = ["repeat", "fold", "n_train", "n_eval", "accuracy", "precision", "recall", "f1", "loss",
                 "train_accuracy", "train_loss"]


def fold_table(folds: list) -> pd.DataFrame:
    """The per-fold table the page shows: the library's `CVResults.to_pandas`, eval metrics and the train-side
    accuracy and loss (the overfitting gap), rounded to 4 decimals for display."""
    if not folds:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    frame = CVResults(folds).to_pandas()
    keep = [c for c in frame.columns if not c.startswith("train_") or c in ("train_accuracy", "train_loss")]
    return frame[keep].round(4)


RUN_EMPTY = (fold_table([]), "", None, None, None, None)  # table, summary, 3 plots, download
STUDY_EMPTY = ("", "", [], None)  # verdicts, report, plots, download


def summary_markdown(results: CVResults) -> str:
    """Mean ± std and the corrected 95% interval per metric, as a markdown table."""
    n = len(results.folds)
    lines = [f"**Summary over {n} folds** (95% interval: Nadeau–Bengio corrected t, which allows for the overlap "
             "of the training sets)", "", "| metric | mean ± std | 95% interval | train mean | pooled out-of-fold |",
             "|---|---|---|---|---|"]
    for name, s in results.summary.items():
        low, high = s["ci95"]
        train = results.train_summary.get(name, {}).get("mean")
        pooled = results.oof_metrics.get(name)
        cells = [name, f"{s['mean']:.4f} ± {s['std']:.4f}", f"[{low:.4f}, {high:.4f}]",
                 "" if train is None else f"{train:.4f}", f"{pooled:.4f}" if isinstance(pooled, float) else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    """The handlers behind the page; `build()` lays them out. One instance serves every visitor."""

    def __init__(self, workdir: str | os.PathLike | None = None, limits: UploadLimits = UPLOAD_LIMITS):
        base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tlcv-space-"))
        base.mkdir(parents=True, exist_ok=True)
        self.workdir = base
        self.visitors = Visitors(base)
        self.limits = limits
        # Belt and braces beside the queue's concurrency_limit=1: one training at a time on this machine.
        self.training_slot = threading.Lock()

    # ---- data ------------------------------------------------------------------------------------------------
    def _dataset(self, visitor: Visitor, source: str, upload: str | None, hub_id: str, hub_split: str,
                 label_column: str, n_folds: int):
        if source == DATA_ZIP:
            if not upload:
                raise UploadError("Choose a .zip file to upload first (one sub-folder of images per class).")
            path = Path(upload)
            key = (source, str(path), path.stat().st_size if path.exists() else 0)
        elif source == DATA_HUB:
            if not (hub_id or "").strip():
                raise ValueError("Type a Hub dataset id (e.g. 'beans') or choose the built-in data.")
            key = (source, hub_id.strip(), (hub_split or "train").strip(), (label_column or "label").strip())
        else:
            key = (DATA_BUILTIN,)
        if visitor.data_key == key and visitor.dataset is not None:
            return visitor.dataset
        if source == DATA_ZIP:
            dataset = load_image_zip(upload, visitor.new_dir("upload"), min_per_class=int(n_folds),
                                     limits=self.limits)
        elif source == DATA_HUB:
            dataset = load_dataset(key[1], split=key[2])
            if key[3] not in dataset.column_names:
                raise ValueError(f"The dataset has no column {key[3]!r} (columns: {', '.join(dataset.column_names)}); "
                                 "type the name of its label column.")
        else:
            dataset = load_dataset(BUILTIN_DATASET)
        visitor.data_key, visitor.dataset = key, dataset
        return dataset

    def preview(self, source, upload, hub_id, hub_split, label_column, n_folds, sample_cap,
                request: gr.Request = None):
        """Load the chosen data and show a few images per class with the class counts."""
        visitor = self.visitors.get(request)
        label = (label_column or "label").strip() if source == DATA_HUB else "label"
        try:
            dataset = self._dataset(visitor, source, upload, hub_id, hub_split, label_column, n_folds)
            counts = class_counts(dataset, label)
            used = class_counts(subsample(dataset, int(sample_cap or 0), label), label)
            samples = preview_samples(dataset, PREVIEW_PER_CLASS, label)
        except Exception as exc:  # noqa: BLE001 - every failure is shown on the page
            return explain(exc), [], pd.DataFrame(columns=COUNT_COLUMNS)
        table = pd.DataFrame(dict(zip(COUNT_COLUMNS, (list(counts), list(counts.values()),
                                                      [used.get(c, 0) for c in counts]))))
        total, n_used = sum(counts.values()), sum(used.values())
        note = (f"{total:,} images in {len(counts)} classes"
                + (f"; a run uses a class-stratified sample of {n_used:,} (sample cap)" if n_used < total else ""))
        return note, samples, table

    # ---- settings --------------------------------------------------------------------------------------------
    @staticmethod
    def _config(output_dir: Path, strategy: str, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                image_size, label_column: str = "label", save_fold_models: bool = True) -> KFoldConfig:
        finetune = STRATEGIES.get(strategy, strategy)
        return KFoldConfig(
            output_dir=str(output_dir), n_folds=int(n_folds), n_repeats=int(n_repeats),
            num_train_epochs=float(epochs), learning_rate=float(learning_rate), finetune_strategy=finetune,
            freeze_layers=int(freeze_layers) if finetune == "freeze" else 0, image_size=int(image_size),
            label_column=label_column, per_device_train_batch_size=32, per_device_eval_batch_size=64,
            logging_steps=5, report_to="none", disable_tqdm=True, save_strategy="no", seed=42,
            dataloader_pin_memory=False, use_cpu=not _has_cuda(), save_fold_models=save_fold_models,
        )

    @staticmethod
    def _model(model_source: str, hub_model: str) -> str:
        if model_source == MODEL_HUB:
            if not (hub_model or "").strip():
                raise ValueError("Type a Hub model id (e.g. google/vit-base-patch16-224-in21k) or choose the "
                                 "built-in Lite0.")
            return hub_model.strip()
        return BUILTIN_MODEL

    # ---- run ---------------------------------------------------------------------------------------------------
    def mark_queued(self, request: gr.Request = None):
        """Called (unqueued) the moment Run is pressed, so Cancel also works while the run waits in the queue."""
        visitor = self.visitors.get(request)
        visitor.cancel.clear()
        visitor.active = True
        return _message("info", "Queued: the run starts when the machine is free (one training at a time).")

    def cancel(self, request: gr.Request = None):
        visitor = self.visitors.get(request)
        if not visitor.active:
            return _message("info", "Nothing is running.")
        visitor.cancel.set()
        return _message("busy", "cancelling: the run stops at its next training step.")

    def run(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy, freeze_layers,
            n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, request: gr.Request = None):
        """Cross-validate; yields (status, fold table, summary, score plot, confusion plot, train-vs-eval plot,
        download) as folds finish."""
        yield from self._exclusive(request, RUN_EMPTY, lambda visitor: self._run(
            visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
            freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size))

    def _exclusive(self, request, empty: tuple, work: Callable[[Visitor], Iterator[tuple]]) -> Iterator[tuple]:
        """Run `work` (a run or a study) in the machine's one training slot, unless cancelled while queued."""
        visitor = self.visitors.get(request)
        visitor.active = True
        try:
            if visitor.cancel.is_set():
                yield (_message("cancel", "stopped before it started."), *empty)
                return
            yield (_message("busy", "waiting for the machine (one training at a time)…"), *empty)
            with self.training_slot:
                yield from work(visitor)
        finally:
            visitor.active = False
            visitor.cancel.clear()
            visitor.remove_if_left()

    def _run(self, visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
             freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size):
        empty = RUN_EMPTY
        label = (label_column or "label").strip() if source == DATA_HUB else "label"
        try:
            dataset = self._dataset(visitor, source, upload, hub_id, hub_split, label_column, n_folds)
            dataset = subsample(dataset, int(sample_cap or 0), label)
            model = self._model(model_source, hub_model)
            out = visitor.new_dir("run")
            config = self._config(out, strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                                  image_size, label)
        except Exception as exc:  # noqa: BLE001
            yield (explain(exc), *empty)
            return
        progress = LiveProgress(config.n_folds * config.n_repeats, visitor.cancel)

        def job():
            trainer = KFoldTrainer(model, config, train_dataset=dataset, callbacks=[progress])
            progress._check()
            return trainer.cross_validate()

        for item in run_in_thread(job, progress, lambda p: (p.status(), fold_table(p.finished), *RUN_EMPTY[1:])):
            if item[0] == "done":
                results: CVResults = item[1]
                visitor.last_run, visitor.ensemble = out, None
                visitor.last_dataset = {DATA_BUILTIN: BUILTIN_DATASET, DATA_HUB: (hub_id or "").strip()}.get(source)
                plots = out / "plots"
                archive = shutil.make_archive(str(visitor.root / "downloads" / f"hf_tlcv-{out.name}"), "zip",
                                              root_dir=out)
                elapsed = time.time() - progress.started
                status = _message("ok", f"{len(results.folds)} folds in {elapsed:.0f} s. The fold models are "
                                        "ready for the Predict and Push tabs.")
                yield (status, fold_table(results.folds), summary_markdown(results),
                       _existing(plots / "fold_scores.png"), _existing(plots / "confusion_matrix.png"),
                       _existing(plots / "train_vs_eval.png"), archive)
            elif item[0] == "cancelled":
                done = len(progress.finished)
                yield (_message("cancel", f"stopped after {done} finished fold(s); nothing else was changed. "
                                          "Press Run to start again."), fold_table(progress.finished), *RUN_EMPTY[1:])
            elif item[0] == "error":
                yield (explain(item[1]), fold_table(progress.finished), *RUN_EMPTY[1:])
            else:
                yield item

    # ---- compare -----------------------------------------------------------------------------------------------
    def compare(self, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
                freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions,
                request: gr.Request = None):
        """Run a TransferStudy on the same data and settings; yields (status, verdicts, report, plots, download)."""
        yield from self._exclusive(request, STUDY_EMPTY, lambda visitor: self._compare(
            visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
            freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions))

    def _compare(self, visitor, source, upload, hub_id, hub_split, label_column, model_source, hub_model, strategy,
                 freeze_layers, n_folds, n_repeats, epochs, learning_rate, sample_cap, image_size, questions):
        from hf_tlcv.study import TransferStudy

        label = (label_column or "label").strip() if source == DATA_HUB else "label"
        try:
            chosen = tuple(QUESTIONS.get(q, q) for q in (questions or []))
            if not chosen:
                raise ValueError("Tick at least one question to compare.")
            dataset = self._dataset(visitor, source, upload, hub_id, hub_split, label_column, n_folds)
            dataset = subsample(dataset, int(sample_cap or 0), label)
            model = self._model(model_source, hub_model)
            out = visitor.new_dir("study")
            # A study compares scores; its variants' fold models are not needed (Predict uses the last run).
            config = self._config(out, strategy, freeze_layers, n_folds, n_repeats, epochs, learning_rate,
                                  image_size, label, save_fold_models=False)
            progress = LiveProgress(0, visitor.cancel)
            study = TransferStudy(model, dataset, config, questions=chosen, callbacks=[progress])
        except Exception as exc:  # noqa: BLE001
            yield (explain(exc), *STUDY_EMPTY)
            return
        n_runs = len(dict.fromkeys(study.runs.values()))
        progress.total_folds = n_runs * config.n_folds * config.n_repeats
        progress.label = f"{n_runs} variants"

        def job():
            return study.run()

        for item in run_in_thread(job, progress, lambda p: (p.status(), *STUDY_EMPTY)):
            if item[0] == "done":
                report = item[1]
                verdicts = "\n\n".join(f"**{QUESTION_TITLES.get(v.question, v.question)}**: {v.text}"
                                         for v in report.verdicts)
                plots = sorted((out / "plots").glob("*.png"))
                archive = shutil.make_archive(str(visitor.root / "downloads" / f"hf_tlcv-{out.name}"), "zip",
                                              root_dir=out)
                markdown = (out / "report.md").read_text(encoding="utf-8") if (out / "report.md").exists() else ""
                yield (_message("ok", f"{len(report.variants)} variants on identical folds."), verdicts,
                       _strip_images(markdown), [(str(p), p.stem.replace("_", " ")) for p in plots], archive)
            elif item[0] == "cancelled":
                yield (_message("cancel", "the study stopped. Press Compare to start again."), *STUDY_EMPTY)
            elif item[0] == "error":
                yield (explain(item[1]), *STUDY_EMPTY)
            else:
                yield item

    # ---- predict -----------------------------------------------------------------------------------------------
    def predict(self, image, repo_id, request: gr.Request = None):
        """The fold ensemble's averaged probabilities and each fold's vote for one image."""
        from hf_tlcv.ensemble import KFoldEnsemble

        visitor = self.visitors.get(request)
        try:
            if image is None:
                raise ValueError("Upload an image to classify.")
            source = (repo_id or "").strip() or visitor.last_run
            if source is None:
                raise ValueError("Run a cross-validation first (Cross-validate tab), or type the Hub id of a run "
                                 "pushed with hf_tlcv.")
            if visitor.ensemble is None or visitor.ensemble[0] != source:
                visitor.ensemble = (source, KFoldEnsemble.from_pretrained(source))
            ensemble = visitor.ensemble[1]
            out = ensemble.predict([image.convert("RGB")])
        except Exception as exc:  # noqa: BLE001
            return explain(exc), None, pd.DataFrame(columns=VOTE_COLUMNS)
        names = ensemble.label_names or [str(i) for i in range(out.probabilities.shape[1])]
        probs = {names[i]: float(p) for i, p in enumerate(out.probabilities[0])}
        votes = pd.DataFrame({
            VOTE_COLUMNS[0]: out.fold_names,
            VOTE_COLUMNS[1]: [names[int(v)] for v in out.votes[:, 0]],
            VOTE_COLUMNS[2]: [round(float(out.fold_probabilities[i, 0, int(v)]), 4)
                                        for i, v in enumerate(out.votes[:, 0])],
        })
        agree = float(out.agreement[0])
        return (_message("prediction", f"{out.labels[0]} ({probs[out.labels[0]]:.1%} averaged over {len(ensemble)} fold "
                               f"models; {agree:.0%} of them vote for it)."), probs, votes)

    # ---- push --------------------------------------------------------------------------------------------------
    def push(self, repo_id, token, private, request: gr.Request = None):
        """Push the visitor's last run with its model card. The token is used for this call only."""
        visitor = self.visitors.get(request)
        token = (token or "").strip() or os.environ.get("HF_TOKEN") or None
        try:
            repo_id = (repo_id or "").strip()
            if not repo_id:
                raise ValueError("Type the repository id to push to, e.g. your-name/animal-mnist-kfold.")
            if visitor.last_run is None:
                raise ValueError("Run a cross-validation first (Cross-validate tab); then push it here.")
            if token is None:
                raise ValueError("A write token is needed: paste one (huggingface.co/settings/tokens) or set the "
                                 "HF_TOKEN secret of this Space.")
            info = CVResults.load(visitor.last_run).push_to_hub(repo_id, token=token, private=bool(private),
                                                                dataset_name=visitor.last_dataset)
        except Exception as exc:  # noqa: BLE001
            return explain(exc, token), ""  # the token field is emptied once used, so it does not linger
        url = getattr(info, "repo_url", None) or repo_id
        return _message("ok", f"Pushed to [{repo_id}]({url}) with its model card."), ""

    def leave(self, request: gr.Request = None):
        self.visitors.drop(request)

    # ---- layout ------------------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        with gr.Blocks(title="hf_tlcv: cross-validate fine-tuning", analytics_enabled=False,
                       delete_cache=(3600, 3600)) as demo:
            gr.Markdown(
                "# hf_tlcv: k-fold cross-validation of fine-tuning\n"
                "How well does a pretrained model transfer to your images, and which fine-tuning setting is best? "
                "Each fold trains a fresh copy of the pretrained model; the result is a mean, a spread and an honest "
                "95% interval instead of one lucky split. Runs are queued: one training at a time."
            )
            with gr.Tab("Cross-validate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        gr.Markdown("### 1. Data")
                        source = gr.Radio([DATA_BUILTIN, DATA_ZIP, DATA_HUB], value=DATA_BUILTIN, label="Images",
                                          elem_id="data-source")
                        upload = gr.File(label="Zip of an image folder: one sub-folder of images per class", visible=False,
                                         type="filepath", elem_id="data-upload")
                        limits_note = gr.Markdown(f"Limits: {self.limits.describe()}.", visible=False)
                        with gr.Row(visible=False) as hub_row:
                            hub_id = gr.Textbox(label="Hub dataset id", placeholder="beans")
                            hub_split = gr.Textbox(value="train", label="split")
                            label_column = gr.Textbox(value="label", label="label column")
                        load = gr.Button("Load and preview", size="sm")
                        data_status = gr.Markdown(elem_id="data-status")
                        gallery = gr.Gallery(label="A few images per class", columns=PREVIEW_PER_CLASS, height=260,
                                             elem_id="data-preview")
                        counts = gr.Dataframe(pd.DataFrame(columns=COUNT_COLUMNS), label="Images per class", interactive=False, max_height=220,
                                              elem_id="class-counts")
                        gr.Markdown("### 2. Model")
                        model_source = gr.Radio([MODEL_BUILTIN, MODEL_HUB], value=MODEL_BUILTIN, label="Pretrained model")
                        hub_model = gr.Textbox(label="Hub model id", placeholder="google/vit-base-patch16-224-in21k",
                                               visible=False)
                        gr.Markdown("### 3. Settings")
                        strategy = gr.Dropdown(list(STRATEGIES), value=next(iter(STRATEGIES)), label="What trains")
                        freeze_layers = gr.Slider(0, MAX_FREEZE, value=LITE0_BLOCKS // 2, step=1, visible=False,
                                                  label=f"Blocks frozen (Lite0 has {LITE0_BLOCKS})")
                        with gr.Row():
                            n_folds = gr.Slider(2, 10, value=5, step=1, label="folds k")
                            n_repeats = gr.Slider(1, 5, value=1, step=1, label="repeats")
                            epochs = gr.Slider(1, 20, value=3, step=1, label="epochs")
                        with gr.Row():
                            learning_rate = gr.Number(value=1e-3, label="learning rate", minimum=1e-7, maximum=1.0)
                            sample_cap = gr.Slider(0, 10_000, value=500, step=10, label="sample cap (0 = all)")
                            image_size = gr.Slider(32, 224, value=64, step=32, label="image size (px)")
                    with gr.Column(scale=3):
                        with gr.Row():
                            run = gr.Button("Run cross-validation", variant="primary", elem_id="run-button")
                            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
                        status = gr.Markdown("Choose data, model and settings, then press Run.", elem_id="run-status")
                        table = gr.Dataframe(fold_table([]), label="Per fold (fills in as folds finish)",
                                             interactive=False,
                                             elem_id="fold-table")
                        summary = gr.Markdown(elem_id="summary")
                        with gr.Row():
                            plot_scores = gr.Image(label="Per-fold scores", type="filepath", elem_id="plot-scores")
                            plot_confusion = gr.Image(label="Pooled confusion matrix", type="filepath",
                                                      elem_id="plot-confusion")
                        plot_train = gr.Image(label="Train vs. eval per fold", type="filepath", elem_id="plot-train")
                        download = gr.File(label="Results folder (zip)", elem_id="download")
            with gr.Tab("Compare"):
                gr.Markdown("Cross-validate variants of the settings on the **same folds** and get verdicts backed by "
                            "paired statistics. Uses the data, model and settings of the first tab; each variant is a "
                            "full cross-validation, so keep the sample cap small.")
                questions = gr.CheckboxGroup(list(QUESTIONS), value=[next(iter(QUESTIONS))], label="Questions")
                with gr.Row():
                    compare = gr.Button("Compare", variant="primary", elem_id="compare-button")
                    compare_cancel = gr.Button("Cancel", variant="stop")
                compare_status = gr.Markdown(elem_id="compare-status")
                verdicts = gr.Markdown(elem_id="verdicts")
                study_plots = gr.Gallery(label="Study plots", columns=2, height="auto", object_fit="contain",
                                         fit_columns=False, elem_id="study-plots")
                with gr.Accordion("Full report: every variant, per fold", open=False):
                    report = gr.Markdown(elem_id="study-report")
                study_download = gr.File(label="Study folder (zip)")
            with gr.Tab("Predict"):
                gr.Markdown("Classify an image with the fold ensemble of your last run: the class probabilities are "
                            "averaged over the k fold models, and each fold's vote is listed.")
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(type="pil", label="Image", height=280, elem_id="predict-image")
                        predict_repo = gr.Textbox(label="Or a Hub repository pushed by hf_tlcv (empty: your last run)")
                        predict = gr.Button("Predict", variant="primary", elem_id="predict-button")
                    with gr.Column():
                        predict_status = gr.Markdown(elem_id="predict-status")
                        probabilities = gr.Label(label="Ensemble probabilities", num_top_classes=5,
                                                 elem_id="predict-label")
                        votes = gr.Dataframe(pd.DataFrame(columns=VOTE_COLUMNS), label="Each fold's vote", interactive=False, elem_id="predict-votes")
            with gr.Tab("Push"):
                gr.Markdown("Push your last run (results, plots, fold models, model card) to a Hub model repository. "
                            "The token is used for this push only: it is not logged, shown or stored. On a Space, "
                            "an `HF_TOKEN` secret is used when the field is empty.")
                repo_id = gr.Textbox(label="Repository id", placeholder="your-name/animal-mnist-kfold",
                                     elem_id="push-repo")
                token = gr.Textbox(label="Write token", type="password", placeholder="hf_…", elem_id="push-token")
                private = gr.Checkbox(label="Private repository", value=False)
                push = gr.Button("Push to the Hub", variant="primary", elem_id="push-button")
                push_status = gr.Markdown(elem_id="push-status")

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
                concurrency_id="training", show_progress="minimal")
            cancel.click(self.cancel, None, status, api_name="cancel", queue=False)
            compare_outputs = [compare_status, verdicts, report, study_plots, study_download]
            compare.click(self.mark_queued, None, compare_status, api_visibility="private", queue=False).then(
                self.compare, [*data_inputs, *settings, questions], compare_outputs, api_name="compare",
                concurrency_limit=1, concurrency_id="training", show_progress="minimal")
            compare_cancel.click(self.cancel, None, compare_status, api_visibility="private", queue=False)
            predict.click(self.predict, [image, predict_repo], [predict_status, probabilities, votes],
                          api_name="predict", concurrency_limit=2)
            push.click(self.push, [repo_id, token, private], [push_status, token], api_name="push", concurrency_limit=2)
            demo.unload(self.leave)
        return demo


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


# Study plots are wide figures: show each whole in a wide cell instead of cropping it to a square thumbnail.
CSS = """
#study-plots .thumbnail-item { aspect-ratio: 3 / 2 !important; }
#study-plots img { object-fit: contain !important; }
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The hf_tlcv Space: cross-validate fine-tuning from the browser.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--workdir", default=None, help="Folder for the visitors' working folders (default: a new "
                                                        "temporary folder, deleted when the app stops).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logger.setLevel(logging.INFO)
    ensure_space_assets()
    app = SpaceApp(args.workdir)
    demo = app.build()
    demo.queue(default_concurrency_limit=1)
    # `kill` (SIGTERM) ends the app like Ctrl-C does, so the visitors' working folders are removed either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    extra_paths = [] if str(app.workdir.resolve()).startswith(tempfile.gettempdir()) else [str(app.workdir)]
    try:
        demo.launch(server_name=args.host, server_port=args.port, show_error=False, run_history=False,
                    max_file_size=app.limits.max_zip_bytes, allowed_paths=extra_paths, footer_links=["api"],
                    css=CSS)
    finally:
        if args.workdir is None:
            shutil.rmtree(app.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
