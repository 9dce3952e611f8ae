"""A small hyperparameter search, shared by tests/test_search.py and run by it in a subprocess that is killed with
SIGKILL in the middle of a trial (then the test resumes the search in its own process).

    python tests/scripts/search_run.py --output_dir OUT [--pause_at trials/3/fold_0_1 --ready FILE]

With `--pause_at`, the process writes `--ready` and sleeps when that fold starts training: the kill lands there.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import image_dataset, make_config, tiny_model  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from hf_tlcv import KFoldTrainer  # noqa: E402

N_TRIALS = 6  # trial 4 is pruned and 5, the last, completes: the one the test kills
N_FOLDS = 3


def search_space(trial) -> dict:
    """Learning rates from hopeless to good, a cheap strategy (linear probe, on the frozen-feature cache) and full
    fine-tuning: some trials fall behind after their first fold."""
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-2, log=True),
            "finetune_strategy": trial.suggest_categorical("finetune_strategy", ["linear_probe", "full"]),
            "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 2)}


def make_trainer(output_dir, callbacks=()) -> KFoldTrainer:
    args = make_config(output_dir, n_folds=N_FOLDS, num_train_epochs=1, eval_on_train=False)
    return KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset(n_per_class=8), callbacks=list(callbacks))


def search(trainer: KFoldTrainer):
    import optuna

    return trainer.hyperparameter_search(hp_space=search_space, n_trials=N_TRIALS,
                                         pruner=optuna.pruners.MedianPruner(n_startup_trials=2))


class PauseAt(TrainerCallback):
    """Writes `ready` and sleeps when the fold whose folder ends with `suffix` starts training."""

    def __init__(self, suffix: str, ready: str):
        self.suffix, self.ready = suffix, ready

    def on_train_begin(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.suffix):
            Path(self.ready).write_text(str(os.getpid()))
            time.sleep(600)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--pause_at")
    parser.add_argument("--ready")
    opts = parser.parse_args()
    pause = [PauseAt(opts.pause_at, opts.ready)] if opts.pause_at else []
    search(make_trainer(opts.output_dir, pause))
