"""Fully connected CRF (pydensecrf's Gaussian + bilateral kernels) for batches, one signature, two backends.

``backend="torch"`` runs mean-field inference on the permutohedral lattice of
:mod:`rrm.method.crf_torch` on the device of ``probs`` (CPU or CUDA), the whole batch at once.
``backend="pydensecrf"`` runs pydensecrf itself (``unary_from_softmax``, ``addPairwiseGaussian``,
``addPairwiseBilateral``, ``inference``) on a pool of CPU worker processes (:mod:`rrm.method.crf_pool`);
it needs pydensecrf (the ``pipeline`` extra, or ``pip install pydensecrf2``) and imports it only then. On VOC photos the two give the same
argmax on >= 99 % of pixels (``tests/ops/test_ops_crf.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from rrm.method.crf_params import CRFParams
from rrm.method.crf_torch import dense_crf_torch

if TYPE_CHECKING:
    from rrm.method.crf_pool import CRFPool  # the CPU worker pool (see cpu_pool)

Backend = Literal["torch", "pydensecrf"]

PYDENSECRF_MISSING = ("dense_crf(backend='pydensecrf') needs pydensecrf: pip install 'rrm[pipeline]' "
                      "(or pip install pydensecrf2); backend='torch' needs nothing more")


def _require_pydensecrf() -> None:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(PYDENSECRF_MISSING, name=error.name) from error


def _as_tensor(x: Tensor | np.ndarray, name: str) -> Tensor:
    tensor = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    if not (tensor.is_floating_point() or tensor.dtype == torch.uint8):
        raise TypeError(f"{name}: expected a float or uint8 array, got {tensor.dtype}")
    return tensor


def dense_crf(
    images: Tensor | np.ndarray,
    probs: Tensor | np.ndarray,
    *,
    iterations: int = 10,
    gauss_sxy: float = 3.0,
    gauss_compat: float = 3.0,
    bi_sxy: float = 80.0,
    bi_srgb: float = 13.0,
    bi_compat: float = 10.0,
    backend: Backend = "torch",
    pool: CRFPool | None = None,
) -> Tensor:
    """Posterior of pydensecrf's dense CRF for a batch of images.

    Args:
        images: (N, 3, H, W) RGB in 0..255, uint8 or float holding 0..255 values; torch or numpy; any device.
        probs: (N, K, H, W) float class probabilities (float16/32/64, torch or numpy); the unary is
            -log(clip(probs, 1e-5, 1)).
        iterations, gauss_*, bi_*: pydensecrf's ``inference(iterations)``,
            ``addPairwiseGaussian(sxy, compat)`` and ``addPairwiseBilateral(sxy, srgb, compat)``
            (defaults: the AffinityNet / RRM mining settings).
        backend: "torch" (lattice, on probs' device) or "pydensecrf" (CPU processes).
        pool: for "pydensecrf", a ``CRFPool`` to reuse; by default one with a process per core is
            started and closed for this call.
    Returns:
        (N, K, H, W) float32 posterior on probs' device, summing to 1 over K.
    Raises:
        ValueError / TypeError naming the argument (``images``, ``probs``, ``backend``) for a wrong shape,
        dtype or backend; ModuleNotFoundError naming the extra for "pydensecrf" without pydensecrf.
    """
    images, probs = _as_tensor(images, "images"), _as_tensor(probs, "probs")
    if not probs.is_floating_point():
        raise TypeError(f"probs: expected float probabilities, got {probs.dtype}")
    if probs.dim() != 4:
        raise ValueError(f"probs: expected (N, K, H, W), got shape {tuple(probs.shape)}")
    n, _, h, w = probs.shape
    if tuple(images.shape) != (n, 3, h, w):
        raise ValueError(f"images: expected shape {(n, 3, h, w)} (RGB 0..255), got {tuple(images.shape)}")
    params = CRFParams(iterations=iterations, gauss_sxy=gauss_sxy, gauss_compat=gauss_compat,
                       bi_sxy=bi_sxy, bi_srgb=bi_srgb, bi_compat=bi_compat)
    if backend == "torch":
        return dense_crf_torch(images.to(probs.device), probs, params)
    if backend == "pydensecrf":
        _require_pydensecrf()
        rgb = [np.ascontiguousarray(im) for im in images.permute(0, 2, 3, 1).round().to(torch.uint8).cpu().numpy()]
        maps = list(probs.detach().float().cpu().numpy())
        if pool is None:
            with cpu_pool() as own:
                out = own.map_async(rgb, maps, params).get()
        else:
            out = pool.map_async(rgb, maps, params).get()
        return torch.from_numpy(np.stack(out)).to(probs.device)
    raise ValueError(f"backend: expected 'torch' or 'pydensecrf', got {backend!r}")


def cpu_pool(processes: int | None = None) -> CRFPool:
    """The CPU worker pool that backend="pydensecrf" runs on: None one process per core, 0 or 1 inline.
    Reuse one across calls (``pool=``) and close it (a context manager) when done. Needs pydensecrf."""
    _require_pydensecrf()
    from rrm.method.crf_pool import CRFPool

    return CRFPool(processes)


def pydensecrf_posterior(image: np.ndarray, probs: np.ndarray, settings: dict) -> np.ndarray:
    """One pydensecrf CRF in this process: (H, W, 3) uint8 photo, (K, H, W) probabilities -> posterior."""
    _require_pydensecrf()
    from rrm.method import crf as method_crf

    return method_crf.dense_crf(image, probs, CRFParams(**settings))
