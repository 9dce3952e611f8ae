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

import os
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from accelerate.utils import DistributedType

if TYPE_CHECKING:
    from .fold_job import FoldJob
    from .results import FoldResult

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
