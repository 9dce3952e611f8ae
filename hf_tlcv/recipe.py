"""What the recipes in `recipes/` share: their data and model arguments, their parser, and the run itself.

A recipe is then its launch commands (docstring) and its defaults: `recipes/vit_kfold.py` for images,
`recipes/text_kfold.py` for text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser
from transformers.trainer_utils import set_seed

from .config import FINETUNE_STRATEGIES, KFoldConfig
from .console import quiet_libraries
from .data import label_names, num_labels, subsample
from .modeling import load_classifier, load_processor
from .studies.report import StudyReport
from .options import command_line_options
from .sources import load_data, offline_options
from .trainer import KFoldTrainer
from .validation import validate_dataset


@dataclass
class ScriptArguments:
    """What to cross-validate: model and data."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id, local folder, or an offline model: " + ", ".join(offline_options("model"))},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id, local folder or file, or an offline dataset: "
                          + ", ".join(offline_options("dataset"))},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split holding the labelled rows."})
    max_samples: int = field(
        default=0, metadata={"help": "Use a class-stratified random subset of this many rows (0 = all rows)."}
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the subset draw."})
    auto_group_column: str | None = field(
        default=None,
        metadata={"help": "When the dataset has this column, no --group_column is given and --fold_strategy is "
                          "auto, use it for grouped folds (the builtin text datasets mark near-duplicate texts in "
                          "'group')."},
    )
    from_scratch: bool = field(
        default=False,
        metadata={"help": "Same architecture with random initial weights instead of the pretrained ones: the "
                          "baseline that shows what pretraining is worth."},
    )
    # Study: compare variants of this setup on identical folds (hf_tlcv.TransferStudy)
    study: str | None = field(
        default=None,
        metadata={"help": "Run a transfer-learning study instead of one cross-validation: comma-separated questions "
                          "among pretrained, baseline (a classical baseline on the same folds), freeze, lr, "
                          "overfitting (e.g. 'pretrained,baseline'). Every variant runs on the same folds in "
                          "output_dir/<variant>; the report goes to output_dir/report.md."},
    )
    study_freeze_depths: str | None = field(
        default=None, metadata={"help": "Frozen-block counts of the freeze sweep, e.g. '0,4,8,12' (default: 0, n/4, "
                                        "n/2, 3n/4; the linear probe and layer-wise decay are always added)."},
    )
    study_learning_rates: str | None = field(
        default=None, metadata={"help": "Learning-rate grid of the lr question, e.g. '1e-4,1e-3,1e-2' (default: 5 "
                                        "log-spaced values from learning_rate/10 to learning_rate*10)."},
    )
    study_layerwise_lr_decay: float = field(
        default=0.8, metadata={"help": "Decay of the layer-wise learning-rate variant of the freeze sweep."}
    )
    study_nested: bool = field(
        default=False, metadata={"help": "Estimate the selected freeze depth / learning rate by nested "
                                         "cross-validation (inner CV on each outer-train part)."},
    )
    study_inner_folds: int = field(default=3, metadata={"help": "Inner folds with --study_nested."})
    # Data audit with the run's own out-of-fold predictions (hf_tlcv.audit)
    audit: bool = field(
        default=False,
        metadata={"help": "After the cross-validation, audit the data with its out-of-fold predictions and the "
                          "pretrained embeddings (cleanlab: label issues, near-duplicates leaking across folds, "
                          "outliers) into output_dir/audit.json and output_dir/audit/. Needs hf_tlcv[audit]."},
    )
    audit_regroup: bool = field(
        default=False,
        metadata={"help": "With --audit: cross-validate again with near-duplicates grouped (into <output_dir>-grouped) "
                          "and add both estimates and the paired test of their difference to the audit."},
    )
    # Tune: a hyperparameter search whose trials are cross-validations on the same folds (hf_tlcv.search)
    tune: int = field(
        default=0,
        metadata={"help": "Search hyperparameters with this many trials instead of one cross-validation: every trial "
                          "cross-validates on the same folds (default space: learning rate, fine-tuning strategy, "
                          "freeze depth, LoRA rank, layer-wise decay, epochs), hopeless trials are pruned after their "
                          "first folds; the same command resumes. Report: output_dir/search_report.md."},
    )
    tune_backend: str = field(
        default="optuna",
        metadata={"help": "optuna: trials one after the other (their folds on Ray with --parallel_folds); ray: trials "
                          "as Ray Tune trials with an ASHA scheduler (RAY_ADDRESS for a cluster).",
                  "choices": ["optuna", "ray"]},
    )
    tune_pruner: str = field(
        default="median",
        metadata={"help": "Fold-level pruner of the optuna backend: median (its start-up trials sized to --tune), "
                          "hyperband or none.",
                  "choices": ["median", "hyperband", "none"]},
    )
    tune_storage: str | None = field(
        default=None,
        metadata={"help": "Where the study lives: default SQLite in output_dir; 'journal' (a journal file in "
                          "output_dir, for several machines on a shared filesystem) or a database URL."},
    )
    tune_strategies: str | None = field(
        default=None, metadata={"help": "Fine-tuning strategies the default space searches, e.g. 'linear_probe,freeze' "
                                        "(default: linear_probe, freeze, lora, full)."},
    )
    tune_nested: bool = field(
        default=False, metadata={"help": "Also run the search inside every outer fold and score its winner there: the "
                                         "honest estimate of tuning, against the best trial's own mean."},
    )
    tune_inner_folds: int = field(default=3, metadata={"help": "Inner folds with --tune_nested."})


# Defaults every recipe shares; a recipe's own defaults come on top.
COMMON_DEFAULTS = dict(
    n_folds=5,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=64,
    logging_steps=10,
    report_to="none",
    seed=42,
    dataloader_pin_memory=torch.cuda.is_available(),
)


def make_parser(**defaults) -> HfArgumentParser:
    """`HfArgumentParser` over `ScriptArguments` and `KFoldConfig`, with a recipe's own defaults."""
    parser = HfArgumentParser((ScriptArguments, KFoldConfig))
    parser.set_defaults(**(COMMON_DEFAULTS | defaults))
    return parser


def cli(make_recipe_parser, argv: list[str] | None = None) -> int:
    """A recipe's command line: parse, run, and return the exit status.

    Messages name the options as typed on the command line (`--fold_strategy kfold`); Ctrl-C ends the run with the
    library's one line on what is kept and how to resume, and exit status 130, instead of a traceback.
    """
    with command_line_options():
        script_args, config = make_recipe_parser().parse_args_into_dataclasses(args=argv)
        try:
            # Loading files and models shows no bars of its own: the run's one display is the fold bar.
            with quiet_libraries(not config.trainer_console_output):
                run(script_args, config)
        except KeyboardInterrupt:
            return 130
    return 0


def run(script_args: ScriptArguments, config: KFoldConfig):
    """Load the data and model named in `script_args`, cross-validate, print the table, return the [`CVResults`].

    With `--study`, run a [`TransferStudy`] instead, print its verdicts and return its [`StudyReport`]; with
    `--tune N`, search hyperparameters on the folds, print the trials and return the `BestRun`."""
    if not script_args.model_name_or_path or not script_args.dataset_name:
        raise ValueError("Name a model and a dataset: --model_name_or_path and --dataset_name.")
    if script_args.audit or script_args.audit_regroup:
        _check_audit(script_args)  # before any training: a missing package must not cost the run
    extra = {"name": script_args.dataset_config} if script_args.dataset_config else {}
    dataset = load_data(script_args.dataset_name, split=script_args.dataset_split, **extra)
    # The labels are checked (and strings become a ClassLabel) first, so that the subset below is stratified by class
    # too; the rows themselves are checked by KFoldTrainer / TransferStudy, on the subset that trains.
    dataset = validate_dataset(dataset, label_column=config.label_column, inputs=False)
    dataset = subsample(dataset, script_args.max_samples, config.label_column, script_args.sample_seed)
    # What the user named (a builtin, a Hub id, a file path) is what the results, the card and the reports record.
    dataset.info.dataset_name = script_args.dataset_name
    auto_group = script_args.auto_group_column
    # Only when the user left the fold strategy to us: an explicit non-grouped strategy is respected.
    if (config.group_column is None and auto_group and auto_group in dataset.column_names
            and config.fold_strategy in ("auto", "group", "stratified_group")):
        config.group_column = auto_group  # checked with the data by KFoldTrainer, like a user's group_column
        print(f"Grouped folds: rows sharing a {auto_group!r} value never straddle train and eval.")
    model, processing_class = script_args.model_name_or_path, None
    if script_args.study:
        if script_args.tune:
            raise ValueError("--study and --tune cannot be combined: a study compares listed variants, a search "
                             "looks for the best settings; run them one at a time.")
        return _run_study(script_args, config, dataset)
    if script_args.from_scratch:
        set_seed(config.seed)
        processing_class = load_processor(model)
        model = load_classifier(model, label_names(dataset, config.label_column),
                                num_labels(dataset, config.label_column), pretrained=False,
                                text_pooling=config.text_pooling)
    trainer = KFoldTrainer(model=model, args=config, train_dataset=dataset, processing_class=processing_class)
    trainer.default_train_batch_size = COMMON_DEFAULTS["per_device_train_batch_size"]  # the recipes' own default
    if script_args.tune:
        return _run_tune(script_args, config, trainer, len(dataset))
    results = trainer.cross_validate()
    if trainer.is_world_process_zero():
        init = "random init (from scratch)" if script_args.from_scratch else "pretrained"
        print(f"\n{script_args.model_name_or_path} [{init}] on {script_args.dataset_name} "
              f"({len(dataset)} rows, finetune_strategy={config.finetune_strategy})")
        print(results.format_table())
        print(f"\nResults saved in {config.output_dir} (plots in {config.output_dir}/plots)")
    if script_args.audit:
        from .audit.checks import audit_run

        report = audit_run(trainer, embedding_model=script_args.model_name_or_path,
                           regroup=script_args.audit_regroup)
        if trainer.is_world_process_zero():
            print("\n" + report.to_markdown(max_rows=5))
    return results


def _check_audit(script_args: ScriptArguments) -> None:
    from .audit.checks import check_available

    if script_args.audit_regroup and not script_args.audit:
        raise ValueError("--audit_regroup re-runs the cross-validation grouped by what --audit finds: add --audit.")
    if script_args.study or script_args.tune:
        raise ValueError("--audit audits one cross-validation; with --study or --tune, audit a run folder from "
                         "Python: hf_tlcv.audit.audit(CVResults.load(<its folder>), dataset).")
    check_available()


def _comma_list(text: str | None, cast, flag: str) -> list | None:
    if not text:
        return None
    try:
        return [cast(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ValueError(f"{flag} must be comma-separated numbers, e.g. '0,4,8' (got {text!r}).") from exc


def _run_study(script_args: ScriptArguments, config: KFoldConfig, dataset) -> StudyReport:
    from .studies.study import TransferStudy

    if script_args.from_scratch:
        raise ValueError("--from_scratch and --study cannot be combined: ask the study the 'pretrained' question, "
                         "which runs the from-scratch variant beside the pretrained one.")
    study = TransferStudy(
        script_args.model_name_or_path, dataset, config, questions=script_args.study,
        freeze_depths=_comma_list(script_args.study_freeze_depths, int, "--study_freeze_depths"),
        learning_rates=_comma_list(script_args.study_learning_rates, float, "--study_learning_rates"),
        layerwise_lr_decay=script_args.study_layerwise_lr_decay, nested=script_args.study_nested,
        inner_folds=script_args.study_inner_folds,
    )
    report = study.run()
    print(f"\nStudy of {script_args.model_name_or_path} on {script_args.dataset_name} ({len(dataset)} rows, "
          f"{config.n_folds}-fold x {config.n_repeats}, same folds and seed for every variant)")
    for verdict in report.verdicts:
        print(verdict.block())
    print(f"\nReport: {config.output_dir}/report.md (plots in {config.output_dir}/plots)")
    return report


def _run_tune(script_args: ScriptArguments, config: KFoldConfig, trainer: KFoldTrainer, n_rows: int):
    """`--tune N`: `trainer.hyperparameter_search` with the recipe's choices; prints the best settings and the trials."""
    import functools

    import optuna

    from .search.run import default_hp_space, model_hp_space

    space = model_hp_space(trainer)
    if script_args.tune_strategies:
        strategies = tuple(s.strip() for s in script_args.tune_strategies.split(",") if s.strip())
        unknown = sorted(set(strategies) - set(FINETUNE_STRATEGIES))
        if unknown or not strategies:
            raise ValueError(f"--tune_strategies must list strategies among {', '.join(FINETUNE_STRATEGIES)} (got "
                             f"{script_args.tune_strategies!r}).")
        space = functools.partial(default_hp_space, n_blocks=space.keywords["n_blocks"], strategies=strategies)
    kwargs = {}
    if script_args.tune_backend == "optuna":
        # median: the search's own default (hf_tlcv.search.default_pruner), its start-up trials sized to the budget
        kwargs["pruner"] = {"median": None,
                            "hyperband": optuna.pruners.HyperbandPruner(
                                min_resource=1, max_resource=config.n_folds * config.n_repeats),
                            "none": optuna.pruners.NopPruner()}[script_args.tune_pruner]
    elif script_args.tune_pruner == "none":
        from ray.tune.schedulers import FIFOScheduler

        kwargs["scheduler"] = FIFOScheduler()
    best = trainer.hyperparameter_search(hp_space=space, n_trials=script_args.tune, backend=script_args.tune_backend,
                                         storage=script_args.tune_storage, nested=script_args.tune_nested,
                                         inner_folds=script_args.tune_inner_folds, **kwargs)
    report = best.run_summary
    print(f"\nSearch on {script_args.model_name_or_path} / {script_args.dataset_name} ({n_rows} rows): "
          f"{len(report.trials)} trials, each a {report.n_folds}-fold cross-validation on the same folds")
    print(report.trial_table.to_string(index=False))
    print(f"\nBest: trial {best.run_id}, {report.metric} {best.objective:.4f}; settings: {best.hyperparameters}")
    if report.comparison is not None:
        print(report.comparison["text"])
    print(report.pruning_text())
    if report.nested is not None:
        est = report.nested["estimate"]
        print(f"Nested estimate of tune-then-train: {report.metric} {est['mean']:.4f} (best trial's own mean "
              f"{best.objective:.4f}; optimism {report.nested['optimism']:+.4f}).")
    print(f"\nReport: {config.output_dir}/search_report.md (trials in {config.output_dir}/trials)")
    return best
