"""Validate a COCO-layout root written by `rrm prepare-coco` (rrm.data.coco_prepare): every listed image
has a photo, a mask of its size holding only 0..80 and 255, and image-level labels that include every
class of its mask. All problems are reported, each naming its file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rrm.data.coco_prepare import SPLITS, VALID_VALUES
from rrm.data.datasets import COCO, IGNORE_INDEX
from rrm.io import load_mask


@dataclass
class CocoCheck:
    errors: list[str] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)  # split -> listed images
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))  # per value, all masks

    @property
    def ok(self) -> bool:
        return not self.errors


def _check_image(root: Path, split: str, name: str, labels: list[int] | None, check: CocoCheck) -> None:
    mask_path = COCO.masks(root, split) / f"{name}.png"
    photo = COCO.images(root, split) / f"{name}.jpg"
    if labels is None:
        check.errors.append(f"{COCO.labels_file(root, split)}: no labels for {name}")
    elif not all(isinstance(c, int) and 1 <= c < COCO.num_classes for c in labels):
        check.errors.append(f"{COCO.labels_file(root, split)}: {name}: labels {labels} outside 1..{COCO.num_fg}")
    try:
        mask = load_mask(mask_path) if mask_path.is_file() else None
    except ValueError as error:
        check.errors.append(str(error))
        return
    if mask is None:
        check.errors.append(f"{mask_path}: mask file missing")
        return
    values = np.bincount(mask.ravel(), minlength=256)
    bad = sorted(set(np.flatnonzero(values).tolist()) - VALID_VALUES)
    if bad:
        check.errors.append(f"{mask_path}: values {bad} outside 0..80 and {IGNORE_INDEX}")
    check.pixels += values
    present = set(np.flatnonzero(values[1:COCO.num_classes]) + 1)
    if labels is not None and not present <= set(labels):
        check.errors.append(f"{mask_path}: classes {sorted(present - set(labels))} of the mask are not in "
                            f"{name}'s labels {labels}")
    if not photo.is_file():
        check.errors.append(f"{photo}: image file missing")
        return
    try:
        with Image.open(photo) as image:
            size = image.size
    except (OSError, SyntaxError) as error:
        check.errors.append(f"{photo}: unreadable image ({error})")
        return
    if size != mask.shape[::-1]:
        check.errors.append(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, image {photo} {size[0]}x{size[1]}")


def check_coco_layout(root: str | Path, splits: tuple[str, ...] = SPLITS) -> CocoCheck:
    """Check every listed image of each split (see the module docstring)."""
    root, check = Path(root), CocoCheck()
    for split in splits:
        list_path, label_path = COCO.list_file(root, split), COCO.labels_file(root, split)
        if not list_path.is_file():
            check.errors.append(f"{list_path}: split list missing")
            continue
        names = list_path.read_text().split()
        check.images[split] = len(names)
        if not names:
            check.errors.append(f"{list_path}: split list is empty")
        try:
            labels = json.loads(label_path.read_text())
        except (OSError, ValueError) as error:
            check.errors.append(f"{label_path}: image-level labels unreadable ({error})")
            labels = {}
        for name in tqdm(names, desc=f"check {split}", unit="img"):
            _check_image(root, split, name, labels.get(name), check)
    return check
