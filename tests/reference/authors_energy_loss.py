"""Independent transcription of the authors' ``DenseEnergyLoss`` (RRM / ToCo / SeCo) in plain numpy.

Their module resizes the inputs with ``F.interpolate`` (images, ROIs and labels nearest, the softmax
bilinear without corner alignment), then ``DenseEnergyLossFunction`` computes

    Gate = ROI - max_k S;  Gate[label == 255] = 1;  Gate[Gate < 0] = 0
    AS = bilateralfilter_batch(image, S * ROI) * Gate
    loss = -weight * dot(S * ROI, AS) / N,   dL/dS = -2 weight * AS * ROI / N

and autograd carries dL/dS back through the bilinear resize. Here the resizes are explicit
sampling matrices (the bilinear backward is the transposed matrix), and the C++ filter is a
parameter: ``filter_fn(image (3, h, w), values (K, h, w), sigma_rgb, sigma_xy) -> (K, h, w)``.
Nothing here comes from ``rrm``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FilterFn = Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]


def _out_size(size: int, scale_factor: float) -> int:
    return int(np.floor(size * scale_factor))


def _step(size: int, out: int, scale_factor: float, recompute: bool | None) -> float:
    """Source pixels per output pixel, as F.interpolate picks it."""
    return size / out if recompute else 1.0 / scale_factor


def nearest_index(size: int, scale_factor: float, recompute: bool | None = None) -> np.ndarray:
    out = _out_size(size, scale_factor)
    step = _step(size, out, scale_factor, recompute)
    return np.minimum(np.floor(np.arange(out) * step).astype(np.int64), size - 1)


def bilinear_matrix(size: int, scale_factor: float, recompute: bool | None = None) -> np.ndarray:
    """(out, size) matrix of the half-pixel-centred linear resize (align_corners=False)."""
    out = _out_size(size, scale_factor)
    step = _step(size, out, scale_factor, recompute)
    src = np.maximum((np.arange(out) + 0.5) * step - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size - 1)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    m = np.zeros((out, size), dtype=np.float64)
    m[np.arange(out), lo] += 1.0 - frac
    m[np.arange(out), hi] += frac
    return m


def authors_energy_loss(
    images: np.ndarray,
    segmentations: np.ndarray,
    rois: np.ndarray,
    seg_label: np.ndarray,
    *,
    weight: float,
    sigma_rgb: float,
    sigma_xy: float,
    scale_factor: float,
    filter_fn: FilterFn,
    recompute_scale_factor: bool | None = None,
) -> tuple[float, np.ndarray]:
    """Loss value and its gradient w.r.t. ``segmentations`` (N, K, H, W); images (N, 3, H, W) 0..255,
    rois (N, H, W) 0/1, seg_label (N, 1, H, W) with 255 = unlabelled."""
    n, k, h, w = segmentations.shape
    rec = recompute_scale_factor
    iy, ix = nearest_index(h, scale_factor, rec), nearest_index(w, scale_factor, rec)
    ry, rx = bilinear_matrix(h, scale_factor, rec), bilinear_matrix(w, scale_factor, rec)
    img = images[:, :, iy][:, :, :, ix].astype(np.float32)
    seg = np.einsum("yi,nkij,xj->nkyx", ry, segmentations.astype(np.float64), rx).astype(np.float32)
    roi = rois[:, iy][:, :, ix].astype(np.float32)
    unlabelled = seg_label[:, 0][:, iy][:, :, ix].astype(np.int64) == 255

    gate = roi - seg.max(axis=1)
    gate[unlabelled] = 1.0
    gate[gate < 0] = 0.0
    masked = seg * roi[:, None]
    filtered = np.stack([filter_fn(img[i], masked[i], sigma_rgb, sigma_xy * scale_factor) for i in range(n)])
    as_ = filtered.astype(np.float32) * gate[:, None]
    value = -float(np.dot(masked.reshape(-1).astype(np.float64), as_.reshape(-1).astype(np.float64))) / n
    grad_small = -2.0 * as_.astype(np.float64) * roi[:, None] / n
    grad = np.einsum("yi,nkyx,xj->nkij", ry, grad_small, rx)
    return weight * value, weight * grad
