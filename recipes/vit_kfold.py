"""Cross-validate fine-tuning of a pretrained image classifier with hf_tlcv.

With no arguments it runs the embedded default, offline: 5-fold cross-validation of the ImageNet-pretrained
EfficientNet-Lite0 as a linear probe on 1,000 Animal-MNIST images at 128 px.

    # the embedded default (offline), one process
    python recipes/vit_kfold.py
    # the same under accelerate (2 processes on CPU: add --use_cpu --ddp_backend gloo)
    accelerate launch recipes/vit_kfold.py

Online, on a ViT checkpoint and a Hub dataset:

    # full fine-tuning
    accelerate launch recipes/vit_kfold.py \
        --model_name_or_path google/vit-base-patch16-224-in21k --dataset_name beans --image_size 224 \
        --finetune_strategy full --learning_rate 2e-5 --num_train_epochs 3 --per_device_train_batch_size 32 \
        --max_samples 0 --output_dir outputs/vit-beans-full
    # freeze the embeddings and the bottom 8 of 12 blocks
    accelerate launch recipes/vit_kfold.py \
        --model_name_or_path google/vit-base-patch16-224-in21k --dataset_name beans --image_size 224 \
        --finetune_strategy freeze --freeze_layers 8 --learning_rate 1e-4 --max_samples 0 \
        --output_dir outputs/vit-beans-freeze8
    # LoRA on the attention projections (q_proj, v_proj), head trained in full
    accelerate launch recipes/vit_kfold.py \
        --model_name_or_path google/vit-base-patch16-224-in21k --dataset_name beans --image_size 224 \
        --finetune_strategy lora --lora_r 16 --learning_rate 5e-4 --max_samples 0 \
        --output_dir outputs/vit-beans-lora

Add `--bf16` on a GPU. Every `KFoldConfig` / `TrainingArguments` option is accepted (`--help` lists them).
Running again with the same `--output_dir` resumes; `--overwrite_output_dir` starts afresh.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from hf_tlcv import KFoldConfig, KFoldTrainer
from hf_tlcv.assets import BUILTIN_DATASETS, BUILTIN_MODELS, load_dataset

# The embedded default: what runs when the recipe is given no arguments.
RECIPE_DEFAULTS = dict(
    output_dir="outputs/vit_kfold",
    n_folds=5,
    finetune_strategy="linear_probe",
    image_size=128,
    learning_rate=3e-3,
    num_train_epochs=3,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=64,
    weight_decay=0.0,
    warmup_steps=0,
    logging_steps=10,
    save_strategy="no",
    report_to="none",
    dataloader_pin_memory=torch.cuda.is_available(),
    seed=42,
)


@dataclass
class ScriptArguments:
    """What to cross-validate: model and data."""

    model_name_or_path: str = field(
        default="builtin:efficientnet-lite0",
        metadata={"help": "Hub id, local folder, or one of: "
                          + ", ".join(f"builtin:{n}" for n in BUILTIN_MODELS) + "."},
    )
    dataset_name: str = field(
        default="builtin:animal-mnist",
        metadata={"help": "Hub dataset id, local folder (imagefolder), or one of: "
                          + ", ".join(f"builtin:{n}" for n in BUILTIN_DATASETS) + "."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split holding the labelled rows."})
    max_samples: int = field(
        default=1000,
        metadata={"help": "Use a class-stratified random subset of this many rows (0 = all rows)."},
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the subset draw."})


def subsample(dataset, n: int, label_column: str, seed: int):
    """A random subset of n rows, stratified by class when the labels are a ClassLabel."""
    if not n or n >= len(dataset):
        return dataset
    from datasets import ClassLabel

    stratify = label_column if isinstance(dataset.features.get(label_column), ClassLabel) else None
    return dataset.train_test_split(train_size=n, stratify_by_column=stratify, seed=seed)["train"]


def main(script_args: ScriptArguments, config: KFoldConfig) -> None:
    extra = {"name": script_args.dataset_config} if script_args.dataset_config else {}
    dataset = load_dataset(script_args.dataset_name, split=script_args.dataset_split, **extra)
    dataset = subsample(dataset, script_args.max_samples, config.label_column, script_args.sample_seed)
    trainer = KFoldTrainer(model=script_args.model_name_or_path, args=config, train_dataset=dataset)
    results = trainer.cross_validate()
    if trainer.is_world_process_zero():
        print(f"\n{script_args.model_name_or_path} on {script_args.dataset_name} "
              f"({len(dataset)} rows, finetune_strategy={config.finetune_strategy})")
        print(results.format_table())
        print(f"\nResults saved in {config.output_dir} (plots in {config.output_dir}/plots)")


def make_parser() -> HfArgumentParser:
    parser = HfArgumentParser((ScriptArguments, KFoldConfig))
    parser.set_defaults(**RECIPE_DEFAULTS)
    return parser


if __name__ == "__main__":
    script_args, config = make_parser().parse_args_into_dataclasses(args=sys.argv[1:])
    main(script_args, config)
