"""parallel_folds: whole folds per process under accelerate launch, with the results of a one-process run.

The multi-process runs launch `tests/scripts/cv_run.py` (2 CPU ranks on gloo) and compare the digests each process
writes; the rest checks the configuration field and the pieces in `hf_tlcv.execution` in this process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import HfArgumentParser

from conftest import image_dataset, load_recipe, make_config, oof_cross_entropy, subprocess_env, tiny_model
from scripts.write_audit import attribute, written_by
from hf_tlcv import KFoldConfig, KFoldTrainer
from hf_tlcv.execution import deal_folds, one_device_environment

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "cv_run.py"


# ---- configuration and the pieces, in this process -------------------------------------------------------------
def test_parallel_folds_parses_from_the_command_line(tmp_path):
    (config,) = HfArgumentParser(KFoldConfig).parse_args_into_dataclasses(
        args=["--output_dir", str(tmp_path), "--parallel_folds", "--use_cpu"])
    assert config.parallel_folds is True
    (config,) = HfArgumentParser(KFoldConfig).parse_args_into_dataclasses(args=["--output_dir", str(tmp_path)])
    assert config.parallel_folds is False


def test_recipe_accepts_parallel_folds():
    recipe = load_recipe("vit_kfold")
    _, config = recipe.make_parser().parse_args_into_dataclasses(args=["--parallel_folds", "--use_cpu"])
    assert config.parallel_folds is True and config.finetune_strategy == "linear_probe"


def test_parallel_folds_does_not_change_the_resume_fingerprint(tmp_path):
    # a run started with DDP may be finished with parallel folds and the other way round
    assert (make_config(tmp_path, parallel_folds=True).result_fingerprint_dict()
            == make_config(tmp_path, parallel_folds=False).result_fingerprint_dict())


@pytest.mark.parametrize("sharding", [{"fsdp": "full_shard"}, {"deepspeed": {"train_batch_size": 8}}])
def test_parallel_folds_refuses_sharded_training(tmp_path, sharding):
    with pytest.raises(ValueError, match="parallel_folds"):
        make_config(tmp_path, parallel_folds=True, **sharding)


def test_trainer_refuses_parallel_folds_for_a_model_spread_over_devices(tmp_path, monkeypatch):
    trainer = KFoldTrainer(model=tiny_model("vit"), args=make_config(tmp_path, parallel_folds=True),
                           train_dataset=image_dataset())
    trainer._check_parallel_folds()  # one process: nothing to refuse
    # as seen under a 2-process launch of a model dispatched over several GPUs (device_map="auto")
    monkeypatch.setattr(KFoldConfig, "world_size", property(lambda self: 2))
    monkeypatch.setattr(trainer, "is_model_parallel", True)
    with pytest.raises(ValueError, match="parallel_folds=True trains each fold whole.*split over several devices"):
        trainer._check_parallel_folds()


@pytest.mark.parametrize("pending, world_size, rounds", [
    ([0, 1, 2], 2, [[0, 1], [2]]),
    ([1, 2, 4, 5], 2, [[1, 2], [4, 5]]),
    ([3], 4, [[3]]),
    ([], 2, []),
    ([0, 1, 2], 1, [[0], [1], [2]]),
])
def test_deal_folds_round_robin(pending, world_size, rounds):
    assert deal_folds(pending, world_size) == rounds


def test_worker_environment_is_a_one_process_run_on_one_device(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    environment = one_device_environment("cuda:1")
    # every launch variable removed, only the process's own GPU visible (mapped through CUDA_VISIBLE_DEVICES)
    assert all(environment[k] is None for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"))
    assert environment["CUDA_VISIBLE_DEVICES"] == "6"
    assert "CUDA_VISIBLE_DEVICES" not in one_device_environment("cpu")


# ---- two processes under accelerate launch ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cv_run(out: Path, digests: Path, *extra: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    """`cv_run.py` with `parallel_folds` in 2 DDP ranks on CPU (gloo)."""
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(_free_port()), str(SCRIPT), "--output_dir", str(out), "--digest_dir", str(digests), *extra, "--ddp",
           "--parallel_folds"]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _digest(directory: Path, rank: int = 0) -> dict:
    return json.loads((directory / f"rank_{rank}.json").read_text())


def _assert_same_results(reference: dict, other: dict) -> None:
    assert other["folds_fingerprint"] == reference["folds_fingerprint"]
    assert other["oof_rows"] == reference["oof_rows"]
    np.testing.assert_allclose(other["oof_probs"], reference["oof_probs"], rtol=0, atol=1e-6)
    for ref, got in zip(reference["fold_metrics"], other["fold_metrics"], strict=True):
        assert got.keys() == ref.keys()
        for key in ref:
            assert got[key] == pytest.approx(ref[key], rel=0, abs=1e-6), key
    assert other["oof_metrics"] == pytest.approx(reference["oof_metrics"], rel=0, abs=1e-6)


def _trained(digest: dict) -> list[str]:
    return [t["fold"] for t in digest["trained"]]


@pytest.mark.slow
def test_parallel_folds_match_the_one_process_run_and_resume(tmp_path, one_process_cv_run):
    sequential = one_process_cv_run
    assert [t["max_steps"] for t in sequential["trained"]] == [18, 18, 18]
    out = tmp_path / "par"

    # Round 1 deals fold_0_0 to rank 0 and fold_0_1 to rank 1, which fails at step 5 (after checkpoint-4): both
    # processes stop with the error instead of waiting for each other; rank 0's finished fold is kept.
    proc = _cv_run(out, tmp_path / "d_fail", "--fail_fold", "fold_0_1", expect_ok=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "planned failure in fold_0_1" in log and "fold fold_0_1 failed on another process" in log
    assert (out / "fold_0_0" / "fold_result.json").exists() and (out / "fold_0_1" / "checkpoint-4").is_dir()
    assert not (out / "fold_0_1" / "fold_result.json").exists() and not (out / "cv_results.json").exists()

    # Resume, with rank 1 unable to see the shared folder (it saves its results elsewhere): the interrupted fold
    # is trained again from its start and the remaining ones are dealt round-robin; the main process saves what
    # rank 1 sends. Rank 1's fold is held until rank 0 has finished its own fold and then for longer than the launch's
    # collective timeout (ddp_timeout, 10 s here): rank 0 waits for it all the same.
    private = tmp_path / "rank1_private"
    _cv_run(out, tmp_path / "d_par", "--rank1_private_dir", str(private), "--ddp_timeout", "10",
            "--slow_fold", "fold_0_2", "--slow_after", "fold_0_1", "--slow_seconds", "12")
    rank0, rank1 = _digest(tmp_path / "d_par", 0), _digest(tmp_path / "d_par", 1)
    assert rank0["world_size"] == rank1["world_size"] == 2
    for digest in (rank0, rank1):
        _assert_same_results(sequential, digest)
    # every reported loss is the cross-entropy of the saved predictions
    entropy = oof_cross_entropy(pd.read_parquet(out / "oof_predictions.parquet"))
    for i, metrics in enumerate(rank0["fold_metrics"]):
        assert metrics["loss"] == pytest.approx(entropy[(0, i)], rel=1e-5)
    assert rank0["processes"] == {"world_size": 2, "fold_processes": 1, "parallel_folds": True,
                                  "global_train_batch_size": 4}
    # whole folds, each trained as in a one-process run: world size 1 and every step (24 rows, batch 4, 3 epochs
    # = 18; a DDP rank would take 9)
    assert _trained(rank0) == ["fold_0_1"] and _trained(rank1) == ["fold_0_2"]
    assert all(t["world_size"] == 1 and t["max_steps"] == 18 for t in rank0["trained"] + rank1["trained"])
    # Who wrote what in the run folder, from every process of both launches (each rank and the worker it started):
    # rank 1 only ever wrote the checkpoints of the fold it trained (fold_0_1 in the first launch, which rank 0
    # later replaced, fold_0_2 now); its result went to its own folder, and rank 0 saved it in the run folder.
    logs = [tmp_path / "d_fail" / "writes", tmp_path / "d_par" / "writes"]
    writers = attribute(out, *logs)
    for log, fold in zip(logs, ("fold_0_1", "fold_0_2"), strict=True):
        rank1_wrote = written_by("rank1", log)
        assert any(p.startswith(f"{fold}/checkpoint-") for p in rank1_wrote), "the audit saw none of rank 1's writes"
        assert all(p == fold or p.startswith(f"{fold}/checkpoint-") for p in rank1_wrote), sorted(rank1_wrote)
    assert (private / "fold_0_2" / "fold_result.json").exists()
    rank1_fold = [p for p in writers if p == "fold_0_2" or p.startswith("fold_0_2/checkpoint-")]
    assert all(who <= {"rank0", "rank0.worker"} for p, who in writers.items() if p not in rank1_fold)
    assert {"cv_results.json", "oof_predictions.parquet", "README.md", "fold_0_2/fold_result.json",
            "fold_0_2/predictions.parquet"} <= writers.keys()
    assert (out / "fold_0_1" / "checkpoint-18").is_dir() and (out / "fold_0_2" / "checkpoint-18").is_dir()
    # every process hears of every fold, in fold order, once its files are saved, and as its real rank
    for rank, digest in enumerate((rank0, rank1)):
        assert [(e["fold"], e["resumed"]) for e in digest["events"]] == [
            ("fold_0_0", True), ("fold_0_1", False), ("fold_0_2", False)]
        assert all(e["saved"] and e["is_world_process_zero"] == (rank == 0) for e in digest["events"])

    # a finished parallel run resumes without training anything; rank 1 writes nothing
    _cv_run(out, tmp_path / "d_again")
    assert written_by("rank1", tmp_path / "d_again" / "writes") == set()
    assert attribute(out, *logs, tmp_path / "d_again" / "writes").keys() == writers.keys()
    for rank in (0, 1):
        digest = _digest(tmp_path / "d_again", rank)
        assert digest["trained"] == []
        assert all(e["resumed"] for e in digest["events"])
        _assert_same_results(sequential, digest)
