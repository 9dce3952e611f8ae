"""Folds in parallel: deal whole folds to processes, and let one process train a fold as if it ran alone.

Under `accelerate launch` / `torchrun`, `transformers.Trainer` reads the process count from accelerate's process-wide
state singletons (`PartialState`, `AcceleratorState`): with more than one process it wraps the model in DDP, shards
every dataloader and gathers predictions, all collectives that every process must join. When processes train
different folds those collectives would deadlock or mix folds, so while a process trains its own fold,
[`single_process_view`] makes those singletons describe a one-process run. Everything that consults them (the
`Trainer`, its `Accelerator`, `TrainingArguments.world_size`, accelerate's `gather`/`wait_for_everyone`) then
behaves exactly as in a one-process run; the process group itself stays up, unused, for the synchronisation
between folds.
"""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from typing import Iterator

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

# Plain data-parallel launches (MULTI_CPU, MULTI_GPU, MULTI_XPU, ...): one full model per process, so a process can
# train a fold on its own. DeepSpeed, FSDP, Megatron-LM and XLA spread one model (or its optimizer) over the
# processes and are left out.
DATA_PARALLEL_TYPES = frozenset(t for t in DistributedType if t.name.startswith("MULTI_"))

_ONE_PROCESS = {
    "distributed_type": DistributedType.NO,
    "num_processes": 1,
    "process_index": 0,
    "local_process_index": 0,
}


# Every process calls `wait_for_processes` the same number of times, in the same order, so this counter names the
# same meeting on every process.
_MEETINGS = itertools.count()


def wait_for_processes(world_size: int, poll_seconds: float = 0.5) -> None:
    """Wait, for as long as it takes, until every process has called this.

    A collective (`barrier`, `gather`) gives up after `ddp_timeout` (30 minutes by default), but a process that has
    trained its fold may wait for a slower fold of the same round for longer than that. So the processes meet in the
    process group's key-value store instead, which every process polls; the collective that follows is then
    immediate. Without a default store (a process group set up by other means) the collective does the waiting.
    """
    import torch.distributed as dist

    try:
        store = dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return
    key = f"hf_tlcv/parallel_folds/{next(_MEETINGS)}"
    arrived = store.add(key, 1)
    while arrived < world_size:
        time.sleep(poll_seconds)
        arrived = store.add(key, 0)


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


@contextmanager
def single_process_view() -> Iterator[None]:
    """Within this block, accelerate's state describes a one-process run: no distributed type, one process, index 0.

    The device is left as it is (each process keeps its own GPU), as is the process group. Leaving the block
    restores the real values, also on an exception. Only the process that enters it is affected; the other processes
    must not expect a collective from it until it leaves.
    """
    states = [PartialState._shared_state, AcceleratorState._shared_state]
    saved = [{key: state[key] for key in _ONE_PROCESS if key in state} for state in states]
    try:
        for state, keys in zip(states, saved):
            # An uninitialised state is left empty: filling it would make accelerate believe it was set up.
            state.update({key: _ONE_PROCESS[key] for key in keys})
        yield
    finally:
        for state, keys in zip(states, saved):
            state.update(keys)
