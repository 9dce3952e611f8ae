"""Where fold jobs run: in this process, in a worker process of their own, or on Ray; and the one loop around them.

Every executor has one interface ([`FoldExecutor`]): `as_completed(jobs)` yields `(index in jobs, result)` as each
job finishes, `close()` (or a `with` block) releases what it holds. [`InProcessExecutor`] runs the jobs here one at a
time, [`LaunchExecutor`] runs each process's share of them in its own [`WorkerProcess`] under a launch and gives
every process every result, [`RayExecutor`] runs them as Ray tasks. [`run_fold_jobs`] is the one place around them
that reads finished folds back instead of training them, clears an interrupted fold's folder, saves each result as
it arrives and gives the results in fold order: a cross-validation's folds, the nested interval's extra fits, a
search's trials and the nested search's winners all go through it.

A [`FoldJob`] is self-contained, so running it elsewhere only means sending it there and its [`FoldResult`] back.
[`WorkerProcess`] is a fresh Python process (started with `spawn`) that runs jobs one at a time; jobs travel with
`cloudpickle`, which also carries functions defined in a script or a notebook (a `model_init`, a `compute_metrics`).
The worker's environment has no trace of a distributed launch, so inside it a fold is an ordinary one-process run on
the one device it is given.

`parallel_folds` uses that under `accelerate launch` / `torchrun`: each process of the launch hands its share of the
folds to its own worker (pinned to its device) and the processes exchange finished results over a process group of
their own, whose timeout is long enough for the slowest fold (see [`FoldExchange`]).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from accelerate.utils import DistributedType
from transformers.utils import logging

if TYPE_CHECKING:
    from .fold_job import FoldJob
    from .folds import Fold
    from .results import FoldResult

logger = logging.get_logger(__name__)
# Variables through which launchers (torchrun, accelerate, MPI) tell a process it is one rank of several.
DISTRIBUTED_ENV = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_ERROR_FILE", "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "ACCELERATE_DISTRIBUTED_TYPE",
)
# Plain data-parallel launches (MULTI_CPU, MULTI_GPU, MULTI_XPU, ...): one full model per process, so a process can
# hand whole folds to a worker. DeepSpeed, FSDP, Megatron-LM and XLA spread one model over the processes.
DATA_PARALLEL_TYPES = frozenset(t for t in DistributedType if t.name.startswith("MULTI_"))
# A fold waits at most this long for the other processes' folds of its round (a collective's usual timeout,
# ddp_timeout, is 30 minutes: shorter than many folds).
EXCHANGE_TIMEOUT = timedelta(days=7)


def _enter_worker(environment: dict[str, str | None]) -> None:
    """Runs first in a new worker: set its environment before anything reads it (accelerate reads it lazily)."""
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _run_pickled(blob: bytes) -> bytes:
    import cloudpickle

    from .fold_job import run_fold

    return cloudpickle.dumps(run_fold(cloudpickle.loads(blob)))


def one_device_environment(device: Any = None) -> dict[str, str | None]:
    """The environment of a one-process run on `device` (`"cuda:1"`, a `torch.device`, or `None` for the CPU): the
    launch variables removed, and only that GPU visible (mapped through the current `CUDA_VISIBLE_DEVICES`)."""
    environment: dict[str, str | None] = dict.fromkeys(DISTRIBUTED_ENV)
    device = str(device) if device is not None else "cpu"
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(index + 1)]
        environment["CUDA_VISIBLE_DEVICES"] = ids[index]
    return environment


class FoldExecutor:
    """Where fold jobs run. `as_completed(jobs)` yields `(index in jobs, result)` as each job finishes (in any order;
    [`run_fold_jobs`] puts them back in fold order); closing the generator early stops what has not finished. An
    exception in a job is raised from the generator. `close()` (or leaving a `with` block) releases what the
    executor holds.

    `keep(index, result)`, when given, is called on the process where a job finished, before its result travels to
    the other processes: only an executor that sends results between processes ([`LaunchExecutor`]) calls it, so
    that a fold finished there is saved even if the run stops before the exchange.
    """

    def as_completed(self, jobs: Sequence["FoldJob"],
                     keep: Callable[[int, "FoldResult"], None] | None = None) -> Iterator[tuple[int, "FoldResult"]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessExecutor(FoldExecutor):
    """Runs fold jobs here, one at a time, in job order (under a launch, every process of it trains each fold
    together: DDP).

    Args:
        run (`Callable[[FoldJob], FoldResult]`, *optional*): what runs a job; default [`hf_tlcv.run_fold`].
    """

    def __init__(self, run: Callable[["FoldJob"], "FoldResult"] | None = None):
        self.run = run

    def as_completed(self, jobs, keep=None):
        run = self.run
        if run is None:
            from .fold_job import run_fold as run
        for index, job in enumerate(jobs):
            yield index, run(job)


class WorkerProcess:
    """A fresh process that runs [`FoldJob`]s one at a time, as one-process runs on one device.

    Args:
        device: the device its folds train on (`None`: the CPU, or whatever a one-process run picks).

    Example:
    ```python
    >>> with WorkerProcess() as worker:
    ...     result = worker.run(job)      # equal to run_fold(job) in this process

    ```
    """

    def __init__(self, device: Any = None):
        import multiprocessing

        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_enter_worker, initargs=(one_device_environment(device),))

    def run(self, job: "FoldJob") -> "FoldResult":
        """Run `job` in the worker and return its result; an exception in the job is raised here."""
        import cloudpickle

        return cloudpickle.loads(self._pool.submit(_run_pickled, cloudpickle.dumps(job)).result())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_in_worker(job: "FoldJob", device: Any = None) -> "FoldResult":
    """Run one fold job in a fresh worker process (see [`WorkerProcess`])."""
    with WorkerProcess(device) as worker:
        return worker.run(job)


def deal_folds(pending: list[int], world_size: int) -> list[list[int]]:
    """Deal the folds still to train round-robin: round `r` gives `pending[r * world_size + p]` to process `p`.

    Every process computes the same rounds from the same list, so no message is needed to agree on them; a
    process whose slot in the last round is empty sits that round out.

    Example:
    ```python
    >>> deal_folds([0, 1, 3, 4, 5], world_size=2)
    [[0, 1], [3, 4], [5]]

    ```
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1 (got {world_size}).")
    return [pending[start:start + world_size] for start in range(0, len(pending), world_size)]


