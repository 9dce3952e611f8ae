"""Cross-validate fine-tuning of a pretrained image classifier with hf_tlcv.

With no arguments it runs the embedded default, offline: 5-fold cross-validation of the ImageNet-pretrained
EfficientNet-Lite0 as a linear probe on 1,000 Animal-MNIST images at 128 px.

    # the embedded default (offline), one process
    python recipes/vit_kfold.py
    # the same under accelerate (2 processes on CPU: add --use_cpu --ddp_backend gloo)
    accelerate launch recipes/vit_kfold.py
    # each process trains whole folds (no gradient communication; results equal the one-process run)
    accelerate launch --multi_gpu --num_processes 4 recipes/vit_kfold.py --parallel_folds
    # push each fold to the Hub as it finishes, then the summary and model card (token: HF_TOKEN or hf auth login)
    python recipes/vit_kfold.py --push_to_hub --hub_model_id <you>/lite0-animal-mnist-cv

A transfer-learning study instead of one cross-validation: every variant on the same folds and seed, verdicts
with corrected statistics in outputs/study/report.md (see hf_tlcv.TransferStudy):

    # pretrained vs. from scratch, freeze depth (0, 4, 8, 12 of 16 blocks, linear probe, layer-wise decay), overfitting
    python recipes/vit_kfold.py --study pretrained,freeze,overfitting --finetune_strategy full \
        --learning_rate 1e-3 --max_samples 400 --image_size 64 --n_folds 5 --num_train_epochs 3 \
        --save_fold_models false --output_dir outputs/study
    # a learning-rate grid, its winner estimated by nested cross-validation
    python recipes/vit_kfold.py --study lr --study_learning_rates 3e-4,1e-3,3e-3,1e-2 --study_nested true \
        --output_dir outputs/study-lr

A hyperparameter search instead (see docs/tuning.md): every trial a cross-validation on the same folds, hopeless
trials pruned after their first folds, the same command resumes; report in outputs/tune/search_report.md:

    # 20 trials of the default space: learning rate, strategy, freeze depth, LoRA rank, layer-wise decay, epochs
    python recipes/vit_kfold.py --tune 20 --max_samples 400 --image_size 64 --output_dir outputs/tune
    # the honest estimate of the tuned pipeline: the search again inside every outer fold
    python recipes/vit_kfold.py --tune 10 --tune_nested true --tune_strategies linear_probe,freeze \
        --output_dir outputs/tune-nested
    # trials as Ray Tune trials (local cluster; RAY_ADDRESS=ray://head:10001 for a cluster)
    python recipes/vit_kfold.py --tune 40 --tune_backend ray --output_dir outputs/tune-ray
    # one cross-validation with its folds as Ray tasks (one process: as many folds at once as CPUs/GPUs)
    python recipes/vit_kfold.py --parallel_folds --output_dir outputs/cv-ray

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
from functools import partial

from hf_tlcv.recipe import cli, run
from hf_tlcv.recipe import make_parser as _make_parser

# The embedded default: what runs when the recipe is given no arguments.
RECIPE_DEFAULTS = dict(
    model_name_or_path="builtin:efficientnet-lite0",
    dataset_name="builtin:animal-mnist",
    max_samples=1000,
    output_dir="outputs/vit_kfold",
    finetune_strategy="linear_probe",
    image_size=128,
    learning_rate=3e-3,
    num_train_epochs=3,
)

make_parser = partial(_make_parser, **RECIPE_DEFAULTS)
main = run

if __name__ == "__main__":
    sys.exit(cli(make_parser, sys.argv[1:]))
