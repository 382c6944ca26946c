"""rulixiang/ToCo: `from rrm.ops import bilateralfilter, bilateralfilter_batch` in model/losses.py, or
its DenseEnergyLoss replaced by rrm.ops.DenseEnergyLoss, gives ToCo's loss and gradient at its call site.

scripts/dist_train_voc_seg_neg.py: ``loss_layer = DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100,
scale_factor=0.5)``; 2 images per GPU at crop 448; ``segs`` (stride 16) upsampled bilinearly to the label
size; ``get_energy_loss(img=inputs, logit=segs, label=refined_pseudo_label, img_box=img_box,
loss_layer=loss_layer)`` with inputs normalised by ToCo's mean/std (0..255 units), labels int64.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from callsite_batches import MEAN_RGB, crop_batch, network_logits
from repo_wrappers import ToCoDenseEnergyLoss, get_energy_loss, grad_atol, value_rtol

from rrm.ops import DenseEnergyLoss

STD_RGB = (58.395, 57.12, 57.375)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def toco_step(batch, loss_layer, device: str, crop: int, stride: int = 16) -> tuple[float, torch.Tensor]:
    """The reg_loss lines of ToCo's training step; returns the loss and d loss / d segs (network output)."""
    inputs = ((batch.images - torch.tensor(MEAN_RGB).view(1, 3, 1, 1)) / torch.tensor(STD_RGB).view(1, 3, 1, 1)).to(device)
    segs_net = network_logits(batch, stride).detach().to(device).requires_grad_()
    refined_pseudo_label = batch.labels.to(device)
    segs = F.interpolate(segs_net, size=refined_pseudo_label.shape[1:], mode="bilinear", align_corners=False)
    reg_loss = get_energy_loss(img=inputs, logit=segs, label=refined_pseudo_label, img_box=batch.boxes,
                               loss_layer=loss_layer)
    reg_loss.sum().backward()
    assert reg_loss.shape == (1,) and reg_loss.device.type == device
    return reg_loss.item(), segs_net.grad.cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_toco_call_site(voc_sample: Path, device: str) -> None:
    crop = 448
    batch = crop_batch(voc_sample, crop, seed=0)
    ours, ours_grad = toco_step(batch, DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5),
                                device, crop)
    theirs, theirs_grad = toco_step(batch, ToCoDenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5),
                                    device, crop)
    assert ours < 0
    assert ours == pytest.approx(theirs, rel=value_rtol(2 * 21 * (crop // 2) ** 2))
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0,
                               atol=grad_atol(21, 0.5, theirs_grad.abs().max().item()))


def test_odd_crops_need_recompute_scale_factor(voc_sample: Path) -> None:
    """At a crop whose half is not an integer, ToCo's resize grid is recompute_scale_factor=True's:
    the default (RRM's grid) gives a gradient off by far more than float32 error, the flag matches."""
    crop = 449
    batch = crop_batch(voc_sample, crop, seed=0)
    _, theirs_grad = toco_step(batch, ToCoDenseEnergyLoss(1e-7, 15, 100, 0.5), "cpu", crop)
    atol = grad_atol(21, 0.5, theirs_grad.abs().max().item())
    _, rrm_grid = toco_step(batch, DenseEnergyLoss(1e-7, 15, 100, 0.5), "cpu", crop)
    _, toco_grid = toco_step(batch, DenseEnergyLoss(1e-7, 15, 100, 0.5, recompute_scale_factor=True), "cpu", crop)
    assert (rrm_grid - theirs_grad).abs().max() > 10 * atol
    torch.testing.assert_close(toco_grid, theirs_grad, rtol=0, atol=atol)
