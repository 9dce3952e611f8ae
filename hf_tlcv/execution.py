"""Where fold jobs run: in this process, or in a worker process of their own.

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
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Iterator

from accelerate.utils import DistributedType
from transformers.utils import logging

if TYPE_CHECKING:
    from .fold_job import FoldJob
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


class RayExecutor:
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

    def as_completed(self, jobs: list["FoldJob"]) -> Iterator[tuple[int, "FoldResult"]]:
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

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_on_ray(jobs: list["FoldJob"], **executor_kwargs) -> list["FoldResult"]:
    """Run fold jobs as Ray tasks (see [`RayExecutor`]) and return their results in job order.

    Example:
    ```python
    >>> results = run_on_ray(trainer.fold_jobs(), num_cpus=1)

    ```
    """
    with RayExecutor(**executor_kwargs) as executor:
        return list(executor.map(jobs))
