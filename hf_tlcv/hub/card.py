"""The card of a cross-validation run: card data filled from [`CVResults`], rendered through a Jinja template.

The same card is the run folder's `README.md` (written when cross-validation ends, so a colleague opening the folder
reads what was measured and how) and the model card of the run's Hub repository (rendered again with the repository
id when it is pushed). The template ships as package data: `hf_tlcv/hub/templates/model_card.md`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..fold_models import read_fold_model_info
from ..integrations import ReportCallback
from ..run_dir import AUDIT_DIR, AUDIT_FILE, AUDIT_MARKDOWN, CARD_FILE, PLOTS_DIR, fold_dirs, write_text_atomic
from ..utils import IMAGE_TASK, TEXT_TASK, finite, fmt

if TYPE_CHECKING:  # the card reads results; results never need the card module to load
    from ..results import CVResults

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
LIBRARY_NAME = "hf_tlcv"
_HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "weight_decay", "warmup_steps",
                    "lr_scheduler_type", "optim", "seed", "freeze_layers", "layerwise_lr_decay", "lora_r", "lora_alpha",
                    "lora_dropout", "lora_target_modules", "image_size", "max_length", "metric_average")


def infer_task(cv: "CVResults") -> str:
    """`"image-classification"` or `"text-classification"`: recorded by the run, else read off its settings."""
    recorded = cv.metadata.get("task")
    if recorded in (IMAGE_TASK, TEXT_TASK):
        return recorded
    config = cv.config  # runs written before the task was recorded
    if config.get("image_size") or config.get("image_column"):
        return IMAGE_TASK
    return TEXT_TASK


@dataclass
class CVCardData:
    """What the card of a cross-validation run is rendered from, besides the results.

    Attributes:
        repo_id: the Hub repository the card is for (`None` for the local run folder's README).
        task: `"image-classification"` or `"text-classification"` (default: read from the run).
        dataset_name: the Hub dataset id (goes into `datasets:` and `model-index`) or a local/builtin name.
        study_report: an optional markdown section (e.g. a `TransferStudy` report) placed under "Study".
        license, language: optional YAML fields.
        extra_tags: tags added to `hf_tlcv`, `cross-validation`, `k-fold` and the strategy.
    """

    repo_id: str | None = None
    task: str | None = None
    dataset_name: str | None = None
    study_report: str | None = None
    license: str | None = None
    language: str | list[str] | None = None
    extra_tags: list[str] = field(default_factory=list)


def is_hub_dataset_id(name: str | None) -> bool:
    # Only "namespace/name" goes into the YAML: a bare builder name ("beans") or a builtin:/local name is not an id
    # the Hub can link, and a wrong `datasets:` entry is worse than none.
    return bool(name) and not name.startswith("builtin:") and not os.path.exists(name) and bool(
        re.fullmatch(r"[\w.\-]+/[\w.\-]+", name))


def eval_results_for(cv: "CVResults", task: str, dataset_name: str | None) -> list:
    """One `EvalResult` per metric: the cross-validated mean, as a plain float (non-finite values are left out)."""
    from huggingface_hub import EvalResult

    k, repeats = cv.config.get("n_folds"), cv.config.get("n_repeats", 1)
    dataset_type = dataset_name if is_hub_dataset_id(dataset_name) else "custom"
    results = []
    for metric, summary in cv.summary.items():
        value = finite(summary.get("mean"))
        if value is None or metric == "loss":
            continue
        results.append(EvalResult(
            task_type=task, dataset_type=dataset_type, dataset_name=dataset_name or "custom",
            metric_type=metric, metric_value=value,
            metric_name=f"{metric} (mean of {k}-fold cross-validation x {repeats})",
            dataset_split="train",
        ))
    return results


def _data_source(cv: "CVResults") -> str | None:
    from ..escaping import markdown_code as code

    data = cv.metadata.get("data") or {}
    if not data:
        return None
    if data.get("name"):
        parts = [code(data["name"])]
    elif data.get("format"):
        parts = [f"local {code(data['format'])} data"]
    else:
        parts = ["a dataset built in code"]
    if data.get("config"):
        parts.append(f"config {code(data['config'])}")
    if data.get("revision"):
        parts.append(f"revision {code(data['revision'])}")
    if data.get("data_files"):
        files = data["data_files"]
        parts.append("files " + ", ".join(code(f) for f in files[:5]) + (" ..." if len(files) > 5 else ""))
    if data.get("fingerprint"):
        parts.append(f"fingerprint {code(data['fingerprint'])}")
    return ", ".join(parts)


CARD_CLASSES = 50  # class names listed in the card; the per-class table and cv_results.json keep them all


def _class_list(names: list[str]) -> list[str]:
    """The class names the card lists: all of them up to `CARD_CLASSES`, else the first ones and how many more."""
    if len(names) <= CARD_CLASSES:
        return names
    return [*names[:CARD_CLASSES], f"… and {len(names) - CARD_CLASSES:,} more"]


def audit_section(directory: str | os.PathLike | None) -> str | None:
    """The "Data audit" section a finished audit of the run left in its folder (`audit/audit.md`, its images linked
    relative to the run folder), or `None`. `audit.json` is written last: without it the audit is not finished."""
    if directory is None or not (Path(directory) / AUDIT_FILE).is_file():
        return None
    path = Path(directory) / AUDIT_DIR / AUDIT_MARKDOWN
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


# The card lists every class up to this many; beyond, the CARD_WORST_CLASSES with the lowest F1.
CARD_MAX_CLASSES = 50
CARD_WORST_CLASSES = 20


def per_class_card_rows(cv: "CVResults") -> tuple[list[dict], int]:
    """Rows of the card's per-class table (class names escaped: they come from users' files) and the class count."""
    from ..escaping import escape_markdown
    from ..per_class import PER_CLASS_METRICS, worst_classes

    table = cv.per_class
    shown = table if len(table) <= CARD_MAX_CLASSES else worst_classes(table, CARD_WORST_CLASSES)
    rows = []
    for row in shown.to_dict("records"):
        cells = {m: f"{fmt(row[m], 3)} [{fmt(row[m + '_low'], 3)}, {fmt(row[m + '_high'], 3)}]"
                 for m in PER_CLASS_METRICS}
        rows.append({"name": escape_markdown(row["class"]), **cells, "support": fmt(row["support"], 1)})
    return rows, len(table)


def build_model_card(cv: "CVResults", data: CVCardData, directory: str | os.PathLike | None = None):
    """The `huggingface_hub.ModelCard` of a run, rendered from `templates/model_card.md`."""
    from huggingface_hub import ModelCard, ModelCardData

    # Every string a user chose (class, column, metric and file names, the model and dataset names, setting values)
    # reaches the Markdown through one of these two: as text (tables included) or as code.
    from ..escaping import escape_markdown as text, markdown_code as code
    from ..dependence import dependence_lines

    config = cv.config
    task = data.task or infer_task(cv)
    strategy = config.get("finetune_strategy", "full")
    base_model = config.get("model_name_or_path")
    hub_base = base_model if base_model and not base_model.startswith("builtin:") and not os.path.exists(
        base_model) else None
    dataset_name = data.dataset_name or (cv.metadata.get("data") or {}).get("name")
    tags = list(dict.fromkeys(["hf_tlcv", "cross-validation", "k-fold", strategy, *data.extra_tags]))
    card_data = ModelCardData(
        base_model=hub_base,
        datasets=[dataset_name] if is_hub_dataset_id(dataset_name) else None,
        library_name=LIBRARY_NAME,
        license=data.license,
        language=data.language,
        tags=tags,
        pipeline_tag=task,
        model_name=(data.repo_id or "run").split("/")[-1],
        eval_results=eval_results_for(cv, task, dataset_name) or None,
    )
    metrics = list(cv.summary)
    fold_rows = [
        {"repeat": int(row["repeat"]), "fold": int(row["fold"]), "n_train": int(row["n_train"]),
         "n_eval": int(row["n_eval"]), "values": [fmt(row.get(m)) for m in metrics]}
        for row in cv.to_pandas().to_dict("records")
    ]
    summary_rows = []
    for metric, s in cv.summary.items():
        lo, hi = s.get("ci95", [None, None])
        train = cv.train_summary.get(metric, {}).get("mean")
        summary_rows.append({"metric": text(metric), "mean": fmt(s["mean"]), "std": fmt(s["std"]), "low": fmt(lo),
                             "high": fmt(hi), "train": fmt(train) if train is not None else "",
                             "pooled": fmt(cv.oof_metrics.get(metric)) if metric in cv.oof_metrics else ""})
    test_rows = [{"metric": text(m), "mean": fmt(s["mean"]), "std": fmt(s["std"]),
                  "ensemble": fmt(cv.test_metrics.get(m))} for m, s in cv.test_summary.items()]
    per_class_rows, per_class_total = per_class_card_rows(cv)
    meta = cv.metadata
    directory = Path(directory) if directory is not None else None
    plots = sorted(p.name for p in (directory / PLOTS_DIR).glob("*.png")) if directory else []
    fold_models = sorted({(read_fold_model_info(d) or {}).get("format") for d in fold_dirs(directory)}
                         - {None}) if directory else []
    hyper = {key: config.get(key) for key in _HYPERPARAMETERS if key in config}
    if strategy != "lora":
        for key in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"):
            hyper.pop(key, None)
    if strategy != "freeze":
        hyper.pop("freeze_layers", None)
    hyper = {k: text(v) for k, v in hyper.items() if v is not None}
    title = data.repo_id.split("/")[-1] if data.repo_id else (directory.name if directory else "run")
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        repo_id=data.repo_id,
        title=text(title),
        task=task,
        dataset_name=code(dataset_name) if dataset_name else None,
        data_source=_data_source(cv),
        processes=cv.header() if cv.processes else None,
        nested={"metrics": " and ".join(cv.nested["metrics"]), "extra_fits": cv.nested["extra_fits"]}
        if cv.nested else None,
        base_model_name=code(base_model) if base_model else None,
        strategy=strategy,
        fold_strategy=meta.get("fold_strategy") or config.get("resolved_fold_strategy"),
        n_folds=meta.get("n_folds", config.get("n_folds")),
        n_repeats=meta.get("n_repeats", config.get("n_repeats", 1)),
        fold_seed=meta.get("fold_seed", config.get("fold_seed")),
        group_column=code(meta["group_column"]) if meta.get("group_column") else None,
        label_column=code(meta.get("label_column", "label")),
        n_rows=meta.get("n_rows"),
        n_fold_results=len(cv.folds),
        # Class names are folder names of an upload or labels of a stranger's dataset: shown as text, never markup.
        label_names=_class_list([text(name) for name in cv.label_names]) if cv.label_names else cv.label_names,
        n_classes=len(cv.label_names or []),
        metrics=[text(m) for m in metrics],
        interval_notes=[text(note) for note in cv.interval_notes()],
        fold_rows=fold_rows,
        summary_rows=summary_rows,
        oof_metrics={text(k): fmt(v) for k, v in cv.oof_metrics.items() if finite(v) is not None},
        test_rows=test_rows,
        per_class_rows=per_class_rows,
        per_class_total=per_class_total,
        per_class_hidden=len(per_class_rows) < per_class_total,
        n_test=meta.get("n_test_rows"),
        hyperparameters=hyper,
        plots=plots,
        fold_model_formats=fold_models,
        study_report=data.study_report,
        audit_section=audit_section(directory),
        dependence=[text(line.strip()) for line in dependence_lines(cv.diagnostics)],
        version=meta.get("hf_tlcv_version"),
    )


def write_model_card(cv: "CVResults", directory: str | os.PathLike, data: CVCardData | None = None) -> Path:
    """Render the card and write it as `README.md` in the run's folder (so the local run and the repo agree)."""
    directory = Path(directory)
    card = build_model_card(cv, data or CVCardData(), directory)
    write_text_atomic(directory / CARD_FILE, str(card))
    return directory / CARD_FILE


class ModelCardCallback(ReportCallback):
    """Writes the run's card (`output_dir/README.md`) at the end of a cross-validation (registered by `KFoldTrainer`
    through `hf_tlcv.integrations.cv_reporters`)."""

    what = "README.md"

    def write(self, results: "CVResults", output_dir: Path, trainer=None) -> None:
        write_model_card(results, output_dir, CVCardData(dataset_name=trainer.dataset_name if trainer else None))


__all__ = ["CVCardData", "ModelCardCallback", "audit_section", "build_model_card", "eval_results_for", "infer_task",
           "per_class_card_rows", "write_model_card"]
