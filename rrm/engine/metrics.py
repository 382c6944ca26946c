"""Confusion-matrix segmentation metrics (mIoU over a dataset's classes, background included; one matrix per split)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rrm.data.datasets import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates mat[target, pred] over pixels; pixels whose target or prediction is ignore_index are
    skipped (so sparse pseudo labels can be scored on their labelled pixels)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, target: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor) -> None:
        t, p = (
            np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x).astype(np.int64).ravel()
            for x in (target, pred)
        )
        if t.shape != p.shape:
            raise ValueError(
                f"target and pred must have the same number of pixels, got {t.size} and {p.size}"
            )
        keep = (t != self.ignore_index) & (p != self.ignore_index)
        t, p = t[keep], p[keep]
        for name, x in (("target", t), ("pred", p)):
            if x.size and (x.min() < 0 or x.max() >= self.num_classes):
                raise ValueError(
                    f"{name} holds labels outside 0..{self.num_classes - 1} (and {self.ignore_index})"
                )
        n = self.num_classes
        self.mat += np.bincount(n * t + p, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both target and pred."""
        tp = np.diag(self.mat).astype(np.float64)
        union = self.mat.sum(0) + self.mat.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.mat.sum()
        return float(np.trace(self.mat) / total) if total else float("nan")

    def to_dict(self, class_names: Sequence[str]) -> dict:
        """{"miou", "pixel_acc", "per_class_iou": {name: iou or None}} (None where NaN: valid JSON)."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"class_names must have {self.num_classes} names, got {len(class_names)}")
        return {
            "miou": _json_float(self.miou()),
            "pixel_acc": _json_float(self.pixel_accuracy()),
            "per_class_iou": {n: _json_float(v) for n, v in zip(class_names, self.iou(), strict=True)},
        }


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
