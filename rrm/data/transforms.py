"""Training augmentation (torchvision.transforms.v2, masks as tv_tensors.Mask); normalisation: rrm.data.normalize.

The authors' training loop draws ONE random scale per batch (0.7..1.3), then flips and crops each
image to 321x321, padding small images and remembering the padding as a region-of-interest (ROI)
mask: the CAM, the CRF and the dense energy loss (eq. 10-14) must ignore the padded area.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from rrm.data.classes import IGNORE_INDEX
from rrm.data.normalize import as_chw, normalize_raw

_PAD = 255  # every Mask is padded with 255; the ROI is carried as a Mask of zeros, so ROI = (value != 255)


class TrainBatchCollate:
    """DataLoader collate_fn: one scale s ~ U(scale_range) per batch, then per sample flip and crop.

    Randomness comes from torch's global RNG, so `torch.manual_seed` / DataLoader worker seeding make it
    reproducible. Returns dict(image (N, 3, c, c) float32 normalised, raw (N, 3, c, c) float32 0..255,
    mask (N, c, c) int64 with 255 on void and padding, roi (N, c, c) float32 1 inside the image,
    labels (N, 20) float32, name list[str]). A sample whose mask is None gets an all-255 mask.
    """

    def __init__(
        self, *, crop_size: int, scale_range: tuple[float, float] = (0.7, 1.3), flip: bool = True
    ) -> None:
        if crop_size < 1:
            raise ValueError(f"crop_size: must be >= 1, got {crop_size}")
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range: need 0 < low <= high, got {scale_range}")
        self.crop_size = crop_size
        self.scale_range = (float(low), float(high))
        self.flip = flip
        # Image padded with raw 0, masks (label and ROI) with 255.
        self._flip_crop = v2.Compose(
            [
                v2.RandomHorizontalFlip(p=0.5 if flip else 0.0),
                v2.RandomCrop(
                    crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: _PAD}
                ),
            ]
        )

    def __call__(self, samples: list[dict]) -> dict:
        if not samples:
            raise ValueError("TrainBatchCollate: empty batch")
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()  # one draw for the whole batch
        images, masks, rois = [], [], []
        for sample in samples:
            image = tv_tensors.Image(as_chw(sample["image"]).to(torch.uint8))
            height, width = image.shape[-2:]
            mask = sample.get("mask")
            mask = (
                torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8)
                if mask is None
                else (torch.as_tensor(np.asarray(mask), dtype=torch.uint8))
            )
            if mask.shape != (height, width):
                raise ValueError(
                    f"{sample.get('name')}: mask shape {tuple(mask.shape)} != image {(height, width)}"
                )
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            # Resize: bilinear + antialias for the image; Masks always use NEAREST in v2.
            out = v2.Resize(size, antialias=True)(
                {
                    "image": image,
                    "mask": tv_tensors.Mask(mask[None]),
                    "roi": tv_tensors.Mask(torch.zeros(1, height, width, dtype=torch.uint8)),
                }
            )
            out = self._flip_crop(out)
            images.append(out["image"])
            masks.append(out["mask"][0])
            rois.append(out["roi"][0] != _PAD)
        raw = torch.stack([img.as_subclass(Tensor) for img in images]).float()
        return {
            "image": normalize_raw(raw),
            "raw": raw,
            "mask": torch.stack([m.as_subclass(Tensor) for m in masks]).long(),
            "roi": torch.stack(rois).float(),
            "labels": torch.stack(
                [torch.as_tensor(np.asarray(s["labels"]), dtype=torch.float32) for s in samples]
            ),
            "name": [s["name"] for s in samples],
        }
