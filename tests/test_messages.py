"""What a user sees: no silent stalls (the feature cache and resume say what they do), a clean interrupt, none of
transformers' alarming noise when the head is replaced on purpose, a fast offline error, options named as typed."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import image_dataset, load_recipe, make_config, subprocess_env, tiny_model

from hf_tlcv import KFoldConfig, KFoldTrainer
from hf_tlcv.sources import HubUnreachableError, load_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hf_tlcv_logs(caplog):
    caplog.set_level(logging.INFO, logger="hf_tlcv")
    return caplog


def _digits(n=60):
    return load_data("builtin:digits").shuffle(seed=0).select(range(n))


@pytest.mark.integration  # the embedded EfficientNet-Lite0
def test_the_feature_cache_is_its_own_step_with_a_progress_bar(tmp_path, capsys, hf_tlcv_logs):
    args = make_config(tmp_path / "cv", n_folds=2, num_train_epochs=1, finetune_strategy="linear_probe",
                       image_size=32, disable_tqdm=False)
    KFoldTrainer("builtin:efficientnet-lite0", args, train_dataset=_digits()).cross_validate()
    err = capsys.readouterr().err
    # The bar is drawn over the 60 rows (it is cleared when done, leave=False: its last frame depends on the clock)
    assert "Frozen-feature cache (frozen layers, once for all folds)" in err and "0/60" in err
    assert "running the frozen layers of the model once over 60 rows" in hf_tlcv_logs.text


@pytest.mark.integration  # the embedded EfficientNet-Lite0
def test_replacing_the_head_is_said_once_in_our_words(tmp_path, capfd, hf_tlcv_logs):
    caplog_all = hf_tlcv_logs
    caplog_all.set_level(logging.WARNING)
    args = make_config(tmp_path / "cv", n_folds=2, num_train_epochs=1, finetune_strategy="linear_probe",
                       image_size=32, eval_on_train=False)
    KFoldTrainer("builtin:efficientnet-lite0", args, train_dataset=_digits()).cross_validate()
    captured = capfd.readouterr()  # file descriptors: transformers' handler and torch's warnings included
    everything = captured.out + captured.err + caplog_all.text
    assert "LOAD REPORT" not in everything and "MISMATCH" not in everything
    assert "incompatible with the `id2label`" not in everything and "pin_memory" not in everything
    assert caplog_all.text.count("gets a new classification head for 10 classes") == 1


def test_a_real_loading_problem_is_still_reported(tmp_path, capfd, caplog):
    """Only the head is allowed to be new: weights missing from the backbone are shown in full."""
    from safetensors.torch import load_file, save_file

    from hf_tlcv.modeling import load_classifier

    folder = tmp_path / "damaged"
    tiny_model("vit").save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "encoder.layer.1." not in k}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    capfd.readouterr()
    load_classifier(str(folder), None, 3)
    shown = capfd.readouterr().err + caplog.text  # transformers' own handler, or the log capture, gets it
    assert "LOAD REPORT" in shown and "MISSING" in shown and "layers.1" in shown


def test_resuming_says_which_folds_were_read_back(tmp_path, hf_tlcv_logs):
    args = make_config(tmp_path / "cv", n_folds=3, num_train_epochs=1)
    KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset()).cross_validate()
    hf_tlcv_logs.clear()
    KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset()).cross_validate()
    assert "3 finished fold(s) read back (fold_0_0, fold_0_1, fold_0_2); 0 to train" in hf_tlcv_logs.text


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_folds_and_says_how_to_resume(tmp_path, hf_tlcv_logs):
    """Ctrl-C lands in the second fold (the run sends SIGINT to itself at that fold's first step, so the outcome does
    not depend on the machine's speed): the first fold is kept, the interrupted one is not trusted, exit status 130
    and one line on how to resume; the same command then finishes with the results of a run never interrupted."""
    from hf_tlcv.recipe import cli

    out, reference, printed = tmp_path / "run", tmp_path / "reference", tmp_path / "interrupted.txt"
    options = ["--dataset_name", "builtin:digits", "--max_samples", "80", "--image_size", "32", "--n_folds", "2",
               "--finetune_strategy", "full", "--num_train_epochs", "1", "--disable_tqdm", "true",
               "--eval_on_train", "false", "--save_fold_models", "false"]
    with open(printed, "w") as sink:
        interrupted = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "scripts" / "interrupted_recipe.py"), "fold_0_1", "1", *options,
             "--output_dir", str(out)], cwd=ROOT, env=subprocess_env(), stdout=sink, stderr=subprocess.STDOUT)
    recipe = load_recipe("vit_kfold")
    with torch_threads(1):  # as in the subprocess, so that the numbers can be compared exactly
        # meanwhile, here, the uninterrupted run the resumed one must reproduce
        assert cli(recipe.make_parser, [*options, "--output_dir", str(reference)]) == 0
        assert interrupted.wait(timeout=600) == 130, printed.read_text()[-3000:]
        output = printed.read_text()
        assert "Traceback" not in output and "KeyboardInterrupt" not in output
        assert (out / "fold_0_0" / "fold_result.json").exists()
        assert not (out / "fold_0_1" / "fold_result.json").exists()
        assert not (out / "cv_results.json").exists()
        (said,) = [line for line in output.splitlines() if "Interrupted:" in line]
        assert f"Interrupted: the 1 finished fold(s) are kept in {out}; run the same command again to resume" in said
        kept = (out / "fold_0_0" / "fold_result.json").read_bytes()

        hf_tlcv_logs.clear()
        assert cli(recipe.make_parser, [*options, "--output_dir", str(out)]) == 0  # the same command again
    assert "1 finished fold(s) read back (fold_0_0); 1 to train" in hf_tlcv_logs.text
    assert (out / "fold_0_0" / "fold_result.json").read_bytes() == kept  # read back, not trained again
    pd.testing.assert_frame_equal(pd.read_parquet(out / "oof_predictions.parquet"),
                                  pd.read_parquet(reference / "oof_predictions.parquet"), rtol=0, atol=1e-6)
    got, want = (json.loads((d / "cv_results.json").read_text())["folds"] for d in (out, reference))
    for a, b in zip(got, want, strict=True):
        for key in ("accuracy", "loss"):
            assert a["eval_metrics"][key] == pytest.approx(b["eval_metrics"][key], rel=0, abs=1e-6), key


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_a_hub_id_fails_fast_when_the_hub_is_unreachable(monkeypatch):
    """No retry loop: the socket probe answers before huggingface_hub starts its backoff."""
    import socket

    from huggingface_hub import constants

    from hf_tlcv import sources
    from hf_tlcv.modeling import load_classifier

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(sources, "_REACHABLE", {})

    def no_sleep(seconds):
        raise AssertionError(f"retried (slept {seconds} s) instead of failing fast")

    monkeypatch.setattr(time, "sleep", no_sleep)
    with pytest.raises(HubUnreachableError, match="someone/not-cached-model"):
        load_classifier("someone/not-cached-model", None, 2)
    with pytest.raises(HubUnreachableError, match="someone/not-cached-data"):
        load_data("someone/not-cached-data")


def test_errors_name_options_as_the_user_typed_them(tmp_path):
    recipe = load_recipe("vit_kfold")
    from hf_tlcv.recipe import cli

    with pytest.raises(ValueError, match="--fold_strategy timeseries keeps rows in time order.*set --n_repeats 1"):
        cli(recipe.make_parser, ["--fold_strategy", "timeseries", "--n_repeats", "2", "--output_dir",
                                 str(tmp_path)])
    with pytest.raises(ValueError, match="fold_strategy='timeseries' keeps rows in time order.*set n_repeats=1"):
        KFoldConfig(output_dir=str(tmp_path), fold_strategy="timeseries", n_repeats=2)
    with pytest.raises(ValueError, match="--freeze_layers 3 only applies with --finetune_strategy freeze"):
        cli(recipe.make_parser, ["--freeze_layers", "3", "--output_dir", str(tmp_path)])


@pytest.mark.integration  # the embedded EfficientNet-Lite0
def test_the_recipe_summary_header_states_the_process_layout(tmp_path, capsys):
    recipe = load_recipe("vit_kfold")
    from hf_tlcv.recipe import cli

    out = tmp_path / "run"
    assert cli(recipe.make_parser, ["--dataset_name", "builtin:digits", "--max_samples", "60", "--n_folds", "2",
                                    "--num_train_epochs", "1", "--image_size", "32", "--output_dir", str(out),
                                    "--disable_tqdm", "true", "--save_fold_models", "false"]) == 0
    printed = capsys.readouterr().out
    assert "Summary over 2 folds (2-fold x 1 repeat(s)); 1 process; global train batch 32" in printed
    assert json.loads((out / "cv_results.json").read_text())["metadata"]["processes"]["global_train_batch_size"] == 32
