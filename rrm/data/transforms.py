"""Training augmentation in the authors' order: resize, flip, normalise, then crop into a zero container.

One-step RRM (and the stages trained like it) draws ONE random scale per batch (0.7..1.3) and resizes
each image to (int(H*s), int(W*s)), bilinear; PSA's classification recipe instead resizes each image's
long side to a random length (256..512, bicubic) and jitters its colours. Both then flip, normalise with
the ImageNet mean/std and copy a random crop_size window into a zero-filled container, so the padding of
small images is 0 in normalised space, i.e. the ImageNet mean colour. The region-of-interest (ROI) mask
records the real pixels; the uint8 image the CRFs and the dense energy loss see is the normalised crop
mapped back, uint8((x*std + mean)*255) (truncated, as the authors' astype), padding ~ (123, 116, 103).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from rrm.data.classes import IGNORE_INDEX
from rrm.data.normalize import IMAGENET_MEAN, IMAGENET_STD, as_chw


def crop_window(size: int, crop_size: int, offset: int) -> tuple[slice, slice]:
    """The authors' RandomCrop along one axis: (container slice, image slice) for a random `offset`.

    offset is drawn in 0..|size - crop_size|: it places the window inside a larger image, or the image
    inside the container when the image is smaller.
    """
    if not 0 <= offset <= abs(size - crop_size):
        raise ValueError(f"crop offset {offset} outside 0..{abs(size - crop_size)} (size {size}, crop {crop_size})")
    length = min(size, crop_size)
    cont, img = (0, offset) if size > crop_size else (offset, 0)
    return slice(cont, cont + length), slice(img, img + length)


def crop_normalised(
    image: Tensor, mask: Tensor, *, crop_size: int, offsets: tuple[int, int]
) -> dict[str, Tensor]:
    """Normalise image (3, H, W) float 0..255, copy its window into a zero crop_size^2 container.

    mask (H, W) integer labels, padded with 255. offsets (top, left): see crop_window. Returns image
    (3, c, c) float32 normalised (normalised in float64, stored float32 as the authors' container),
    raw (3, c, c) uint8 = the container mapped back and truncated, mask (c, c) int64, roi (c, c) bool.
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)[:, None, None]
    normalised = (image.double() / 255.0 - mean) / std
    rows, src_rows = crop_window(image.shape[1], crop_size, offsets[0])
    cols, src_cols = crop_window(image.shape[2], crop_size, offsets[1])
    out = torch.zeros(3, crop_size, crop_size, dtype=torch.float32)
    out[:, rows, cols] = normalised[:, src_rows, src_cols].float()
    out_mask = torch.full((crop_size, crop_size), IGNORE_INDEX, dtype=torch.int64)
    out_mask[rows, cols] = mask[src_rows, src_cols].long()
    roi = torch.zeros(crop_size, crop_size, dtype=torch.bool)
    roi[rows, cols] = True
    raw = torch.stack([(out[c] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0 for c in range(3)])
    return {"image": out, "raw": raw.to(torch.uint8), "mask": out_mask, "roi": roi}


def scale_flip(image: Tensor, mask: Tensor, *, scale: float, flip: bool) -> tuple[Tensor, Tensor]:
    """The authors' scale_im / scale_gt and flip: image (3, H, W) uint8 -> float64 resized bilinearly
    (align_corners=False, no antialiasing, as cv2.resize) to (int(H*s), int(W*s)); mask by nearest."""
    height, width = image.shape[-2:]
    size = (max(1, int(height * scale)), max(1, int(width * scale)))
    image = image.double()
    if size != (height, width):
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(mask.dtype)
    return (image.flip(-1), mask.flip(-1)) if flip else (image, mask)


def resize_long_jitter(image: Tensor, *, long_side: int, jitter: v2.ColorJitter | None,
                       flip: bool) -> Tensor:
    """PSA's classifier augmentation before normalisation: RandomResizeLong (bicubic, the short side
    rounded), horizontal flip, ColorJitter; image (3, H, W) uint8 -> (3, h, w) float64 0..255."""
    height, width = image.shape[-2:]
    if width < height:
        size = [long_side, max(1, round(width * long_side / height))]
    else:
        size = [max(1, round(height * long_side / width)), long_side]
    image = TF.resize(image, size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    if flip:
        image = image.flip(-1)
    if jitter is not None:
        image = jitter(image)
    return image.double()


class TrainBatchCollate:
    """DataLoader collate_fn: per batch one scale s ~ U(scale_range); per image flip, normalise, crop.

    With resize_long (PSA's classifier recipe) each image instead gets its own long side, drawn as an
    integer in [low, high], and color_jitter (brightness, contrast, saturation, hue) when given; the
    batch scale is then unused. Randomness comes from torch's global RNG, so `torch.manual_seed` /
    DataLoader worker seeding make it reproducible. Returns dict(image (N, 3, c, c) float32 normalised,
    raw (N, 3, c, c) float32 holding the uint8 values of the restored crop, mask (N, c, c) int64 with
    255 on void and padding, roi (N, c, c) float32 1 on real pixels, labels (N, C) float32,
    name list[str]). A sample whose mask is None gets an all-255 mask.
    """

    def __init__(
        self,
        *,
        crop_size: int,
        scale_range: tuple[float, float] = (0.7, 1.3),
        flip: bool = True,
        resize_long: tuple[int, int] | None = None,
        color_jitter: tuple[float, float, float, float] | None = None,
    ) -> None:
        if crop_size < 1:
            raise ValueError(f"crop_size: must be >= 1, got {crop_size}")
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range: need 0 < low <= high, got {scale_range}")
        if resize_long is not None and not 0 < resize_long[0] <= resize_long[1]:
            raise ValueError(f"resize_long: need 0 < low <= high, got {resize_long}")
        self.crop_size = crop_size
        self.scale_range = (float(low), float(high))
        self.flip = flip
        self.resize_long = resize_long
        self.jitter = None if color_jitter is None else v2.ColorJitter(*color_jitter)

    def __call__(self, samples: list[dict]) -> dict:
        if not samples:
            raise ValueError("TrainBatchCollate: empty batch")
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()  # one draw for the whole batch
        crops = []
        for sample in samples:
            image = as_chw(sample["image"]).to(torch.uint8)
            height, width = image.shape[-2:]
            mask = sample.get("mask")
            mask = (
                torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8)
                if mask is None
                else torch.as_tensor(np.asarray(mask), dtype=torch.uint8)
            )
            if mask.shape != (height, width):
                raise ValueError(
                    f"{sample.get('name')}: mask shape {tuple(mask.shape)} != image {(height, width)}"
                )
            flip = self.flip and torch.rand(()).item() < 0.5
            if self.resize_long is None:
                image, mask = scale_flip(image, mask, scale=scale, flip=flip)
            else:
                lo, hi = self.resize_long
                long_side = int(torch.randint(lo, hi + 1, ()))
                image = resize_long_jitter(image, long_side=long_side, jitter=self.jitter, flip=flip)
                mask = torch.full(image.shape[-2:], IGNORE_INDEX, dtype=torch.uint8)  # labels only
            offsets = [int(torch.randint(abs(n - self.crop_size) + 1, ())) for n in image.shape[-2:]]
            crops.append(crop_normalised(image, mask, crop_size=self.crop_size, offsets=(offsets[0], offsets[1])))
        return {
            "image": torch.stack([c["image"] for c in crops]),
            "raw": torch.stack([c["raw"] for c in crops]).float(),
            "mask": torch.stack([c["mask"] for c in crops]),
            "roi": torch.stack([c["roi"] for c in crops]).float(),
            "labels": torch.stack(
                [torch.as_tensor(np.asarray(s["labels"]), dtype=torch.float32) for s in samples]
            ),
            "name": [s["name"] for s in samples],
        }
