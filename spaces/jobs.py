"""The Space's jobs: every cross-validation, comparison, search and audit runs in a child process of its own.

The app (`app.py`) decides what a visitor may ask (`boundary.py`), queues the request, and starts this file as a
separate Python process for it, in its own process group. The child loads the data and the model, trains, writes
everything into the job's folders, and exits; the app follows it through two files the child writes atomically:

- `progress.json`: the stage, the training step and the folds finished so far (the page's live table);
- `result.json`: at the end, `{"ok": true, ...what the page shows}` or `{"ok": false, "message": sentence}` (one
  sentence from `boundary.visitor_message`: no server path, no token, no library call).

Because the work is a process, the app can end it at once and whole: Cancel, the job's time limit and its memory
limit kill the process group (no thread to interrupt at a step that may never come, no child process left behind);
nothing the child wrote half is read (a killed job's folders are removed, the feature cache writes atomically). The
visitor's token, when there is one, reaches the child on its standard input, never on disk or in its environment.

Run by the app as `python jobs.py <job folder>`; the data and page helpers below are shared with the app's preview.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def _exit_with_parent(app_pid: int) -> None:
    """End this job as soon as the app that started it (`app_pid`) is gone (killed for memory, or by SIGKILL): a job
    runs in its own process group, so nothing else would stop it. Started before the heavy imports below, which take
    seconds: an app that dies meanwhile is noticed too."""
    import threading

    def watch():
        while True:
            if os.getppid() != app_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="hf_tlcv-space-parent").start()


if __name__ == "__main__":
    _exit_with_parent(int(sys.argv[2]))

import pandas as pd
from transformers import TrainerCallback

from boundary import BUDGETS, VisitorError, check_hub_repo, hub_repo_id, visitor_message, work_units
from boundary import size as size_in_words
from hf_tlcv import CVResults, KFoldConfig, KFoldTrainer
from hf_tlcv import run_dir
from hf_tlcv.escaping import escape_markdown
from hf_tlcv.assets import load_dataset
from hf_tlcv.data import subsample
from hf_tlcv.run_dir import write_json_atomic
from hf_tlcv.upload import UploadLimits, check_image_rows, class_counts, load_image_zip

SPEC_FILE, PROGRESS_FILE, RESULT_FILE, ROWS_DIR, EMBEDDINGS_FILE = (
    "spec.json", "progress.json", "result.json", "rows", "embeddings.npy")
BUILTIN_DATASET = "builtin:animal-mnist"
MAX_HUB_DOWNLOAD_BYTES = 1024 * 2**20  # one visitor's Hub model, dataset or pushed run
PROGRESS_EVERY_S = 0.3  # the child rewrites progress.json at most this often (and at every fold's end)


# ---- files both sides read -------------------------------------------------------------------------------------------
def read_json(path: Path) -> dict | None:
    """A file the other side writes atomically (`hf_tlcv.run_dir.write_json_atomic`), or `None` while it does not
    exist yet."""
    try:
        return run_dir.read_json(path)
    except (OSError, ValueError):
        return None


# ---- the visitor's data ----------------------------------------------------------------------------------------------
def data_spec(source: str, upload: str | None, hub_id: str, hub_split: str, label_column: str, *, zip_kind: str,
              hub_kind: str, builtin_kind: str) -> dict:
    """The data a visitor chose, checked for form (a Hub id, a split name, an uploaded file) without reading it."""
    if source == zip_kind:
        if not upload:
            raise VisitorError("Choose a .zip file to upload first (one sub-folder of images per class).")
        path = Path(upload)
        return {"kind": "zip", "zip": str(path), "size": path.stat().st_size if path.exists() else 0,
                "label": "label"}
    if source == hub_kind:
        repo = hub_repo_id(hub_id, "dataset", "beans")
        split = (hub_split or "train").strip()
        if not split.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise VisitorError("Type the split's name (e.g. train, validation, test).")
        return {"kind": "hub", "repo": repo, "split": split, "label": (label_column or "label").strip()}
    if source == builtin_kind:
        return {"kind": "builtin", "label": "label"}
    raise VisitorError(f"Choose the images among: {builtin_kind}, {zip_kind}, {hub_kind}.")


def load_data(spec: dict, folder: Path, limits: UploadLimits, min_per_class: int, token: str | bool = False):
    """The dataset of a [`data_spec`]: a zip is unpacked into `folder` within `limits`, a Hub dataset is sized first."""
    if spec["kind"] == "zip":
        return load_image_zip(spec["zip"], folder, min_per_class=min_per_class, limits=limits)
    if spec["kind"] == "hub":
        check_hub_repo(spec["repo"], "dataset", token, MAX_HUB_DOWNLOAD_BYTES)
        dataset = load_dataset(spec["repo"], split=spec["split"], token=token)
        if spec["label"] not in dataset.column_names:
            raise VisitorError(f"The dataset has no column {spec['label']!r} (its columns: "
                               f"{', '.join(dataset.column_names)}); type the name of its label column.")
        return dataset
    return load_dataset(BUILTIN_DATASET)


def sample_rows(dataset, spec: dict, sample_cap: int, limits: UploadLimits):
    """The rows a job uses: a class-stratified sample, within the Space's class budget; rows of a Hub dataset are
    decoded within the image limits before training sees them."""
    label = spec["label"]
    if spec["kind"] == "hub" and not sample_cap and len(dataset) > BUDGETS.max_rows:
        raise VisitorError(f"The dataset has {len(dataset):,} rows; set a sample cap of at most "
                           f"{BUDGETS.max_rows:,} to use a class-stratified sample of it.")
    check_classes(len(class_counts(dataset, label)))
    dataset = subsample(dataset, int(sample_cap or 0), label)
    if spec["kind"] == "hub":
        check_image_rows(dataset, limits)
    return dataset


def check_classes(n_classes: int) -> None:
    if n_classes > BUDGETS.max_classes:
        raise VisitorError(f"The data has {n_classes:,} classes; a job on this Space may have at most "
                           f"{BUDGETS.max_classes} (every fold's model, table and plot grows with them). Keep the "
                           f"{BUDGETS.max_classes} classes you need in the zip, or run hf_tlcv on your own machine.")


# ---- what the page shows, computed where the data is -----------------------------------------------------------------
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


ISSUE_COLUMNS = ["row", "given", "predicted", "p(predicted)", "p(given)", "label quality"]
LEAK_COLUMNS = ["repeat", "fold", "eval rows", "with a near-duplicate in train", "share"]
AUDIT_ROWS = 50  # label issues listed on the page: those audit.json keeps (AuditReport.save's top_k)


def audit_outputs(report, written: dict) -> dict:
    """What the Audit section shows of an `AuditReport` (JSON: the child sends it to the app). Class names come
    from the visitor's data: they reach the page escaped, or in tables."""
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
    table = [[int(r), str(g), str(p), f"{a:.4f}", f"{b:.4f}", f"{c:.4f}"] for r, g, p, a, b, c in zip(
        issues["row"], issues["given"], issues["predicted"], issues["prob_prediction"], issues["prob_label"],
        issues["label_score"])]
    leak = report.fold_leakage
    leakage = [[int(a), int(b), int(c), int(d), f"{e:.1%}"] for a, b, c, d, e in zip(
        leak["repeat"], leak["fold"], leak["n_eval"], leak["n_leaked"], leak["share"])]
    gallery = [(str(written[k]), caption) for k, caption in (("gallery", "suspected label errors"),
                                                              ("pairs", "near-duplicates split across folds"))
               if k in written]
    counts = (f"{report.count('label')} suspected label errors, {len(report.near_duplicate_pairs)} near-duplicate "
              f"pairs, {report.n_leaked} leaked evaluations")
    return {"numbers": "\n".join(lines), "gallery": gallery, "issues": table, "leakage": leakage, "counts": counts}


