"""Fully connected CRF (Krähenbühl & Koltun 2011) through pydensecrf: the dense CRF of equation 5.

This module imports numpy and pydensecrf only, so the CRF worker processes of `rrm.method.crf_pool`
start fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from rrm.method.crf_params import CRFParams


def check_inputs(image: np.ndarray, probs: np.ndarray) -> None:
    """Raise ValueError unless image is (H, W, 3) uint8 and probs (K >= 1, H, W)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 array, got {getattr(image, 'shape', type(image))} "
            f"{getattr(image, 'dtype', '')}"
        )
    if not isinstance(probs, np.ndarray) or probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"probs must be a (K, H, W) array matching image {image.shape[:2]}, "
            f"got {getattr(probs, 'shape', type(probs))}"
        )
    if probs.shape[0] < 1:
        raise ValueError("probs must hold at least one label (K >= 1)")


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean-field inference of a dense CRF with a Gaussian and a bilateral kernel.

    image (H, W, 3) uint8 RGB; probs (K, H, W) per-label scores in [0, 1] (need not sum to 1: the
    unary is -log(clip(probs, 1e-5)), as in RRM/AffinityNet where background and CAM scores are
    concatenated). Returns the posterior Q, (K, H, W) float32, each pixel summing to 1. Any array layout
    is accepted (e.g. the read-only `np.asarray(Image.open(path))`): pydensecrf gets a writable C copy.
    """
    return dense_crfs(image, [probs], params)[0]


def dense_crfs(image: np.ndarray, probs: Sequence[np.ndarray], params: CRFParams) -> list[np.ndarray]:
    """dense_crf of several score maps with the same K on one image, sharing the kernels.

    The kernels (the permutohedral lattices pydensecrf builds from the image, about a fifth of a
    CRF's time) depend on the image and params only, and inference starts afresh from each map's
    unary, so every posterior is bit-identical to its own dense_crf call. Mining runs two CRFs per
    image (gamma_low, gamma_high) this way.
    """
    probs = list(probs)
    for prob in probs:
        check_inputs(image, prob)
    if len({prob.shape for prob in probs}) > 1:
        raise ValueError(f"probs must share one (K, H, W) shape, got {[prob.shape for prob in probs]}")
    if not probs:
        return []
    num_labels, height, width = probs[0].shape
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    rgb = np.require(image, requirements=("C", "W"))  # pydensecrf refuses read-only buffers
    crf.addPairwiseBilateral(sxy=params.bi_sxy, srgb=params.bi_srgb, rgbim=rgb, compat=params.bi_compat)
    posteriors = []
    for prob in probs:
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob.astype(np.float32, copy=False))))
        posterior = crf.inference(params.iterations)
        posteriors.append(np.asarray(posterior, dtype=np.float32).reshape(num_labels, height, width))
    return posteriors
