"""The training loop: classification pre-training, one-step RRM, and segmentation on given masks.

One loop serves all three modes; they differ only in the loss of a step, which the caller passes with the
network's registry entry (rrm.models.registry.Arch), so a stage loads only its own step and network:
  cls      multi-label soft-margin loss (the authors' "VOC-classification ResNet-38" weights;
           rrm.engine.steps.classifier_steps)
  onestep  cls + CE(bg) + CE(fg) on mined reliable regions + dense energy loss (paper eq. 8;
           rrm.engine.onestep.onestep_steps)
  supervised  CE on masks: ground truth (the fully supervised reference) or the one-step network's
              pseudo masks (two-step DeepLab; rrm.engine.steps.supervised_steps)
Runs checkpoint atomically every N steps and resume from the last checkpoint after a kill
(rrm.engine.checkpoint); batches come from the seeded sampler (rrm.engine.sampler).

Under torchrun (see rrm.engine.distributed) the model is wrapped in DistributedDataParallel and `batch_size` stays
the global batch of one step: each rank trains on its slice, every image is augmented as a single process
would augment it, and pixel-averaged losses are normalised over the global batch, so N processes follow
the single-process schedule (up to dropout masks, drawn per rank). Rank 0 alone logs and writes files.
"""

from __future__ import annotations

import random
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from rrm.data.datasets import get_dataset
from rrm.data.transforms import TrainBatchCollate
from rrm.data.voc import VOCSegmentation
from rrm.engine import distributed
from rrm.engine.checkpoint import load_checkpoint, resume, save_checkpoint, save_model
from rrm.engine.optim import make_optimizer
from rrm.engine.recipe import TrainSettings
from rrm.engine.sampler import SeededCollate, SeededDataset, StepBatchSampler, check_split
from rrm.engine.steps import Steps
from rrm.models.registry import Arch
from rrm.settings import ClassifierRecipe


def train(s: TrainSettings, arch: Arch, steps: Steps) -> dict:
    """Run (or resume) a training stage of network `arch` (s.arch names it) with the loss of `steps`, and
    write the final weights to `s.out_model`.

    Started by torchrun with several processes, it trains with DistributedDataParallel (see module doc).
    """
    check_split(s.recipe.batch_size, distributed.torchrun_world_size())  # before any process starts work
    with distributed.process_group(s.device) as device:
        return _train(s, arch, steps, device)


def build_model(s: TrainSettings, arch: Arch, device: torch.device) -> nn.Module:
    """The network the run starts from: `arch` (s.arch names it), its head sized for s.dataset's classes, with
    s.init's weights, on `device`."""
    if arch.name != s.arch:
        raise ValueError(f"training settings name network {s.arch!r}, the registry entry passed is {arch.name!r}")
    recipe = s.recipe
    return arch.build(num_classes=get_dataset(s.dataset).num_classes, width=s.width, batch_norm=s.batch_norm, freeze_bn=recipe.freeze_bn, dropout=recipe.dropout,
                      head_bias=s.head_bias, init=s.init, frozen=recipe.frozen if isinstance(recipe, ClassifierRecipe) else ()).to(device)


def _train(s: TrainSettings, arch: Arch, steps: Steps, device: torch.device) -> dict:
    from dvclive import Live  # imported here: dvclive pulls in DVC, which the library doesn't otherwise need

    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    recipe = s.recipe
    # Rank 0 seeds as a single process does; DDP copies its initial weights to the others, whose own seeds
    # only give them their own dropout masks.
    torch.manual_seed(s.seed + rank)
    np.random.seed(s.seed + rank)
    random.seed(s.seed + rank)
    dataset = VOCSegmentation(s.data_root, s.split, mask_dir=s.mask_dir, labels_file=s.labels_file,
                              weak=s.mode != "supervised", dataset=get_dataset(s.dataset))
    model = build_model(s, arch, device)
    if device.type == "cuda":  # NHWC activations: cuDNN's fast convolution layouts (bf16 tensor cores)
        model = model.to(memory_format=torch.channels_last)
    if world > 1 and not recipe.freeze_bn:
        if device.type == "cuda":  # batch statistics over the global batch, as one process computes them
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif main:  # torch's SyncBatchNorm is GPU-only
            print("note: BatchNorm is trained on CPU with several processes: each process normalises with "
                  "the statistics of its own slice of the batch (freeze_bn or one process avoids this)")
    optimizer, scheduler = make_optimizer(model, s, arch.scratch_new_lr_mult)
    start = 0
    state = load_checkpoint(s)
    if state is not None:
        start = resume(state, model, optimizer, scheduler)
        if main:
            print(f"resuming {s.mode} training from {s.checkpoint} at step {start}/{recipe.steps}")
    # DDP's constructor is a collective: no rank passes it (and later writes a checkpoint) before all loaded.
    # A head without gradient (RRMNet's seg / fc8 under cls / supervised) DDP must be told to expect (it then
    # warns it found none: the head is in the outputs, only the loss ignores it).
    net: nn.Module = model if world == 1 else DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=arch.unused_head(s.mode))
    sampler = StepBatchSampler(len(dataset), recipe.batch_size, recipe.steps, s.seed, start, rank=rank,
                               world_size=world)
    psa = recipe if isinstance(recipe, ClassifierRecipe) else None
    collate = SeededCollate(TrainBatchCollate(crop_size=recipe.crop_size, scale_range=tuple(recipe.scale_range),
                                              resize_long=psa and psa.resize_long,
                                              color_jitter=psa and psa.color_jitter))
    loader = DataLoader(SeededDataset(dataset), batch_sampler=sampler, collate_fn=collate,
                        num_workers=s.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=s.num_workers > 0)
    context = ExitStack()
    step_losses = context.enter_context(steps(s))
    live = Live(s.live_dir, dvcyaml=False, save_dvc_exp=False, resume=start > 0) if s.live_dir and main else None
    net.train()
    history: dict[str, float] = {}
    try:
        progress = tqdm(loader, total=len(sampler), desc=f"train {s.mode}", unit="step", disable=not main)
        for step, batch in enumerate(progress, start=start + 1):
            losses = step_losses(net, batch, device)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            scheduler.step()
            values = torch.stack([v.detach() for v in (*losses.values(), total)])
            if world > 1:  # log the global batch's losses: the mean over ranks
                dist.all_reduce(values)
                values /= world
            history = dict(zip([*losses, "total"], values.tolist(), strict=True))
            progress.set_postfix({k: f"{v:.3f}" for k, v in history.items()})
            if live is not None:
                for name, value in history.items():
                    live.log_metric(f"loss/{name}", value)
                live.log_metric("lr", optimizer.param_groups[0]["lr"])
                live.next_step()
            if step % recipe.checkpoint_every == 0 or step == recipe.steps:
                save_checkpoint(s, step, model, optimizer, scheduler)
    finally:
        context.close()
        if live is not None:
            live.end()
    if main:
        save_model(s, model, arch)
        Path(s.checkpoint).unlink(missing_ok=True)  # finished: only the final model remains
    distributed.barrier()  # no rank returns (and ends the job) before rank 0's files are written
    return history
