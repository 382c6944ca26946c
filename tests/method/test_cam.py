"""CAM pipeline (eq. 1-4): normalisation, multi-scale averaging against hand values, scale-1 reuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rrm.method.cam import background_score, cam_label_map, multiscale_cam, normalize_cam


class ChannelCAM(nn.Module):
    """cam_c = relu(x_0) * w_c * ramp: a fixed function of the input, logging whether grad was on."""

    def __init__(self, ramp: torch.Tensor | None = None, pool: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, 20).view(1, 20, 1, 1))
        self.ramp, self.pool, self.grad_flags = ramp, pool, []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.grad_flags.append(torch.is_grad_enabled())
        cam = torch.relu(x[:, :1]) * self.weight
        if self.ramp is not None:
            cam = cam * self.ramp
        if self.pool > 1:  # a stride-`pool` network: the CAM must be resized back to the input
            cam = nn.functional.avg_pool2d(cam, self.pool)
        return {"cam": cam}


def test_normalize_cam_peaks_at_one_and_masks_absent_classes() -> None:
    torch.manual_seed(0)
    cam = torch.rand(2, 20, 5, 7) * 3
    cam[1, 4] = 0.0  # a present class with an all-zero CAM must stay 0 (eps), not NaN
    labels = torch.zeros(2, 20)
    labels[0, [1, 7]] = 1
    labels[1, [4, 19]] = 1
    out = normalize_cam(cam, labels)
    peak = cam.amax(dim=(2, 3))
    torch.testing.assert_close(out[0, 1].amax(), peak[0, 1] / (peak[0, 1] + 1e-5))
    torch.testing.assert_close(out[1, 19], cam[1, 19] / (peak[1, 19] + 1e-5))
    assert torch.all(out[1, 4] == 0) and torch.isfinite(out).all()
    absent = labels == 0
    assert torch.all(out[absent] == 0)
    assert torch.all(out[~absent].amax(dim=(1, 2))[[0, 1, 3]] > 1 - 1e-4)


def test_multiscale_cam_matches_hand_computation() -> None:
    # 2x2 image, scales (0.5, 1, 2). Scale 0.5 gives the 1x1 mean, resized back to a constant; scale 2
    # then back to 2x2 is A M A^T with A = [[7/8, 1/8], [1/8, 7/8]] (bilinear, align_corners=False:
    # the 2x upsample rows are [1,0],[3/4,1/4],[1/4,3/4],[0,1]; the 2x downsample averages pairs).
    m = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    images = torch.zeros(1, 3, 2, 2)
    images[0, 0] = m
    labels = torch.zeros(1, 20)
    labels[0, [0, 5]] = 1
    a = torch.tensor([[0.875, 0.125], [0.125, 0.875]])
    expected = (m.mean() * torch.ones(2, 2) + m + a @ m @ a.T) / 3
    expected = expected / (expected.max() + 1e-5)  # the class weight cancels in the normalisation
    out = multiscale_cam(ChannelCAM(), images, labels, scales=(0.5, 1.0, 2.0))
    assert out.shape == (1, 20, 2, 2)
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 5], expected)
    assert torch.all(out[0, [1, 2, 19]] == 0)


def test_multiscale_cam_flip_averages_flipped_pass() -> None:
    ramp = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4)  # not flip-equivariant
    images = torch.ones(1, 3, 3, 4)
    labels = torch.ones(1, 20)
    out = multiscale_cam(ChannelCAM(ramp), images, labels, scales=(1.0,), flip=True)
    # flipped pass flipped back = relu(x) * flip(ramp): the mean ramp is 2.5 everywhere -> all ones
    torch.testing.assert_close(out, torch.full_like(out, 2.5 / (2.5 + 1e-5)))
    no_flip = multiscale_cam(ChannelCAM(ramp), images, labels, scales=(1.0,))
    torch.testing.assert_close(no_flip[0, 0, 0], ramp.flatten() / (4 + 1e-5))


def test_scale1_reuse_equals_full_run_and_builds_no_graph() -> None:
    torch.manual_seed(1)
    images = torch.randn(2, 3, 16, 12)
    labels = (torch.rand(2, 20) > 0.7).float()
    labels[:, 0] = 1
    model = ChannelCAM(pool=4).train()
    full = multiscale_cam(model, images, labels)
    assert model.grad_flags == [False] * 4
    model.grad_flags.clear()
    scale1 = model(images)["cam"]  # the training step's own forward, with gradients
    assert scale1.requires_grad and scale1.shape == (2, 20, 4, 3)
    reused = multiscale_cam(model, images, labels, scale1_cam=scale1)
    assert model.grad_flags == [True, False, False, False]  # only the caller's forward had grad
    assert not reused.requires_grad and model.training
    torch.testing.assert_close(reused, full)


def test_multiscale_cam_rejects_scale1_without_unit_scale() -> None:
    with pytest.raises(ValueError, match="scale1_cam"):
        multiscale_cam(ChannelCAM(), torch.zeros(1, 3, 4, 4), torch.ones(1, 20), scales=(0.5, 2.0),
                       scale1_cam=torch.zeros(1, 20, 4, 4))


def test_background_score_and_cam_label_map() -> None:
    fg = torch.zeros(1, 20, 1, 3)
    fg[0, 2] = torch.tensor([0.5, 0.1, 0.0])
    fg[0, 6] = torch.tensor([0.2, 0.9, 0.0])
    torch.testing.assert_close(background_score(fg, 4.0)[0, 0, 0], torch.tensor([0.5**4, 0.1**4, 1.0]))
    assert background_score(fg, 32.0).shape == (1, 1, 1, 3)
    labels = torch.zeros(1, 20)
    labels[0, [2, 6]] = 1
    assert cam_label_map(fg, labels, bg_threshold=0.3).tolist() == [[[3, 7, 0]]]
    labels[0, 6] = 0  # an absent class never wins, even with a large CAM
    assert cam_label_map(fg, labels, bg_threshold=0.3).tolist() == [[[3, 0, 0]]]
