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


def _shared_dropout_masks(model: nn.Module) -> dict[tuple[str, tuple[int, ...]], torch.Tensor]:
    """Make every Dropout2d of `model` draw its channel mask from a table keyed by (module, input shape),
    so any two callers forwarding the same input size get the same masks, whatever the order of their
    calls. Training mode only, as Dropout2d: identity in eval mode. Returns the table (filled on use)."""
    table: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def hook(name: str):
        def drop(module: nn.Dropout2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
            if not module.training or module.p == 0:
                return output
            x = inputs[0]
            key = (name, tuple(x.shape))
            if key not in table:
                gen = torch.Generator().manual_seed(len(table) + 1)
                table[key] = (torch.rand(*x.shape[:2], 1, 1, generator=gen) >= module.p).float()
            return x * table[key] / (1 - module.p)
        return drop

    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout2d):
            module.register_forward_hook(hook(name))
    return table


def test_training_step_cams_keep_train_mode_dropout(voc_sample: Path, monkeypatch) -> None:
    """In the training step the extra-scale CAMs go through the backbone in train mode, Dropout2d of b6 and
    b7 active, as the authors' SegNet.forward (model.train(), scales 0.5/1.5/2 under no_grad only)."""
    import rrm.engine.onestep as steps_module
    from rrm.engine.onestep import onestep_steps
    from rrm.experiments.profiles import expand
    from rrm.experiments.training import training_run
    from rrm.models.rrm_net import RRMNet
    from rrm.settings import load_params, parse

    crop = 97
    torch.manual_seed(0)
    model = RRMNet(width=0.0625, freeze_bn=True, dropout=True).train()
    masks = _shared_dropout_masks(model)
    photos = sample_photos(voc_sample, count=2)
    crops = [normalize(image[:crop, :crop]) for _, image, _ in photos]
    images = torch.stack([nn.functional.pad(x, (0, crop - x.shape[2], 0, crop - x.shape[1])) for x in crops])
    labels = torch.zeros(len(photos), 20)
    labels[:, [0, 4, 11, 14]] = 1
    recorded = []

    def recording(*args, **kwargs):
        recorded.append(multiscale_cam(*args, **kwargs))
        return recorded[-1]

    monkeypatch.setattr(steps_module, "multiscale_cam", recording)
    params = parse(expand(load_params(Path(__file__).resolve().parents[2] / "params.yaml"),
                          {"train_onestep.loss": "ce", "train_onestep.pseudo": "cam", "train_onestep.crop_size": crop,
                           "mining.cam_scales": [0.5, 1.0, 1.5, 2.0], "mining.pool_processes": 0}, source="test"))
    settings = training_run(params, "train_onestep", init="-", out_model="-", checkpoint="-", live_dir=None)
    batch = {"image": images, "labels": labels, "raw": torch.zeros(len(photos), 3, crop, crop),
             "roi": torch.ones(len(photos), crop, crop)}
    with onestep_steps(settings) as step_losses:
        step_losses(model, batch, torch.device("cpu"))

    def forward_cam(x: torch.Tensor) -> torch.Tensor:  # the authors' Net.forward(require_seg=False)
        return torch.relu(nn.functional.conv2d(model.features(x), model.fc8.weight))

    want = authors_cam(forward_cam, images, labels)
    np.testing.assert_allclose(recorded[0].numpy(), want, rtol=0, atol=1e-5)
    sizes = {shape[2:] for (name, shape) in masks if name.startswith("b6")}
    assert len(sizes) == 4  # b6's Dropout2d ran at each of the four scales' feature sizes
    assert all((m == 0).any() for m in masks.values())
    model.eval()
    without = authors_cam(forward_cam, images, labels)
    assert np.abs(without - want).max() > 1e-2  # dropout visibly changes the fused CAM
