"""The authors' compute_joint_loss (RRM train_from_cls_weight.py): the two cross-entropies and the dense
energy loss of a one-step training step, from the segmentation logits and the mined labels.

    pred = upsample(seg, crop, bilinear);  probs = softmax(pred)
    dloss = DenseEnergyLoss(ori_img, probs, croppings, seg_label)
    bg_label = seg_label with every non-0 pixel -> 255;  fg_label = seg_label with 0 -> 255
    celoss = CE(pred, bg_label) + CE(pred, fg_label)   # CrossEntropyLoss(ignore_index=255), mean

Each CE is averaged over the labelled pixels of its own map across the whole batch; a map with no
labelled pixel gives 0/0 = nan there. Nothing here comes from rrm.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reference.authors_energy_loss import FilterFn, authors_energy_loss


def compute_joint_loss(ori_img, seg, seg_label, croppings, *, weight, sigma_rgb, sigma_xy, scale_factor,
                       filter_fn: FilterFn):
    """ori_img (N, 3, H, W) uint8; seg (N, 21, h, w) logits; seg_label (N, H, W) in {0..20, 255};
    croppings (N, H, W) 0/1. Returns (bg_celoss, fg_celoss, dloss) as floats."""
    seg_label = np.expand_dims(seg_label, axis=1)
    seg_label = torch.from_numpy(seg_label)
    w = seg_label.shape[2]
    h = seg_label.shape[3]
    pred = F.interpolate(seg, (w, h), mode="bilinear", align_corners=False)
    pred_probs = torch.nn.Softmax(dim=1)(pred)
    dloss, _ = authors_energy_loss(ori_img.astype(np.float32), pred_probs.detach().numpy(),
                                   croppings.astype(np.float32), seg_label.numpy(), weight=weight,
                                   sigma_rgb=sigma_rgb, sigma_xy=sigma_xy, scale_factor=scale_factor,
                                   filter_fn=filter_fn)
    critersion = torch.nn.CrossEntropyLoss(weight=None, ignore_index=255, reduction="mean")
    seg_label_copy = torch.squeeze(seg_label.long().clone(), 1)
    bg_label = seg_label_copy.clone()
    fg_label = seg_label_copy.clone()
    bg_label[seg_label_copy != 0] = 255
    fg_label[seg_label_copy == 0] = 255
    bg_celoss = critersion(pred, bg_label.long())
    fg_celoss = critersion(pred, fg_label.long())
    return bg_celoss.item(), fg_celoss.item(), dloss
