"""rulixiang/afa: scripts/dist_train_voc.py keeps the energy loss commented out because
utils/losses.py's ``from bilateralfilter import ...`` line is (the extension does not build). With
``from rrm.ops import bilateralfilter, bilateralfilter_batch`` there, the two commented lines

    loss_layer = DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5)
    reg_loss = get_energy_loss(img=inputs, logit=segs, label=refined_aff_label, img_box=img_box, loss_layer=loss_layer)

run; so does rrm.ops.DenseEnergyLoss in place of AFA's module. AFA's module resizes without
recompute_scale_factor (RRM's grid); crop 320 (the script's --crop_size default), 2 images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callsite_batches import crop_batch
from repo_wrappers import DenseEnergyLoss as AFADenseEnergyLoss
from repo_wrappers import grad_atol, value_rtol
from test_callsite_toco import DEVICES, toco_step

from rrm.ops import DenseEnergyLoss


@pytest.mark.parametrize("device", DEVICES)
def test_afa_call_site(voc_sample: Path, device: str) -> None:
    crop = 320
    batch = crop_batch(voc_sample, crop, seed=2, names=("2007_000392", "2007_000068"))
    ours, ours_grad = toco_step(batch, DenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5),
                                device, crop)
    theirs, theirs_grad = toco_step(
        batch, AFADenseEnergyLoss(weight=1e-7, sigma_rgb=15, sigma_xy=100, scale_factor=0.5), device, crop)
    assert ours < 0
    assert ours == pytest.approx(theirs, rel=value_rtol(2 * 21 * (crop // 2) ** 2))
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0,
                               atol=grad_atol(21, 0.5, theirs_grad.abs().max().item()))