class FoldExchange:
    """The processes of a launch exchanging fold results: a gloo process group of their own (created by every
    process together, with `torch.distributed.new_group`), whose timeout lets a process wait for the slowest fold of
    a round, however long the launch's own collectives may wait (`ddp_timeout`)."""

    def __init__(self, timeout: timedelta = EXCHANGE_TIMEOUT):
        import torch.distributed as dist

        self._group = dist.new_group(backend="gloo", timeout=timeout)

    def all_gather(self, obj: Any) -> list:
        """Every process's `obj`, in rank order, on every process."""
        import torch.distributed as dist

        gathered: list = [None] * dist.get_world_size(self._group)
        dist.all_gather_object(gathered, obj, group=self._group)
        return gathered

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self._group)

    def close(self) -> None:
        import torch.distributed as dist

        dist.destroy_process_group(self._group)


class LaunchExecutor(FoldExecutor):
    """`parallel_folds` under a launch (`accelerate launch`, `torchrun`): each process trains its share of the jobs
    in a one-process [`WorkerProcess`] of its own (pinned to `device`), and every process gets every result.

    The jobs are dealt round-robin ([`deal_folds`]: round `r` gives job `r * world_size + p` to process `p`); after
    each round the processes exchange the round's results ([`FoldExchange`]), which arrive on every process in job
    order. A failed job stops every process, each saying which fold failed, here or on another process. Every
    process must make the executor, call `as_completed` with the same jobs, and close it, together.

    Args:
        rank (`int`): this process's index in the launch.
        world_size (`int`): the number of processes of the launch.
        device: the device this process's worker trains on.
    """

    def __init__(self, rank: int, world_size: int, device: Any = None):
        self.rank, self.world_size, self.device = rank, world_size, device
        self._exchange = FoldExchange()
        self._worker: WorkerProcess | None = None

    def as_completed(self, jobs, keep=None):
        rank = self.rank
        for round_ in deal_folds(list(range(len(jobs))), self.world_size):
            index = round_[rank] if rank < len(round_) else None
            outcome, failure = (index, None, None), None
            if index is not None:
                try:
                    if jobs[index].fold_dir.is_dir():  # this machine's copy of an interrupted fold (no shared disk)
                        shutil.rmtree(jobs[index].fold_dir)
                    self._worker = self._worker or WorkerProcess(self.device)
                    result = self._worker.run(jobs[index])
                    if keep is not None:
                        keep(index, result)
                    outcome = (index, result, None)
                except Exception as exc:  # noqa: BLE001 - reported to every process below, then raised
                    outcome, failure = (index, None, f"{type(exc).__name__}: {exc}"), exc
            # Every process joins the exchange, also one whose fold failed, so that no process waits forever.
            gathered = self._exchange.all_gather(outcome)
            errors = [(jobs[i].fold.name, message) for i, _, message in gathered if message is not None]
            if errors:
                mine = jobs[index].fold.name if failure is not None else None
                message = "Cross-validation stopped: " + "; ".join(
                    f"fold {name} failed {'here' if name == mine else 'on another process'} ({text})"
                    for name, text in errors)
                # Said at once: the launcher may stop this process as soon as another one exits.
                logger.error(message)
                raise failure if failure is not None else RuntimeError(message)
            for i, result, _ in gathered:
                if i is not None:
                    yield i, result

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._exchange is not None:
            self._exchange.close()
            self._exchange = None


