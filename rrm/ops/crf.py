"""Fully connected CRF (pydensecrf's Gaussian + bilateral kernels) for batches, one signature, two backends.

``backend="torch"`` runs mean-field inference on the permutohedral lattice of
:mod:`rrm.method.crf_torch` on the device of ``probs`` (CPU or CUDA), the whole batch at once.
``backend="pydensecrf"`` runs pydensecrf itself (``unary_from_softmax``, ``addPairwiseGaussian``,
``addPairwiseBilateral``, ``inference``) on a pool of CPU worker processes (:mod:`rrm.method.crf`);
it needs pydensecrf installed and is imported only then. On VOC photos the two give the same
argmax on >= 99 % of pixels (``tests/ops/test_crf.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from rrm.method.crf_params import CRFParams
from rrm.method.crf_torch import dense_crf_torch

if TYPE_CHECKING:
    from rrm.engine.crf_pool import CRFPool  # the CPU worker pool (see cpu_pool)

Backend = Literal["torch", "pydensecrf"]


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))


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
        images: (N, 3, H, W) RGB in 0..255 (uint8, or float holding uint8 values).
        probs: (N, K, H, W) class probabilities; the unary is -log(clip(probs, 1e-5, 1)).
        iterations, gauss_*, bi_*: pydensecrf's ``inference(iterations)``,
            ``addPairwiseGaussian(sxy, compat)`` and ``addPairwiseBilateral(sxy, srgb, compat)``
            (defaults: the AffinityNet / RRM mining settings).
        backend: "torch" (lattice, on probs' device) or "pydensecrf" (CPU processes).
        pool: for "pydensecrf", a ``CRFPool`` to reuse; by default one with a process per core is
            started and closed for this call.
    Returns:
        (N, K, H, W) float32 posterior on probs' device, summing to 1 over K.
    """
    images, probs = _as_tensor(images), _as_tensor(probs)
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
    Reuse one across calls (``pool=``) and close it (a context manager) when done."""
    from rrm.engine.crf_pool import CRFPool

    return CRFPool(processes)


def pydensecrf_posterior(image: np.ndarray, probs: np.ndarray, settings: dict) -> np.ndarray:
    """One pydensecrf CRF in this process: (H, W, 3) uint8 photo, (K, H, W) probabilities -> posterior."""
    from rrm.method import crf as method_crf

    return method_crf.dense_crf(image, probs, CRFParams(**settings))
