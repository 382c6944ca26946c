"""The loss terms of one training step: the classifier's and segmentation on given masks (see rrm.engine.train).

One-step RRM's step (mining and the energy loss) is rrm.engine.onestep's, so the other stages load none
of its code. A step factory takes the run's settings and is a context manager yielding the step function
`(model, batch, device) -> {loss name: value}`, whose sum is what is optimised; `model` may be
DistributedDataParallel-wrapped, and pixel-averaged terms then average over the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from rrm.data.classes import IGNORE_INDEX
from rrm.engine.inference import segmentation_logits
from rrm.engine.recipe import TrainSettings
from rrm.method.losses import classification_loss

StepFn = Callable[[nn.Module, dict, torch.device], dict[str, torch.Tensor]]
Steps = Callable[[TrainSettings], AbstractContextManager[StepFn]]


def global_pixel_ce(logits: torch.Tensor, targets: list[torch.Tensor]) -> list[torch.Tensor]:
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


def to_device(batch: dict, key: str, device: torch.device) -> torch.Tensor:
    """A batch tensor on `device`: pinned host tensors copy asynchronously on CUDA."""
    return batch[key].to(device, non_blocking=device.type == "cuda")


def images_on(batch: dict, device: torch.device) -> torch.Tensor:
    """The batch's images on `device`, channels_last on CUDA (cuDNN's fast layouts; train converts the model)."""
    cuda = device.type == "cuda"
    return batch["image"].to(device, non_blocking=cuda,
                             memory_format=torch.channels_last if cuda else torch.preserve_format)


def autocast(s: TrainSettings, device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp == "bf16")


@contextmanager
def classifier_steps(s: TrainSettings) -> Iterator[StepFn]:
    """Mode cls: the multi-label soft-margin loss."""
    def step(model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        with autocast(s, device):
            out = model(images_on(batch, device))
        return {"cls": classification_loss(out["cls"].float(), to_device(batch, "labels", device))}
    yield step


@contextmanager
def supervised_steps(s: TrainSettings) -> Iterator[StepFn]:
    """Mode supervised: cross-entropy on the batch's masks (ground truth, or pseudo masks for DeepLab)."""
    def step(model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        images = images_on(batch, device)
        with autocast(s, device):
            logits = segmentation_logits(model, images)
        seg = F.interpolate(logits.float(), images.shape[-2:], mode="bilinear", align_corners=False)
        mask = to_device(batch, "mask", device)
        if isinstance(model, DistributedDataParallel):
            return {"ce": global_pixel_ce(seg, [mask])[0]}
        return {"ce": F.cross_entropy(seg, mask, ignore_index=IGNORE_INDEX)}
    yield step
