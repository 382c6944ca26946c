"""Torch mean-field dense CRF against pydensecrf on real VOC photos (the mining parameters)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
import torch
from authors_settings import CRF
from noisy_photos import noisy_mask_probs
from pydensecrf.utils import unary_from_softmax
from torch import Tensor

from rrm.method.crf_torch import dense_crf_torch

NAMES = ["2007_000063", "2007_000068", "2007_000392"]
SIZE = (75, 100)  # (H, W): the 500 x 375 photos downscaled 5x


def _batch(voc: Path) -> tuple[Tensor, Tensor, Tensor]:
    return noisy_mask_probs(voc, NAMES, SIZE, seed=0)


def _pydensecrf(image: Tensor, probs: Tensor) -> np.ndarray:
    """The mining CRF as the authors run it (gauss 3/3, bilateral 80/13/10, 10 iterations)."""
    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.numpy())))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=rgb, compat=10)
    return np.array(crf.inference(10)).reshape(k, h, w)


def test_matches_pydensecrf_on_real_photos(voc_sample: Path) -> None:
    images, probs, labels = _batch(voc_sample)
    posterior = dense_crf_torch(images, probs, CRF)
    assert posterior.shape == probs.shape and posterior.dtype == torch.float32
    torch.testing.assert_close(posterior.sum(1), torch.ones(len(NAMES), *SIZE))
    valid = labels != 255
    for n in range(len(NAMES)):
        reference = _pydensecrf(images[n], probs[n])
        agreement = (posterior[n].argmax(0).numpy() == reference.argmax(0)).mean()
        assert agreement >= 0.99, agreement
        assert np.abs(posterior[n].numpy() - reference).max() < 1e-3
    # the CRF does real work: it repairs the noisy input towards the ground truth
    before = (probs.argmax(1) == labels)[valid].float().mean()
    after = (posterior.argmax(1) == labels)[valid].float().mean()
    assert before < 0.7 and after > before + 0.15, (before, after)


def test_batch_equals_one_image_at_a_time(voc_sample: Path) -> None:
    images, probs, _ = _batch(voc_sample)
    images, probs = images[:2], probs[:2]
    batch = dense_crf_torch(images, probs, replace(CRF, iterations=2))
    for n in range(2):
        one = dense_crf_torch(images[n : n + 1], probs[n : n + 1], replace(CRF, iterations=2))
        torch.testing.assert_close(one, batch[n : n + 1], rtol=1e-4, atol=1e-5)


def test_zero_iterations_return_normalised_clipped_unary() -> None:
    images = torch.zeros(1, 3, 2, 3, dtype=torch.uint8)
    probs = torch.tensor([0.6, 0.2, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 3)
    expected = torch.tensor([0.6, 0.2, 1e-5]) / (0.8 + 1e-5)
    torch.testing.assert_close(dense_crf_torch(images, probs, replace(CRF, iterations=0))[0, :, 1, 2], expected)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="images"):
        dense_crf_torch(torch.zeros(1, 3, 4, 4), torch.full((1, 2, 4, 5), 0.5), CRF)
    with pytest.raises(ValueError, match="probs"):
        dense_crf_torch(torch.zeros(1, 3, 4, 4), torch.full((2, 4, 4), 0.5), CRF)
    with pytest.raises(ValueError, match="iterations"):
        dense_crf_torch(torch.zeros(1, 3, 4, 4), torch.full((1, 2, 4, 4), 0.5), replace(CRF, iterations=-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(voc_sample: Path) -> None:
    images, probs, _ = _batch(voc_sample)
    cpu = dense_crf_torch(images, probs, CRF)
    gpu = dense_crf_torch(images.cuda(), probs.cuda(), CRF)
    assert gpu.device.type == "cuda"
    assert (gpu.argmax(1).cpu() == cpu.argmax(1)).float().mean() >= 0.999
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
