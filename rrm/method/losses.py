"""Losses of the two branches: multi-label classification and the bg/fg-split cross-entropy (eq. 8-9)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label soft-margin loss of the classification branch: logits (N, C), labels (N, C) multi-hot."""
    if logits.ndim != 2 or logits.shape != labels.shape:
        raise ValueError(
            f"logits and labels must both be (N, C), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))


def _masked_ce(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    if not (target != ignore_index).any():
        return logits.sum() * 0.0  # no labelled pixel: zero, still connected to the graph
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def split_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Cross-entropy of eq. 9 "computed for background and foreground individually".

    logits (N, C + 1, H, W), target (N, H, W) int64 in {0..C, ignore_index}. Returns (bg_loss, fg_loss):
    the CE on a map holding only the background labels (foreground -> ignore) and the CE on a map holding
    only the foreground labels, each averaged over its own labelled pixels (0 when there are none). The
    split keeps the usually larger background region from drowning the object pixels, as the authors do.
    """
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[:1] + logits.shape[2:] != target.shape:
        raise ValueError(
            f"logits must be (N, C, H, W) and target (N, H, W) with matching N, H, W; got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    bg_target, fg_target = split_targets(target, ignore_index)
    return _masked_ce(logits, bg_target, ignore_index), _masked_ce(logits, fg_target, ignore_index)


def split_targets(target: Tensor, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """(N, H, W) labels -> (background-only map, foreground-only map), the other pixels set to ignore."""
    target = target.long()
    bg_target = target.masked_fill((target != ignore_index) & (target != 0), ignore_index)
    return bg_target, target.masked_fill(target == 0, ignore_index)
