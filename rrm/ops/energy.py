"""``DenseEnergyLoss``: the dense energy (regularised) loss module of RRM and its copies, without C++.

Which repository calls it how, and the test that proves each call site: docs/ops.md.

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


def _check_dtype(name: str, x: object, *, allow_uint8: bool) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or (allow_uint8 and x.dtype == torch.uint8)):
        kinds = "a float or uint8" if allow_uint8 else "a float"
        raise TypeError(f"{name}: expected {kinds} tensor, got {x.dtype}")


class DenseEnergyLoss(nn.Module):
    """Drop-in for the authors' ``DenseEnergyLoss(weight, sigma_rgb, sigma_xy, scale_factor)``, checked
    against its call sites in zbf1991/RRM, rulixiang/ToCo, zwyang6/SeCo, rulixiang/afa and (without
    ``seg_label``) meng-tang/rloss's ``DenseCRFLoss`` (tests/ops/test_callsite_*.py).

    Args:
        weight: loss weight (1e-7 in RRM/ToCo/SeCo/AFA, 2e-9 in rloss's script).
        sigma_rgb, sigma_xy: bandwidths at full resolution (sigma_xy is multiplied by scale_factor).
        scale_factor: in (0, 1]; the inputs are resized by it before filtering.
        recompute_scale_factor: passed to ``F.interpolate``: RRM, AFA and rloss leave it unset (None),
            ToCo and SeCo set True. The two agree whenever H * scale_factor and W * scale_factor are integers (ToCo's
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

    def forward(
        self,
        images: Tensor,
        segmentations: Tensor,
        ROIs: Tensor,  # noqa: N803
        seg_label: Tensor | None = None,
    ) -> Tensor:
        """Loss of a batch.

        Args:
            images: (N, 3, H, W) RGB in 0..255 (not mean/std normalised); float or uint8, any device.
            segmentations: (N, K, H, W) float softmax probabilities (the gradient flows into them);
                computed in float32 on their device (CPU or CUDA).
            ROIs: (N, H, W) 0/1 crop mask (1 on image pixels, 0 on padding); float, bool or integer,
                any device, any strides.
            seg_label: (N, 1, H, W) or (N, H, W) labels, 255 = unlabelled; uint8, integer or float
                holding integers, any device. None: every pixel unlabelled, which is rloss's
                ``DenseCRFLoss(...)(images, segmentations, ROIs)`` (no gate).
        Returns:
            (1,) float32 tensor on ``segmentations``' device.
        Raises:
            ValueError / TypeError naming the argument for a wrong shape or dtype.
        """
        _check_dtype("images", images, allow_uint8=True)
        _check_dtype("segmentations", segmentations, allow_uint8=False)
        if segmentations.dim() != 4:
            raise ValueError(f"segmentations: expected (N, K, H, W), got shape {tuple(segmentations.shape)}")
        n, _, h, w = segmentations.shape
        if tuple(images.shape) != (n, 3, h, w):
            raise ValueError(f"images: expected shape {(n, 3, h, w)} (RGB 0..255), got {tuple(images.shape)}")
        if tuple(ROIs.shape) != (n, h, w):
            raise ValueError(f"ROIs: expected shape {(n, h, w)}, got {tuple(ROIs.shape)}")
        if seg_label is None:
            seg_label = torch.full((n, 1, h, w), 255, dtype=torch.uint8, device=segmentations.device)
        elif not isinstance(seg_label, Tensor) or seg_label.is_complex():
            raise TypeError(f"seg_label: expected a real tensor, got {getattr(seg_label, 'dtype', type(seg_label))}")
        if not isinstance(ROIs, Tensor) or ROIs.is_complex():
            raise TypeError(f"ROIs: expected a real tensor, got {getattr(ROIs, 'dtype', type(ROIs))}")
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
