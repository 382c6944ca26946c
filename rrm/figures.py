"""Pictures people would rather look at: colourised masks, overlays, example grids, per-class bars."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from rrm.io import atomic_path

GRID_HEADER = 14  # px above a save_grid's first row, for the column titles


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) label indices -> (H, W, 3) uint8 colours of the dataset's (256, 3) `palette`
    (rrm.data.datasets; 255 shows as its void colour)."""
    return palette[np.asarray(mask, dtype=np.uint8)]


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 with a blue-to-red ramp."""
    v = np.clip(values, 0, 1)
    return (np.stack([v, 1 - np.abs(2 * v - 1), 1 - v], axis=-1) * 255).astype(np.uint8)


def cam_heatmap(cam: np.ndarray) -> np.ndarray:
    """(C, H, W) normalised CAMs (absent classes zero) -> heatmap of their per-pixel max, (H, W, 3) uint8."""
    return heatmap(np.asarray(cam).max(axis=0))


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the mask, coloured with `palette`, over the image (void pixels left as the image)."""
    colours = colorize(mask, palette).astype(np.float32)
    blend = image.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = (np.asarray(mask) == 255)[..., None]
    return np.where(keep, image, blend).astype(np.uint8)


def save_grid(path: str | os.PathLike, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str],
              cell: int = 128) -> None:
    """Write rows of (H, W, 3) pictures as one PNG, each resized to `cell` px high, titled per column."""
    header = GRID_HEADER
    grid = Image.new("RGB", (cell * len(titles), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for col, title in enumerate(titles):
        draw.text((col * cell + 3, 1), title, fill="black")
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            tile = Image.fromarray(picture).resize((cell, cell), Image.NEAREST)
            grid.paste(tile, (c * cell, header + r * cell))
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")


def per_class_bars(path: str | os.PathLike, series: Mapping[str, Mapping[str, float]], title: str = "") -> None:
    """Grouped bar chart of per-class IoU, one bar group per class, one colour per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(next(iter(series.values())).keys())
    fig, ax = plt.subplots(figsize=(max(8, len(classes) * 0.55), 3.6))
    width = 0.8 / len(series)
    for k, (name, values) in enumerate(series.items()):
        xs = np.arange(len(classes)) + k * width
        heights = [np.nan if values.get(c) is None else values[c] for c in classes]  # None: class absent
        ax.bar(xs, heights, width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
