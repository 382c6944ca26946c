"""Real VOC photos for the oracle tests, downscaled (long side <= 161 px) to keep the CRFs cheap,
with CAM-like maps made from their masks. PIL and numpy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LONG_SIDE = 161


def sample_photos(voc: Path, count: int = 20) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first `count` ids of the sample's train list: (id, image (H, W, 3) uint8, mask (H, W) uint8)."""
    names = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:count]
    out = []
    for name in names:
        photo = Image.open(voc / "JPEGImages" / f"{name}.jpg").convert("RGB")
        mask = Image.open(voc / "SegmentationClass" / f"{name}.png")
        w, h = photo.size
        size = (LONG_SIDE, round(h * LONG_SIDE / w)) if w >= h else (round(w * LONG_SIDE / h), LONG_SIDE)
        out.append((name, np.array(photo.resize(size, Image.BILINEAR)),
                    np.array(mask.resize(size, Image.NEAREST))))
    return out


def _box_blur(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (edges: mean of the window's part inside), via cumulative sums."""
    def along(a: np.ndarray, axis: int) -> np.ndarray:
        a = np.moveaxis(a, axis, 0)
        c = np.concatenate([np.zeros((1, *a.shape[1:])), np.cumsum(a, 0)])
        n = a.shape[0]
        lo = np.clip(np.arange(n) - radius, 0, n)
        hi = np.clip(np.arange(n) + radius + 1, 0, n)
        shape = (-1,) + (1,) * (a.ndim - 1)
        return np.moveaxis((c[hi] - c[lo]) / (hi - lo).reshape(shape), 0, axis)
    return along(along(x.astype(np.float64), 0), 1)


def cam_like(mask: np.ndarray, variant: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CAM-like (20, H, W) float32 map normalised per class (max -> ~1) and the (20,) labels.

    variant 0 "peaked": the mask blurred, squared (a peak inside each object);
    variant 1 "partial": only the half of each object nearest its top-left corner, blurred;
    variant 2 "leaking": the mask blurred wide, spilling well into the background.
    Each gets multiplicative noise, so small objects carry weak, ragged evidence.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(20, np.float32)
    cam = np.zeros((20, *mask.shape), np.float64)
    for c in range(1, 21):
        obj = mask == c
        if not obj.any():
            continue
        labels[c - 1] = 1
        if variant == 0:
            m = _box_blur(obj, 4) ** 2
        elif variant == 1:
            rows, cols = np.nonzero(obj)
            near = (np.arange(mask.shape[0])[:, None] - rows.min()) + (np.arange(mask.shape[1])[None] - cols.min())
            cut = np.median(near[obj])
            m = _box_blur(obj & (near <= cut), 3)
        else:
            m = _box_blur(obj, 12)
        cam[c - 1] = m * (0.6 + 0.4 * rng.random(mask.shape))
    peak = cam.max(axis=(1, 2), keepdims=True)
    return (cam / (peak + 1e-5)).astype(np.float32), labels
