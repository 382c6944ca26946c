"""Mining on tensors (crf_backend "torch") against the pydensecrf path, on real VOC photos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from authors_settings import MINING
from PIL import Image

from rrm.engine.mining import mine_batch
from rrm.io import load_image, load_mask
from rrm.method.cam import normalize_cam
from rrm.method.crf import dense_crfs
from rrm.method.crf_pool import CRFPool
from rrm.method.reliable import mine_cam_only, mine_code, mine_paper
from rrm.method.reliable_torch import (
    _mine_code,
    _mine_paper,
    _pack,
    _with_background,
    mine_batch_torch,
    mine_cam_only_torch,
)
from rrm.settings import MiningParams

U = 255
# 1, 2 and 3 classes: the packed batch pads the first images' label lists
NAMES = ("2007_000068", "2007_000063", "2007_000793", "2007_001149")
SIZE = 72  # photos downscaled to 72 x 96 (cheap CRFs, real image edges)


def _photos(voc: Path) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """uint8 images (N, H, W, 3), CAMs made from the masks (N, 20, H, W) normalised, labels (N, 20)."""
    images, masks = [], []
    for name in NAMES:
        photo = Image.fromarray(load_image(voc / "JPEGImages" / f"{name}.jpg"))
        mask = Image.fromarray(load_mask(voc / "SegmentationClass" / f"{name}.png"))
        size = (SIZE * 4 // 3, SIZE)
        images.append(np.asarray(photo.resize(size, Image.BILINEAR)))
        masks.append(np.asarray(mask.resize(size, Image.NEAREST)).astype(np.int64))
    target = torch.from_numpy(np.stack(masks))
    onehot = torch.stack([(target == c + 1).float() for c in range(20)], 1)
    labels = (onehot.amax((2, 3)) > 0).float()
    # a CAM-like map: blurred, noisy, peaking inside the object
    blurred = F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False)
    noise = torch.rand(blurred.shape, generator=torch.Generator().manual_seed(0))
    cams = normalize_cam(torch.relu(blurred + 0.3 * noise - 0.1), labels)
    return np.stack(images), cams, labels


def _tensor_images(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float()


def _padded_posteriors(images: np.ndarray, cams: torch.Tensor, labels: torch.Tensor,
                       gammas: tuple[float, ...], params: MiningParams) -> list[torch.Tensor]:
    """pydensecrf posteriors of each image over its own labels, zero-padded to the batch's K."""
    fg, _, _ = _pack(cams, labels)
    out = [torch.zeros(len(images), fg.shape[1] + 1, *fg.shape[2:]) for _ in gammas]
    for n in range(len(images)):
        present = np.flatnonzero(labels[n].numpy() > 0.5)
        fg_n = cams[n].numpy()[present]
        probs = [np.concatenate([np.clip(1 - fg_n.max(0), 0, None)[None] ** g, fg_n]).astype(np.float32)
                 for g in gammas]
        for post, q in zip(out, dense_crfs(images[n], probs, params.crf), strict=True):
            post[n, : len(q)] = torch.from_numpy(q)
    return out


@pytest.mark.parametrize("rule", ["code", "paper"])
def test_rule_equals_numpy_rule_on_the_same_posteriors(voc_sample: Path, rule: str) -> None:
    """Given pydensecrf's posteriors, the tensor rule labels every pixel as the numpy rule does."""
    images, cams, labels = _photos(voc_sample)
    params = replace(MINING, rule=rule)
    fg, ids, _ = _pack(cams, labels)
    gammas = (params.gamma,) if rule == "paper" else (params.gamma_low, params.gamma_high)
    posts = _padded_posteriors(images, cams, labels, gammas, params)
    ours = (_mine_paper(_with_background(fg, params.gamma), ids, params, *posts) if rule == "paper"
            else _mine_code(fg, ids, params, *posts)).numpy()
    want = mine_batch(images, cams, labels, params, CRFPool(0))
    assert (ours == want).mean() >= 0.9995, (ours == want).mean()
    assert len(np.unique(want)) >= 4  # the rule found classes and background on these photos