def run_fold_jobs(folds: Sequence["Fold"], finished: Sequence[bool], out: str | os.PathLike,
                  make_job: Callable[["Fold"], "FoldJob"], executor: FoldExecutor, *,
                  read: Callable[[Path], "FoldResult"] | None = None, is_main: bool = True,
                  barrier: Callable[[], None] | None = None) -> Iterator[tuple["Fold", "FoldResult", bool]]:
    """Run the folds not `finished` on `executor`; yield `(fold, result, resumed)` for every fold, in fold order.

    The one loop around every executor: a finished fold is read back from `out/<fold>` (`read`, default
    `FoldResult.load`; a trainer's reads on its main process and gives every process the result), not trained. The
    folder of a fold still to train, left by an interrupted run, is deleted before the folds run: an interrupted fold
    is trained again from its start, since resuming from its last checkpoint is not bit-identical to an
    uninterrupted fold, and a resumed run must give the results of an uninterrupted one. Each result is saved in
    `out/<fold>` as it arrives (also on the process where it finished, see [`FoldExecutor`]), so folds finished out of
    order are kept when the run stops; the results are yielded in fold order.

    Args:
        folds, finished: the folds, and which of them are finished in `out`.
        out: the run folder.
        make_job: the job of a fold.
        executor: where the jobs run ([`InProcessExecutor`], [`LaunchExecutor`], [`RayExecutor`]).
        read: reads a finished fold's result from its folder.
        is_main: whether this is the process that deletes and saves (the main process of a launch).
        barrier: waits for every process of a launch (`accelerator.wait_for_everyone`); after the deletions and after
            each save.
    """
    from .results import FoldResult
    from .run_dir import fold_is_complete

    out = Path(out)
    read = read if read is not None else FoldResult.load
    barrier = barrier if barrier is not None else (lambda: None)
    pending = [i for i, done in enumerate(finished) if not done]
    position = {fold_index: i for i, fold_index in enumerate(pending)}
    arrivals = None
    if pending:
        if is_main:
            for i in pending:
                if (out / folds[i].name).is_dir():
                    shutil.rmtree(out / folds[i].name)
        barrier()

        def keep(index: int, result: "FoldResult") -> None:
            result.save(out / folds[pending[index]].name)

        arrivals = executor.as_completed([make_job(folds[i]) for i in pending], keep=keep)
    arrived: dict[int, "FoldResult"] = {}
    try:
        for fold_index, (fold, done) in enumerate(zip(folds, finished)):
            if done:
                yield fold, read(out / fold.name), True
                continue
            while position[fold_index] not in arrived:
                index, result = next(arrivals)
                fold_dir = out / folds[pending[index]].name
                if is_main and not fold_is_complete(fold_dir):  # a worker of a launch may have saved it already
                    result.save(fold_dir)
                barrier()
                arrived[index] = result
            yield fold, arrived.pop(position[fold_index]), False
    finally:
        if arrivals is not None:
            arrivals.close()


