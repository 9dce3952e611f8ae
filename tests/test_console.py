"""The console of a run: one progress display, one line per finished fold, then the summary; messages said only when
they are true (issue 23, items 7-9)."""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from conftest import dataset_for, image_dataset, make_config, tiny_model
from transformers.utils import logging as hf_logging

from hf_tlcv import KFoldTrainer
from hf_tlcv.console import fold_line, quiet_libraries
from hf_tlcv.trainer import ddp_batch_warning

ROOT = Path(__file__).resolve().parents[1]
FOLD_LINE = re.compile(r"^fold_\d+_\d+: ")
# A tqdm bar as it is redrawn: "<description>: 40%|████      | 2/5 [...]" (no description: the Trainer's own bars).
BAR = re.compile(r"^(?P<desc>[^|\n]*?):?\s*\d+%\|")


def _bars(err: str) -> set[str]:
    """The descriptions of the progress bars drawn on `err` (tqdm redraws with carriage returns)."""
    return {m.group("desc").strip() for line in re.split(r"[\r\n]", err) if (m := BAR.match(line.strip()))}


@pytest.fixture(autouse=True)
def no_full_gc(monkeypatch):
    """Each fold ends with a full gc.collect() (~0.6 s in a process holding torch): these tests read the console,
    not memory release, so they skip it."""
    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)


@pytest.fixture
def hf_tlcv_logs(caplog):
    caplog.set_level(logging.INFO, logger="hf_tlcv")
    return caplog


# ---- item 7: the console of a cross-validation ---------------------------------------------------------------------
@pytest.mark.parametrize("disable_tqdm", [False, True])  # the Trainer prints through ProgressCallback / PrinterCallback
def test_a_default_run_prints_one_line_per_fold_and_no_step_dictionaries(disable_tqdm, tmp_path, capfd):
    datasets_quiet, transformers_bars = datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    args = make_config(tmp_path / "cv", disable_tqdm=disable_tqdm, logging_steps=1, n_folds=2, num_train_epochs=1)
    results = KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset()).cross_validate()
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert "{'loss'" not in out + err and "train_runtime" not in out + err
    assert len(lines) == 2 and all(FOLD_LINE.match(line) for line in lines), out
    assert [line.split(":")[0] for line in lines] == ["fold_0_0", "fold_0_1"]
    assert "accuracy" in lines[0] and f"{results.folds[0].eval_metrics['accuracy']:.4f}" in lines[0]
    assert _bars(err) == (set() if disable_tqdm else {"Cross-validation folds"})  # no bar of the fold Trainers
    # Nothing is lost: each fold's step logs are in its log history (and so in fold_result.json).
    assert all(sum("loss" in entry for entry in fold.log_history) >= 2 for fold in results.folds)
    # The libraries' switches are as they were before the run.
    assert (datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()) == (datasets_quiet,
                                                                                              transformers_bars)


def test_trainer_console_output_brings_the_trainers_own_output_back(tmp_path, capfd):
    args = make_config(tmp_path / "cv", disable_tqdm=False, logging_steps=1, trainer_console_output=True, n_folds=2,
                       num_train_epochs=1)
    KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset()).cross_validate()
    out, err = capfd.readouterr()
    assert (out + err).count("{'loss'") >= 4 and "train_runtime" in out + err
    assert "" in _bars(err)  # the fold Trainers' own step bars, without a description
    assert sum(bool(FOLD_LINE.match(line)) for line in out.splitlines()) == 2


def test_the_libraries_bars_are_off_only_inside_the_run(capfd):
    before = datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    with pytest.raises(KeyboardInterrupt), quiet_libraries():
        assert datasets.are_progress_bars_disabled() and not hf_logging.is_progress_bar_enabled()
        datasets.Dataset.from_dict({"x": list(range(5))}).map(lambda r: r, desc="Quiet map")
        raise KeyboardInterrupt
    assert (datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()) == before
    assert "Quiet map" not in capfd.readouterr().err
    with quiet_libraries(False):
        assert (datasets.are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()) == before


@pytest.mark.parametrize("metrics, resumed, expected", [
    ({"accuracy": 0.75, "f1": 0.5, "loss": 0.6931, "precision": 0.1}, False, "fold_0_1: accuracy 0.7500  f1 0.5000  "
                                                                             "loss 0.6931  (1.5 s)"),
    ({"mae": 0.25, "note": "x"}, True, "fold_0_1: mae 0.2500  (read back from an earlier run)"),
])
def test_a_fold_line_names_the_fold_and_its_main_metrics(metrics, resumed, expected):
    assert fold_line("fold_0_1", metrics, resumed, 1.5) == expected