# ---- the child ------------------------------------------------------------------------------------------------------
class FileProgress(TrainerCallback):
    """The child's side of the live page: what trains now and the folds finished, in `progress.json`."""

    def __init__(self, path: Path):
        self.path = path
        self.state: dict[str, Any] = {"stage": "Loading the data and the model", "step": 0, "max_steps": 0,
                                      "folds": [], "training_started": None}
        self._written = 0.0
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._written >= PROGRESS_EVERY_S:
            write_json_atomic(self.path, self.state)
            self._written = now

    def stage(self, text: str) -> None:
        self.state["stage"] = text
        self.write(force=True)

    def on_train_begin(self, args, state, control, **kwargs):
        self.state.update(stage="Training", step=0, max_steps=state.max_steps,
                          training_started=self.state["training_started"] or time.time())
        self.write(force=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.state.update(step=state.global_step, max_steps=state.max_steps)
        self.write()

    def on_train_end(self, args, state, control, **kwargs):
        self.stage("Evaluating")

    def on_fold_end(self, args, state, control, fold=None, fold_dir=None, result=None, resumed=False, trainer=None,
                    **kwargs):
        self.state["folds"].append(result.to_dict())
        self.stage("Fold finished")


def job_config(spec: dict, output_dir: Path, **overrides) -> KFoldConfig:
    """The `KFoldConfig` of a job: the visitor's settings and the Space's fixed ones."""
    s = spec["settings"]
    finetune = s["strategy"]
    values = dict(
        output_dir=str(output_dir), n_folds=s["n_folds"], n_repeats=s["n_repeats"],
        num_train_epochs=float(s["epochs"]), learning_rate=s["learning_rate"], finetune_strategy=finetune,
        freeze_layers=s["freeze_layers"] if finetune == "freeze" else 0, image_size=s["image_size"],
        label_column=spec["data"]["label"], per_device_train_batch_size=32, per_device_eval_batch_size=64,
        logging_steps=5, report_to="none", disable_tqdm=True, save_strategy="no", seed=42,
        dataloader_pin_memory=False, use_cpu=not _has_cuda(), save_fold_models=True,
        # Frozen features on disk, in the visitor's own folder (HF_TLCV_FEATURE_CACHE, set by the app): the next job
        # of the same visitor on the same rows (Compare after Run) reads them instead of computing them again.
        feature_cache="disk",
    )
    values.update(overrides)
    return KFoldConfig(**values)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_work(units: float, what: str) -> None:
    if units > BUDGETS.max_work:
        raise VisitorError(
            f"This {what} is about {units:,.0f} units of work (fold trainings x epochs x training images, scaled by "
            f"the image size and what trains); a job on this Space may have at most {BUDGETS.max_work:,} (about "
            f"{BUDGETS.work_minutes} minutes of full fine-tuning at 128 px on its 2 CPU cores). Lower the sample cap, "
            "the image size, the epochs, the folds or the repeats, or train less of the model (linear probe).")


def _check_disk(trainer: KFoldTrainer, n_models: int) -> None:
    """Refuse a run whose fold models alone would not fit the visitor's disk quota."""
    model = getattr(trainer, "model", None)
    if model is None:
        return
    size = sum(p.numel() * p.element_size() for p in model.parameters()) * n_models
    if size > BUDGETS.visitor_disk_bytes:
        raise VisitorError(f"Its {n_models} fold models would take about {size_in_words(size)}; a visitor's files on "
                           f"this Space may take at most {size_in_words(BUDGETS.visitor_disk_bytes)}. Use fewer folds "
                           "or repeats, or a smaller model.")


def _rows(spec: dict, folder: Path, progress: FileProgress, token) -> Any:
    s = spec["settings"]
    progress.stage("Loading the data")
    limits = UploadLimits(**spec["limits"])
    dataset = load_data(spec["data"], folder / "upload", limits, min_per_class=int(s["n_folds"]), token=token)
    return sample_rows(dataset, spec["data"], s["sample_cap"], limits)


def run_cv(spec: dict, folder: Path, progress: FileProgress, token) -> dict:
    s = spec["settings"]
    dataset = _rows(spec, folder, progress, token)
    _check_work(work_units(len(dataset), s["image_size"], s["n_folds"] * s["n_repeats"], s["n_folds"], s["epochs"],
                           s["strategy"]), "run")
    progress.stage("Loading the model and preparing the images")
    trainer = KFoldTrainer(spec["model"], job_config(spec, spec["output_dir"]), train_dataset=dataset,
                           callbacks=[progress])
    _check_disk(trainer, s["n_folds"] * s["n_repeats"])
    trainer.cross_validate()
    dataset.save_to_disk(str(folder / ROWS_DIR))  # the rows the Audit tab reads, with the run's embeddings
    embeddings = cached_embeddings(trainer)
    if embeddings is not None:
        import numpy as np

        np.save(folder / EMBEDDINGS_FILE, embeddings)
    return {"n_rows": len(dataset), "training_started": progress.state["training_started"]}


def cached_embeddings(trainer: KFoldTrainer):
    """The audit's embeddings from a linear probe's frozen-feature cache, which the run has built already (no extra
    pass), or `None`: the audit then makes one embedding pass. Never raises: a finished run is not lost to this."""
    if trainer.cv_args.finetune_strategy != "linear_probe":
        return None
    try:
        from hf_tlcv.audit.checks import embeddings_from_feature_cache

        cache = trainer.feature_cache
        return embeddings_from_feature_cache(cache) if cache is not None else None
    except Exception as exc:  # noqa: BLE001
        print(f"No embeddings from the feature cache (the audit will compute them): {exc}", file=sys.stderr)
        return None


def run_study(spec: dict, folder: Path, progress: FileProgress, token) -> dict:
    from hf_tlcv.studies.study import TransferStudy

    s = spec["settings"]
    dataset = _rows(spec, folder, progress, token)
    progress.stage("Loading the model and preparing the images")
    # A study compares scores; its variants' fold models are not needed (Predict uses the runs).
    config = job_config(spec, spec["output_dir"], save_fold_models=False)
    study = TransferStudy(spec["model"], dataset, config, questions=tuple(spec["questions"]), callbacks=[progress])
    trained = [study.variants[run] for run in dict.fromkeys(study.runs.values())
               if not study.variants[run].classical]
    units = 0.0
    for variant in trained:
        strategy = "full" if not variant.pretrained else variant.overrides.get("finetune_strategy", s["strategy"])
        epochs = variant.overrides.get("num_train_epochs", s["epochs"])
        units += work_units(len(dataset), s["image_size"], s["n_folds"] * s["n_repeats"], s["n_folds"], epochs,
                            strategy)
    _check_work(units, f"comparison ({len(trained)} cross-validations)")
    progress.state["total_folds"] = len(trained) * s["n_folds"] * s["n_repeats"]
    report = study.run()
    return {"verdicts": report.verdicts_markdown(), "n_variants": len(report.variants),
            "chance": chance_notes(report)}


def chance_notes(report) -> str:
    """A sentence for each variant whose accuracy interval reaches down to what always answering the most common
    class scores: a verdict against such a variant says that it did not learn in this budget, not by how much a longer
    training of it would trail."""
    notes = []
    for name, results in report.variants.items():
        accuracy, oof = results.summary.get("accuracy"), results.oof_predictions
        if not accuracy or oof.empty or "label" not in oof:
            continue
        majority = float(oof["label"].value_counts(normalize=True).max())
        if accuracy["ci95"][0] <= majority:
            label = report.variant_info.get(name, {}).get("label") or name
            notes.append(f"{escape_markdown(str(label))} scores {accuracy['mean']:.3f}, no better than always "
                         f"answering the most common class ({majority:.3f}): it did not learn within these epochs, so "
                         "a verdict against it says little about how a longer training of it would compare.")
    return " ".join(notes)


def run_tune(spec: dict, folder: Path, progress: FileProgress, token) -> dict:
    import functools

    import optuna

    from hf_tlcv.search.run import model_hp_space

    s, t = spec["settings"], spec["tune"]
    dataset = _rows(spec, folder, progress, token)
    costliest = max(t["strategies"], key=lambda name: work_units(1, 128, 1, 2, 1, name))
    _check_work(work_units(len(dataset), s["image_size"], t["n_trials"] * s["n_folds"], s["n_folds"], s["epochs"],
                           costliest), f"search ({t['n_trials']} trials, each a cross-validation)")
    progress.stage("Loading the model and preparing the images")
    config = job_config(spec, spec["output_dir"], save_fold_models=False)
    trainer = KFoldTrainer(spec["model"], config, train_dataset=dataset, callbacks=[progress])
    progress.state["total_folds"] = t["n_trials"] * s["n_folds"]
    # default_hp_space bounded by the model's blocks, narrowed to the ticked strategies and the page's epochs.
    space = functools.partial(model_hp_space(trainer), strategies=tuple(t["strategies"]),
                              num_train_epochs=(1, s["epochs"]))
    # The median pruner, judged from the second trial on: with 4 to 10 trials, Optuna's default of 5 startup trials
    # would leave little to prune.
    best = trainer.hyperparameter_search(hp_space=space, n_trials=t["n_trials"],
                                         pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    report = best.run_summary
    pruning, top = report.pruning, report.best
    best_text = (f"best: trial {top['trial']}, {report.metric} {top['value']:.4f}; {pruning.get('n_pruned', 0)} "
                 f"pruned ({pruning.get('fold_trainings_saved', 0)} fold trainings saved).")
    return {"n_trials": len(report.trials), "best": best_text, "metric": report.metric, "best_value": top["value"],
            "report": report.to_markdown(plots_dir=None)}


def run_audit(spec: dict, folder: Path, progress: FileProgress, token) -> dict:
    import datasets
    import numpy as np

    run_job = Path(spec["run_job"])
    rows = datasets.load_from_disk(str(run_job / ROWS_DIR))
    embeddings_file = run_job / EMBEDDINGS_FILE
    embeddings = np.load(embeddings_file) if embeddings_file.exists() else None
    progress.stage("Auditing")
    # The library's issue types; it runs cleanlab's label search in this process (no worker pool).
    report = CVResults.load(spec["output_dir"]).audit(rows, embeddings=embeddings, embeddings_from="feature cache")
    written = report.save(spec["output_dir"])  # audit.json and audit/ beside the run's results; the card gains it
    return audit_outputs(report, written)


KINDS = {"run": run_cv, "study": run_study, "tune": run_tune, "audit": run_audit}


def main(folder: str) -> int:
    folder = Path(folder)
    spec = read_json(folder / SPEC_FILE)
    token = sys.stdin.readline().strip() or None  # the visitor's own token, for their Hub data; never stored
    progress = FileProgress(folder / PROGRESS_FILE)
    try:
        result = {"ok": True, **KINDS[spec["kind"]](spec, folder, progress, token or False)}
    except Exception as exc:  # noqa: BLE001 - every failure becomes the visitor's sentence
        result = {"ok": False, "message": visitor_message(exc, secrets=[token], roots=spec["roots"])}
    write_json_atomic(folder / RESULT_FILE, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