# ---- Ray: fold jobs as Ray tasks (the `ray` extra, `pip install hf_tlcv[ray]`) --------------------------------------
# Owned by hf_tlcv.search's author: the executor that runs fold jobs on a Ray cluster (local by default) for
# `parallel_folds` in one process and for hyperparameter searches.
def ray_available() -> bool:
    """Whether Ray is installed (`pip install hf_tlcv[ray]`)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _run_pickled_on_ray(jobs_blob: bytes, index: int) -> bytes:
    """A Ray task: run fold job `index` of the pickled list, as a one-process run (no launcher variables; Ray has set
    `CUDA_VISIBLE_DEVICES` to the GPUs the task asked for)."""
    import cloudpickle

    from .fold_job import run_fold

    for key in DISTRIBUTED_ENV:
        os.environ.pop(key, None)
    return cloudpickle.dumps(run_fold(cloudpickle.loads(jobs_blob)[index]))


@contextlib.contextmanager
def evaluate_modules_by_value() -> Iterator[None]:
    """While pickling: the `evaluate` metric modules travel with the jobs (by value) instead of as names of the
    dynamic modules `evaluate.load` wrote in this machine's cache, which a Ray worker cannot import (its `sys.path`
    is not this process's, and on another machine the files are not there)."""
    import sys

    import cloudpickle

    package = sys.modules.get("evaluate_modules")
    if package is None:
        yield
        return
    cloudpickle.register_pickle_by_value(package)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(package)


def in_memory(dataset):
    """`dataset` with its rows held in memory instead of memory-mapped from files of this machine (a `datasets`
    Dataset backed by files pickles as their paths), so that it can be used on a machine without those files."""
    if dataset is None or not dataset.cache_files:
        return dataset
    return dataset.flatten_indices(keep_in_memory=True)


def in_memory_job(job: "FoldJob") -> "FoldJob":
    """`job` with every dataset it carries [`in_memory`]: it runs on any machine of a cluster."""
    import copy
    import dataclasses

    rows = in_memory(job.dataset)
    features = job.features
    if features is not None:
        features = copy.copy(features)
        features.dataset = rows if features.dataset is job.dataset else in_memory(features.dataset)
    return dataclasses.replace(job, dataset=rows, test_dataset=in_memory(job.test_dataset), features=features)


