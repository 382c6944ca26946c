"""The fg/bg cross-entropy targets of a one-step training step against the authors' pipeline, on real photos.

The batch is the authors' crop (padding included); the step (rrm.engine.onestep.onestep_steps) mines the whole
crop and its two CE terms must see exactly the targets of compute_seg_label + compute_joint_loss: every
non-255 mined pixel, the padding's too. The crop mask enters only the energy loss (not run here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from reference.crop import authors_crop
from reference.mining import ce_targets, compute_seg_label
from reference.photos import cam_like, sample_photos
from torch import nn

import rrm.engine.onestep as steps_module
from rrm.data.transforms import crop_normalised, scale_flip
from rrm.engine.onestep import onestep_steps
from rrm.experiments.profiles import expand
from rrm.experiments.training import training_run
from rrm.settings import load_params, parse

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
CROP, SCALE = 121, 0.7  # the scaled photos (<= 84 x 112) are padded in both axes


class FixedCAM(nn.Module):
    """Returns the given CAM at every input scale, so the fused CAM is that CAM; zero logits elsewhere."""

    def __init__(self, cam: torch.Tensor) -> None:
        super().__init__()
        self.cam, self.weight = cam, nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = x.shape[0]
        return {"cls": self.weight.expand(n, 20), "cam": self.cam,
                "seg": self.weight.expand(n, 21, *self.cam.shape[2:])}


def test_ce_targets_equal_authors(voc_sample: Path, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    images, raws, rois, cams, labels, want_bg, want_fg = [], [], [], [], [], [], []
    for i, (_, image, mask) in enumerate(sample_photos(voc_sample, count=6)):
        h, w = int(image.shape[0] * SCALE), int(image.shape[1] * SCALE)
        draws = (int(rng.integers(CROP - h + 1)), int(rng.integers(CROP - w + 1)))
        flip = bool(i % 2)
        norm, ori, cropping = authors_crop(image, SCALE, flip, CROP, draws)
        scaled = scale_flip(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask), scale=SCALE, flip=flip)
        crop_mask = crop_normalised(*scaled, crop_size=CROP, offsets=draws)["mask"].numpy()
        cam, label = cam_like(np.where(crop_mask == 255, 0, crop_mask), variant=i % 3, seed=i)
        seg_label, _ = compute_seg_label(ori.transpose(1, 2, 0).copy(), label, cam.copy())
        bg, fg = ce_targets(seg_label[None])
        images.append(norm), raws.append(ori), rois.append(cropping), cams.append(cam), labels.append(label)
        want_bg.append(bg[0]), want_fg.append(fg[0])
    batch = {"image": torch.from_numpy(np.stack(images)), "raw": torch.from_numpy(np.stack(raws)).float(),
             "roi": torch.from_numpy(np.stack(rois)).float(), "labels": torch.from_numpy(np.stack(labels))}
    seen = []

    def recording(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(target)
        return logits.sum() * 0, logits.sum() * 0

    monkeypatch.setattr(steps_module, "split_cross_entropy", recording)
    params = parse(expand(load_params(PARAMS), {"train_onestep.loss": "ce", "train_onestep.crop_size": CROP,
                                                  "mining.rule": "code", "alpha_ratio": 0.4,
                                                  "mining.pool_processes": 0}, source="test"))
    settings = training_run(params, "train_onestep", init="-", out_model="-", checkpoint="-", live_dir=None)
    with onestep_steps(settings) as step_losses:  # pool_processes 0: the CRFs inline
        losses = step_losses(FixedCAM(torch.from_numpy(np.stack(cams))), batch, torch.device("cpu"))
    assert set(losses) == {"cls", "ce_bg", "ce_fg"}
    target = seen[0].numpy()
    bg, fg = steps_module.split_targets(seen[0])
    np.testing.assert_array_equal(bg.numpy(), np.stack(want_bg))
    np.testing.assert_array_equal(fg.numpy(), np.stack(want_fg))
    padding = ~np.stack(rois)
    assert (target[padding] != 255).sum() > 1000  # mined pixels in the padding reach the CE
    assert (np.stack(want_fg) != 255).any() and (np.stack(want_bg) == 0).any()
