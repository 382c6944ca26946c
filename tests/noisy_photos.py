"""Real VOC photos with noisy, smoothed one-hot score maps of their masks: the CRF tests' inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rrm.io import load_image, load_mask


def noisy_mask_probs(voc: Path, names: Sequence[str], size: tuple[int, int], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """uint8 images (N, 3, H, W) resized to size (H, W), noisy smoothed one-hot probabilities of their
    masks (N, 21, H, W), and the resized masks (N, H, W)."""
    images, masks = [], []
    for name in names:
        photo = Image.fromarray(load_image(voc / "JPEGImages" / f"{name}.jpg")).resize(size[::-1], Image.BILINEAR)
        mask = Image.fromarray(load_mask(voc / "SegmentationClass" / f"{name}.png")).resize(size[::-1], Image.NEAREST)
        images.append(torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1))
        masks.append(torch.from_numpy(np.asarray(mask).astype(np.int64)))
    labels = torch.stack(masks)
    onehot = F.one_hot(labels.where(labels != 255, 0), 21).permute(0, 3, 1, 2).float()
    smooth = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.log(0.6 * smooth + 0.4 / 21) + 1.5 * torch.randn(smooth.shape, generator=gen)
    return torch.stack(images), logits.softmax(1), labels
