"""A VOC-layout root rewritten in the layout `rrm prepare-coco` writes, with VOC's classes under their COCO
indices: a tiny COCO-layout dataset for the pipeline (tests/conftest.py's tiny_coco_pipeline) and the profile tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from rrm.data.coco_classes import VOC_TO_COCO
from rrm.data.datasets import COCO
from rrm.data.voc import image_path, read_split, resolve_mask_dir
from rrm.io import load_mask, save_mask


def write_coco_layout(voc_root: Path, out: Path, splits: dict[str, str]) -> None:
    """The VOC-layout root's `splits` ({VOC split: COCO split}) in the layout `rrm prepare-coco` writes:
    JPEGImages/<split>/, SegmentationClass/<split>/ (VOC's classes under their COCO indices, 255 kept),
    ImageSets/<split>.txt and ImageLabels/<split>.json (the classes of each mask)."""
    lookup = np.arange(256, dtype=np.uint8)
    lookup[: len(VOC_TO_COCO)] = VOC_TO_COCO
    for voc_split, split in splits.items():
        names = read_split(voc_root, voc_split)
        labels = {}
        for name in names:
            COCO.images(out, split).mkdir(parents=True, exist_ok=True)
            shutil.copy2(image_path(voc_root, name), COCO.images(out, split) / f"{name}.jpg")
            mask = lookup[load_mask(resolve_mask_dir(voc_root) / f"{name}.png")]
            save_mask(COCO.masks(out, split) / f"{name}.png", mask, COCO.palette)
            labels[name] = sorted(int(c) for c in np.unique(mask) if c not in (0, 255))
        COCO.list_file(out, split).parent.mkdir(parents=True, exist_ok=True)
        COCO.list_file(out, split).write_text("".join(f"{name}\n" for name in names))
        COCO.labels_file(out, split).parent.mkdir(parents=True, exist_ok=True)
        COCO.labels_file(out, split).write_text(json.dumps(labels))
