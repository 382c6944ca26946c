"""zwyang6/SeCo: its model/losses.py with the extension import swapped for rrm.ops, or its DenseEnergyLoss
replaced by rrm.ops.DenseEnergyLoss, gives SeCo's loss and gradient at its call site.

scripts/train_voc.py: ``loss_layer = DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100,
scale_factor=0.5)``, 4 images per GPU (2 here) at crop 448, ``segs`` upsampled to the label size,
``get_energy_loss(img=inputs, logit=segs, label=refined_pseudo_label, img_box=img_box, loss_layer=...)``;
SeCo's get_energy_loss also accepts img_box=None (the whole crop is the ROI).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callsite_batches import crop_batch
from repo_wrappers import ToCoDenseEnergyLoss, grad_atol, value_rtol
from test_callsite_toco import DEVICES, toco_step

from rrm.ops import DenseEnergyLoss


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_box", [True, False])
def test_seco_call_site(voc_sample: Path, device: str, with_box: bool) -> None:
    crop = 448
    batch = crop_batch(voc_sample, crop, seed=1, names=("2007_000068", "2007_000364"))
    if not with_box:
        batch.boxes = None
    ours, ours_grad = toco_step(batch, DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5),
                                device, crop)
    theirs, theirs_grad = toco_step(
        batch, ToCoDenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5), device, crop)
    assert ours < 0
    assert ours == pytest.approx(theirs, rel=value_rtol(2 * 21 * (crop // 2) ** 2))
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0,
                               atol=grad_atol(21, 0.5, theirs_grad.abs().max().item()))
