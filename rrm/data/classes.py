"""PASCAL VOC's class names, the paper's column names for them and the devkit palette (rrm.data.datasets.VOC)."""

from __future__ import annotations

import numpy as np

CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
IGNORE_INDEX = 255  # VOC's "void" border / RRM's "not reliable"

# Column names the paper's Tables 3/4 use, in the same order as CLASSES.
PAPER_COLUMNS: tuple[str, ...] = (
    "bkg", "plane", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "table", "dog", "horse", "mbk", "person", "plant", "sheep", "sofa", "train", "tv",
)


def voc_palette() -> np.ndarray:
    """The devkit's 256-entry colour map (bit-interleaved), shape (256, 3), uint8; 255 -> white-ish."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


PALETTE: np.ndarray = voc_palette()
