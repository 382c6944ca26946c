"""One-step RRM's training step: CAM -> reliable regions -> CE(bg) + CE(fg) + dense energy loss (paper eq. 8)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from rrm.data.classes import IGNORE_INDEX
from rrm.engine.mining import mine_batch
from rrm.engine.recipe import TrainSettings
from rrm.engine.steps import StepFn, autocast, global_pixel_ce, images_on, to_device
from rrm.method.cam import multiscale_cam
from rrm.method.crf_pool import CRFPool
from rrm.method.energy_loss import dense_energy_loss
from rrm.method.losses import classification_loss, split_cross_entropy, split_targets
from rrm.method.reliable import mine_cam_only
from rrm.method.reliable_torch import mine_batch_torch, mine_cam_only_torch
from rrm.settings import MiningSettings, OneStepRecipe


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


@contextmanager
def onestep_steps(s: TrainSettings) -> Iterator[StepFn]:
    """Mode onestep (see rrm.engine.steps for the factory protocol). Reliable regions mined on the host need
    the CRF worker pool (one per rank), open while the steps run."""
    recipe, mining = s.recipe, s.mining
    if not isinstance(recipe, OneStepRecipe) or mining is None:
        raise ValueError("mode onestep needs a OneStepRecipe and the mining section")
    pool = (CRFPool(mining.pool_processes) if recipe.pseudo == "rrm" and mining.params.crf_backend == "pydensecrf"
            else None)

    def step(model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        images, labels = images_on(batch, device), to_device(batch, "labels", device)
        crop = images.shape[-2:]
        with autocast(s, device):
            out = model(images)
        losses = {"cls": classification_loss(out["cls"].float(), labels)}
        bare = getattr(model, "module", model)  # extra forwards through DDP would sync buffers for nothing
        with torch.no_grad():
            cam = multiscale_cam(bare if s.amp == "none" else _Bf16Cam(bare), images, labels,
                                 scales=mining.cam_scales, scale1_cam=out["cam"].float())
        raw, roi = to_device(batch, "raw", device), to_device(batch, "roi", device)
        target = _mined_targets(batch, raw, cam, labels, recipe, mining, pool, device)
        seg = F.interpolate(out["seg"].float(), crop, mode="bilinear", align_corners=False)
        if isinstance(model, DistributedDataParallel):  # split_cross_entropy's bg / fg maps, each averaged over
            losses["ce_bg"], losses["ce_fg"] = global_pixel_ce(  # the global batch
                seg, list(split_targets(target, IGNORE_INDEX)))
        else:
            losses["ce_bg"], losses["ce_fg"] = split_cross_entropy(seg, target)
        if recipe.loss == "joint":  # a per-image mean already: rank means average to the global one
            energy = recipe.energy
            losses["energy"] = dense_energy_loss(raw, torch.softmax(seg, dim=1), roi, target,
                                                 sigma_rgb=energy.sigma_rgb, sigma_xy=energy.sigma_xy,
                                                 scale=energy.scale, weight=energy.weight)
        return losses

    try:
        yield step
    finally:
        if pool is not None:
            pool.close()
