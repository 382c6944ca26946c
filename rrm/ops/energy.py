"""``DenseEnergyLoss``: the dense energy (regularised) loss module of RRM and its copies, without C++.

Checked against the call sites of the authors' module in zbf1991/RRM (``tool/myTool.py``
``compute_joint_loss``: CPU float32 images, CUDA softmax, CPU float32 crop masks, float64 labels
(N, 1, H, W)), rulixiang/ToCo and zwyang6/SeCo (``model/losses.py`` ``get_energy_loss``: images
de-normalised to 0..255 on the GPU, uint8 labels (N, 1, H, W), float crop masks). Same
constructor, same ``forward(images, segmentations, ROIs, seg_label)``, same value (a (1,) tensor)
and the same gradient w.r.t. ``segmentations``:

    loss = -weight / N * sum(P_roi * gate * G(P_roi)),  d loss / d P = -2 weight / N * gate * ROI * G(P_roi)

on the inputs resized by ``scale_factor`` (images and ROIs nearest, P bilinear, labels nearest;
``sigma_xy`` scaled with them), with P_roi = P * ROI, gate = clamp(ROI - max_k P, 0) on labelled
pixels and 1 where ``seg_label`` is 255, and G the permutohedral bilateral filter. The maths is
:mod:`rrm.method.energy_loss`; this module only reproduces the authors' resizing and argument
conventions. Unlike the original it also runs on CPU, keeps everything on the segmentation's
device, and returns the loss there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrm.method.energy_loss import dense_energy_loss


class DenseEnergyLoss(nn.Module):
    """Drop-in for the authors' ``DenseEnergyLoss(weight, sigma_rgb, sigma_xy, scale_factor)``, checked
    against its call sites in zbf1991/RRM, rulixiang/ToCo and zwyang6/SeCo (see the module docstring).

    ``recompute_scale_factor`` is passed to ``F.interpolate``: RRM leaves it unset (None), ToCo and
    SeCo set True. The two agree whenever H * scale_factor and W * scale_factor are integers (ToCo's
    448 crops at 0.5), and differ by the nearest/bilinear sampling grid otherwise (RRM's 321 crops).
    """

    def __init__(
        self,
        weight: float,
        sigma_rgb: float,
        sigma_xy: float,
        scale_factor: float,
        *,
        recompute_scale_factor: bool | None = None,
    ) -> None:
        super().__init__()
        if not 0 < scale_factor <= 1:
            raise ValueError(f"scale_factor: expected a factor in (0, 1], got {scale_factor}")
        self.weight, self.sigma_rgb, self.sigma_xy = weight, sigma_rgb, sigma_xy
        self.scale_factor, self.recompute_scale_factor = scale_factor, recompute_scale_factor

    def _resize(self, x: Tensor, mode: str = "nearest") -> Tensor:
        extra = {"align_corners": False} if mode == "bilinear" else {}
        return F.interpolate(x, scale_factor=self.scale_factor, mode=mode,
                             recompute_scale_factor=self.recompute_scale_factor, **extra)

    def forward(self, images: Tensor, segmentations: Tensor, ROIs: Tensor, seg_label: Tensor) -> Tensor:  # noqa: N803
        """Loss of a batch.

        Args:
            images: (N, 3, H, W) RGB in 0..255 (not mean/std normalised), any device and float dtype.
            segmentations: (N, K, H, W) softmax probabilities (the gradient flows into them).
            ROIs: (N, H, W) crop mask, 1 on image pixels and 0 on padding.
            seg_label: (N, 1, H, W) (or (N, H, W)) labels, 255 = unlabelled; any dtype.
        Returns:
            (1,) tensor on ``segmentations``' device.
        """
        if segmentations.dim() != 4:
            raise ValueError(f"segmentations: expected (N, K, H, W), got shape {tuple(segmentations.shape)}")
        n, _, h, w = segmentations.shape
        if tuple(images.shape) != (n, 3, h, w):
            raise ValueError(f"images: expected shape {(n, 3, h, w)} (RGB 0..255), got {tuple(images.shape)}")
        if tuple(ROIs.shape) != (n, h, w):
            raise ValueError(f"ROIs: expected shape {(n, h, w)}, got {tuple(ROIs.shape)}")
        if seg_label.dim() == 3:
            seg_label = seg_label.unsqueeze(1)
        if tuple(seg_label.shape) != (n, 1, h, w):
            raise ValueError(f"seg_label: expected shape {(n, 1, h, w)}, got {tuple(seg_label.shape)}")
        device = segmentations.device
        rois = ROIs.to(device=device, dtype=torch.float32)
        if not bool(((rois == 0) | (rois == 1)).all()):
            raise ValueError("ROIs: expected a 0/1 crop mask")
        scaled_images = self._resize(images.to(device=device, dtype=torch.float32))
        scaled_segs = self._resize(segmentations, mode="bilinear")
        scaled_rois = self._resize(rois.unsqueeze(1)).squeeze(1)
        labels = self._resize(seg_label.to(device=device, dtype=torch.float32)).squeeze(1)
        loss = dense_energy_loss(scaled_images, scaled_segs, scaled_rois, labels.long(),
                                 sigma_rgb=self.sigma_rgb, sigma_xy=self.sigma_xy * self.scale_factor,
                                 scale=1.0, weight=self.weight)
        return loss.reshape(1)

    def extra_repr(self) -> str:
        return (f"sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, weight={self.weight}, "
                f"scale_factor={self.scale_factor}")
