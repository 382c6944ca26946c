"""Training checkpoints: what a resumable state holds, the RNG streams of every rank, and when a checkpoint
may be resumed (its run's settings, up to paths and worker counts)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from rrm.engine import distributed
from rrm.engine.recipe import TrainSettings
from rrm.io import load_torch, save_torch
from rrm.models.registry import Arch, checkpoint_meta

_NOT_FINGERPRINTED = {"out_model", "checkpoint", "live_dir", "num_workers", "device", "nproc"}


def settings_fingerprint(s: TrainSettings) -> str:
    """What a checkpoint must match to be resumed (paths and worker counts may change)."""
    fields = vars(replace(s, mining=s.mining and replace(s.mining, pool_processes=0)))
    return repr(sorted((k, repr(v)) for k, v in fields.items() if k not in _NOT_FINGERPRINTED))


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": torch.tensor(np.random.get_state()[1].astype(np.int64)),
            "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))


def _gather_rng() -> list[dict]:
    """Every rank's RNG state (rank order), so a resumed DDP run keeps each rank's dropout stream."""
    state = _rng_state()
    if distributed.world_size() == 1:
        return [state]
    states: list = [None] * distributed.world_size()
    dist.all_gather_object(states, state)
    return states


def load_checkpoint(s: TrainSettings) -> dict | None:
    """The run's checkpoint if there is one written with the same settings (every rank loads it)."""
    path = Path(s.checkpoint)
    state = load_torch(path) if path.is_file() else None
    if state is not None and state.get("settings") != settings_fingerprint(s):
        if distributed.is_main():
            print(f"{path}: written with other settings; starting over")
        return None
    return state


def resume(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler) -> int:
    """Restore weights, optimiser, schedule and this rank's RNG streams; return the step reached."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    saved = [state["rng"]] if isinstance(state["rng"], dict) else state["rng"]
    if distributed.rank() < len(saved):  # a rank the saved run did not have keeps its fresh seed
        _set_rng_state(saved[distributed.rank()])
    return int(state["step"])


def save_checkpoint(s: TrainSettings, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Collective (every rank's RNG state is gathered); rank 0 writes the file atomically."""
    rng = _gather_rng()
    if distributed.is_main():
        save_torch(s.checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "step": step, "rng": rng,
                                  "settings": settings_fingerprint(s)})


def save_model(s: TrainSettings, model: nn.Module, arch: Arch) -> None:
    """The finished run's weights and the metadata rrm.models.registry.load_model rebuilds the network from."""
    save_torch(s.out_model, {"model": model.state_dict(),
                             "meta": checkpoint_meta(arch, mode=s.mode, width=s.width, steps=s.recipe.steps,
                                                     batch_norm=s.batch_norm, dataset=s.dataset)})
