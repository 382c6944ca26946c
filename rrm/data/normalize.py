"""ImageNet normalisation, the input of every network here, in training and at inference.

Plain torch, so that processes that only run inference (the evaluation stages) need not import
torchvision, whose import pulls in torch._dynamo: ~3 s per stage on the 2-core default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def as_chw(image: np.ndarray | Tensor) -> Tensor:
    """(H, W, 3) array or tensor, 0..255 -> (3, H, W) tensor (dtype kept)."""
    tensor = torch.as_tensor(np.asarray(image)) if isinstance(image, np.ndarray) else image
    if tensor.ndim != 3 or tensor.shape[-1] != 3:
        raise ValueError(f"image: expected (H, W, 3) RGB, got shape {tuple(tensor.shape)}")
    return tensor.permute(2, 0, 1)


def normalize_raw(raw: Tensor) -> Tensor:
    """(..., 3, H, W) float 0..255 -> ImageNet-normalised float32, (x / 255 - mean) / std."""
    mean = torch.tensor(IMAGENET_MEAN, device=raw.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=raw.device).view(3, 1, 1)
    return (raw.float() / 255.0 - mean) / std


def normalize(image: np.ndarray | Tensor) -> Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ImageNet-normalised."""
    return normalize_raw(as_chw(image))


def normalize_batch(images: np.ndarray | Sequence[np.ndarray]) -> Tensor:
    """N same-size (H, W, 3) uint8 RGB images -> (N, 3, H, W) float32 ImageNet-normalised."""
    return torch.stack([normalize(image) for image in images])
