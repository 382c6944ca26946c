"""MS COCO 2014 in the layout weakly supervised segmentation code shares (ToCo, SeCo, DuPL), from COCO's
instances json through pycocotools.

``prepare_coco(coco_root, out)`` reads ``COCO_ROOT/annotations/instances_{split}.json`` and the photos in
``COCO_ROOT/{split}/`` and writes, for each split (train2014, val2014):

- ``OUT/SegmentationClass/{split}/<name>.png``: index masks (palette PNG), 0 background, 1..80 the
  categories in COCO's category-id order (:mod:`rrm.data.coco_classes`), 255 crowd regions;
- ``OUT/ImageSets/{split}.txt``: the images that have annotations (and a readable photo of the size
  the json gives), sorted by name;
- ``OUT/ImageLabels/{split}.json``: ``{name: [class indices]}``, every category annotated in the
  image, crowd annotations included (the image-level labels a classifier learns);
- ``OUT/JPEGImages/{split}``: a link to ``COCO_ROOT/{split}``.

``<name>`` is the photo's file name without its suffix (``COCO_val2014_000000000042``).

Overlaps: crowd regions are painted first (255), then the other instances from the largest to the
smallest (decoded pixel count; equal areas by annotation id), each over what is below it: a pixel
belongs to the smallest instance covering it (the rule of coco2voc, whose masks ToCo and its
successors use), and to a crowd region only where no single instance covers it.

Resumable: a mask that exists, decodes, has the photo's size and only valid values is kept; masks,
lists and labels are written atomically. Every missing or bad file and annotation is reported by
name; the other images are still written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rrm.data.coco_classes import INDEX_OF_CATEGORY
from rrm.data.datasets import COCO, IGNORE_INDEX
from rrm.io import load_mask, save_mask, write_json, write_text

SPLITS = ("train2014", "val2014")
VALID_VALUES = frozenset(range(COCO.num_classes)) | {IGNORE_INDEX}


@dataclass
class SplitReport:
    """What prepare_coco did for one split."""

    images: int = 0  # images with annotations
    listed: int = 0  # of those, listed (no problem)
    written: int = 0
    kept: int = 0  # masks already complete (resumed)


@dataclass
class PrepareReport:
    splits: dict[str, SplitReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def render_mask(annotations: list[dict], masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 class indices from an image's annotations and their decoded (H, W) binary masks:
    crowd regions 255 first, then instances from the largest to the smallest (ties by id), each on top."""
    out = np.zeros(shape, np.uint8)
    for annotation, mask in zip(annotations, masks, strict=True):
        if annotation.get("iscrowd", 0):
            out[mask > 0] = IGNORE_INDEX
    instances = [(int(mask.sum()), annotation["id"], INDEX_OF_CATEGORY[annotation["category_id"]], mask)
                 for annotation, mask in zip(annotations, masks, strict=True) if not annotation.get("iscrowd", 0)]
    for _, _, index, mask in sorted(instances, key=lambda item: (-item[0], item[1])):
        out[mask > 0] = index
    return out


def _complete(path: Path, shape: tuple[int, int]) -> bool:
    """A mask already written: decodes, has the image's size and only valid values."""
    if not path.is_file():
        return False
    try:
        mask = load_mask(path)
    except ValueError:
        return False
    return mask.shape == shape and set(np.unique(mask).tolist()) <= VALID_VALUES


def _image_problem(path: Path, size: tuple[int, int]) -> str | None:
    """None when the photo exists, opens, and is size = (W, H); else what is wrong, naming it."""
    if not path.is_file():
        return f"{path}: image file missing"
    try:
        with Image.open(path) as image:
            found = image.size
    except (OSError, SyntaxError) as error:
        return f"{path}: unreadable image ({error})"
    if found != size:
        return f"{path}: image is {found[0]}x{found[1]}, the annotations say {size[0]}x{size[1]}"
    return None


def _load_coco(path: Path, problems: list[str]):
    from pycocotools.coco import COCO as CocoApi

    if not path.is_file():
        problems.append(f"{path}: annotation file missing")
        return None
    try:
        with open(path) as handle:
            dataset = json.load(handle)
        coco = CocoApi()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco.createIndex()
    except (OSError, ValueError, KeyError, TypeError) as error:
        problems.append(f"{path}: not a COCO instances file ({type(error).__name__}: {error})")
        return None
    unknown = sorted({a["category_id"] for a in coco.anns.values()} - set(INDEX_OF_CATEGORY))
    if unknown:
        problems.append(f"{path}: category ids {unknown} are not COCO's 80 (rrm.data.coco_classes)")
        return None
    return coco


def prepare_split(coco_root: Path, out: Path, split: str, problems: list[str]) -> SplitReport:
    """Masks, list and labels of one split (see the module docstring); problems are appended."""
    report = SplitReport()
    coco = _load_coco(coco_root / "annotations" / f"instances_{split}.json", problems)
    if coco is None:
        return report
    images = sorted((coco.imgs[i] for i in coco.getImgIds() if coco.getAnnIds(imgIds=i)),
                    key=lambda info: info["file_name"])
    report.images = len(images)
    listed, labels = [], {}
    for info in tqdm(images, desc=f"prepare-coco {split}", unit="img"):
        name, shape = Path(info["file_name"]).stem, (info["height"], info["width"])
        problem = _image_problem(coco_root / split / info["file_name"], shape[::-1])
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
        mask_path = COCO.masks(out, split) / f"{name}.png"
        if _complete(mask_path, shape):
            report.kept += 1
        else:
            try:
                masks = [coco.annToMask(a) for a in annotations]
                bad = [a["id"] for a, m in zip(annotations, masks, strict=True) if m.shape != shape]
                if bad:
                    raise ValueError(f"annotation(s) {bad} decode to a size other than {shape[1]}x{shape[0]}")
            except (ValueError, TypeError, KeyError, IndexError) as error:
                problems.append(f"{coco_root / 'annotations' / f'instances_{split}.json'}: image {info['file_name']}"
                                f" (id {info['id']}): bad segmentation ({error})")
                continue
            save_mask(mask_path, render_mask(annotations, masks, shape), COCO.palette)
            report.written += 1
        if problem is not None:
            problems.append(problem)
            continue
        listed.append(name)
        labels[name] = sorted({INDEX_OF_CATEGORY[a["category_id"]] for a in annotations})
    report.listed = len(listed)
    write_text(COCO.list_file(out, split), "".join(f"{name}\n" for name in listed))
    write_json(COCO.labels_file(out, split), labels)
    link = COCO.images(out, split)
    if not link.exists() and (coco_root / split).is_dir():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((coco_root / split).absolute(), link, target_is_directory=True)
    return report


def prepare_coco(coco_root: str | Path, out: str | Path, splits: tuple[str, ...] = SPLITS) -> PrepareReport:
    """Convert COCO 2014's instances json (``COCO_ROOT/annotations``) and photos into the WSSS layout
    under ``out``; see the module docstring. Problems are collected in the report, not raised."""
    coco_root, out = Path(coco_root), Path(out)
    report = PrepareReport()
    if not coco_root.is_dir():
        report.problems.append(f"{coco_root}: COCO root not found (expected annotations/, train2014/, val2014/)")
        return report
    for split in splits:
        report.splits[split] = prepare_split(coco_root, out, split, report.problems)
    return report
