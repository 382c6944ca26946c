"""Dense energy loss of RRM (paper eq. 10-14) on a permutohedral-lattice bilateral filter.

With the Potts form of eq. 12 and sum_c P_c(j) = 1, the energy of pixel i is
``sum_c P_c(i) sum_j G(i, j) (1 - P_c(j)) = sum_j G(i, j) - sum_c P_c(i) (G * P_c)(i)``; the first
part does not depend on P, so the loss minimised is

    L = -weight / N * sum_n sum_i S_n(i) sum_c P_c(i) (G * P_c)(i)

with G the bilateral Gaussian of eq. 11 (features x/sigma_xy, y/sigma_xy, rgb/sigma_rgb, the 1/W of
eq. 11 folded into ``weight``, the j = i term kept as the authors do) and S the soft filter of
eq. 14: 1 - max_c P(i) on pixels with a reliable label, 1 on unlabelled pixels, 0 outside the crop.

This follows the authors' implementation (see notes/official-code.md, "Dense energy loss as
implemented"): the loss runs on the image (nearest), the softmax (bilinear) and the ROI/labels
(nearest) downscaled by ``scale``, with sigma_xy multiplied by ``scale``; P is zeroed outside the
ROI before filtering; S is held constant in the backward pass, whose gradient w.r.t. the
downscaled P is ``-2 weight S (G * P) / N`` (autograd carries it through the bilinear resize). G is
the permutohedral lattice, whose sum is about 0.57x the exact Gaussian on photos; the weight 1e-7
only keeps its meaning with that filter. ``backend="exact"`` uses the dense O(P^2) Gaussian
instead (a stronger loss: rescale the weight by ~0.57 for the same strength). The module with the
authors' call signature, for other projects, is ``rrm.ops.DenseEnergyLoss``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rrm.data.classes import IGNORE_INDEX
from rrm.method.permutohedral import PermutohedralLattice, bilateral_features, exact_gaussian_filter

Backend = Literal["lattice", "exact"]


def _filter_pixels(
    images: Tensor,
    rows: Tensor,
    *,
    sigma_xy: float,
    sigma_rgb: float,
    backend: Backend,
    after: Tensor | None = None,
) -> Tensor:
    """Filter pixel-major values (N*H*W, K) of the (N, 3, H, W) images, times ``after`` (N*H*W,) if given."""
    n, _, h, w = images.shape
    if backend == "lattice":
        groups = torch.arange(n, device=rows.device).repeat_interleave(h * w)
        features = bilateral_features(images, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
        lattice = PermutohedralLattice(features, groups=groups)
        return (lattice if after is None else lattice.rescale_(after=after)).filter(rows)
    if backend == "exact":
        feats = [bilateral_features(img, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb) for img in images]
        per_image = rows.reshape(n, h * w, -1)
        out = torch.cat([exact_gaussian_filter(f, v) for f, v in zip(feats, per_image, strict=True)])
        out = out.to(rows.dtype)
        return out if after is None else out.mul_(after[:, None])
    raise ValueError(f"backend: expected 'lattice' or 'exact', got {backend!r}")


def bilateral_filter_batch(
    images: Tensor, values: Tensor, *, sigma_xy: float, sigma_rgb: float, backend: Backend = "lattice"
) -> Tensor:
    """Bilateral-Gaussian filter of (N, K, H, W) values guided by (N, 3, H, W) images in 0..255.

    Returns (N, K, H, W): ``sum_j exp(-|f_i - f_j|^2 / 2) v_j`` per image (self-term included, not
    normalised). The lattice backend filters the whole batch through one lattice (images kept apart
    by a group id), the exact backend loops over images.
    """
    n, k, h, w = values.shape
    rows = values.permute(0, 2, 3, 1).reshape(n * h * w, k)
    out = _filter_pixels(images, rows, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, backend=backend)
    return out.reshape(n, h, w, k).permute(0, 3, 1, 2)


def soft_filter(probs: Tensor, roi: Tensor, labelled: Tensor) -> Tensor:
    """S(i) of eq. 14, (N, H, W): 1 - max_c P on labelled pixels, 1 on unlabelled ones, 0 outside ROI."""
    gate = torch.where(labelled, 1.0 - probs.amax(dim=1), torch.ones_like(roi, dtype=probs.dtype))
    return gate.clamp_(min=0.0) * roi.to(probs.dtype)


class _DenseEnergyFunction(torch.autograd.Function):
    """-sum S P (G * P) / N with the authors' gradient -2 S (G * P) / N (S and G held constant)."""

    @staticmethod
    def forward(ctx, images, probs, roi, labelled, sigma_rgb, sigma_xy, backend):  # type: ignore[override]
        n, k, h, w = probs.shape
        roi = roi.to(probs.dtype)
        gate = soft_filter(probs, roi, labelled).reshape(n * h * w)
        # Pixel-major (N*H*W, K) rows; P is zeroed outside the crop so padding pixels are no
        # neighbours either. The layout change is a plain copy (a multiply writing the permuted
        # layout directly walks memory across the grain and is ~4x slower on CPU).
        masked = torch.empty(n, h, w, k, dtype=probs.dtype, device=probs.device)
        masked.copy_(probs.permute(0, 2, 3, 1)).mul_(roi.unsqueeze(-1))
        masked = masked.view(n * h * w, k)
        gated = _filter_pixels(
            images, masked, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb, backend=backend, after=gate
        )
        ctx.save_for_backward(gated)
        ctx.shape = (n, h, w, k)
        return -torch.dot(masked.reshape(-1), gated.reshape(-1)) / n

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (gated,) = ctx.saved_tensors
        n, h, w, k = ctx.shape
        # Back to the contiguous (N, K, H, W) layout of probs in one copy, so that neither autograd's
        # gradient accumulation nor the resize's backward copies it again.
        grad = torch.empty(n, k, h, w, dtype=gated.dtype, device=gated.device)
        grad.copy_(gated.view(n, h, w, k).permute(0, 3, 1, 2)).mul_(grad_output * (-2.0 / n))
        return None, grad, None, None, None, None, None


