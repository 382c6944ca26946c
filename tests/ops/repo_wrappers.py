"""Independent transcriptions of other repositories' Python wrappers around the C++ ``bilateralfilter``
extension, with ``rrm.ops.bilateralfilter_batch`` underneath (their one-line import swap).

Written fresh in those repositories' style from their files (read with the search tool):
zbf1991/RRM ``DenseEnergyLoss.py``; rulixiang/ToCo and zwyang6/SeCo ``model/losses.py``; rulixiang/afa
``utils/losses.py``; meng-tang/rloss ``pytorch/pytorch-deeplab_v3_plus/DenseCRFLoss.py``; the
``DenseCRF`` class of rulixiang/afa ``utils/dcrf.py`` (pydensecrf). Their ``.cuda()`` calls become moves
to the segmentation's device, so the same code runs on a CPU-only machine and on a GPU. Nothing here
calls rrm's loss; only the C++ filter is replaced.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Function

from rrm.ops import bilateralfilter_batch

UNIT_ROUNDOFF = 2.0**-24  # float32
LAMBDA = 6.0  # Higham & Mary (2019): |error| <= LAMBDA sqrt(n) u sum|terms| fails with probability <= 2 exp(-18)


def value_rtol(n_terms: int) -> float:
    """Relative tolerance of two float32 evaluations of a loss that is a sum of ``n_terms`` products of one
    sign (P * gate * G(P) >= 0): the probabilistic bound LAMBDA sqrt(n) u on each summation order (two
    orders compared: twice that), plus 32 u for the per-term roundings (resize, gate, the gate folded into
    the lattice's slice on one side and multiplied afterwards on the other)."""
    return 2 * LAMBDA * math.sqrt(n_terms) * UNIT_ROUNDOFF + 32 * UNIT_ROUNDOFF


def grad_atol(num_classes: int, scale_factor: float, largest: float) -> float:
    """Absolute tolerance of the gradient w.r.t. the logits, largest = max |reference gradient|. Each entry
    is the softmax Jacobian (K terms, row sum <= 2) applied to the bilinear resize's adjoint (fan-in
    m = (1 / scale + 1)^2 terms of weight <= 1) of -2 w / N * gate * G(P) * ROI, whose two evaluations differ
    by a few roundings per entry; bound: (LAMBDA sqrt(K m) + 32) u times 2 m times the largest entry."""
    fan_in = (1.0 / scale_factor + 1.0) ** 2
    return (LAMBDA * math.sqrt(num_classes * fan_in) + 32) * UNIT_ROUNDOFF * 2 * fan_in * largest


class DenseEnergyLossFunction(Function):
    """RRM's function (ToCo, SeCo and AFA keep the same body; ToCo/SeCo clone the ROIs and call images.cpu())."""

    @staticmethod
    def forward(ctx, images, segmentations, sigma_rgb, sigma_xy, ROIs, unlabel_region):  # noqa: N803
        ctx.save_for_backward(segmentations)
        ctx.N, ctx.K, ctx.H, ctx.W = segmentations.shape
        ctx.device = segmentations.device
        Gate = ROIs.clone().to(ctx.device)  # noqa: N806

        ROIs = ROIs.unsqueeze_(1).repeat(1, ctx.K, 1, 1)  # noqa: N806

        seg_max = torch.max(segmentations, dim=1)[0]
        Gate = Gate - seg_max  # noqa: N806
        Gate[unlabel_region.to(ctx.device)] = 1
        Gate[Gate < 0] = 0
        Gate = Gate.unsqueeze_(1).repeat(1, ctx.K, 1, 1)  # noqa: N806

        segmentations = torch.mul(segmentations.to(ctx.device), ROIs.to(ctx.device))
        ctx.ROIs = ROIs

        densecrf_loss = 0.0
        images = images.cpu().numpy().flatten()
        segmentations = segmentations.cpu().numpy().flatten()
        AS = np.zeros(segmentations.shape, dtype=np.float32)  # noqa: N806
        bilateralfilter_batch(images, segmentations, AS, ctx.N, ctx.K, ctx.H, ctx.W, sigma_rgb, sigma_xy)
        Gate = Gate.cpu().numpy().flatten()  # noqa: N806
        AS = np.multiply(AS, Gate)  # noqa: N806
        densecrf_loss -= np.dot(segmentations, AS)

        densecrf_loss /= ctx.N

        ctx.AS = np.reshape(AS, (ctx.N, ctx.K, ctx.H, ctx.W))
        return torch.tensor([densecrf_loss])

    @staticmethod
    def backward(ctx, grad_output):
        grad_segmentation = -2 * grad_output * torch.from_numpy(ctx.AS).to(grad_output.device) / ctx.N
        grad_segmentation = grad_segmentation.to(ctx.device)
        grad_segmentation = torch.mul(grad_segmentation, ctx.ROIs.to(ctx.device))
        return None, grad_segmentation, None, None, None, None


class DenseEnergyLoss(nn.Module):
    """RRM's and AFA's module: F.interpolate without recompute_scale_factor."""

    recompute = False

    def __init__(self, weight, sigma_rgb, sigma_xy, scale_factor):
        super().__init__()
        self.weight = weight
        self.sigma_rgb = sigma_rgb
        self.sigma_xy = sigma_xy
        self.scale_factor = scale_factor

    def _interpolate(self, x, **kwargs):
        if self.recompute:
            kwargs["recompute_scale_factor"] = True
        return F.interpolate(x, scale_factor=self.scale_factor, **kwargs)

    def forward(self, images, segmentations, ROIs, seg_label):  # noqa: N803
        scaled_images = self._interpolate(images)
        scaled_segs = self._interpolate(segmentations, mode="bilinear", align_corners=False)
        scaled_ROIs = self._interpolate(ROIs.unsqueeze(1)).squeeze(1)  # noqa: N806
        scaled_seg_label = self._interpolate(seg_label, mode="nearest")
        unlabel_region = (scaled_seg_label.long() == 255).squeeze(1)

        return self.weight * DenseEnergyLossFunction.apply(
            scaled_images, scaled_segs, self.sigma_rgb, self.sigma_xy * self.scale_factor, scaled_ROIs, unlabel_region)


class ToCoDenseEnergyLoss(DenseEnergyLoss):
    """ToCo's and SeCo's module: every F.interpolate with recompute_scale_factor=True."""

    recompute = True


def get_energy_loss(img, logit, label, img_box, loss_layer, mean=(123.675, 116.28, 103.53),
                    std=(58.395, 57.12, 57.375)):
    """SeCo's get_energy_loss; ToCo's and AFA's are the same without the img_box=None branch."""
    pred_prob = F.softmax(logit, dim=1)

    if img_box is not None:
        crop_mask = torch.zeros_like(pred_prob[:, 0, ...])
        for idx, coord in enumerate(img_box):
            crop_mask[idx, coord[0]:coord[1], coord[2]:coord[3]] = 1
    else:
        crop_mask = torch.ones_like(pred_prob[:, 0, ...])

    _img = torch.zeros_like(img)
    _img[:, 0, :, :] = img[:, 0, :, :] * std[0] + mean[0]
    _img[:, 1, :, :] = img[:, 1, :, :] * std[1] + mean[1]
    _img[:, 2, :, :] = img[:, 2, :, :] * std[2] + mean[2]

    loss = loss_layer(_img, pred_prob, crop_mask, label.type(torch.uint8).unsqueeze(1))

    return loss.to(logit.device)  # loss.cuda()


class DenseCRFLossFunction(Function):
    """rloss's function: no gate, no labels."""

    @staticmethod
    def forward(ctx, images, segmentations, sigma_rgb, sigma_xy, ROIs):  # noqa: N803
        ctx.save_for_backward(segmentations)
        ctx.N, ctx.K, ctx.H, ctx.W = segmentations.shape
        ctx.device = segmentations.device

        ROIs = ROIs.unsqueeze_(1).repeat(1, ctx.K, 1, 1)  # noqa: N806
        segmentations = torch.mul(segmentations.to(ctx.device), ROIs.to(ctx.device))
        ctx.ROIs = ROIs

        densecrf_loss = 0.0
        images = images.numpy().flatten()
        segmentations = segmentations.cpu().numpy().flatten()
        AS = np.zeros(segmentations.shape, dtype=np.float32)  # noqa: N806
        bilateralfilter_batch(images, segmentations, AS, ctx.N, ctx.K, ctx.H, ctx.W, sigma_rgb, sigma_xy)
        densecrf_loss -= np.dot(segmentations, AS)

        densecrf_loss /= ctx.N

        ctx.AS = np.reshape(AS, (ctx.N, ctx.K, ctx.H, ctx.W))
        return torch.tensor([densecrf_loss])

    @staticmethod
    def backward(ctx, grad_output):
        grad_segmentation = -2 * grad_output * torch.from_numpy(ctx.AS).to(grad_output.device) / ctx.N
        grad_segmentation = grad_segmentation.to(ctx.device)
        grad_segmentation = torch.mul(grad_segmentation, ctx.ROIs.to(ctx.device))
        return None, grad_segmentation, None, None, None


class DenseCRFLoss(nn.Module):
    """rloss's module: three-argument forward(images, segmentations, ROIs)."""

    def __init__(self, weight, sigma_rgb, sigma_xy, scale_factor):
        super().__init__()
        self.weight = weight
        self.sigma_rgb = sigma_rgb
        self.sigma_xy = sigma_xy
        self.scale_factor = scale_factor

    def forward(self, images, segmentations, ROIs):  # noqa: N803
        scaled_images = F.interpolate(images, scale_factor=self.scale_factor)
        scaled_segs = F.interpolate(segmentations, scale_factor=self.scale_factor, mode="bilinear",
                                    align_corners=False)
        scaled_ROIs = F.interpolate(ROIs.unsqueeze(1), scale_factor=self.scale_factor).squeeze(1)  # noqa: N806
        return self.weight * DenseCRFLossFunction.apply(
            scaled_images, scaled_segs, self.sigma_rgb, self.sigma_xy * self.scale_factor, scaled_ROIs)


class DenseCRF:
    """The pydensecrf post-processor class (rulixiang/afa utils/dcrf.py; DuPL's eval imports a DenseCRF of
    this signature from its utils/dcrf.py)."""

    def __init__(self, iter_max, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std):
        self.iter_max = iter_max
        self.pos_w = pos_w
        self.pos_xy_std = pos_xy_std
        self.bi_w = bi_w
        self.bi_xy_std = bi_xy_std
        self.bi_rgb_std = bi_rgb_std

    def __call__(self, image, probmap):
        import pydensecrf.densecrf as dcrf
        import pydensecrf.utils as utils

        C, H, W = probmap.shape  # noqa: N806
        U = np.ascontiguousarray(utils.unary_from_softmax(probmap))  # noqa: N806
        image = np.ascontiguousarray(image)
        d = dcrf.DenseCRF2D(W, H, C)
        d.setUnaryEnergy(U)
        d.addPairwiseGaussian(sxy=self.pos_xy_std, compat=self.pos_w)
        d.addPairwiseBilateral(sxy=self.bi_xy_std, srgb=self.bi_rgb_std, rgbim=image, compat=self.bi_w)
        Q = d.inference(self.iter_max)  # noqa: N806
        return np.array(Q).reshape((C, H, W))
