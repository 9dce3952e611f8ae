"""Cross-validate fine-tuning of a pretrained text encoder with hf_tlcv: the twin of `vit_kfold.py`.

With no arguments it runs the embedded default, offline: 5-fold cross-validation of the pretrained
all-MiniLM-L6-v2 as a linear probe on 800 movie-review snippets (positive vs. negative), with near-duplicate
snippets kept in one fold (grouped folds on the dataset's `group` column).

    # the embedded default (offline), one process
    python recipes/text_kfold.py
    # the same architecture from random weights: what is pretraining worth?
    python recipes/text_kfold.py --from_scratch --finetune_strategy full --output_dir outputs/text_scratch
    # freeze the embeddings and the bottom 4 of 6 layers
    accelerate launch recipes/text_kfold.py --finetune_strategy freeze --freeze_layers 4 --learning_rate 1e-4 \
        --output_dir outputs/text_freeze4
    # LoRA on the attention query/value projections, classifier trained in full
    accelerate launch recipes/text_kfold.py --finetune_strategy lora --learning_rate 1e-3 \
        --output_dir outputs/text_lora
    # other builtin data: builtin:trec (6 question classes), builtin:sms-spam
    python recipes/text_kfold.py --dataset_name builtin:trec --output_dir outputs/text_trec

A hyperparameter search on the folds (see docs/tuning.md; report in outputs/text_tune/search_report.md):

    python recipes/text_kfold.py --tune 20 --tune_strategies linear_probe,freeze,lora --output_dir outputs/text_tune

Online, any Hub text classifier checkpoint and dataset:

    accelerate launch recipes/text_kfold.py --model_name_or_path bert-base-uncased --dataset_name imdb \
        --max_samples 2000 --finetune_strategy lora --learning_rate 5e-4 --output_dir outputs/bert-imdb-lora

Text is tokenised once for all folds and padded per batch. Every `KFoldConfig` / `TrainingArguments` option is
accepted (`--help`); running again with the same `--output_dir` resumes.
"""

from __future__ import annotations

import sys
from functools import partial

from hf_tlcv.recipe import cli, run
from hf_tlcv.recipe import make_parser as _make_parser

# The embedded default: what runs when the recipe is given no arguments.
RECIPE_DEFAULTS = dict(
    model_name_or_path="builtin:minilm-l6",
    dataset_name="builtin:movie-snippets",
    max_samples=800,
    auto_group_column="group",
    output_dir="outputs/text_kfold",
    finetune_strategy="linear_probe",
    max_length=64,
    learning_rate=1e-2,
    num_train_epochs=5,
)

make_parser = partial(_make_parser, **RECIPE_DEFAULTS)
main = run

if __name__ == "__main__":
    sys.exit(cli(make_parser, sys.argv[1:]))
