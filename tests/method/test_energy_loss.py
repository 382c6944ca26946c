"""Dense energy loss (eq. 10-14): exact-Gaussian reference, gradient, S gating, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rrm.io import load_image, load_mask
from rrm.method.energy_loss import dense_energy_loss, soft_filter

NAMES = ["2007_000063", "2007_000068", "2007_000392"]
SIZE = (121, 119)  # odd (H, W): the 0.5 downscale floors to 60 x 59
SIGMA_XY = 100 * 121 / 321  # the authors' 100 px at a 321 crop, kept proportional to this small input


def _batch(voc: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Real photos (N, 3, H, W) 0..255, smooth random logits, a crop ROI and sparse reliable labels."""
    images, masks = [], []
    for name in NAMES:
        photo = Image.fromarray(load_image(voc / "JPEGImages" / f"{name}.jpg")).resize(
            SIZE[::-1], Image.BILINEAR
        )
        mask = Image.fromarray(load_mask(voc / "SegmentationClass" / f"{name}.png")).resize(
            SIZE[::-1], Image.NEAREST
        )
        images.append(torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float())
        masks.append(torch.from_numpy(np.asarray(mask).astype(np.int64)))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(len(NAMES), 21, 7, 7, generator=gen) * 3
    logits = F.interpolate(logits, size=SIZE, mode="bilinear", align_corners=False)
    roi = torch.ones(len(NAMES), *SIZE)
    roi[0, :, -30:] = 0  # padded crop borders
    roi[1, -25:, :] = 0
    labels = torch.stack(masks)
    labels[torch.rand(labels.shape, generator=gen) > 0.3] = 255  # ~30% reliable pixels
    labels[roi == 0] = 255
    images[0][:, :, -30:] = 0
    return torch.stack(images), logits, roi, labels


def _exact_energy(
    image: Tensor, probs: Tensor, roi: Tensor, labels: Tensor, sigma_xy: float, scale: float
) -> Tensor:
    """Independent dense-Gaussian version of the same formula, differentiable by autograd (S detached)."""
    size = (int(probs.shape[2] * scale), int(probs.shape[3] * scale))
    image = F.interpolate(image, scale_factor=scale, mode="nearest")  # the authors' resize: by scale_factor
    probs = F.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False)
    roi = F.interpolate(roi[:, None], scale_factor=scale, mode="nearest")[:, 0]
    labels = F.interpolate(labels[:, None].float(), scale_factor=scale, mode="nearest")[:, 0]
    ys, xs = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    total = probs.new_zeros((), dtype=torch.float64)
    for n in range(probs.shape[0]):
        feats = torch.cat(
            [
                torch.stack([xs, ys]).reshape(2, -1).double() / (sigma_xy * scale),
                image[n].reshape(3, -1).double() / 15.0,
            ]
        ).t()
        kernel = torch.exp(-0.5 * torch.cdist(feats, feats).square())
        p = (probs[n] * roi[n]).reshape(probs.shape[1], -1).t().double()
        s = torch.where(labels[n] == 255, 1.0, (roi[n] - probs[n].max(0).values).clamp(min=0)) * roi[n]
        total = total - (s.detach().reshape(-1, 1).double() * p * (kernel @ p)).sum()
    return 1e-7 * total / probs.shape[0]


def test_matches_exact_gaussian_formula_and_gradient(voc_sample: Path) -> None:
    """Lattice loss = 0.57x the exact one (band [0.48, 0.66]); its gradient points the same way (cosine
    > 0.95) with the same ~0.57x magnitude, although it uses 2 S (G*P) for S (G*P) + G (S P)."""
    image, logits, roi, labels = _batch(voc_sample)
    logits.requires_grad_(True)
    reference = _exact_energy(image, logits.softmax(1), roi, labels, SIGMA_XY, 0.5)
    (ref_grad,) = torch.autograd.grad(reference, logits)

    exact = dense_energy_loss(image, logits.softmax(1), roi, labels, sigma_xy=SIGMA_XY, backend="exact")
    torch.testing.assert_close(exact.double(), reference.detach(), rtol=1e-5, atol=0)

    loss = dense_energy_loss(image, logits.softmax(1), roi, labels, sigma_xy=SIGMA_XY)
    (grad,) = torch.autograd.grad(loss, logits)
    ratio = float(loss.detach() / reference.detach())
    assert loss < 0 and 0.48 <= ratio <= 0.66, ratio
    cosine = F.cosine_similarity(grad.flatten().double(), ref_grad.flatten(), dim=0)
    magnitude = float(grad.norm() / ref_grad.norm())
    assert cosine > 0.95, cosine
    assert 0.8 * ratio <= magnitude <= 1.25 * ratio, (magnitude, ratio)


def test_gradient_is_exact_when_s_is_constant() -> None:
    """With S = 1 everywhere (no labels, full ROI) -2 S (G*P) / N is the true gradient of the loss."""
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 14, 12, generator=gen) * 255
    logits = torch.randn(2, 4, 14, 12, generator=gen, requires_grad=True)
    roi, labels = torch.ones(2, 14, 12), torch.full((2, 14, 12), 255)
    loss = dense_energy_loss(image, logits.softmax(1), roi, labels, sigma_xy=20.0, scale=1.0, backend="exact")
    (grad,) = torch.autograd.grad(loss, logits)
    reference = _exact_energy(image, logits.softmax(1), roi, labels, 20.0, 1.0)
    (ref_grad,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-4 * float(ref_grad.abs().max()))


