"""rrm.ops.dense_crf: the torch and pydensecrf backends agree on VOC photos (one signature)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rrm.io import load_image, load_mask
from rrm.ops import dense_crf
from rrm.ops.crf import cpu_pool

pytest.importorskip("pydensecrf")

NAMES = ["2007_000063", "2007_000068", "2007_000392", "2007_000768"]
SIZE = (94, 125)  # (H, W): 500 x 375 photos downscaled 4x
SETTINGS = {  # RRM's mining CRF and its test-time CRF
    "mining": {},
    "evaluate": {"gauss_sxy": 3.0, "gauss_compat": 3.0, "bi_sxy": 83.0, "bi_srgb": 5.0, "bi_compat": 4.0},
}


def _batch(voc: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 photos (N, 3, H, W) and noisy smoothed one-hot probabilities of their masks (N, 21, H, W)."""
    images, masks = [], []
    for name in NAMES:
        photo = Image.fromarray(load_image(voc / "JPEGImages" / f"{name}.jpg")).resize(SIZE[::-1], Image.BILINEAR)
        mask = Image.fromarray(load_mask(voc / "SegmentationClass" / f"{name}.png")).resize(SIZE[::-1], Image.NEAREST)
        images.append(torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1))
        masks.append(torch.from_numpy(np.asarray(mask).astype(np.int64)))
    labels = torch.stack(masks)
    onehot = F.one_hot(labels.where(labels != 255, 0), 21).permute(0, 3, 1, 2).float()
    smooth = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    gen = torch.Generator().manual_seed(1)
    logits = torch.log(0.6 * smooth + 0.4 / 21) + 1.5 * torch.randn(smooth.shape, generator=gen)
    return torch.stack(images), logits.softmax(1)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_backends_agree_on_99_percent_of_pixels(voc_sample: Path, name: str) -> None:
    images, probs = _batch(voc_sample)
    torch_q = dense_crf(images, probs, backend="torch", **SETTINGS[name])
    with cpu_pool(2) as pool:
        crf_q = dense_crf(images.numpy(), probs.numpy(), backend="pydensecrf", pool=pool, **SETTINGS[name])
    assert torch_q.shape == crf_q.shape == probs.shape and crf_q.dtype == torch_q.dtype == torch.float32
    torch.testing.assert_close(torch_q.sum(1), torch.ones(len(NAMES), *SIZE))
    agreement = (torch_q.argmax(1) == crf_q.argmax(1)).float().mean((1, 2))
    assert agreement.min() >= 0.99, agreement
    changed = (crf_q.argmax(1) != probs.argmax(1)).float().mean()
    assert changed > 0.05  # the CRF does change the labelling, so agreement is not trivial


def test_unknown_backend_and_bad_shapes_raise() -> None:
    probs = torch.full((1, 2, 4, 4), 0.5)
    with pytest.raises(ValueError, match="backend"):
        dense_crf(torch.zeros(1, 3, 4, 4), probs, backend="opencv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images"):
        dense_crf(torch.zeros(1, 3, 4, 5), probs)
