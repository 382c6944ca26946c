"""rrm.ops.DenseEnergyLoss against an independent numpy transcription of the authors' module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrm.io import load_image
from rrm.ops import DenseEnergyLoss, bilateral_filter

NAMES = ["2007_000063", "2007_000392"]
SIZE = (75, 101)  # (H, W): odd, so floor(H * 0.5) differs between the two resize conventions


def _filter_np(image: np.ndarray, values: np.ndarray, sigma_rgb: float, sigma_xy: float) -> np.ndarray:
    """The reference-consistent filter (tests/ops/test_ops_filter.py), numpy in and out."""
    out = bilateral_filter(torch.from_numpy(image)[None], torch.from_numpy(values)[None], sigma_rgb, sigma_xy)
    return out[0].numpy()


def _batch(voc: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Photos (N, 3, H, W) float 0..255, softmax (N, 21, H, W), crop masks (N, H, W), labels (N, 1, H, W)."""
    photos = [np.asarray(Image.fromarray(load_image(voc / "JPEGImages" / f"{n}.jpg")).resize(SIZE[::-1]))
              for n in NAMES]
    images = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float()
    gen = torch.Generator().manual_seed(0)
    logits = torch.nn.functional.interpolate(3 * torch.randn(2, 21, 8, 10, generator=gen), SIZE, mode="bilinear")
    rois = torch.zeros(2, *SIZE)
    rois[0, 5:70, :90] = 1  # padded crop, as RandomCrop leaves it
    rois[1] = 1
    labels = torch.randint(0, 21, (2, 1, *SIZE), generator=gen).to(torch.uint8)
    labels[torch.rand(labels.shape, generator=gen) < 0.6] = 255  # mostly unlabelled, as mined labels are
    return images, logits.softmax(1), rois, labels


@pytest.mark.parametrize(("scale", "recompute"), [(0.5, None), (0.5, True), (1.0, None)])
def test_value_and_gradient_equal_the_authors(voc_sample: Path, authors, scale: float, recompute) -> None:
    images, probs, rois, labels = _batch(voc_sample)
    args = {"weight": 1e-7, "sigma_rgb": 15.0, "sigma_xy": 100.0, "scale_factor": scale}
    probs = probs.requires_grad_()
    loss = DenseEnergyLoss(**args, recompute_scale_factor=recompute)(images, probs, rois, labels)
    loss.sum().backward()
    value, grad = authors.authors_energy_loss(images.numpy(), probs.detach().numpy(), rois.numpy(), labels.numpy(),
                                              filter_fn=_filter_np, recompute_scale_factor=recompute, **args)
    assert loss.shape == (1,) and loss.item() < 0
    assert loss.item() == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(probs.grad.numpy(), grad, rtol=1e-4, atol=1e-4 * np.abs(grad).max())


def test_resize_conventions_differ_on_odd_sizes(voc_sample: Path) -> None:
    """RRM's default and ToCo's recompute_scale_factor=True sample different pixels at 75 x 101."""
    images, probs, rois, labels = _batch(voc_sample)
    rrm = DenseEnergyLoss(1e-7, 15.0, 100.0, 0.5)(images, probs, rois, labels)
    toco = DenseEnergyLoss(1e-7, 15.0, 100.0, 0.5, recompute_scale_factor=True)(images, probs, rois, labels)
    assert abs(rrm.item() - toco.item()) > 1e-6 * abs(rrm.item())


def test_labelled_confident_pixels_are_gated_out(voc_sample: Path) -> None:
    """Gate = ROI - max P on labelled pixels: one-hot P with every pixel labelled gives zero loss
    (at scale 1: a bilinear downscale would blur the one-hot map at class boundaries)."""
    images, probs, rois, _ = _batch(voc_sample)
    onehot = torch.nn.functional.one_hot(probs.argmax(1), 21).permute(0, 3, 1, 2).float()
    loss = DenseEnergyLoss(1e-7, 15.0, 100.0, 1.0)(images, onehot, rois, torch.zeros(2, 1, *SIZE))
    assert loss.item() == 0.0
    unlabelled = DenseEnergyLoss(1e-7, 15.0, 100.0, 1.0)(images, onehot, rois, torch.full((2, 1, *SIZE), 255))
    assert unlabelled.item() < 0


def test_bad_inputs_raise() -> None:
    loss = DenseEnergyLoss(1e-7, 15.0, 100.0, 0.5)
    img, seg, roi, lab = torch.zeros(1, 3, 8, 8), torch.full((1, 2, 8, 8), 0.5), torch.ones(1, 8, 8), torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="ROIs: expected a 0/1"):
        loss(img, seg, roi * 0.5, lab)
    with pytest.raises(ValueError, match="seg_label"):
        loss(img, seg, roi, torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="images"):
        loss(img[:, :2], seg, roi, lab)
    with pytest.raises(ValueError, match="scale_factor"):
        DenseEnergyLoss(1e-7, 15.0, 100.0, 2.0)
    with pytest.raises(ValueError, match="^segmentations: expected"):
        loss(img, seg[0], roi, lab)
    with pytest.raises(ValueError, match="^ROIs: expected shape"):
        loss(img, seg, roi[:, :4], lab)
    with pytest.raises(TypeError, match="^segmentations: expected a float tensor, got torch.int64"):
        loss(img, seg.long(), roi, lab)
    with pytest.raises(TypeError, match="^images: expected a float or uint8 tensor, got torch.int32"):
        loss(img.int(), seg, roi, lab)
    with pytest.raises(TypeError, match="^images: expected a torch.Tensor, got ndarray"):
        loss(img.numpy(), seg, roi, lab)
    with pytest.raises(TypeError, match="^seg_label: expected a real tensor"):
        loss(img, seg, roi, lab.numpy())
    with pytest.raises(TypeError, match="^ROIs: expected a real tensor"):
        loss(img, seg, roi.numpy(), lab)


def test_without_labels_every_pixel_is_unlabelled(voc_sample: Path) -> None:
    """seg_label=None (rloss's three-argument call) is the loss with every label 255."""
    images, probs, rois, _ = _batch(voc_sample)
    loss = DenseEnergyLoss(1e-7, 15.0, 100.0, 0.5)
    assert loss(images, probs, rois).item() == loss(images, probs, rois, torch.full((2, 1, *SIZE), 255)).item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(voc_sample: Path) -> None:
    images, probs, rois, labels = _batch(voc_sample)
    loss = DenseEnergyLoss(1e-7, 15.0, 100.0, 0.5)
    cpu = loss(images, probs, rois, labels)
    gpu = loss(images, probs.cuda(), rois, labels)  # images, ROIs and labels may stay on the CPU
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-4)
