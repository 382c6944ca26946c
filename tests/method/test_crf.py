"""Dense CRF on a real VOC photo, and the worker pool against sequential calls."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrm.io import load_image, load_mask
from rrm.method.crf import CRFParams, CRFPool, dense_crf, dense_crfs

CRF = CRFParams(iterations=10, gauss_sxy=3.0, gauss_compat=3.0, bi_sxy=80.0, bi_srgb=13.0,
                bi_compat=10.0)  # AffinityNet's CRF, which RRM uses for eq. 5


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


def test_pool_matches_sequential_and_keeps_order(voc_sample: Path) -> None:
    rng = np.random.default_rng(1)
    images, probs = [], []
    for k, name in enumerate(["2007_000063", "2007_000068", "2007_000364", "2007_000392"]):
        image, _ = _small_sample(voc_sample, name, width=60 + 10 * k)
        images.append(image)
        probs.append(rng.random((2 + k, *image.shape[:2]), dtype=np.float32))  # sizes differ: order shows
    params = [CRF, replace(CRF, iterations=5), replace(CRF, bi_srgb=5.0), CRF]
    expected = [dense_crf(i, p, q) for i, p, q in zip(images, probs, params, strict=True)]
    with CRFPool(2) as pool:
        got = pool.map(images, probs, params)
        pending = pool.map_async(images[::-1], probs[::-1], CRF)
        again = pending.get()
        with pytest.raises(ValueError, match="pair up"):
            pool.map(images, probs[:2], CRF)
    with pytest.raises(RuntimeError, match="closed"):
        pool.map(images, probs, params)
    for e, g in zip(expected, got, strict=True):
        assert np.array_equal(e, g)
    assert np.array_equal(again[0], dense_crf(images[3], probs[3], CRF))
    inline = CRFPool(processes=0)
    assert all(np.array_equal(e, g) for e, g in zip(expected, inline.map(images, probs, params), strict=True))


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


def _power(base: float, exponent: int) -> float:
    return base**exponent


def test_submit_runs_functions_inline_and_in_workers() -> None:
    inline = CRFPool(0)
    assert inline.workers == 1 and inline.submit(_power, 2.0, 10).get() == 1024.0
    with CRFPool(2) as pool:
        assert pool.workers == 2
        handles = [pool.submit(_power, 3.0, k) for k in range(5)]
        assert [h.get() for h in handles] == [3.0**k for k in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(_power, 1.0, 1)


def test_workers_start_without_the_main_script(tmp_path: Path) -> None:
    """A stage script imports torch at the top; its CRF workers must not (spawn would re-run the script)."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import sys\nimport torch  # noqa: F401\nfrom rrm.method.crf import CRFPool\nimport crf_probe\n\n"
        "def in_main():\n    return 1\n\n"
        "if __name__ == '__main__':\n"
        "    with CRFPool(2) as pool:\n"
        "        print(sorted({m for h in [pool.submit(crf_probe.heavy) for _ in range(4)] for m in h.get()}))\n"
        "        try:\n            pool.submit(in_main)\n        except ValueError as error:\n"
        "            print('refused:', error)\n")
    (tmp_path / "crf_probe.py").write_text(
        "import sys\n\ndef heavy():\n    return [m for m in ('torch', 'torchvision') if m in sys.modules]\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"  # no worker imported torch
    assert lines[1].startswith("refused: CRFPool.submit: in_main is defined in the main script")
