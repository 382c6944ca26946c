"""Inference on whole images of any size: multi-scale + flip averaging of softmax maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rrm.data.normalize import normalize_batch

MIN_SIDE = 8  # below one output-stride-8 cell the networks have nothing to predict from


def segmentation_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) logits (K: the dataset's classes) at feature resolution: the "seg" output every segmentation network returns."""
    return model(x)["seg"]


@torch.no_grad()
def predict_probs(model: nn.Module, image: np.ndarray, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                  device: torch.device | str = "cpu", name: str = "image") -> torch.Tensor:
    """Softmax (K, H, W) at the image's own size, averaged over scales (and horizontal flips).

    With scales == [1] and flip off this is exactly single-scale inference.
    """
    return predict_probs_batch(model, [image], scales=scales, flip=flip, device=device, names=[name])[0]


@torch.no_grad()
def predict_probs_batch(model: nn.Module, images: Sequence[np.ndarray], *, scales: Sequence[float] = (1.0,),
                        flip: bool = False, device: torch.device | str = "cpu",
                        names: Sequence[str] | None = None) -> list[torch.Tensor]:
    """predict_probs of several images of one size in one forward per scale (a CPU runs a batch of 8
    small images ~2x faster than 8 single ones); images of different sizes go one by one."""
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    shapes = {image.shape[:2] for image in images}
    if len(shapes) > 1:
        return [predict_probs(model, image, scales=scales, flip=flip, device=device, name=name)
                for image, name in zip(images, names, strict=True)]
    if not images:
        return []
    height, width = shapes.pop()
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"{names[0]}: image is {width}x{height}; both sides must be at least {MIN_SIDE} px")
    x = normalize_batch(images).to(device)
    total = None
    for scale in scales:
        size = (max(round(height * scale), MIN_SIDE), max(round(width * scale), MIN_SIDE))
        xs = x if size == (height, width) else F.interpolate(x, size, mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        logits = F.interpolate(segmentation_logits(model, batch), (height, width), mode="bilinear",
                               align_corners=False)
        probs = logits.softmax(dim=1)
        probs = (probs[: len(x)] + probs[len(x):].flip(-1)) / 2 if flip else probs
        total = probs if total is None else total + probs
    return list((total / len(scales)).cpu())
