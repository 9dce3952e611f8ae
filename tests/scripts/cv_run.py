"""A small cross-validation run driven by the tests in a subprocess (kill -9 resume, 2-process DDP, parallel folds).

Each process writes what it saw to `<digest_dir>/rank_<i>.json`: the folds' fingerprint, the results, the folds it
trained (with the world size and step count its Trainer saw) and the `on_fold_end` events it received. Every process
of the run (each rank, and the worker a rank starts with `parallel_folds`) records what it writes under the output
folder in `<digest_dir>/writes/` (see `write_audit.py`): `write_audit.attribute` names who wrote each path of the
finished tree.
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import image_dataset, make_config, tiny_model  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from write_audit import record_writes  # noqa: E402

import hf_tlcv.results  # noqa: E402
from hf_tlcv import KFoldTrainer  # noqa: E402
from hf_tlcv.folds import folds_fingerprint, load_folds  # noqa: E402

AUDIT_ENV = "CV_RUN_WRITE_AUDIT"  # set by main(): a worker process imports this file as __mp_main__ and records too
if __name__ == "__mp_main__" and AUDIT_ENV in os.environ:
    _folder, _log_dir, _who = json.loads(os.environ[AUDIT_ENV])
    record_writes(_folder, _log_dir, f"{_who}.worker")


class Record(TrainerCallback):
    """What this process trained, as the fold's Trainer saw it, and the cross-validation events it received.

    With parallel_folds a fold trains in the launching process's worker, where this callback arrives as a copy: what
    it sees there is appended to a file named after the launching process's rank, which the copy carries along."""

    def __init__(self, digest_dir: str):
        self.rank = int(os.environ.get("RANK", "0"))
        self.trained_file = Path(digest_dir) / f"trained_{self.rank}.jsonl"
        self.trained_file.parent.mkdir(parents=True, exist_ok=True)
        self.trained_file.unlink(missing_ok=True)
        self.events = []

    def on_train_begin(self, args, state, control, **kwargs):
        with open(self.trained_file, "a") as fh:
            fh.write(json.dumps({"fold": Path(args.output_dir).name, "world_size": args.world_size,
                                 "max_steps": state.max_steps, "pid": os.getpid()}) + "\n")

    @property
    def trained(self) -> list[dict]:
        if not self.trained_file.exists():
            return []
        return [json.loads(line) for line in self.trained_file.read_text().splitlines()]

    def on_fold_end(self, args, state, control, fold, fold_dir, result, resumed, **kwargs):
        # the fold's files must be on disk when the event comes, on every process
        self.events.append({"fold": fold.name, "resumed": resumed, "saved": (fold_dir / "fold_result.json").exists(),
                            "is_world_process_zero": state.is_world_process_zero})