class RayExecutor(FoldExecutor):
    """Runs [`FoldJob`]s as Ray tasks, each asking the cluster for its own resources; results come back in job order.

    Ray schedules the tasks on whatever the cluster has free: with one CPU per job, a 2-CPU machine runs 2 folds at
    once; with one GPU per job, an 8-GPU node runs 8. Inside a task a fold is an ordinary one-process run, so the
    results equal those of `run_fold` in this process (tested). Jobs travel with `cloudpickle`, like
    [`WorkerProcess`]'s, and the rows, model and functions they share are put in Ray's object store once per batch.

    Args:
        num_cpus (`float`, defaults to 1): CPUs each fold job asks for.
        num_gpus (`float`, *optional*): GPUs each fold job asks for; default 1 when this machine has a CUDA GPU, else 0.
            A fold that needs several GPUs asks for them here and trains on them in its one process.
        address (`str`, *optional*): the cluster to join (`"auto"`, `"ray://head:10001"`); default `RAY_ADDRESS`, else
            a local cluster started by this executor (and stopped by [`close`]).
        init_kwargs: more `ray.init` arguments for a local cluster (`num_cpus=`, `include_dashboard=`...).

    Example:
    ```python
    >>> from hf_tlcv.execution import RayExecutor
    >>> with RayExecutor(num_gpus=1) as executor:
    ...     results = trainer.cross_validate(executor=executor)   # eight folds at once on an eight-GPU node

    ```
    """

    def __init__(self, num_cpus: float = 1, num_gpus: float | None = None, address: str | None = None,
                 **init_kwargs):
        if not ray_available():
            raise ImportError("RayExecutor needs Ray: pip install 'hf_tlcv[ray]' (or 'ray[tune]').")
        if num_cpus <= 0:
            raise ValueError(f"num_cpus must be > 0 (got {num_cpus}): each fold job needs at least part of a CPU.")
        if num_gpus is None:
            import torch

            num_gpus = 1 if torch.cuda.is_available() else 0
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self._init_kwargs = init_kwargs
        self._started = False
        self._task = None

    def _remote(self):
        import ray

        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, **self._init_kwargs} if not self.address else self._init_kwargs
            ray.init(address=self.address, **kwargs)
            self._started = True
        if self._task is None:
            self._task = ray.remote(_run_pickled_on_ray)
        return self._task.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus)

    def as_completed(self, jobs: Sequence["FoldJob"], keep=None) -> Iterator[tuple[int, "FoldResult"]]:
        """Submit every job now; yield `(index in jobs, result)` as each finishes. Closing the generator early (a search
        pruning the trial) cancels the jobs not finished yet; an exception in a job is raised here, its fold named."""
        import cloudpickle
        import ray

        task = self._remote()
        if len(ray.nodes()) > 1:  # rows memory-mapped from this machine's files are not on the others
            jobs = [in_memory_job(job) for job in jobs]
        with evaluate_modules_by_value():
            shared = ray.put(cloudpickle.dumps(list(jobs)))
        return self._arrivals(jobs, {task.remote(shared, i): i for i in range(len(jobs))})

    @staticmethod
    def _arrivals(jobs: list["FoldJob"], pending: dict) -> Iterator[tuple[int, "FoldResult"]]:
        import cloudpickle
        import ray

        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(ref)
                try:
                    blob = ray.get(ref)
                except Exception:
                    logger.error(f"Fold {jobs[index].fold.name} failed in its Ray task; the folds finished before "
                                 "are kept.")
                    raise
                yield index, cloudpickle.loads(blob)
        finally:
            for ref in pending:
                ray.cancel(ref)

    def map(self, jobs: list["FoldJob"]) -> Iterator["FoldResult"]:
        """Submit every job now; yield their results in job order, each as soon as it and those before it are done."""
        arrivals, arrived = self.as_completed(jobs), {}
        try:
            for index in range(len(jobs)):
                while index not in arrived:
                    i, result = next(arrivals)
                    arrived[i] = result
                yield arrived.pop(index)
        finally:
            arrivals.close()

    def close(self) -> None:
        """Stop the local cluster this executor started (a cluster it joined keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        self._task = None


def run_on_ray(jobs: list["FoldJob"], **executor_kwargs) -> list["FoldResult"]:
    """Run fold jobs as Ray tasks (see [`RayExecutor`]) and return their results in job order.

    Example:
    ```python
    >>> results = run_on_ray(trainer.fold_jobs(), num_cpus=1)

    ```
    """
    with RayExecutor(**executor_kwargs) as executor:
        return list(executor.map(jobs))
