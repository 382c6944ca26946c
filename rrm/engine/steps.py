"""The loss terms of one training step, per mode (see rrm.engine.train)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from rrm.data.classes import IGNORE_INDEX
from rrm.engine.inference import segmentation_logits
from rrm.engine.mining import mine_batch
from rrm.engine.recipe import MiningSettings, OneStepRecipe, TrainSettings
from rrm.method.cam import multiscale_cam
from rrm.method.crf_pool import CRFPool
from rrm.method.energy_loss import dense_energy_loss
from rrm.method.losses import classification_loss, split_cross_entropy, split_targets
from rrm.method.reliable import mine_cam_only
from rrm.method.reliable_torch import mine_batch_torch, mine_cam_only_torch


def _global_pixel_ce(logits: torch.Tensor, targets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Under DDP: the CE of each target map averaged over the labelled pixels of the GLOBAL batch.

    A per-rank pixel mean would weight ranks equally whatever their labelled-pixel counts (padding and
    void differ per slice). Each rank divides its pixel sum by the all-reduced count times the world size
    instead; DDP averages the ranks' gradients, so the update equals the single-process pixel mean.
    """
    world = dist.get_world_size()
    counts = torch.stack([(target != IGNORE_INDEX).sum() for target in targets])
    dist.all_reduce(counts)
    return [logits.sum() * 0.0 if count == 0 else  # no labelled pixel anywhere: zero, still in the graph
            F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum") * (world / count)
            for target, count in zip(targets, counts.tolist(), strict=True)]


class _Bf16Cam(nn.Module):
    """The network's CAM head under bf16 autocast, returned in fp32: the CAMs' resizing, averaging and
    normalisation, whose values mining thresholds and ranks, stay fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return {"cam": self.model(x)["cam"].float()}


def _mined_targets(batch: dict, raw: torch.Tensor, cam: torch.Tensor, labels: torch.Tensor,
                   recipe: OneStepRecipe, mining: MiningSettings, pool: CRFPool | None,
                   device: torch.device) -> torch.Tensor:
    """One-step targets: reliable regions (pseudo rrm) or the CAM's top ratio (pseudo cam), on `device`.
    `raw` is the batch's on `device`; `labels` on `device`. As the authors' code, the whole crop is mined,
    padding included, and the cross-entropy sees every mined pixel: the ROI only enters the energy loss."""
    params = mining.params
    if params.crf_backend == "torch":  # on the device; labels from the host: no sync (see reliable_torch)
        if recipe.pseudo == "rrm":
            return mine_batch_torch(raw, cam, batch["labels"], params)
        return mine_cam_only_torch(cam, batch["labels"], params)
    raw_uint8 = batch["raw"].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
    if recipe.pseudo == "rrm":
        pseudo = mine_batch(raw_uint8, cam.cpu(), labels.cpu(), params, pool)
    else:
        pseudo = mine_cam_only(cam.cpu(), labels.cpu(), params)
    return torch.from_numpy(pseudo).long().to(device)


def step_losses(model: nn.Module, batch: dict, s: TrainSettings, pool: CRFPool | None,
                device: torch.device) -> dict[str, torch.Tensor]:
    """The loss terms of one step; their sum is what is optimised.

    `model` may be DistributedDataParallel-wrapped; pixel-averaged terms then average over the global batch.
    """
    ddp = isinstance(model, DistributedDataParallel)
    cuda = device.type == "cuda"
    # channels_last suits cuDNN's convolutions (the model is converted in train); the host tensors
    # are pinned by the DataLoader, so the copies overlap with the GPU's work
    images = batch["image"].to(device, non_blocking=cuda,
                               memory_format=torch.channels_last if cuda else torch.preserve_format)
    labels = batch["labels"].to(device, non_blocking=cuda)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp == "bf16")
    crop = images.shape[-2:]
    if s.mode == "supervised":
        with autocast:
            logits = segmentation_logits(model, images)
        seg = F.interpolate(logits.float(), crop, mode="bilinear", align_corners=False)
        mask = batch["mask"].to(device, non_blocking=cuda)
        if ddp:
            return {"ce": _global_pixel_ce(seg, [mask])[0]}
        return {"ce": F.cross_entropy(seg, mask, ignore_index=IGNORE_INDEX)}
    with autocast:
        out = model(images)
    losses = {"cls": classification_loss(out["cls"].float(), labels)}
    if s.mode == "cls":
        return losses
    recipe, mining = s.recipe, s.mining
    assert isinstance(recipe, OneStepRecipe) and mining is not None, "mode onestep needs its recipe and mining"
    bare = getattr(model, "module", model)  # extra forwards through DDP would sync buffers for nothing
    with torch.no_grad():
        cam = multiscale_cam(bare if s.amp == "none" else _Bf16Cam(bare), images, labels,
                             scales=mining.cam_scales, scale1_cam=out["cam"].float())
    raw = batch["raw"].to(device, non_blocking=cuda)
    roi = batch["roi"].to(device, non_blocking=cuda)
    target = _mined_targets(batch, raw, cam, labels, recipe, mining, pool, device)
    seg = F.interpolate(out["seg"].float(), crop, mode="bilinear", align_corners=False)
    if ddp:  # split_cross_entropy's bg / fg maps, each averaged over the global batch
        losses["ce_bg"], losses["ce_fg"] = _global_pixel_ce(seg, list(split_targets(target, IGNORE_INDEX)))
    else:
        losses["ce_bg"], losses["ce_fg"] = split_cross_entropy(seg, target)
    if recipe.loss == "joint":  # a per-image mean already: rank means average to the global one
        energy = recipe.energy
        losses["energy"] = dense_energy_loss(raw, torch.softmax(seg, dim=1), roi, target,
                                             sigma_rgb=energy.sigma_rgb, sigma_xy=energy.sigma_xy,
                                             scale=energy.scale, weight=energy.weight)
    return losses
