"""zbf1991/RRM: in train_from_cls_weight.py, ``from DenseEnergyLoss import DenseEnergyLoss`` becomes
``from rrm.ops import DenseEnergyLoss`` (or DenseEnergyLoss.py imports rrm.ops's bilateralfilter_batch),
and tool/myTool.py's compute_joint_loss gets RRM's loss and gradient.

The call: ``DenseEnergyLoss(weight=1e-7, sigma_rgb=15.0, sigma_xy=100, scale_factor=0.5)``; batch 4 (2
here) at crop 321 (an odd size: RRM's own resize grid, no recompute_scale_factor); ``seg`` (stride 8,
41 x 41) upsampled to the crop, softmax; ``ori_img`` the uint8 crop as float32 on the CPU; ``croppings``
(H, W, N) float64 numpy transposed to (N, H, W) float32 (a non-contiguous tensor); ``seg_label`` float64
(N, 1, H, W) on the CPU; the softmax on the GPU when there is one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from callsite_batches import crop_batch, network_logits
from repo_wrappers import DenseEnergyLoss as RRMDenseEnergyLoss
from repo_wrappers import grad_atol, value_rtol
from test_callsite_toco import DEVICES

from rrm.ops import DenseEnergyLoss


def rrm_dloss(batch, layer, device: str) -> tuple[float, torch.Tensor]:
    """compute_joint_loss's energy-loss lines, fed as train_from_cls_weight.py feeds them."""
    seg_net = network_logits(batch, 8).detach().to(device).requires_grad_()
    ori_images = batch.images.round().to(torch.uint8).numpy()  # (N, 3, H, W) uint8
    croppings = np.zeros((*ori_images.shape[2:], len(ori_images)))
    for i, (y0, y1, x0, x1) in enumerate(batch.boxes.tolist()):
        croppings[y0:y1, x0:x1, i] = 1
    seg_label = np.expand_dims(batch.labels.numpy().astype(np.float64), axis=1)
    seg_label = torch.from_numpy(seg_label)
    w, h = seg_label.shape[2], seg_label.shape[3]
    pred = F.interpolate(seg_net, (w, h), mode="bilinear", align_corners=False)
    pred_probs = torch.nn.Softmax(dim=1)(pred)
    ori_img = torch.from_numpy(ori_images.astype(np.float32))
    croppings = torch.from_numpy(croppings.astype(np.float32).transpose(2, 0, 1))
    assert not croppings.is_contiguous()
    dloss = layer(ori_img, pred_probs, croppings, seg_label)
    dloss = dloss.to(device)  # dloss.cuda()
    dloss.sum().backward()
    return dloss.item(), seg_net.grad.cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_rrm_call_site(voc_sample: Path, device: str) -> None:
    crop = 321
    batch = crop_batch(voc_sample, crop, seed=3)
    ours, ours_grad = rrm_dloss(batch, DenseEnergyLoss(weight=1e-7, sigma_rgb=15.0, sigma_xy=100, scale_factor=0.5),
                                device)
    theirs, theirs_grad = rrm_dloss(
        batch, RRMDenseEnergyLoss(weight=1e-7, sigma_rgb=15.0, sigma_xy=100, scale_factor=0.5), device)
    assert ours < 0
    assert ours == pytest.approx(theirs, rel=value_rtol(2 * 21 * (crop // 2) ** 2))
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0,
                               atol=grad_atol(21, 0.5, theirs_grad.abs().max().item()))
