"""Inference on whole images of any size: multi-scale + flip averaging of softmax maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rrm.data.transforms import normalize

MIN_SIDE = 8  # below one output-stride-8 cell the networks have nothing to predict from


def segmentation_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, 21, h, w) logits at feature resolution: RRMNet's 'seg' or DeepLab's 'out'."""
    out = model(x)
    return out["seg"] if "seg" in out else out["out"]


@torch.no_grad()
def predict_probs(model: nn.Module, image: np.ndarray, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                  device: torch.device | str = "cpu", name: str = "image") -> torch.Tensor:
    """Softmax (21, H, W) at the image's own size, averaged over scales (and horizontal flips).

    With scales == [1] and flip off this is exactly single-scale inference.
    """
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"{name}: image is {width}x{height}; both sides must be at least {MIN_SIDE} px")
    x = normalize(image).unsqueeze(0).to(device)
    total = None
    for scale in scales:
        size = (max(round(height * scale), MIN_SIDE), max(round(width * scale), MIN_SIDE))
        xs = x if size == (height, width) else F.interpolate(x, size, mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        logits = F.interpolate(segmentation_logits(model, batch), (height, width), mode="bilinear",
                               align_corners=False)
        probs = logits.softmax(dim=1)
        probs = (probs[0] + probs[1].flip(-1)) / 2 if flip else probs[0]
        total = probs if total is None else total + probs
    return (total / len(scales)).cpu()