class FailAt(TrainerCallback):
    """Raise an exception in the middle of a fold (a fold that fails on one process)."""

    def __init__(self, fold_dir: str, step: int):
        self.fold_dir, self.step = fold_dir, step

    def on_step_end(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == self.fold_dir and state.global_step == self.step:
            raise RuntimeError(f"planned failure in {self.fold_dir}")


class SlowFold(TrainerCallback):
    """Hold the named fold at its end until the fold `after` has finished (its result file is in the run folder: the
    process that trained it has moved on to wait for this one), then `seconds` longer: that process waits at least
    `seconds` for this fold, however long either fold took to train."""

    def __init__(self, fold_dir: str, after: str, seconds: float):
        self.fold_dir, self.after, self.seconds = fold_dir, after, seconds

    def on_train_end(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == self.fold_dir:
            wait_for([Path(args.output_dir).parent / self.after / "fold_result.json"])
            time.sleep(self.seconds)


def wait_for(paths: list[Path], guard: float = 900) -> None:
    """Wait until every path exists; `guard` seconds is only a hang guard (the run failed elsewhere)."""
    start = time.monotonic()
    while not all(p.exists() for p in paths):
        if time.monotonic() - start > guard:
            raise TimeoutError(f"still missing after {guard} s: {[str(p) for p in paths if not p.exists()]}")
        time.sleep(0.1)


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
    parser.add_argument("--parallel_folds", action="store_true")
    parser.add_argument("--fail_fold", default=None)
    parser.add_argument("--fail_step", type=int, default=5)
    parser.add_argument("--n_folds", type=int, default=3)
    parser.add_argument("--learning_rate", type=float, default=5e-3)
    parser.add_argument("--logging_steps", type=int, default=2)
    parser.add_argument("--rank1_private_dir", default=None,
                        help="rank 1 saves its fold results here instead: a process without the shared folder")
    parser.add_argument("--slow_fold", default=None)
    parser.add_argument("--slow_after", default=None, help="the fold whose end --slow_fold waits for")
    parser.add_argument("--slow_seconds", type=float, default=0)
    parser.add_argument("--ddp_timeout", type=int, default=None,
                        help="timeout (s) of the launch's collectives (TrainingArguments.ddp_timeout)")
    opts = parser.parse_args()
    audit = [opts.output_dir, str(Path(opts.digest_dir) / "writes"), f"rank{os.environ.get('RANK', '0')}"]
    os.environ[AUDIT_ENV] = json.dumps(audit)
    record_writes(*audit)
    if opts.rank1_private_dir and os.environ.get("RANK") == "1":
        save = hf_tlcv.results.FoldResult.save
        hf_tlcv.results.FoldResult.save = lambda self, directory: save(
            self, Path(opts.rank1_private_dir) / Path(directory).name)
    extra = {"ddp_backend": "gloo"} if opts.ddp else {}
    if opts.ddp_timeout:
        extra["ddp_timeout"] = opts.ddp_timeout
        # The processes start their collectives together (a short timeout must not race the imports of a loaded
        # machine): each says it is ready, and all go once every one is.
        ready = Path(opts.digest_dir) / f"ready-{os.environ.get('MASTER_PORT', 'none')}"  # this launch's
        ready.mkdir(parents=True, exist_ok=True)
        (ready / os.environ.get("RANK", "0")).touch()
        wait_for([ready / str(r) for r in range(int(os.environ.get("WORLD_SIZE", "1")))])
    extra.update(learning_rate=opts.learning_rate, logging_steps=opts.logging_steps)
    args = make_config(opts.output_dir, finetune_strategy=opts.strategy, save_strategy="steps", save_steps=2,
                       num_train_epochs=3, per_device_train_batch_size=4, n_folds=opts.n_folds,
                       parallel_folds=opts.parallel_folds, **extra)
    record = Record(opts.digest_dir)
    callbacks = [record]
    if opts.kill_fold:
        callbacks.append(KillAt(opts.kill_fold, opts.kill_step))
    if opts.slow_fold:
        callbacks.append(SlowFold(opts.slow_fold, opts.slow_after, opts.slow_seconds))
    if opts.fail_fold:
        callbacks.append(FailAt(opts.fail_fold, opts.fail_step))
    trainer = KFoldTrainer(model=tiny_model("vit"), args=args, train_dataset=image_dataset(), callbacks=callbacks)
    results = trainer.cross_validate()
    rank = trainer.args.process_index
    folds, _ = load_folds(Path(opts.output_dir) / "folds.json")
    digest = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "folds_fingerprint": folds_fingerprint(folds),
        "fold_metrics": results.fold_metrics,
        "train_metrics": [f.train_metrics for f in results.folds],
        "log_history": [f.log_history for f in results.folds],
        "processes": results.processes,
        "oof_metrics": results.oof_metrics,
        "oof_rows": results.oof_predictions["row"].tolist(),
        "oof_probs": results.oof_predictions.filter(like="prob_").to_numpy().tolist(),
        "trained": record.trained,
        "events": record.events,
    }
    Path(opts.digest_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(opts.digest_dir) / f"rank_{rank}.json", "w") as fh:
        json.dump(digest, fh)


if __name__ == "__main__":
    main()
