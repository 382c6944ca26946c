"""Multi-scale CAM fusion against an independent transcription of the authors' SegNet.forward and
compute_cam_up, on real photos at odd crop sizes: equal within 1e-5 for the scales 0.5, 1, 1.5, 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from reference.cam import authors_cam
from reference.photos import sample_photos
from torch import nn

from rrm.data.normalize import normalize
from rrm.method.cam import multiscale_cam


class StrideEightCAM(nn.Module):
    """Three stride-2 convs (output ceil(H/8)) and a ReLU'd 1x1 to 20 maps: a CAM with a real stride."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 20, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cam": torch.relu(self.body(x))}


@pytest.mark.parametrize("crop", [97, 121, 161])
def test_fusion_equals_authors(voc_sample: Path, crop: int) -> None:
    model = StrideEightCAM().eval()
    photos = sample_photos(voc_sample, count=4)
    crops = [normalize(image[:crop, :crop]) for _, image, _ in photos]  # zero-padded to crop x crop
    images = torch.stack([nn.functional.pad(x, (0, crop - x.shape[2], 0, crop - x.shape[1])) for x in crops])
    labels = torch.zeros(len(photos), 20)
    labels[:, [0, 4, 11, 14]] = 1
    want = authors_cam(lambda x: model(x)["cam"], images, labels)
    ours = multiscale_cam(model, images, labels, scales=(0.5, 1.0, 1.5, 2.0))
    np.testing.assert_allclose(ours.numpy(), want, rtol=0, atol=1e-5)
    reused = multiscale_cam(model, images, labels, scales=(0.5, 1.0, 1.5, 2.0), scale1_cam=model(images)["cam"])
    np.testing.assert_allclose(reused.numpy(), want, rtol=0, atol=1e-5)
    assert want[:, [0, 4, 11, 14]].max() > 0.99 and (want[:, 1] == 0).all()
    # the authors' order (fuse at feature-map size, upsample once) is not each scale upsampled to the crop
    direct = sum(nn.functional.interpolate(model(nn.functional.interpolate(
        images, size=(int(crop * s), int(crop * s)), mode="bilinear", align_corners=False) if s != 1 else images)["cam"],
        size=(crop, crop), mode="bilinear", align_corners=False) for s in (0.5, 1.0, 1.5, 2.0))
    direct = direct * labels[:, :, None, None]
    direct = direct / (direct.amax((2, 3), keepdim=True) + 1e-5)
    assert np.abs(direct.detach().numpy() - want).max() > 1e-3
