"""Fold jobs and trials on Ray (hf_tlcv.execution.RayExecutor, backend="ray"): a local 2-CPU cluster runs two fold
jobs at once with the results of the sequential run, and Ray Tune completes a small search on the folds."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import image_dataset, make_config, tiny_model
from transformers import TrainerCallback

import hf_tlcv.execution
from hf_tlcv import KFoldTrainer
from hf_tlcv.execution import RayExecutor, in_memory, in_memory_job

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module (started once: a few seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")  # no token authentication for a cluster of this test only
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()


@pytest.fixture
def by_value():
    """This module's callbacks travel to Ray workers by value (the workers cannot import the test module)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class Rendezvous(TrainerCallback):
    """Each fold, when it starts training, announces itself in `folder` and waits until another fold has started too:
    two folds pass only if they run at the same time. It records whom it met. `guard` seconds is only a hang guard
    (folds that never run at once would wait forever): it fails the fold with what it saw."""

    def __init__(self, folder: str, guard: float = 900):
        self.folder, self.guard = folder, guard

    def on_train_begin(self, args, state, control, **kwargs):
        folder, name = Path(self.folder), Path(args.output_dir).name
        (folder / f"{name}.start").write_text(str(os.getpid()))
        start = time.monotonic()
        while len(list(folder.glob("*.start"))) < 2:
            if time.monotonic() - start > self.guard:
                raise TimeoutError(f"{name} ran alone for {self.guard} s: no other fold started beside it")
            time.sleep(0.2)
        met = sorted(p.stem for p in folder.glob("*.start") if p.stem != name)
        (folder / f"{name}.json").write_text(json.dumps({"pid": os.getpid(), "met": met}))


def test_in_memory_job_holds_every_dataset_in_memory(tmp_path):
    path = tmp_path / "rows"
    image_dataset().save_to_disk(str(path))
    import datasets

    on_disk = datasets.load_from_disk(str(path)).with_format("torch")
    assert on_disk.cache_files  # memory-mapped: pickles as a path of this machine
    rows = in_memory(on_disk.select([3, 1, 2]))
    assert not rows.cache_files and rows.format["type"] == "torch"
    assert np.array_equal(rows["label"], on_disk["label"][[3, 1, 2]])
    assert np.array_equal(np.asarray(rows["pixel_values"]), np.asarray(on_disk.select([3, 1, 2])["pixel_values"]))
    trainer = KFoldTrainer(tiny_model("vit"), make_config(tmp_path / "cv"), train_dataset=on_disk)
    job = in_memory_job(trainer.fold_jobs()[0])
    assert not job.dataset.cache_files and len(job.dataset) == len(on_disk)


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(hf_tlcv.execution, "ray_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'hf_tlcv\[ray\]'"):
        RayExecutor()


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_fold_jobs_run_at_once_on_ray_and_equal_the_sequential_run(ray_cluster, by_value, tmp_path):
    meet = tmp_path / "meet"
    meet.mkdir()
    args = make_config(tmp_path / "ray", n_folds=3, parallel_folds=True)  # one process: the folds go to Ray
    trainer = KFoldTrainer(tiny_model("vit"), args, train_dataset=image_dataset(),
                           callbacks=[Rendezvous(str(meet))])
    on_ray = trainer.cross_validate()
    records = {p.stem: json.loads(p.read_text()) for p in meet.glob("*.json")}
    assert sorted(records) == ["fold_0_0", "fold_0_1", "fold_0_2"]
    # two folds ran at the same time, in two processes: each met the other, neither in this process
    pairs = [(a, b) for a in records for b in records
             if a < b and b in records[a]["met"] and a in records[b]["met"]]
    assert pairs, records
    a, b = pairs[0]
    assert records[a]["pid"] != records[b]["pid"] and os.getpid() not in (records[a]["pid"], records[b]["pid"])
    # the sequential run in this process gives the same numbers
    sequential = KFoldTrainer(tiny_model("vit"), make_config(tmp_path / "here", n_folds=3),
                              train_dataset=image_dataset()).cross_validate()
    for x, y in zip(on_ray.folds, sequential.folds):
        assert x.eval_metrics.keys() == y.eval_metrics.keys()
        for key in x.eval_metrics:
            assert x.eval_metrics[key] == pytest.approx(y.eval_metrics[key], abs=1e-6), key
    pd.testing.assert_frame_equal(on_ray.oof_predictions, sequential.oof_predictions, atol=1e-6, rtol=0)
    assert ray.is_initialized()  # the executor joined the running cluster and left it running


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_ray_tune_backend_completes_a_small_search(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TLCV_FEATURE_CACHE", str(tmp_path / "feature_cache"))
    out = tmp_path / "search"
    trainer = KFoldTrainer(tiny_model("vit"), make_config(out, n_folds=2, num_train_epochs=1, eval_on_train=False),
                           train_dataset=image_dataset(n_per_class=8))

    def space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
                "finetune_strategy": trial.suggest_categorical("finetune_strategy", ["full", "linear_probe"])}

    best = trainer.hyperparameter_search(hp_space=space, n_trials=3, backend="ray",
                                         resources_per_trial={"cpu": 1})
    report = best.run_summary
    assert report.backend == "ray" and len(report.trials) == 3
    assert {r["state"] for r in report.trials} <= {"complete", "pruned"}
    means = {}
    for r in report.trials:  # every trial ran in its own folder on the search's folds
        scores = [json.loads(p.read_text())["eval_metrics"]["accuracy"]
                  for p in sorted((out / "trials" / str(r["run"])).glob("fold_*/fold_result.json"))]
        assert scores == pytest.approx(r["fold_scores"])
        if r["state"] == "complete":  # scored: the mean of all its folds
            assert len(scores) == 2 and r["value"] == pytest.approx(np.mean(scores))
            means[r["trial"]] = np.mean(scores)
        else:  # stopped by the scheduler after its first fold: never scored
            assert len(scores) == 1 and r["value"] is None
    top = max(means, key=lambda n: (means[n], -n))
    assert best.run_id == str(top) and best.objective == pytest.approx(means[top])
    # complete: the same call returns the same best trial without starting Ray Tune
    monkeypatch.setattr("hf_tlcv.search.run._run_ray_tune", lambda *a, **k: pytest.fail("ran Ray Tune again"))
    again = trainer.hyperparameter_search(hp_space=space, n_trials=3, backend="ray")
    assert (again.run_id, again.hyperparameters) == (best.run_id, best.hyperparameters)
