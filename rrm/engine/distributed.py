"""Multi-process training with torch's standard engine: torchrun + DistributedDataParallel.

A stage runs distributed when torchrun started it (WORLD_SIZE > 1 in the environment). `launch` lets a
stage started as plain `python stages/train_x.py` with params `nproc: N` re-run itself under
torch.distributed.run, so `dvc exp run -S nproc=4` trains on 4 GPUs. NCCL is used on CUDA, gloo on CPU
(the CPU path is what the tests exercise).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist


def torchrun_world_size() -> int:
    """Processes torchrun started for this job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0, the one process that logs and writes files (always true without a process group)."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def process_group(device: str | torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group (if torchrun started >1 process) and yield this rank's device.

    Outside torchrun this yields `device` unchanged and does nothing else, so single-process runs are
    untouched. A group that already exists (a caller initialised it) is used and left open.
    """
    device = torch.device(device)
    if torchrun_world_size() <= 1:
        yield device
        return
    if device.type == "cuda":  # one GPU per process: torchrun's LOCAL_RANK picks it
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    try:
        yield device
    finally:
        if owned:
            dist.destroy_process_group()


def launch(nproc: int, script: str | None = None, args: Sequence[str] | None = None) -> bool:
    """Re-run `script` (default: this process's own command line) under torchrun with `nproc` processes.

    Returns False, doing nothing, when nproc is 1 or this process already is a torchrun worker; the caller
    then trains itself. Returns True after all workers finished (a failed worker raises).
    """
    if nproc <= 1 or "TORCHELASTIC_RUN_ID" in os.environ or torchrun_world_size() > 1:
        return False
    from torch.distributed.run import main as torchrun

    script = script if script is not None else sys.argv[0]
    args = list(args) if args is not None else sys.argv[1:]
    torchrun(["--standalone", f"--nproc_per_node={nproc}", script, *args])
    return True