@pytest.mark.parametrize("rule", ["code", "paper"])
def test_matches_pydensecrf_mining_on_real_photos(voc_sample: Path, rule: str) -> None:
    images, cams, labels = _photos(voc_sample)
    params = replace(MINING, rule=rule)
    roi = np.ones(images.shape[:3], bool)
    roi[0, :, -20:] = False
    want = mine_batch(images, cams, labels, params, CRFPool(0), roi=roi)
    ours = mine_batch_torch(_tensor_images(images), cams, labels, params, roi=torch.from_numpy(roi))
    assert ours.dtype == torch.long and ours.shape == want.shape
    agreement = (ours.numpy() == want).mean()
    assert agreement >= 0.99, agreement
    assert (ours.numpy()[0, :, -20:] == U).all()
    labelled = want != U
    assert labelled.mean() > 0.2 and (ours.numpy() != U).mean() > 0.2


@pytest.mark.parametrize("rule", ["code", "paper"])
def test_batch_equals_one_image_at_a_time(voc_sample: Path, rule: str) -> None:
    images, cams, labels = _photos(voc_sample)
    params = replace(MINING, rule=rule)
    batch = mine_batch_torch(_tensor_images(images), cams, labels, params)
    for n in range(len(NAMES)):
        one = mine_batch_torch(_tensor_images(images[n : n + 1]), cams[n : n + 1], labels[n : n + 1], params)
        assert (one[0] == batch[n]).float().mean() >= 0.999
    # and the per-image numpy functions agree with both
    one_numpy = (mine_code if rule == "code" else mine_paper)(images[2], cams[2], labels[2], params)
    assert (batch[2].numpy() == one_numpy).mean() >= 0.99


def test_cam_only_equals_numpy(voc_sample: Path) -> None:
    _, cams, labels = _photos(voc_sample)
    params = replace(MINING, rule="paper", alpha_ratio=0.4)
    roi = torch.ones(len(NAMES), *cams.shape[2:], dtype=torch.bool)
    roi[1, :10] = False
    want = mine_cam_only(cams, labels, params, roi=roi.numpy())
    ours = mine_cam_only_torch(cams, labels, params, roi=roi)
    assert (ours.numpy() == want).mean() >= 0.9995


def test_image_without_classes_and_validation() -> None:
    """An image with no present class gets background only (the numpy path's result); bad shapes raise."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 12, 14, 3), dtype=np.uint8)
    labels = torch.zeros(2, 20)
    labels[1, 6] = 1
    cams = torch.rand(2, 20, 12, 14, generator=torch.Generator().manual_seed(1)) * labels[:, :, None, None]
    cams = normalize_cam(cams, labels)
    for rule in ("code", "paper"):
        params = replace(MINING, rule=rule, bg_confident=0.3, crf_confident=0.6)
        want = mine_batch(images, cams, labels, params, CRFPool(0))
        ours = mine_batch_torch(_tensor_images(images), cams, labels, params)
        assert (ours.numpy() == want).mean() >= 0.95
        assert set(np.unique(ours[0].numpy())) <= {0, U}
    with pytest.raises(ValueError, match="labels"):
        mine_batch_torch(_tensor_images(images), cams, labels[:, :5], MINING)
    with pytest.raises(ValueError, match="crf_backend"):
        replace(MINING, crf_backend="cuda")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("rule", ["code", "paper"])
def test_cuda_mining_equals_cpu_mining(voc_sample: Path, rule: str) -> None:
    images, cams, labels = _photos(voc_sample)
    params = replace(MINING, rule=rule)
    cpu = mine_batch_torch(_tensor_images(images), cams, labels, params)
    gpu = mine_batch_torch(_tensor_images(images).cuda(), cams.cuda(), labels, params)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() == cpu).float().mean() >= 0.999
