"""Dense CRF on real VOC photos: refinement, shared kernels, input checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from authors_settings import CRF
from PIL import Image

from rrm.io import load_image, load_mask
from rrm.method.crf import dense_crf, dense_crfs


def _small_sample(voc: Path, name: str = "2007_000063", width: int = 100) -> tuple[np.ndarray, np.ndarray]:
    image, mask = load_image(voc / "JPEGImages" / f"{name}.jpg"), load_mask(voc / "SegmentationClass" / f"{name}.png")
    size = (width, round(image.shape[0] * width / image.shape[1]))
    image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
    return image, np.array(Image.fromarray(mask).resize(size, Image.NEAREST))


def _one_hot(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.array([c for c in np.unique(mask) if c != 255])
    return (mask[None] == classes[:, None, None]).astype(np.float32), classes


def _agreement(probs: np.ndarray, classes: np.ndarray, mask: np.ndarray) -> float:
    valid = mask != 255
    return float((classes[probs.argmax(0)] == mask)[valid].mean())


# Kernel widths are in pixels: the photo is downscaled 5x (500 -> 100 px), so are the spatial sigmas.
SCALED = replace(CRF, gauss_sxy=3.0 / 5, bi_sxy=80.0 / 5)


def test_crf_keeps_confident_and_sharpens_noisy_prediction(voc_sample: Path) -> None:
    image, mask = _small_sample(voc_sample)
    onehot, classes = _one_hot(mask)
    assert classes.tolist() == [0, 9, 12] and image.shape == (75, 100, 3)

    confident = 0.95 * onehot + 0.05 / len(classes)
    posterior = dense_crf(image, confident, SCALED)
    assert posterior.shape == confident.shape and posterior.dtype == np.float32
    np.testing.assert_allclose(posterior.sum(0), 1.0, atol=1e-4)
    assert _agreement(posterior, classes, mask) > 0.98

    noisy = 0.3 * onehot + np.random.default_rng(0).random(onehot.shape, dtype=np.float32)
    noisy /= noisy.sum(0, keepdims=True)
    before = _agreement(noisy, classes, mask)
    after = _agreement(dense_crf(image, noisy, SCALED), classes, mask)
    assert before < 0.7 and after > before + 0.2, (before, after)
    # the unscaled (AffinityNet) kernels still help, less: their 80 px bilateral spans the whole photo
    assert _agreement(dense_crf(image, noisy, CRF), classes, mask) > before + 0.1


def test_zero_iterations_return_normalised_unary() -> None:
    image = np.zeros((3, 4, 3), np.uint8)
    probs = np.stack([np.full((3, 4), 0.6), np.full((3, 4), 0.2)]).astype(np.float32)
    np.testing.assert_allclose(dense_crf(image, probs, replace(CRF, iterations=0))[:, 0, 0], [0.75, 0.25], rtol=1e-5)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="image"):
        dense_crf(np.zeros((4, 4, 3), np.float32), np.ones((2, 4, 4), np.float32), CRF)
    with pytest.raises(ValueError, match="probs"):
        dense_crf(np.zeros((4, 4, 3), np.uint8), np.ones((2, 4, 5), np.float32), CRF)
    with pytest.raises(ValueError, match="bi_srgb"):
        replace(CRF, bi_srgb=0.0)


def test_dense_crfs_share_kernels_and_match_dense_crf(voc_sample: Path) -> None:
    """Several score maps on one image through one set of kernels: each posterior is bit-identical to
    its own dense_crf call (mining runs its gamma_low and gamma_high CRFs this way)."""
    image, _ = _small_sample(voc_sample, width=70)
    rng = np.random.default_rng(2)
    maps = [rng.random((3, *image.shape[:2]), dtype=np.float32) for _ in range(3)]
    shared = dense_crfs(image, maps, SCALED)
    assert len(shared) == 3
    for prob, got in zip(maps, shared, strict=True):
        assert np.array_equal(got, dense_crf(image, prob, SCALED))
    assert dense_crfs(image, [], SCALED) == []
    with pytest.raises(ValueError, match="share"):
        dense_crfs(image, [maps[0], maps[0][:2]], SCALED)


def test_read_only_photo_as_pil_gives_it(voc_sample: Path) -> None:
    """`np.asarray(Image.open(p))` is read-only; pydensecrf refuses such buffers, dense_crf copies them."""
    photo = np.asarray(Image.open(voc_sample / "JPEGImages" / "2007_000063.jpg").convert("RGB"))
    assert not photo.flags.writeable
    image = photo[:60]  # a read-only, C-contiguous view: kept small for a cheap CRF
    assert image.flags.c_contiguous and not image.flags.writeable
    probs = np.random.default_rng(3).random((3, *image.shape[:2]), dtype=np.float32)
    got = dense_crf(image, probs, SCALED)
    np.testing.assert_array_equal(got, dense_crf(image.copy(), probs, SCALED))
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-4)
