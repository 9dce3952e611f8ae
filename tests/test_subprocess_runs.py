"""Runs that need their own processes: kill -9 in the middle of a fold, and two DDP ranks under accelerate."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import oof_cross_entropy, subprocess_env
from scripts.write_audit import attribute, written_by
from sklearn.metrics import accuracy_score

SCRIPT = Path(__file__).parent / "scripts" / "cv_run.py"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], expect_ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _digest(path: Path, rank: int = 0) -> dict:
    return json.loads((path / f"rank_{rank}.json").read_text())


def test_killed_mid_fold_resumes_to_the_same_results(tmp_path, one_process_cv_run):
    killed = tmp_path / "killed"
    # SIGKILL at step 5 of the second fold: the first fold is finished, the second has a checkpoint at step 4
    proc = _run([sys.executable, str(SCRIPT), "--output_dir", str(killed), "--digest_dir", str(tmp_path / "d2"),
                 "--kill_fold", "fold_0_1", "--kill_step", "5"], expect_ok=False)
    assert proc.returncode == -9
    assert (killed / "fold_0_0" / "fold_result.json").exists()
    assert not (killed / "fold_0_1" / "fold_result.json").exists()
    assert (killed / "fold_0_1" / "checkpoint-4").is_dir()
    assert not (killed / "cv_results.json").exists()

    _run([sys.executable, str(SCRIPT), "--output_dir", str(killed), "--digest_dir", str(tmp_path / "d2")])
    a, b = one_process_cv_run, _digest(tmp_path / "d2")
    assert a["folds_fingerprint"] == b["folds_fingerprint"]
    assert a["oof_rows"] == b["oof_rows"]
    np.testing.assert_allclose(b["oof_probs"], a["oof_probs"], rtol=1e-5, atol=1e-6)
    for fa, fb in zip(a["fold_metrics"], b["fold_metrics"]):
        assert fa.keys() == fb.keys()
        for key in fa:
            assert fb[key] == pytest.approx(fa[key], rel=1e-5, abs=1e-6), key
    assert b["oof_metrics"] == pytest.approx(a["oof_metrics"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ddp_processes_agree_only_the_main_one_writes_and_the_losses_are_a_one_process_runs(tmp_path):
    """One 2-process launch for both checks. With a learning rate of 0 no fold model changes, so every loss must be the
    same on 1 and 2 processes: the eval and train-part losses of each fold (recomputed in neither run from the other),
    and the training loss logged over the first epoch (every step's per-row mean, averaged) must match the model's
    loss on its training rows. Both ranks report the same results, and only the main process writes them."""
    launcher = Path(sys.executable).with_name("accelerate")
    frozen = ["--n_folds", "2", "--learning_rate", "0", "--logging_steps", "1"]
    out, digests = tmp_path / "two", tmp_path / "d2"
    with open(tmp_path / "one.txt", "w") as sink:  # the one-process run beside the launch: the cores share the work
        one_process = subprocess.Popen([sys.executable, str(SCRIPT), "--output_dir", str(tmp_path / "one"),
                                        "--digest_dir", str(tmp_path / "d1"), *frozen], cwd=ROOT, env=subprocess_env(),
                                       stdout=sink, stderr=subprocess.STDOUT)
    _run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
          str(SCRIPT), "--output_dir", str(out), "--digest_dir", str(digests), "--ddp", *frozen])
    assert one_process.wait(timeout=600) == 0, (tmp_path / "one.txt").read_text()[-3000:]
    rank0, rank1 = _digest(digests, 0), _digest(digests, 1)
    assert rank0["world_size"] == rank1["world_size"] == 2
    # identical folds and identical results on both ranks
    assert rank0["folds_fingerprint"] == rank1["folds_fingerprint"]
    assert rank0["fold_metrics"] == rank1["fold_metrics"]
    assert rank0["oof_metrics"] == rank1["oof_metrics"]
    np.testing.assert_array_equal(rank0["oof_probs"], rank1["oof_probs"])
    # only the main process writes: every file and folder of the run folder is attributed to the process that wrote
    # it, and rank 1 wrote nothing there but what transformers saves per process in each checkpoint (its RNG state,
    # which a resumed DDP rank reloads; the checkpoint folder too when rank 1 gets there first)
    writers = attribute(out, digests / "writes")
    rank1_wrote = written_by("rank1", digests / "writes")
    per_rank = re.compile(r"fold_0_\d/checkpoint-\d+(/rng_state_1\.pth)?")
    assert {p for p in rank1_wrote if p.endswith("rng_state_1.pth")}, "the audit saw none of rank 1's writes"
    assert all(per_rank.fullmatch(p) for p in rank1_wrote), sorted(rank1_wrote)
    assert all(who == {"rank0"} for p, who in writers.items() if not per_rank.fullmatch(p))
    assert {"cv_results.json", "oof_predictions.parquet", "README.md", "folds.json", "fold_0_1/fold_result.json",
            "fold_0_1/predictions.parquet"} <= writers.keys() and any(p.startswith("plots/") for p in writers)
    # gathered predictions: every row exactly once (no duplicates from uneven sharding), metrics consistent
    oof = pd.read_parquet(out / "oof_predictions.parquet")
    assert sorted(oof["row"]) == list(range(36))
    for fold_metrics, (_, rows) in zip(rank0["fold_metrics"], oof.groupby("fold"), strict=True):
        assert fold_metrics["accuracy"] == pytest.approx(accuracy_score(rows["label"], rows["prediction"]))
    # every reported eval loss is the cross-entropy of the saved predictions (not the 2x of a 2-process mean loss)
    entropy = oof_cross_entropy(oof)
    for i, fold_metrics in enumerate(rank0["fold_metrics"]):
        assert fold_metrics["loss"] == pytest.approx(entropy[(0, i)], rel=1e-4)
    # the layout is recorded: each fold on 2 processes, global batch 8 = 4 per device x 2
    assert rank0["processes"] == {"world_size": 2, "fold_processes": 2, "parallel_folds": False,
                                  "global_train_batch_size": 8}
    # the losses of the one-process run
    one = _digest(tmp_path / "d1")
    for a, b in zip(one["fold_metrics"], rank0["fold_metrics"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)  # not 2x, and not the padded shards' mean
    for a, b in zip(one["train_metrics"], rank0["train_metrics"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    for history, train in zip(rank0["log_history"], rank0["train_metrics"], strict=True):
        steps = [h["loss"] for h in history if "loss" in h and h["epoch"] <= 1.0]
        assert len(steps) == 3  # 18 rows, 2 processes x 4 rows per step (the last step padded with repeated rows)
        assert np.mean(steps) == pytest.approx(train["loss"], rel=0.05)
        assert not np.mean(steps) == pytest.approx(2 * train["loss"], rel=0.3)  # what a doubled loss would be


def test_the_recipe_default_path_on_two_processes_reports_the_loss_of_its_predictions(tmp_path):
    """The README's 2-process command on the recipe's default path (linear probe, frozen-feature cache)."""
    out = tmp_path / "run"
    launcher = Path(sys.executable).with_name("accelerate")
    proc = _run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                 str(ROOT / "recipes" / "vit_kfold.py"), "--use_cpu", "--ddp_backend", "gloo",
                 "--dataset_name", "builtin:digits", "--max_samples", "90", "--image_size", "32", "--n_folds", "3",
                 "--num_train_epochs", "2", "--output_dir", str(out), "--disable_tqdm", "true",
                 "--save_fold_models", "false"])
    results = json.loads((out / "cv_results.json").read_text())
    assert results["metadata"]["processes"] == {"world_size": 2, "fold_processes": 2, "parallel_folds": False,
                                                "global_train_batch_size": 64}
    entropy = oof_cross_entropy(pd.read_parquet(out / "oof_predictions.parquet"))
    for fold in results["folds"]:
        assert fold["eval_metrics"]["loss"] == pytest.approx(entropy[(fold["repeat"], fold["fold"])], rel=1e-4)
    printed = proc.stdout + proc.stderr
    assert "2 processes, each fold on 2 processes (DDP); global train batch 64" in printed
    assert "the global batch is 64 rows (32 per device x 2 processes" in printed
    assert printed.count("gets a new classification head") == 1  # said once, by the main process
