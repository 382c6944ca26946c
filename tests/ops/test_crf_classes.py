"""rrm.ops.crf_classes: which classes a pruned CRF keeps, that it is the CRF of those classes exactly
(pydensecrf and the torch lattice), the compact score maps, and mining's CRF over the image's classes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rrm.data.datasets import COCO
from rrm.io import load_image, load_mask
from rrm.method.crf_torch import dense_crf_torch
from rrm.ops.crf_classes import expand, kept_classes, label_map, load_compact, pruned_crf, save_compact
from rrm.ops.score_maps import RefineOptions, refine
from rrm.settings import CRFParams

TEST_CRF = {"iterations": 5, "gauss_sxy": 3.0, "gauss_compat": 3.0, "bi_sxy": 83.0, "bi_srgb": 5.0, "bi_compat": 4.0}
NAMES = ("2007_000063", "2007_000392")


def _photo_and_probs(voc_sample: Path, name: str, k: int = 81, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A real photo at 125 x 94 and (k, H, W) smooth scores: its mask's classes, blurred, plus noise classes."""
    image = np.asarray(Image.open(voc_sample / "JPEGImages" / f"{name}.jpg").resize((125, 94))).copy()
    mask = np.asarray(Image.fromarray(load_mask(voc_sample / "SegmentationClass" / f"{name}.png")).resize(
        (125, 94), Image.NEAREST)).astype(np.int64)
    onehot = F.one_hot(torch.from_numpy(np.where(mask == 255, 0, mask)), k).permute(2, 0, 1).float()[None]
    gen = torch.Generator().manual_seed(seed)
    noise = F.interpolate(torch.randn(1, k, 4, 5, generator=gen), size=mask.shape, mode="bilinear")
    logits = 6 * F.avg_pool2d(onehot, 9, stride=1, padding=4, count_include_pad=False) + 1.5 * noise
    return image, torch.softmax(logits, 1)[0].numpy()


def test_kept_classes_rule() -> None:
    probs = np.full((6, 2, 3), 0.01, np.float32)
    probs[1] = 0.9  # the argmax everywhere but at (1, 2)
    probs[3, 0, 0] = 0.3  # reaches min_prob at one pixel, argmax nowhere
    probs[4] = 0.049  # below min_prob everywhere, argmax nowhere
    probs[[1, 4], 1, 2] = 0.0
    probs[5, 1, 2] = 0.04  # below min_prob, but the argmax at (1, 2)
    assert kept_classes(probs, 0.05).tolist() == [0, 1, 3, 5]  # background always kept
    assert kept_classes(probs, 0.049).tolist() == [0, 1, 3, 4, 5]  # >= min_prob
    assert kept_classes(probs, 0.0).tolist() == list(range(6))
    with pytest.raises(ValueError, match="min_prob"):
        kept_classes(probs, 1.5)


def test_pruned_crf_is_the_crf_of_the_kept_classes(voc_sample: Path) -> None:
    """pydensecrf over the kept channels, bit for bit; min_prob None is the full CRF, bit for bit."""
    from rrm.method.crf import dense_crf

    params = CRFParams(**TEST_CRF)
    image, probs = _photo_and_probs(voc_sample, NAMES[0])
    classes, posterior = pruned_crf(image, probs, TEST_CRF, 0.05)
    assert 2 <= len(classes) < 81 and classes[0] == 0
    np.testing.assert_array_equal(posterior, dense_crf(image, probs[classes], params))
    np.testing.assert_allclose(posterior.sum(0), 1.0, atol=1e-5)  # normalised over the kept classes
    everything, full = pruned_crf(image, probs, TEST_CRF, None)
    np.testing.assert_array_equal(everything, np.arange(81))
    np.testing.assert_array_equal(full, dense_crf(image, probs, params))
    assert set(np.unique(label_map(classes, posterior))) <= set(classes.tolist())


def test_torch_batch_equals_full_k_crf_with_the_dropped_labels_left_out(voc_sample: Path) -> None:
    """Packing each image's kept classes into a padded batch is the full-K torch CRF whose dropped labels
    have Q = 0 (valid False: a -inf unary, so they send no message). Float32 rounding only."""
    images, maps = zip(*(_photo_and_probs(voc_sample, name, seed=n) for n, name in enumerate(NAMES)), strict=True)
    options = RefineOptions(num_classes=COCO.num_classes, palette=COCO.palette, crf=TEST_CRF, min_prob=0.05)
    results = refine(list(images), list(maps), options, "torch")
    assert len({len(classes) for classes, _ in results}) == 2  # different kept counts: padding is exercised
    valid = torch.zeros(len(images), 81, dtype=torch.bool)
    for n, (classes, _) in enumerate(results):
        valid[n, classes] = True
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    full = dense_crf_torch(batch, torch.from_numpy(np.stack(maps)), CRFParams(**TEST_CRF), valid=valid).numpy()
    for n, (classes, posterior) in enumerate(results):
        assert (full[n][~valid[n].numpy()] == 0).all()
        np.testing.assert_allclose(posterior, full[n][classes], atol=1e-5)


def test_compact_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    posterior = rng.random((3, 7, 9)).astype(np.float32)
    posterior /= posterior.sum(0)
    classes = np.array([0, 17, 80])
    save_compact(tmp_path / "a.npz", classes, posterior)
    back = load_compact(tmp_path / "a.npz", 81)
    assert back.shape == (81, 7, 9)
    np.testing.assert_allclose(back[classes], posterior, atol=0.5 / 255 + 1e-7)  # rounding to 1/255 steps
    np.testing.assert_array_equal(back, expand(classes, back[classes], 81))
    assert not back[np.setdiff1d(np.arange(81), classes)].any()
    with pytest.raises(ValueError, match="do not fit"):
        load_compact(tmp_path / "a.npz", 21)


def test_mining_crf_runs_over_background_and_the_image_classes(voc_sample: Path) -> None:
    """Where labels are known no pruning is needed: mining's CRF jobs hold [background, present classes]."""
    from rrm.method.reliable import crf_jobs, prepare
    from rrm.settings import MiningParams

    image = load_image(voc_sample / "JPEGImages" / f"{NAMES[0]}.jpg")[:40, :50]
    cams = np.random.default_rng(0).random((20, 40, 50)).astype(np.float32)
    labels = np.zeros(20, np.float32)
    labels[[2, 11, 14]] = 1
    params = MiningParams(rule="code", gamma=4.0, gamma_low=4.0, gamma_high=32.0, alpha_ratio=0.4, cam_min=0.1,
                          bg_confident=0.8, crf_confident=0.8, crf=CRFParams(**TEST_CRF), crf_backend="pydensecrf")
    for rule in (params, replace(params, rule="paper")):
        for _, probs, _ in crf_jobs(*prepare(image, cams, labels)[:2], rule):
            assert probs.shape == (4, 40, 50)
            np.testing.assert_array_equal(probs[1:], cams[[2, 11, 14]])
