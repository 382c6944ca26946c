"""Bilateral filter with the semantics of the C++ ``bilateralfilter`` extension (rloss / RRM and its copies).

``out[n, k, i] = sum_j exp(-|p_i - p_j|^2 / (2 sigma_xy^2) - |I_i - I_j|^2 / (2 sigma_rgb^2)) v[n, k, j]``
as the permutohedral lattice approximates it: self-term included, no normalisation, images in
0..255, one lattice per image. The lattice is :mod:`rrm.method.permutohedral`, whose values match
the C++ filter at stored pixels of 20 VOC photos to < 1e-6 relative (``tests/ops``).

:func:`bilateralfilter` and :func:`bilateralfilter_batch` are the extension's two functions with its
call (flat float32 numpy arrays, the output written in place), so
``from bilateralfilter import bilateralfilter, bilateralfilter_batch`` becomes
``from rrm.ops import bilateralfilter, bilateralfilter_batch`` and nothing else changes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rrm.method.energy_loss import bilateral_filter_batch


def bilateral_filter(images: Tensor, values: Tensor, sigma_rgb: float, sigma_xy: float) -> Tensor:
    """Filter ``values`` guided by ``images``; the torch form of ``bilateralfilter_batch``.

    Args:
        images: (N, 3, H, W) RGB in 0..255, float or uint8, any device (moved to ``values``' device).
        values: (N, K, H, W) float (float16/32/64; filtered in float32), CPU or CUDA.
        sigma_rgb, sigma_xy: Gaussian bandwidths (> 0) in colour units and pixels.
    Returns:
        (N, K, H, W) float32 on ``values``' device. The batch shares one lattice, images kept apart.
    Raises:
        ValueError / TypeError naming ``images``, ``values`` or the sigma for a wrong shape, dtype or value.
    """
    if not isinstance(values, Tensor) or not values.is_floating_point():
        raise TypeError(f"values: expected a float tensor, got {getattr(values, 'dtype', type(values))}")
    if not isinstance(images, Tensor) or not (images.is_floating_point() or images.dtype == torch.uint8):
        raise TypeError(f"images: expected a float or uint8 tensor, got {getattr(images, 'dtype', type(images))}")
    if values.dim() != 4:
        raise ValueError(f"values: expected (N, K, H, W), got shape {tuple(values.shape)}")
    n, _, h, w = values.shape
    if tuple(images.shape) != (n, 3, h, w):
        raise ValueError(f"images: expected shape {(n, 3, h, w)} (RGB 0..255), got {tuple(images.shape)}")
    if not (sigma_rgb > 0 and sigma_xy > 0):
        raise ValueError(f"sigma_rgb and sigma_xy: expected > 0, got {sigma_rgb}, {sigma_xy}")
    images = images.to(device=values.device, dtype=torch.float32)
    out = bilateral_filter_batch(images, values.float(), sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
    return out.contiguous()


def _float32_input(name: str, array: np.ndarray, size: int) -> np.ndarray:
    """An input array as the extension's IN_ARRAY1 typemap takes it: any real dtype, converted to float32."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real-valued array, got {array.dtype}")
    if array.size != size:
        raise ValueError(f"{name}: expected {size} values, got {array.size}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _float32_output(name: str, out: np.ndarray, size: int) -> None:
    """The output as the extension's INPLACE_ARRAY1 typemap requires it: float32, C-contiguous, writable."""
    if not isinstance(out, np.ndarray) or out.dtype != np.float32:
        raise TypeError(f"{name}: expected a float32 numpy array (written in place), got "
                        f"{getattr(out, 'dtype', type(out))}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"{name}: expected a C-contiguous, writable array (it is written in place)")
    if out.size != size:
        raise ValueError(f"{name}: expected {size} values, got {out.size}")


def bilateralfilter_batch(
    images: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
    n: int,
    k: int,
    h: int,
    w: int,
    sigma_rgb: float,
    sigma_xy: float,
) -> None:
    """The extension's ``bilateralfilter_batch(images, ins, outs, N, K, H, W, sigma_rgb, sigma_xy)``.

    Args:
        images: N*3*H*W values (RGB 0..255, channel-major per image, as ``tensor.numpy().flatten()``),
            any real dtype (converted to float32, as the extension's typemap does).
        values: N*K*H*W values to filter, any real dtype.
        out: float32, C-contiguous, writable, N*K*H*W values: receives the result in place.
        n, k, h, w: batch size, channels, height, width.
        sigma_rgb, sigma_xy: Gaussian bandwidths.
    Raises:
        TypeError / ValueError naming ``images``, ``values`` or ``out`` for a wrong dtype, layout or size.
    """
    img = _float32_input("images", images, n * 3 * h * w)
    val = _float32_input("values", values, n * k * h * w)
    _float32_output("out", out, n * k * h * w)
    filtered = bilateral_filter(torch.from_numpy(img).reshape(n, 3, h, w),
                                torch.from_numpy(val).reshape(n, k, h, w), sigma_rgb, sigma_xy)
    np.copyto(out, filtered.numpy().reshape(out.shape))


def bilateralfilter(
    image: np.ndarray, values: np.ndarray, out: np.ndarray, h: int, w: int, sigma_rgb: float, sigma_xy: float
) -> None:
    """The extension's single-image ``bilateralfilter(image, in, out, H, W, sigma_rgb, sigma_xy)``.

    ``image`` holds 3*H*W values, ``values`` K*H*W (K = its size / (H*W)), ``out`` (float32, written in
    place) as many as ``values``; otherwise as :func:`bilateralfilter_batch` with N = 1.
    """
    size = np.asarray(values).size
    if h <= 0 or w <= 0 or size % (h * w) or size == 0:
        raise ValueError(f"values: {size} values are not K >= 1 planes of H*W = {h}*{w}")
    bilateralfilter_batch(image, values, out, 1, size // (h * w), h, w, sigma_rgb, sigma_xy)
