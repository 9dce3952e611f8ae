"""hf_tlcv.execution.run_fold_jobs, the one loop around every executor: finished folds read back, interrupted folders
cleared, results saved as they arrive and given in fold order (fast tier: fake jobs and results, no model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hf_tlcv.execution import FoldExecutor, InProcessExecutor, run_fold_jobs
from hf_tlcv.folds import Fold
from hf_tlcv.results import FoldResult
from hf_tlcv.run_dir import fold_is_complete


def _folds(n: int) -> list[Fold]:
    return [Fold(repeat=0, fold=k, train_indices=np.arange(k + 1), eval_indices=np.arange(k + 1, k + 2))
            for k in range(n)]


def _result(fold: Fold, score: float) -> FoldResult:
    return FoldResult(repeat=fold.repeat, fold=fold.fold, n_train=len(fold.train_indices),
                      n_eval=len(fold.eval_indices), eval_metrics={"accuracy": score},
                      predictions=pd.DataFrame({"row": fold.eval_indices, "label": [0], "prob_0": [score]}))


class Reversed(FoldExecutor):
    """Finishes the jobs last to first; records what was on disk each time a job ran."""

    def __init__(self, out):
        self.out, self.ran, self.seen_on_disk, self.closed = out, [], [], False

    def as_completed(self, jobs, keep=None):
        try:
            for index in reversed(range(len(jobs))):
                job = jobs[index]
                self.ran.append(job.fold.name)
                self.seen_on_disk.append(sorted(p.name for p in self.out.iterdir()))
                yield index, _result(job.fold, 0.5 + job.fold.fold / 10)
        finally:
            self.closed = True


def test_finished_folds_are_read_back_interrupted_ones_cleared_and_results_saved_as_they_arrive(tmp_path):
    folds = _folds(4)
    # fold_0_1 finished in an earlier run; fold_0_2 interrupted part-way (a checkpoint, no result file)
    _result(folds[1], 0.9).save(tmp_path / folds[1].name)
    (tmp_path / folds[2].name / "checkpoint-3").mkdir(parents=True)
    finished = [fold_is_complete(tmp_path / f.name) for f in folds]
    assert finished == [False, True, False, False]
    executor = Reversed(tmp_path)
    made, barriers = [], []
    steps = run_fold_jobs(folds, finished, tmp_path, lambda f: made.append(f.name) or SimpleNamespace(fold=f),
                          executor, barrier=lambda: barriers.append(1))

    fold, result, resumed = next(steps)  # fold_0_0 comes last from the executor: the others are saved by then
    assert (fold.name, resumed, result.eval_metrics) == ("fold_0_0", False, {"accuracy": 0.5})
    assert made == ["fold_0_0", "fold_0_2", "fold_0_3"]  # the finished fold gets no job
    assert executor.ran == ["fold_0_3", "fold_0_2", "fold_0_0"]
    # the interrupted folder was deleted before any fold ran
    assert executor.seen_on_disk[0] == ["fold_0_1"]
    # out-of-order arrivals were saved as they arrived, before the first fold was given
    assert all(fold_is_complete(tmp_path / name) for name in ("fold_0_0", "fold_0_2", "fold_0_3"))
    assert not (tmp_path / "fold_0_2" / "checkpoint-3").exists()
    assert FoldResult.load(tmp_path / "fold_0_3").eval_metrics == {"accuracy": 0.8}

    rest = [(f.name, r.eval_metrics["accuracy"], resumed) for f, r, resumed in steps]
    assert rest == [("fold_0_1", 0.9, True), ("fold_0_2", 0.7, False), ("fold_0_3", pytest.approx(0.8), False)]
    assert executor.closed
    assert len(barriers) == 1 + 3  # after the deletions, after each save


def test_a_process_other_than_the_main_one_deletes_and_saves_nothing(tmp_path):
    folds = _folds(2)
    (tmp_path / folds[0].name).mkdir()
    read = []
    steps = list(run_fold_jobs(folds, [False, False], tmp_path, lambda f: SimpleNamespace(fold=f),
                               Reversed(tmp_path), is_main=False, read=read.append))
    assert [(f.name, resumed) for f, _, resumed in steps] == [("fold_0_0", False), ("fold_0_1", False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold_0_0"] and not read
    assert not fold_is_complete(tmp_path / "fold_0_0")


def test_every_finished_run_trains_nothing(tmp_path):
    folds = _folds(2)
    for f in folds:
        _result(f, 0.6).save(tmp_path / f.name)

    class Refuses(FoldExecutor):
        def as_completed(self, jobs, keep=None):
            raise AssertionError("nothing to train")

    got = list(run_fold_jobs(folds, [True, True], tmp_path, pytest.fail, Refuses()))
    assert [(f.name, r.eval_metrics, resumed) for f, r, resumed in got] == [
        ("fold_0_0", {"accuracy": 0.6}, True), ("fold_0_1", {"accuracy": 0.6}, True)]


def test_the_in_process_executor_runs_jobs_one_at_a_time_in_order():
    calls = []
    with InProcessExecutor(lambda job: calls.append(job) or job * 10) as executor:
        arrivals = executor.as_completed([1, 2, 3])
        assert next(arrivals) == (0, 10) and calls == [1]  # the next job runs only when asked for
        assert list(arrivals) == [(1, 20), (2, 30)]


def test_a_keep_hook_saves_a_result_where_it_finished(tmp_path):
    """An executor that sends results between processes saves each one where it finished, before the exchange; the
    main process does not save it again."""
    folds = _folds(2)

    class Sends(FoldExecutor):
        def as_completed(self, jobs, keep=None):
            results = [_result(job.fold, 0.3) for job in jobs]
            for index, result in enumerate(results):
                keep(index, result)
            mtimes = [(tmp_path / j.fold.name / "fold_result.json").stat().st_mtime_ns for j in jobs]
            yield from enumerate(results)
            assert mtimes == [(tmp_path / j.fold.name / "fold_result.json").stat().st_mtime_ns for j in jobs]

    got = list(run_fold_jobs(folds, [False, False], tmp_path, lambda f: SimpleNamespace(fold=f), Sends()))
    assert [f.name for f, _, _ in got] == ["fold_0_0", "fold_0_1"]