def test_soft_filter_hand_computed() -> None:
    probs = torch.tensor([[[[0.9, 0.5, 0.2]]], [[[0.1, 0.5, 0.8]]]]).permute(1, 0, 2, 3)  # (1, 2, 1, 3)
    roi = torch.tensor([[[1.0, 1.0, 0.0]]])
    labelled = torch.tensor([[[True, False, True]]])
    torch.testing.assert_close(soft_filter(probs, roi, labelled), torch.tensor([[[0.1, 1.0, 0.0]]]))


def test_gating_outside_roi_and_confident_labels() -> None:
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 16, 16, generator=gen) * 255
    logits = torch.randn(1, 5, 16, 16, generator=gen) * 4
    roi = torch.ones(1, 16, 16)
    roi[..., 10:] = 0
    unlabelled = torch.full((1, 16, 16), 255)

    def run(img: Tensor, lg: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        probs = lg.softmax(1).requires_grad_(True)
        loss = dense_energy_loss(img, probs, roi, labels, sigma_xy=8.0, scale=1.0)
        return loss.detach(), torch.autograd.grad(loss, probs)[0]

    loss, grad = run(image, logits, unlabelled)
    assert grad.is_contiguous()  # NCHW like probs: autograd and the resize's backward take it as is
    assert (grad[..., 10:] == 0).all() and (grad[..., :10] < 0).all()
    # whatever lies outside the crop changes nothing
    image2, logits2 = image.clone(), logits.clone()
    image2[..., 10:] = 255 - image2[..., 10:]
    logits2[..., 10:] = torch.randn(1, 5, 16, 6, generator=gen) * 4
    loss2, grad2 = run(image2, logits2, unlabelled)
    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(grad2, grad)

    # labelling the confident pixels scales their gradient by 1 - max P and shrinks the loss
    probs = logits.softmax(1)
    confident = probs.max(1).values > 0.9
    labels = torch.where(confident, probs.argmax(1), unlabelled)
    loss3, grad3 = run(image, logits, labels)
    assert confident[..., :10].sum() > 20
    assert loss < loss3 < 0
    scale = (1 - probs.max(1, keepdim=True).values).expand_as(grad)
    mask = confident.unsqueeze(1).expand_as(grad)
    torch.testing.assert_close(grad3[mask], grad[mask] * scale[mask])
    torch.testing.assert_close(grad3[~mask], grad[~mask])


def test_batch_equals_one_image_at_a_time(voc_sample: Path) -> None:
    image, logits, roi, labels = _batch(voc_sample)
    def module(*args: Tensor) -> Tensor:
        return dense_energy_loss(*args, sigma_xy=SIGMA_XY)

    probs = logits.softmax(1).requires_grad_(True)
    batch_loss = module(image, probs, roi, labels)
    (batch_grad,) = torch.autograd.grad(batch_loss, probs)
    losses = []
    for n in range(len(NAMES)):
        one = probs[n : n + 1].detach().requires_grad_(True)
        loss = module(image[n : n + 1], one, roi[n : n + 1], labels[n : n + 1])
        (grad,) = torch.autograd.grad(loss, one)
        torch.testing.assert_close(grad / len(NAMES), batch_grad[n : n + 1], rtol=1e-4, atol=1e-14)
        losses.append(loss.detach())
    torch.testing.assert_close(batch_loss.detach(), torch.stack(losses).mean(), rtol=1e-5, atol=0)


def test_bad_inputs_raise() -> None:
    image, probs = torch.zeros(1, 3, 8, 8), torch.full((1, 2, 8, 8), 0.5)
    roi, labels = torch.ones(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="image"):
        dense_energy_loss(image[:, :2], probs, roi, labels)
    with pytest.raises(ValueError, match="roi"):
        dense_energy_loss(image, probs, roi[0], labels)
    with pytest.raises(ValueError, match="seg_label"):
        dense_energy_loss(image, probs, roi, labels[:, :4])
    with pytest.raises(ValueError, match="scale"):
        dense_energy_loss(image, probs, roi, labels, scale=1.5)
    with pytest.raises(ValueError, match="backend"):
        dense_energy_loss(image, probs, roi, labels, backend="fast")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(voc_sample: Path) -> None:
    image, logits, roi, labels = _batch(voc_sample)
    results = []
    for device in ("cpu", "cuda"):
        probs = logits.to(device).softmax(1).requires_grad_(True)
        loss = dense_energy_loss(
            image.to(device), probs, roi.to(device), labels.to(device), sigma_xy=SIGMA_XY
        )
        results.append((loss.detach().cpu(), torch.autograd.grad(loss, probs)[0].cpu()))
    (cpu_loss, cpu_grad), (gpu_loss, gpu_grad) = results
    torch.testing.assert_close(gpu_loss, cpu_loss, rtol=1e-4, atol=0)
    torch.testing.assert_close(gpu_grad, cpu_grad, rtol=1e-3, atol=1e-3 * float(cpu_grad.abs().max()))
