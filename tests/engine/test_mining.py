"""Mining a batch through the CRF pool: the same labels as the rules applied image by image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from authors_settings import MINING

from rrm.engine.mining import mine_batch, mine_batch_async
from rrm.method.crf_pool import CRFPool
from rrm.method.reliable import mine_code, mine_paper

U = 255


def test_mine_batch_matches_per_image_and_masks_roi() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 14, 18, 3), dtype=np.uint8)
    labels = torch.zeros(3, 20)
    labels[0, [0, 4]] = labels[1, 11] = labels[2, [2, 3, 19]] = 1
    cams = torch.rand(3, 20, 14, 18) * labels[:, :, None, None]
    cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp(min=1e-5)
    roi = np.ones((3, 14, 18), bool)
    roi[1, :, 12:] = False
    params = replace(MINING, alpha_ratio=0.6, bg_confident=0.3)
    inline = mine_batch(images, cams, labels, params, CRFPool(0), roi=roi)
    with CRFPool(2) as pool:
        pooled = mine_batch(images, cams, labels, replace(MINING, rule="paper"), pool)
    for n in range(3):
        want = mine_code(images[n], cams[n].numpy(), labels[n].numpy(), params)
        want[~roi[n]] = U
        assert np.array_equal(inline[n], want)
        assert np.array_equal(pooled[n], mine_paper(images[n], cams[n], labels[n], replace(MINING, rule="paper")))
    assert (inline[1, :, 12:] == U).all() and (inline != U).any() and (pooled != U).any()


def _random_batch(num: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, np.ndarray]:
    """num random images with 1-3 present classes each (so K differs), CAMs, labels, a cropped ROI."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num, 15, 17, 3), dtype=np.uint8)
    labels = torch.zeros(num, 20)
    for n in range(num):
        labels[n, rng.choice(20, size=1 + n % 3, replace=False)] = 1
    cams = torch.rand(num, 20, 15, 17, generator=torch.Generator().manual_seed(seed)) * labels[:, :, None, None]
    cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp(min=1e-5)
    roi = np.ones((num, 15, 17), bool)
    roi[0, 11:] = False
    return images, cams, labels, roi


@pytest.mark.parametrize("rule", ["code", "paper"])
def test_pool_returns_exactly_the_sequential_labels(rule: str) -> None:
    """Whole-image tasks (N a multiple of the workers: 4, 2) and per-CRF tasks (N = 3, 1) give the
    sequential result bit for bit, in input order, with the ROI applied."""
    params = replace(MINING, rule=rule, alpha_ratio=0.5, bg_confident=0.3, crf_confident=0.6)
    with CRFPool(2) as pool:
        assert pool.workers == 2
        for num in (4, 3, 2, 1):
            images, cams, labels, roi = _random_batch(num, seed=num)
            sequential = mine_batch(images, cams, labels, params, CRFPool(0), roi=roi)
            assert (sequential[0, 11:] == U).all() and (sequential != U).any()
            pooled = mine_batch_async(images, cams, labels, params, pool, roi=roi).get()
            assert pooled.dtype == np.uint8 and np.array_equal(pooled, sequential), num
            for n in range(num):  # and each image equals its own one-image call
                one = (mine_code if rule == "code" else mine_paper)(images[n], cams[n], labels[n], params)
                one[~roi[n]] = U
                assert np.array_equal(sequential[n], one)
