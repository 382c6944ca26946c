"""meng-tang/rloss (pytorch/pytorch-deeplab_v3_plus): ``from DenseCRFLoss import DenseCRFLoss`` becomes
``from rrm.ops import DenseEnergyLoss as DenseCRFLoss`` (three-argument forward: no labels, no gate), or
DenseCRFLoss.py imports rrm.ops's bilateralfilter and bilateralfilter_batch.

train_withdensecrfloss.py(.sh): ``DenseCRFLoss(weight=2e-9, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)``;
crop 513 (odd: no recompute_scale_factor), batch 12 (2 here); ``croppings = (target != 254).float()``
(RandomScaleCrop pads the label with 254); ``probs = softmax(output)`` (DeepLab-v3+ output at the input
size, on the GPU when there is one); ``denormalizeimage(sample['image'], mean, std)``: a CPU float32
tensor in 0..255; ``densecrflosslayer(denormalized_image, probs, croppings)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from callsite_batches import crop_batch
from repo_wrappers import DenseCRFLoss, grad_atol, value_rtol
from test_callsite_toco import DEVICES

from rrm.ops import DenseEnergyLoss

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def denormalizeimage(images, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """rloss's dataloaders/custom_transforms.py denormalizeimage."""
    images = images.cpu().numpy()
    images = images.transpose((0, 2, 3, 1))
    images *= std
    images += mean
    images *= 255.0
    images = images.transpose((0, 3, 1, 2))
    return torch.tensor(images)


def rloss_step(batch, layer, device: str) -> tuple[float, torch.Tensor]:
    image = ((batch.images / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    target = batch.labels.float()
    for i, (y0, y1, x0, x1) in enumerate(batch.boxes.tolist()):
        pad = torch.ones_like(target[i], dtype=torch.bool)
        pad[y0:y1, x0:x1] = False
        target[i][pad] = 254
    croppings = (target != 254).float()
    output = batch.logits.detach().to(device).requires_grad_()
    probs = torch.nn.Softmax(dim=1)(output)
    denormalized_image = denormalizeimage(image, mean=MEAN, std=STD)
    densecrfloss = layer(denormalized_image, probs, croppings)
    densecrfloss = densecrfloss.to(device)  # densecrfloss.cuda()
    densecrfloss.sum().backward()
    return densecrfloss.item(), output.grad.cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_rloss_call_site(voc_sample: Path, device: str) -> None:
    crop = 513
    batch = crop_batch(voc_sample, crop, seed=4)
    ours, ours_grad = rloss_step(batch, DenseEnergyLoss(weight=2e-9, sigma_rgb=15, sigma_xy=100, scale_factor=0.5),
                                 device)
    theirs, theirs_grad = rloss_step(batch, DenseCRFLoss(weight=2e-9, sigma_rgb=15, sigma_xy=100, scale_factor=0.5),
                                     device)
    assert ours < 0 and np.isfinite(ours)
    assert ours == pytest.approx(theirs, rel=value_rtol(2 * 21 * (crop // 2) ** 2))
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0,
                               atol=grad_atol(21, 0.5, theirs_grad.abs().max().item()))
