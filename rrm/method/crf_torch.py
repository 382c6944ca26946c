"""Fully connected CRF mean-field inference (Kraehenbuehl & Koltun 2011) in torch, on the lattice.

Used for reliable region mining (the CRF of paper eq. 5): it reproduces what pydensecrf does with
``unary_from_softmax`` + ``addPairwiseGaussian`` + ``addPairwiseBilateral`` + ``inference``:

* unary psi_u = -log(clip(p, 1e-5, 1));
* two Gaussian kernels, an appearance-free one on (x/gauss_sxy, y/gauss_sxy) and a bilateral one on
  (x/bi_sxy, y/bi_sxy, rgb/bi_srgb), each filtered by the permutohedral lattice with the symmetric
  normalisation ``D^-1/2 K D^-1/2`` (D = K applied to ones; pydensecrf's NORMALIZE_SYMMETRIC) and a
  constant DIAG_KERNEL;
* Potts compatibility: Q <- softmax(-psi_u + sum_m w_m k_m(Q)) for ``iterations`` steps.

Each lattice is built once for the whole batch (images kept apart by a group id in the lattice
key) and reused by every iteration, with the normalisation and compatibility folded into its
splat and slice weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rrm.method.crf_params import CRFParams
from rrm.method.permutohedral import PermutohedralLattice, bilateral_features

_UNARY_CLIP = 1e-5  # pydensecrf.utils.unary_from_softmax default


def _pixel_grid(height: int, width: int, sigma: float, device: torch.device) -> Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1) / sigma


def _normalised(lattice: PermutohedralLattice, compat: float) -> PermutohedralLattice:
    """Fold compat * D^-1/2 K D^-1/2 (D = K applied to ones) into the lattice."""
    ones = torch.ones(lattice.num_points, 1, device=lattice.device)
    norm = lattice.filter(ones).squeeze(1).add_(1e-20).rsqrt_()
    return lattice.rescale_(norm, compat * norm)


def dense_crf_torch(images: Tensor, probs: Tensor, params: CRFParams, *, valid: Tensor | None = None) -> Tensor:
    """Mean-field dense CRF posterior.

    Args:
        images: (N, 3, H, W) RGB in 0..255 (uint8 or float holding uint8 values).
        probs: (N, K, H, W) class probabilities (e.g. normalised CAM scores); unary = -log(probs).
        valid: optional (N, K) bool; a False label is left out of its image's CRF (posterior 0), as
            if the CRF had run on the other labels alone. Lets images with different label counts
            share one padded batch.
        params: mean-field steps (pydensecrf's ``inference(iterations)``) and the two kernels' widths
            and weights, as pydensecrf takes them.
    Returns:
        (N, K, H, W) float32 posterior Q, summing to 1 over K.
    """
    return dense_crfs_torch(images, [probs], params, valid=valid)[0]


def dense_crfs_torch(
    images: Tensor,
    probs: Sequence[Tensor],
    params: CRFParams,
    *,
    valid: Tensor | None = None,
) -> list[Tensor]:
    """dense_crf_torch of several (N, K, H, W) score maps on the same images, sharing the lattices.

    The M CRFs run side by side as M * K channels of one filter call per kernel and iteration (the
    filter is linear per channel), so mining's two CRFs (gamma_low, gamma_high) cost about one.
    Each posterior equals its own dense_crf_torch call up to float rounding.
    """
    probs = list(probs)
    if not probs:
        return []
    if any(p.dim() != 4 for p in probs) or len({tuple(p.shape) for p in probs}) > 1:
        raise ValueError(f"probs: expected (N, K, H, W) maps of one shape, got {[tuple(p.shape) for p in probs]}")
    n, k, h, w = probs[0].shape
    if images.shape != (n, 3, h, w):
        raise ValueError(f"images: expected shape {(n, 3, h, w)}, got {tuple(images.shape)}")
    if valid is not None and valid.shape != (n, k):
        raise ValueError(f"valid: expected shape {(n, k)}, got {tuple(valid.shape)}")
    device, m = probs[0].device, len(probs)
    num_pixels = h * w
    unary = torch.stack(probs, 1).to(torch.float32).clamp(_UNARY_CLIP, 1.0).log_()  # = -psi_u, (N, M, K, H, W)
    if valid is not None:  # -inf unary: Q = 0 exactly, so the label sends no message either
        mask = valid.to(device=device, dtype=torch.bool)[:, None, :, None, None]
        unary = unary.masked_fill(~mask, float("-inf"))
    unary = unary.permute(0, 3, 4, 1, 2).reshape(n * num_pixels, m * k)

    def softmax(x: Tensor) -> Tensor:  # per CRF: over its own K labels
        return torch.softmax(x.view(-1, m, k), dim=2).view(-1, m * k)

    q = softmax(unary)
    if params.iterations > 0:
        # One lattice per kernel for the whole batch, images kept apart by a group id; normalisation
        # and compatibility weights are folded into the lattices once.
        groups = torch.arange(n, device=device).repeat_interleave(num_pixels)
        grid = _pixel_grid(h, w, params.gauss_sxy, device).repeat(n, 1)
        gauss = _normalised(PermutohedralLattice(grid, groups=groups), params.gauss_compat)
        feats = bilateral_features(images.to(device), sigma_xy=params.bi_sxy, sigma_rgb=params.bi_srgb)
        bilateral = _normalised(PermutohedralLattice(feats, groups=groups), params.bi_compat)
        for _ in range(params.iterations):
            # Potts: Q <- softmax(-psi_u + sum_m w_m k_m(Q))
            q = softmax(bilateral.filter(q, add_to=gauss.filter(q, add_to=unary)))
    return list(q.reshape(n, h, w, m, k).permute(3, 0, 4, 1, 2).contiguous().unbind(0))
