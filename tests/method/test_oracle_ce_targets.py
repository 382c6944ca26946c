"""The loss terms of a one-step training step against the authors' compute_seg_label + compute_joint_loss,
on real photos.

The batch is the authors' crop (padding included); the step (rrm.engine.onestep.onestep_steps) mines the whole
crop and its two cross-entropies and its energy loss must equal those of tests/reference/joint_loss.py, a fresh
transcription of the authors' loss (both CE terms, each averaged over its own labelled pixels of the
whole batch). Nothing on the expected side goes through rrm's own target split or loss functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference.crop import authors_crop
from reference.joint_loss import compute_joint_loss
from reference.mining import compute_seg_label
from reference.photos import cam_like, sample_photos
from torch import nn

from rrm.data.transforms import crop_normalised, scale_flip
from rrm.engine.onestep import onestep_steps
from rrm.experiments.profiles import expand
from rrm.experiments.training import training_run
from rrm.method.energy_loss import bilateral_filter_batch
from rrm.method.losses import split_cross_entropy
from rrm.settings import load_params, parse

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
CROP, SCALE = 121, 0.7  # the scaled photos (<= 84 x 112) are padded in both axes; 121 * 0.5 is no integer
# The authors' train_from_cls_weight.py arguments, written down here (not read from our YAML).
AUTHORS_ENERGY = {"weight": 1e-7, "sigma_rgb": 15.0, "sigma_xy": 100.0, "scale_factor": 0.5}


class FixedCAM(nn.Module):
    """Returns the given CAM at every input scale (so the fused CAM is that CAM) and fixed seg logits."""

    def __init__(self, cam: torch.Tensor, seg: torch.Tensor) -> None:
        super().__init__()
        self.cam, self.seg, self.weight = cam, seg, nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cls": self.weight.expand(x.shape[0], 20), "cam": self.cam, "seg": self.seg + self.weight}


def _filter_np(image: np.ndarray, values: np.ndarray, sigma_rgb: float, sigma_xy: float) -> np.ndarray:
    out = bilateral_filter_batch(torch.from_numpy(image)[None], torch.from_numpy(values)[None],
                                 sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
    return out[0].numpy()


def test_step_losses_equal_authors(voc_sample: Path) -> None:
    rng = np.random.default_rng(3)
    images, raws, rois, cams, labels, seg_labels = [], [], [], [], [], []
    for i, (_, image, mask) in enumerate(sample_photos(voc_sample, count=6)):
        h, w = int(image.shape[0] * SCALE), int(image.shape[1] * SCALE)
        draws = (int(rng.integers(CROP - h + 1)), int(rng.integers(CROP - w + 1)))
        flip = bool(i % 2)
        norm, ori, cropping = authors_crop(image, SCALE, flip, CROP, draws)
        scaled = scale_flip(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask), scale=SCALE, flip=flip)
        crop_mask = crop_normalised(*scaled, crop_size=CROP, offsets=draws)["mask"].numpy()
        cam, label = cam_like(np.where(crop_mask == 255, 0, crop_mask), variant=i % 3, seed=i)
        seg_label, _ = compute_seg_label(ori.transpose(1, 2, 0).copy(), label, cam.copy())
        images.append(norm), raws.append(ori), rois.append(cropping), cams.append(cam), labels.append(label)
        seg_labels.append(seg_label)
    seg = 2 * torch.randn(len(images), 21, 16, 16, generator=torch.Generator().manual_seed(0))  # ceil(121 / 8)
    batch = {"image": torch.from_numpy(np.stack(images)), "raw": torch.from_numpy(np.stack(raws)).float(),
             "roi": torch.from_numpy(np.stack(rois)).float(), "labels": torch.from_numpy(np.stack(labels))}
    energy = {"train_onestep.energy." + k: v for k, v in (("weight", 1e-7), ("sigma_rgb", 15.0),
                                                          ("sigma_xy", 100.0), ("scale", 0.5))}
    params = parse(expand(load_params(PARAMS), {"train_onestep.loss": "joint", "train_onestep.crop_size": CROP,
                                                  "mining.rule": "code", "alpha_ratio": 0.4,
                                                  "mining.pool_processes": 0, **energy},
                          source="test"))
    settings = training_run(params, "train_onestep", init="-", out_model="-", checkpoint="-", live_dir=None)
    with onestep_steps(settings) as step_losses:  # pool_processes 0: the CRFs inline
        losses = step_losses(FixedCAM(torch.from_numpy(np.stack(cams)), seg), batch, torch.device("cpu"))
    bg, fg, dloss = compute_joint_loss(np.stack(raws), seg, np.stack(seg_labels).astype(np.float64),
                                       np.stack(rois), filter_fn=_filter_np, **AUTHORS_ENERGY)
    assert set(losses) == {"cls", "ce_bg", "ce_fg", "energy"}
    # Same logits and targets on both sides: float32 means over ~50k pixels, rounding only.
    assert losses["ce_bg"].item() == pytest.approx(bg, rel=1e-5)
    assert losses["ce_fg"].item() == pytest.approx(fg, rel=1e-5)
    assert losses["energy"].item() == pytest.approx(dloss, rel=1e-5)
    target = np.stack(seg_labels)
    padding = ~np.stack(rois)
    assert (target[padding] != 255).sum() > 1000  # mined pixels in the padding reach the CE
    assert (target == 0).any() and ((target > 0) & (target < 255)).any()
    # a per-image mean would differ: the images hold different numbers of labelled pixels
    counts = [(t == 0).sum() for t in target]
    assert len(set(counts)) > 1


def test_one_side_without_labels() -> None:
    """The authors' mean over an empty map is 0/0 = nan, which would turn every weight into nan; ours is 0
    with zero gradient, and the other term keeps the authors' value."""
    logits = torch.randn(2, 21, 5, 7, generator=torch.Generator().manual_seed(4), requires_grad=True)
    only_bg = torch.full((2, 5, 7), 255)
    only_bg[0, :2] = 0
    seg_label = only_bg.numpy().astype(np.float64)
    bg, fg, _ = compute_joint_loss(np.zeros((2, 3, 5, 7), np.uint8), logits.detach(), seg_label,
                                   np.ones((2, 5, 7)), filter_fn=_filter_np, **AUTHORS_ENERGY)
    ours_bg, ours_fg = split_cross_entropy(logits, only_bg)
    assert ours_bg.item() == pytest.approx(bg, rel=1e-6) and np.isnan(fg)
    assert ours_fg.item() == 0.0
    (grad,) = torch.autograd.grad(ours_fg, logits)
    assert (grad == 0).all()
    empty = torch.full((2, 5, 7), 255)
    bg, fg, _ = compute_joint_loss(np.zeros((2, 3, 5, 7), np.uint8), logits.detach(), empty.numpy().astype(float),
                                   np.ones((2, 5, 7)), filter_fn=_filter_np, **AUTHORS_ENERGY)
    assert np.isnan(bg) and np.isnan(fg)
    assert [v.item() for v in split_cross_entropy(logits, empty)] == [0.0, 0.0]
