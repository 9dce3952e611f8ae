"""The overfitting detector: per-epoch curves from log histories, its two rules on synthetic histories, and real
runs (one forced to overfit: tiny data with shuffled labels, many epochs; one healthy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import image_dataset, make_config, tiny_model

from hf_tlcv import TransferStudy
from hf_tlcv.studies.overfitting import detect_overfitting, loss_curves


def history(train: list[float], evals: list[float], steps_per_epoch: int = 1) -> list[dict]:
    """A Trainer-like log history: `steps_per_epoch` train-loss logs per epoch, then that epoch's eval loss."""
    out = []
    for e, (t, v) in enumerate(zip(train, evals), start=1):
        for s in range(1, steps_per_epoch + 1):
            out.append({"loss": t, "epoch": e - 1 + s / steps_per_epoch, "step": e * steps_per_epoch + s})
        out.append({"eval_loss": v, "eval_accuracy": 0.5, "eval_runtime": 0.1, "epoch": float(e)})
    out.append({"train_runtime": 1.0, "train_loss": float(np.mean(train)), "epoch": float(len(train))})
    return out


def test_loss_curves_average_train_logs_within_each_epoch():
    logs = [{"loss": 1.0, "epoch": 0.5}, {"loss": 0.6, "epoch": 1.0}, {"eval_loss": 0.9, "eval_accuracy": 0.7,
                                                                       "epoch": 1.0},
            {"loss": 0.4, "epoch": 1.5}, {"train_runtime": 3.0, "train_loss": 0.7, "epoch": 2.0}]
    curves = loss_curves(logs)
    assert curves.epochs == [1, 2]
    assert curves.train_loss == pytest.approx([0.8, 0.4])
    assert curves.eval_loss[0] == 0.9 and math.isnan(curves.eval_loss[1])
    assert curves.eval_metrics[0] == {"accuracy": 0.7}


CASES = {
    # name: (train losses, eval losses, train acc, eval acc, flagged, onset epoch)
    "healthy: both fall": ([1.0, 0.7, 0.5, 0.4], [1.0, 0.8, 0.7, 0.65], 0.9, 0.88, False, None),
    "eval rises while train falls": ([1.0, 0.6, 0.3, 0.1], [0.9, 0.7, 0.8, 1.1], 0.95, 0.9, True, 3),
    "eval rise within tolerance": ([1.0, 0.6, 0.3, 0.1], [0.9, 0.7, 0.72, 0.74], 0.95, 0.9, False, None),
    "both rise (divergence, not overfitting)": ([0.5, 0.7, 1.0, 1.5], [0.6, 0.8, 1.2, 1.6], 0.5, 0.5, False, None),
    "large gap only": ([1.0, 0.7, 0.5, 0.4], [1.0, 0.8, 0.7, 0.65], 1.0, 0.7, True, None),
    "eval best at the end": ([1.0, 0.6, 0.3, 0.1], [1.2, 0.9, 1.0, 0.85], 0.95, 0.9, False, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_detector_rules_on_synthetic_histories(case):
    train, evals, train_acc, eval_acc, flagged, onset = CASES[case]
    d = detect_overfitting(history(train, evals, steps_per_epoch=2), {"accuracy": train_acc},
                           {"accuracy": eval_acc}, fold="fold_0_0")
    assert d.overfitting is flagged, d.reasons
    assert d.onset_epoch == onset
    assert d.gap == pytest.approx(train_acc - eval_acc)
    if onset is not None:
        assert d.best_epoch == onset - 1
        assert f"from epoch {onset}" in d.reasons[0] and f"{min(evals):.3f}" in d.reasons[0]


def test_detector_thresholds_are_the_users():
    logs = history([1.0, 0.5, 0.2], [0.8, 0.7, 0.75])  # +7% rise
    assert not detect_overfitting(logs).overfitting
    assert detect_overfitting(logs, loss_rise=0.05).onset_epoch == 3
    assert detect_overfitting([], {"accuracy": 0.9}, {"accuracy": 0.85}, gap_threshold=0.01).overfitting
    with pytest.raises(ValueError, match="gap_threshold"):
        detect_overfitting([], gap_threshold=-1)


def _overfitting_study(tmp_path, name, data, **overrides):
    args = make_config(tmp_path / name, n_folds=2, logging_strategy="epoch", **overrides)
    return TransferStudy(tiny_model("vit"), data, args, questions="overfitting").run()


def test_forced_overfitting_is_flagged_and_a_healthy_run_is_not(tmp_path, monkeypatch):
    # the runs' own cross-validation plots are not under test here
    monkeypatch.setattr("hf_tlcv.plots.cv.save_plots", lambda results, directory: {})
    # Forced: 12 rows whose labels are shuffled (nothing to learn but the rows themselves), 8 epochs.
    noise = image_dataset(n_per_class=4)
    rng = np.random.default_rng(1)
    noise = noise.map(lambda b: {"label": rng.permutation(b["label"])}, batched=True, batch_size=None)
    forced = _overfitting_study(tmp_path, "forced", noise, num_train_epochs=8, learning_rate=5e-3)
    verdict = forced.verdict("overfitting")
    assert verdict.numbers["n_flagged"] == verdict.numbers["n_folds"] == 2
    for d in forced.overfitting["base"]:
        assert d["overfitting"] and d["onset_epoch"] is not None and d["onset_epoch"] <= 8
        assert d["eval_loss_last"] > d["eval_loss_min"] and d["train_loss_last"] < d["train_loss_at_best"]
        assert f"from epoch {d['onset_epoch']}" in verdict.text
    # per-epoch eval losses came from the study's eval_strategy="epoch"
    assert sum("eval_loss" in e for e in forced.variants["base"].folds[0].log_history) == 8

    healthy = _overfitting_study(tmp_path, "healthy", image_dataset(n_per_class=12), num_train_epochs=3)
    verdict = healthy.verdict("overfitting")
    assert verdict.numbers["n_flagged"] == 0, verdict.text
    assert verdict.text.startswith("No overfitting in any of the 2 folds")