@pytest.mark.integration
def test_the_text_recipe_prints_one_line_per_fold_and_one_progress_display(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_TLCV_FEATURE_CACHE": str(tmp_path / "fc")}
    command = [sys.executable, str(ROOT / "recipes" / "text_kfold.py"), "--output_dir", str(tmp_path / "run"),
               "--max_samples", "120", "--n_folds", "3", "--num_train_epochs", "1", "--max_length", "16",
               "--eval_on_train", "false"]
    done = subprocess.run(command, capture_output=True, env=env, cwd=tmp_path, timeout=600)
    out, err = done.stdout.decode(), done.stderr.decode()  # bytes: text mode would turn the bars' "\r" into "\n"
    assert done.returncode == 0, err[-3000:]
    assert "{'loss'" not in out + err and "train_runtime" not in out + err
    assert sum(bool(FOLD_LINE.match(line)) for line in out.splitlines()) == 3
    summary = out[out.index("Summary over"):].splitlines()
    assert len(out.splitlines()) <= 3 + len(summary) + 10, out
    # One display: the frozen-feature cache's bar gives its line to the fold bar; no library or Trainer bars.
    assert _bars(err) <= {"Frozen-feature cache (frozen layers, once for all folds)", "Cross-validation folds"}, err
    # Lines as a terminal keeps them (bars redraw with carriage returns): the head line, the cache line, the display.
    assert err.count("\n") <= 3, err


# ---- item 9: messages said only when true --------------------------------------------------------------------------
def test_the_feature_cache_says_running_only_when_the_frozen_layers_run(tmp_path, monkeypatch, hf_tlcv_logs):
    monkeypatch.setenv("HF_TLCV_FEATURE_CACHE", str(tmp_path / "fc"))
    said = []
    for run in ("first", "second"):
        hf_tlcv_logs.clear()
        args = make_config(tmp_path / run, finetune_strategy="linear_probe", feature_cache="disk", disable_tqdm=False,
                           n_folds=2, num_train_epochs=1)
        trainer = KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset())
        trainer.cross_validate()
        said.append((hf_tlcv_logs.text, trainer.feature_cache.reused))
    (first, first_reused), (second, second_reused) = said
    assert not first_reused and "running the frozen layers of the model once over 36 rows" in first
    assert "reusing" not in first
    assert second_reused and "reusing the frozen layers' output for 36 rows" in second
    assert "running the frozen layers" not in second


def test_loading_and_predicting_with_a_fold_ensemble_says_no_untrue_thing(tmp_path, capfd, hf_tlcv_logs):
    from test_ensemble import save_base

    from hf_tlcv import KFoldEnsemble

    base = save_base(tmp_path / "base", "bert")
    tiny_model("bert", num_labels=2).save_pretrained(base)  # a 2-class head: the 3 classes need a new one
    args = make_config(tmp_path / "cv", finetune_strategy="linear_probe", save_fold_models=True, n_folds=2,
                       num_train_epochs=1, max_length=8)
    KFoldTrainer(base, args, train_dataset=dataset_for("bert")).cross_validate()
    assert "gets a new classification head for 3 classes" in hf_tlcv_logs.text  # true here: the head is new
    capfd.readouterr()
    hf_tlcv_logs.clear()
    previous = datasets.are_progress_bars_disabled()
    datasets.enable_progress_bars()  # the predict bar is drawn: its words are what is checked
    try:
        ensemble = KFoldEnsemble.from_pretrained(tmp_path / "cv")
        ensemble(datasets.Dataset.from_dict({"text": ["w1 w2 w3", "w40 w41", "w50"]}))
    finally:
        if previous:
            datasets.disable_progress_bars()
    shown = hf_tlcv_logs.text + "".join(capfd.readouterr())
    assert "new classification head" not in shown and "replaced" not in shown
    assert "once for all folds" not in shown and "Preprocessing the rows to predict" in shown


