"""The training path's dense energy loss (rrm.method.energy_loss, what rrm.engine.steps calls) against the
independent transcription of the authors' DenseEnergyLoss (tests/reference/authors_energy_loss.py), on real
photos at odd sizes, where resizing to an output size and resizing by the authors' scale_factor=0.5
sample different source positions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rrm.io import load_image
from rrm.method.energy_loss import bilateral_filter_batch, dense_energy_loss

NAMES = ["2007_000063", "2007_000392", "2007_000068"]
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "authors_energy_loss.py"


def _authors():
    spec = importlib.util.spec_from_file_location("authors_energy_loss", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _filter_np(image: np.ndarray, values: np.ndarray, sigma_rgb: float, sigma_xy: float) -> np.ndarray:
    """The lattice the loss uses (checked against the authors' C++ filter in tests/ops), numpy in and out."""
    out = bilateral_filter_batch(torch.from_numpy(image)[None], torch.from_numpy(values)[None],
                                 sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
    return out[0].numpy()


def _batch(voc: Path, size: tuple[int, int]):
    photos = [np.asarray(Image.fromarray(load_image(voc / "JPEGImages" / f"{n}.jpg")).resize(size[::-1]))
              for n in NAMES]
    images = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float()
    gen = torch.Generator().manual_seed(1)
    logits = F.interpolate(3 * torch.randn(len(NAMES), 21, 9, 11, generator=gen), size, mode="bilinear")
    rois = torch.ones(len(NAMES), *size)
    rois[0, :, size[1] - 17:] = 0  # padded crops, as the authors' RandomCrop leaves them
    rois[1, size[0] - 11:] = 0
    labels = torch.randint(0, 21, (len(NAMES), *size), generator=gen)
    labels[torch.rand(labels.shape, generator=gen) < 0.6] = 255
    return images, logits.softmax(1), rois, labels


@pytest.mark.parametrize("size", [(121, 119), (75, 101), (96, 96)])
def test_training_loss_equals_the_authors(voc_sample: Path, size: tuple[int, int]) -> None:
    images, probs, rois, labels = _batch(voc_sample, size)
    probs = probs.requires_grad_()
    loss = dense_energy_loss(images, probs, rois, labels, sigma_rgb=15.0, sigma_xy=100.0, scale=0.5, weight=1e-7)
    loss.backward()
    value, grad = _authors().authors_energy_loss(
        images.numpy(), probs.detach().numpy(), rois.numpy(), labels[:, None].numpy(), weight=1e-7,
        sigma_rgb=15.0, sigma_xy=100.0, scale_factor=0.5, filter_fn=_filter_np)
    # Same lattice on both sides: what remains is float32 rounding of sums over ~3k pixels x 21 classes.
    assert loss.item() == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(probs.grad.numpy(), grad, rtol=1e-4, atol=1e-4 * np.abs(grad).max())
