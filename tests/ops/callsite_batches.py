"""Training batches shaped as the other repositories' data loaders make them, from real VOC photos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rrm.io import load_image, load_mask

NAMES = ("2007_000063", "2007_000392")
MEAN_RGB = (123.675, 116.28, 103.53)  # the ImageNet mean in 0..255, what normalise-then-zero-pad leaves


@dataclass
class Batch:
    images: Tensor  # (N, 3, C, C) float32 RGB 0..255, padding at the mean colour
    boxes: Tensor  # (N, 4) int64 [y0, y1, x0, x1] of the photo inside the crop
    labels: Tensor  # (N, C, C) int64 classes, 255 = unlabelled (and on the padding)
    logits: Tensor  # (N, 21, C, C) float32 noisy logits of the masks


def crop_batch(voc: Path, crop: int, *, seed: int, names: Sequence[str] = NAMES) -> Batch:
    """Each photo scaled to 85 % of the crop on its long side and placed at a seeded offset (padding on
    two sides), its ground truth with 40 % of the pixels unlabelled, as mined pseudo-labels are."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.tensor(MEAN_RGB).view(1, 3, 1, 1).repeat(len(names), 1, crop, crop)
    labels = torch.full((len(names), crop, crop), 255, dtype=torch.int64)
    boxes = []
    for i, name in enumerate(names):
        photo = Image.fromarray(load_image(voc / "JPEGImages" / f"{name}.jpg"))
        mask = Image.fromarray(load_mask(voc / "SegmentationClass" / f"{name}.png"))
        scale = 0.85 * crop / max(photo.size)
        w, h = round(photo.size[0] * scale), round(photo.size[1] * scale)
        y0 = int(torch.randint(0, crop - h + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, crop - w + 1, (1,), generator=gen))
        images[i, :, y0:y0 + h, x0:x0 + w] = torch.from_numpy(
            np.asarray(photo.resize((w, h), Image.BILINEAR)).copy()).permute(2, 0, 1).float()
        labels[i, y0:y0 + h, x0:x0 + w] = torch.from_numpy(np.asarray(mask.resize((w, h), Image.NEAREST)).astype(np.int64))
        boxes.append([y0, y0 + h, x0, x0 + w])
    onehot = F.one_hot(labels.where(labels != 255, 0), 21).permute(0, 3, 1, 2).float()
    smooth = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    logits = torch.log(0.6 * smooth + 0.4 / 21) + 1.5 * torch.randn(smooth.shape, generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < 0.4] = 255
    return Batch(images, torch.tensor(boxes), labels, logits)


def network_logits(batch: Batch, stride: int) -> Tensor:
    """The segmentation head's output at the network's stride (a leaf that receives the gradient)."""
    size = -(-batch.logits.shape[-1] // stride)
    return F.adaptive_avg_pool2d(batch.logits, size).requires_grad_()
