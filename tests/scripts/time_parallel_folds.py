"""Wall time of one 4-fold cross-validation run three ways: one process, parallel folds, DDP (2 CPU processes).

    python tests/scripts/time_parallel_folds.py              # runs the three variants, prints the table
    python tests/scripts/time_parallel_folds.py --threads 2  # the one-process run with 2 torch threads
    python tests/scripts/time_parallel_folds.py --repeats 3  # variants in turn, 3 times: min and median times

A ViT built from a config (4 layers, 64 wide, 32x32 images in 4x4 patches) on 480 learnable synthetic images,
4 folds, 3 epochs, batch 16 (DDP: 8 per process, the same 16 per optimizer step). Each variant runs in its own
processes; `--worker` is the run itself, writing its timing and results to `<out>/rank_<i>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))


def worker(out: Path, mode: str) -> None:
    import transformers as tf
    import torch
    from conftest import image_dataset, make_config

    from hf_tlcv import KFoldTrainer

    torch.manual_seed(0)
    model = tf.ViTForImageClassification(tf.ViTConfig(
        image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128, num_labels=3))
    extra = {"ddp_backend": "gloo"} if mode != "sequential" else {}
    args = make_config(out / "cv", n_folds=4, num_train_epochs=3, learning_rate=1e-3, logging_steps=50,
                       per_device_train_batch_size=8 if mode == "ddp" else 16, per_device_eval_batch_size=64,
                       parallel_folds=mode == "parallel", **extra)
    trainer = KFoldTrainer(model=model, args=args, train_dataset=image_dataset(n_per_class=160))
    start = time.perf_counter()
    results = trainer.cross_validate()
    seconds = time.perf_counter() - start
    digest = {"cv_seconds": seconds, "fold_metrics": results.fold_metrics, "oof_metrics": results.oof_metrics,
              "oof_probs": results.oof_predictions.filter(like="prob_").to_numpy().tolist()}
    (out / f"rank_{trainer.args.process_index}.json").write_text(json.dumps(digest))


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(out: Path, mode: str, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    run = [str(HERE), "--worker", "--mode", mode, "--out", str(out)]
    if mode == "sequential":
        cmd = [sys.executable, *run]
    else:
        cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_port()), *run]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--mode", default="sequential", choices=["sequential", "parallel", "ddp"])
    parser.add_argument("--out", default="outputs/time_parallel_folds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the one-process run")
    parser.add_argument("--repeats", type=int, default=1, help="run the variants in turn this many times")
    opts = parser.parse_args()
    out = Path(opts.out)
    if opts.worker:
        return worker(out, opts.mode)
    modes = ("sequential", "parallel", "ddp")
    walls, cvs, digests = {m: [] for m in modes}, {m: [] for m in modes}, {}
    # Variants in turn, so that a burst of load from other jobs hits all of them alike.
    for repeat in range(opts.repeats):
        for mode in modes:
            folder = out / f"{mode}_{repeat}"
            walls[mode].append(launch(folder, mode, opts.threads if mode == "sequential" else 1))
            digests[mode] = json.loads((folder / "rank_0.json").read_text())
            cvs[mode].append(digests[mode]["cv_seconds"])
    ref = digests["sequential"]
    print(f"{'variant':<32}{'wall s':>8}{'cv s min':>10}{'cv s median':>13}{'speed-up':>10}{'max |dprob|':>13}"
          f"{'accuracy':>10}")
    for mode, label in zip(modes, (f"1 process, {opts.threads} thread(s)", "2 processes, parallel_folds",
                                   "2 processes, DDP")):
        digest = digests[mode]
        diff = np.abs(np.asarray(digest["oof_probs"]) - np.asarray(ref["oof_probs"])).max()
        print(f"{label:<32}{np.median(walls[mode]):>8.1f}{min(cvs[mode]):>10.1f}{np.median(cvs[mode]):>13.1f}"
              f"{min(cvs['sequential']) / min(cvs[mode]):>10.2f}{diff:>13.2e}{digest['oof_metrics']['accuracy']:>10.4f}")
    print(f"wall s: median over {opts.repeats} run(s), Python start-up included; speed-up: of the min cv s.")


if __name__ == "__main__":
    main()