@pytest.mark.parametrize("per_device, accumulation, processes, devices, one_process, warned", [
    (32, 1, 2, 1, 32, True),    # the user's batch of 32 on 2 processes: 64 rows a step, the warning is true
    (16, 1, 2, 1, 32, False),   # its advice followed: 2 x 16 = the one-process 32
    (8, 2, 2, 1, 32, False),    # 8 x 2 processes x 2 accumulation = 32
    (16, 1, 4, 1, 32, True),    # 4 x 16 = 64
    (32, 1, 1, 1, 32, False),   # one process per fold (one process, or parallel_folds): nothing to say
    (8, 1, 2, 2, 32, False),    # 8 x 2 GPUs x 2 processes = 32
])
def test_the_ddp_batch_warning_is_said_only_when_the_global_batch_differs(per_device, accumulation, processes,
                                                                            devices, one_process, warned):
    message = ddp_batch_warning(per_device, accumulation, processes, devices, one_process)
    assert (message is not None) == warned
    if warned:
        global_batch = per_device * accumulation * processes * devices
        assert f"the global batch is {global_batch} rows" in message
        assert f"not the one-process batch of {per_device * accumulation * devices} rows" in message


# ---- item 8: Ctrl-C during a search --------------------------------------------------------------------------------
@pytest.mark.integration
def test_ctrl_c_during_a_search_says_one_line_and_the_search_resumes(tmp_path, capfd, caplog, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from transformers import TrainerCallback

    from hf_tlcv.search.run import INTERRUPTED_ATTR

    class CtrlCOnThirdFold(TrainerCallback):  # trial 0 has 2 folds: the interrupt comes in trial 1
        folds = 0

        def on_fold_end(self, args, state, control, **kwargs):
            type(self).folds += 1
            if type(self).folds == 3:
                raise KeyboardInterrupt

    monkeypatch.setenv("HF_TLCV_FEATURE_CACHE", str(tmp_path / "fc"))
    caplog.set_level(logging.WARNING)
    out = tmp_path / "search"
    verbosity = optuna.logging.get_verbosity()
    trainer = KFoldTrainer(tiny_model("vit"), make_config(out, n_folds=2, num_train_epochs=1, eval_on_train=False),
                           train_dataset=image_dataset(), callbacks=[CtrlCOnThirdFold()])

    def space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)}

    nop = optuna.pruners.NopPruner()  # every trial completes: the count below is the search's, not the pruner's
    with pytest.raises(KeyboardInterrupt):
        trainer.hyperparameter_search(hp_space=space, n_trials=3, pruner=nop)
    shown = "".join(capfd.readouterr()) + caplog.text
    assert "Traceback" not in shown and "failed" not in shown and "KeyboardInterrupt" not in shown, shown
    assert shown.count("Interrupted:") == 1 and "run the same search again to resume from there" in shown
    assert "trial 0, fold_0_1: accuracy" in shown  # a trial's fold lines say which trial they belong to
    assert optuna.logging.get_verbosity() == verbosity  # Optuna's own logging is as it was

    study = optuna.load_study(study_name="hf_tlcv", storage=f"sqlite:///{out / 'search.db'}")
    interrupted = study.trials[1]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs[INTERRUPTED_ATTR]
    CtrlCOnThirdFold.folds = -100  # no more interrupts: the same call resumes
    best = trainer.hyperparameter_search(hp_space=space, n_trials=3, pruner=nop)
    study = optuna.load_study(study_name="hf_tlcv", storage=f"sqlite:///{out / 'search.db'}")
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 3 and best.run_summary is not None
    assert any(t.params == interrupted.params for t in finished)  # the interrupted trial ran again, same settings


@pytest.mark.slow
def test_the_ddp_batch_warning_is_not_repeated_once_its_advice_is_followed(tmp_path):
    """2 processes x 16 rows = the recipe's one-process 32: the launch is not warned; 2 x 32 = 64 is."""
    import socket

    from conftest import subprocess_env

    def launch(per_device: int) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                   str(port), str(ROOT / "recipes" / "vit_kfold.py"), "--use_cpu", "--ddp_backend", "gloo",
                   "--dataset_name", "builtin:digits", "--max_samples", "60", "--image_size", "32", "--n_folds", "2",
                   "--num_train_epochs", "1", "--eval_on_train", "false", "--save_fold_models", "false",
                   "--per_device_train_batch_size", str(per_device), "--output_dir", str(tmp_path / f"b{per_device}")]
        done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, timeout=600)
        printed = done.stdout.decode() + done.stderr.decode()
        assert done.returncode == 0, printed[-3000:]
        return printed

    followed, default = launch(16), launch(32)
    assert "global train batch 32" in followed and "the global batch is" not in followed
    assert "the global batch is 64 rows (32 per device x 2 processes" in default
    assert "not the one-process batch of 32 rows" in default
