"""A small cross-validation run driven by the tests in a subprocess (kill -9 resume, 2-process DDP).

Each process writes what it saw to `<digest_dir>/rank_<i>.json`: the folds' fingerprint, the results, and how
many result files it wrote itself.
"""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import image_dataset, make_config, tiny_model  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import hf_tlcv.results  # noqa: E402
import hf_tlcv.trainer  # noqa: E402
from hf_tlcv import KFoldTrainer  # noqa: E402
from hf_tlcv.folds import folds_fingerprint, load_folds  # noqa: E402

WRITES = []


def _counting(fn):
    def wrapper(*args, **kwargs):
        WRITES.append(str(args[0]) if args else fn.__name__)
        return fn(*args, **kwargs)
    return wrapper


hf_tlcv.results.write_json_atomic = _counting(hf_tlcv.results.write_json_atomic)
hf_tlcv.trainer.save_folds = _counting(hf_tlcv.trainer.save_folds)


class KillAt(TrainerCallback):
    """SIGKILL this process in the middle of a fold: no clean-up, as kill -9 from outside."""

    def __init__(self, fold_dir: str, step: int):
        self.fold_dir, self.step = fold_dir, step

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.fold_dir) and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--digest_dir", required=True)
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--kill_fold", default=None)
    parser.add_argument("--kill_step", type=int, default=0)
    parser.add_argument("--ddp", action="store_true")
    opts = parser.parse_args()
    extra = {"ddp_backend": "gloo"} if opts.ddp else {}
    args = make_config(opts.output_dir, finetune_strategy=opts.strategy, save_strategy="steps", save_steps=2,
                       num_train_epochs=3, per_device_train_batch_size=4, **extra)
    callbacks = [KillAt(opts.kill_fold, opts.kill_step)] if opts.kill_fold else None
    trainer = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset(), callbacks=callbacks)
    results = trainer.cross_validate()
    rank = trainer.args.process_index
    folds, _ = load_folds(Path(opts.output_dir) / "folds.json")
    digest = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "folds_fingerprint": folds_fingerprint(folds),
        "fold_metrics": results.fold_metrics,
        "oof_metrics": results.oof_metrics,
        "oof_rows": results.oof_predictions["row"].tolist(),
        "oof_probs": results.oof_predictions.filter(like="prob_").to_numpy().tolist(),
        "writes": WRITES,
    }
    Path(opts.digest_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(opts.digest_dir) / f"rank_{rank}.json", "w") as fh:
        json.dump(digest, fh)


if __name__ == "__main__":
    main()