def _check_inputs(image: Tensor, probs: Tensor, roi: Tensor, seg_label: Tensor) -> None:
    if probs.dim() != 4:
        raise ValueError(f"probs: expected (N, K, H, W) softmax, got shape {tuple(probs.shape)}")
    n, _, h, w = probs.shape
    if image.shape != (n, 3, h, w):
        raise ValueError(f"image: expected shape {(n, 3, h, w)} (0..255 RGB), got {tuple(image.shape)}")
    if roi.shape != (n, h, w):
        raise ValueError(f"roi: expected shape {(n, h, w)}, got {tuple(roi.shape)}")
    if seg_label.shape != (n, h, w):
        raise ValueError(f"seg_label: expected shape {(n, h, w)}, got {tuple(seg_label.shape)}")


def dense_energy_loss(
    image: Tensor,
    probs: Tensor,
    roi: Tensor,
    seg_label: Tensor,
    *,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    scale: float = 0.5,
    weight: float = 1e-7,
    backend: Backend = "lattice",
) -> Tensor:
    """Dense energy loss (eq. 13 with eq. 12 and the soft filter of eq. 14), a scalar.

    Args:
        image: (N, 3, H, W) float RGB in 0..255 (not mean/std normalised).
        probs: (N, K, H, W) softmax output of the segmentation branch.
        roi: (N, H, W) 1 inside the crop, 0 on padding.
        seg_label: (N, H, W) long reliable labels, 255 = unlabelled.
        sigma_rgb, sigma_xy: Gaussian bandwidths at full resolution (sigma_xy is scaled with the image).
        scale: downscale factor applied before filtering (F.interpolate's scale_factor: output floor(H * scale)).
        weight: loss weight (includes the 1/W normaliser of eq. 11).
        backend: "lattice" (authors' filter) or "exact" (dense Gaussian, O(P^2), for checks).
    """
    _check_inputs(image, probs, roi, seg_label)
    if not 0 < scale <= 1:
        raise ValueError(f"scale: expected a factor in (0, 1], got {scale}")
    _, _, h, w = probs.shape
    probs = probs.float()  # the lattice works in float32 (a no-op for float32 input)
    image = image.to(device=probs.device, dtype=torch.float32)
    roi = roi.to(device=probs.device, dtype=torch.float32)
    labels = seg_label.to(device=probs.device, dtype=torch.float32)
    if scale != 1:
        if min(int(h * scale), int(w * scale)) < 1:
            raise ValueError(f"scale: {scale} shrinks a {h}x{w} input to nothing")
        # By scale_factor, as the authors' module: source positions step 1/scale, not H/floor(H*scale)
        # (the two differ when H * scale is not an integer, e.g. the 321-px crops).
        image = F.interpolate(image, scale_factor=scale, mode="nearest")
        probs = F.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False)
        roi = F.interpolate(roi.unsqueeze(1), scale_factor=scale, mode="nearest").squeeze(1)
        labels = F.interpolate(labels.unsqueeze(1), scale_factor=scale, mode="nearest").squeeze(1)
    labelled = labels.long() != IGNORE_INDEX
    energy = _DenseEnergyFunction.apply(image, probs, roi, labelled, sigma_rgb, sigma_xy * scale, backend)
    return weight * energy
