"""`rrm check-data ROOT`: decode every listed image and mask of a dataset root (a layout of rrm.data.datasets:
VOC's or COCO's) and report ALL problems.

Unlike `VOCSegmentation` (which stops at the first bad item), this walks the whole dataset once, so a
user fixes everything in one go before a 20,000-step run: missing files, unreadable or truncated
images, mask/image size mismatches, mask values outside the dataset's classes and 255, empty or missing split lists.
It also counts, per class, the images containing it and its pixels. With a labels file (the image-level
labels the training stages read, data.labels_file) it reports the ids each split lacks there and every
image whose labels differ from the classes of its mask.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from rrm.data.datasets import VOC, DatasetSpec
from rrm.data.voc import (
    check_mask_values,
    image_path,
    read_label_file,
    read_split,
    resolve_mask_dir,
)
from rrm.io import load_image, load_mask

# Pairs of splits that must not share ids (training on validation images would inflate mIoU).
_DISJOINT = (("train", "val"), ("train_aug", "val"))
LISTED = 10  # ids shown per labels-file warning


@dataclass
class CheckReport:
    """Problems found (errors make the dataset unusable; warnings do not) and per-class counts.

    `table` is indexed by class name (one row per class of the dataset) with columns `images` (images containing the class)
    and `pixels`, counted over the distinct ids of the checked splits that have masks.
    """

    errors: list[str]
    warnings: list[str]
    table: pd.DataFrame
    images_checked: int = 0
    void_pixels: int = 0
    splits: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _check_one(
    root: Path, mask_dir: Path, name: str, need_mask: bool, dataset: DatasetSpec, split: str
) -> tuple[list[str], list[str], np.ndarray]:
    """Errors, warnings and a (256,) pixel histogram (zeros unless image and mask are both valid) for one id."""
    errors: list[str] = []
    notes: list[str] = []
    histogram = np.zeros(256, dtype=np.int64)
    path = image_path(root, name, dataset, split)
    size = None
    try:
        image = load_image(path)  # full decode: truncated files fail here
        size = image.shape[:2]
        with Image.open(path) as handle:
            if handle.mode != "RGB":
                notes.append(f"{path}: mode {handle.mode} image, converted to RGB when read")
    except (FileNotFoundError, ValueError) as error:
        errors.append(str(error) if path.is_file() else f"{path}: image file missing")
        try:  # a truncated file still has a header: keep checking the mask size against it
            with Image.open(path) as handle:
                size = handle.size[::-1]
        except (OSError, SyntaxError):
            pass
    mask_path = mask_dir / f"{name}.png"
    if not need_mask:
        return errors, notes, histogram
    if not mask_path.is_file():
        errors.append(f"{mask_path}: mask file missing")
        return errors, notes, histogram
    try:
        mask = load_mask(mask_path)
        check_mask_values(mask, mask_path, dataset)
    except ValueError as error:
        errors.append(str(error))
        return errors, notes, histogram
    if size is not None and mask.shape != size:
        errors.append(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image {path} "
            f"size {size[1]}x{size[0]}"
        )
        return errors, notes, histogram
    if not errors:  # count usable pairs only
        histogram += np.bincount(mask.ravel(), minlength=256)
    return errors, notes, histogram


def check_dataset(
    root: Path, splits: Sequence[str] | None = None, *, workers: int | None = None,
    labels_file: str | Path | None = None, dataset: DatasetSpec = VOC,
) -> CheckReport:
    """Validate every image and mask listed in `splits` (default: every list in the dataset's list folder,
    VOC: ImageSets/Segmentation; COCO: ImageSets).

    A split none of whose ids has a mask (e.g. VOC test) is reported as a warning and only its images are
    checked; a split where only some masks are missing reports each missing mask as an error. `labels_file`
    (see `rrm.data.voc.read_label_file`): an unreadable file is an error; ids a split lacks there and
    images whose file labels differ from their mask's classes are warnings (PSA's cls_labels.npy comes
    from the XML annotations, which can name objects the masks do not show). Without `labels_file` the
    dataset's own labels file is compared (COCO: ImageLabels/<split>.json), where it has one.
    """
    root = Path(root)
    errors: list[str] = []
    notes: list[str] = []
    table = pd.DataFrame(
        0, index=pd.Index(dataset.classes, name="class"), columns=["images", "pixels"], dtype=np.int64
    )
    if not root.is_dir():
        return CheckReport([f"{root}: dataset root not found"], [], table)
    if splits is None:
        list_dir = dataset.list_folder(root)
        splits = sorted(p.stem for p in list_dir.glob("*.txt")) if list_dir.is_dir() else []
        if not splits:
            return CheckReport([f"{list_dir}: no split lists (<split>.txt) found"], [], table)
    lists: dict[str, list[str]] = {}
    for split in splits:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                lists[split] = read_split(root, split, dataset)
            except (FileNotFoundError, ValueError) as error:
                errors.append(str(error))
        notes.extend(str(w.message) for w in caught)
    for first, second in _DISJOINT:
        shared = set(lists.get(first, ())) & set(lists.get(second, ()))
        if shared:
            notes.append(
                f"splits '{first}' and '{second}' share {len(shared)} id(s), e.g. {sorted(shared)[:3]}"
            )

    need_mask: dict[str, bool] = {}
    split_of: dict[str, str] = {}  # the first split listing an id: its folders in a per-split layout
    for split, names in lists.items():
        mask_dir = resolve_mask_dir(root, None, dataset, split)
        with_mask = any((mask_dir / f"{name}.png").is_file() for name in names)
        if not with_mask:
            notes.append(f"split '{split}': no masks in {mask_dir}; only its images were checked")
        for name in names:
            need_mask[name] = need_mask.get(name, False) or with_mask
            split_of.setdefault(name, split)

    def check(name: str) -> tuple[list[str], list[str], np.ndarray]:
        split = split_of[name]
        return _check_one(root, resolve_mask_dir(root, None, dataset, split), name, need_mask[name], dataset, split)

    names = list(need_mask)
    with ThreadPoolExecutor(
        max_workers=workers or min(8, os.cpu_count() or 1)
    ) as pool:  # PIL decodes without the GIL
        results = list(pool.map(check, names))
    histograms = np.zeros((len(names), 256), dtype=np.int64)
    for i, (item_errors, item_notes, histogram) in enumerate(results):
        errors.extend(item_errors)
        notes.extend(item_notes)
        histograms[i] = histogram
    label_files = ({labels_file: lists} if labels_file is not None else
                   {path: {split: lists[split]} for split in lists
                    if (path := dataset.labels_file(root, split)) is not None})
    for path, listed in label_files.items():
        try:
            file_labels = read_label_file(path, dataset)
        except (FileNotFoundError, ValueError) as error:
            errors.append(str(error))
        else:
            covered = set().union(*map(set, listed.values()))
            rows = [n for n, name in enumerate(names) if name in covered]
            notes.extend(_label_file_notes(path, file_labels, listed, [names[n] for n in rows], histograms[rows],
                                           dataset))
    k = dataset.num_classes
    table["images"] = (histograms[:, :k] > 0).sum(axis=0)
    table["pixels"] = histograms[:, :k].sum(axis=0)
    return CheckReport(
        errors,
        notes,
        table,
        images_checked=len(names),
        void_pixels=int(histograms[:, dataset.ignore_index].sum()),
        splits={split: len(ids) for split, ids in lists.items()},
    )


def _label_file_notes(path: str | Path, file_labels: dict[str, np.ndarray], lists: dict[str, list[str]],
                      names: list[str], histograms: np.ndarray, dataset: DatasetSpec) -> list[str]:
    """The splits' ids missing from the labels file, and the images whose file labels differ from the
    classes their (valid) mask shows."""
    notes = []
    for split, ids in lists.items():
        missing = [name for name in ids if name not in file_labels]
        if missing:
            shown = ", ".join(missing[:LISTED]) + (", ..." if len(missing) > LISTED else "")
            notes.append(f"{path}: no labels for {len(missing)} of {len(ids)} id(s) of split '{split}': {shown}")
    differ = []
    for name, histogram in zip(names, histograms, strict=True):
        if name in file_labels and histogram.any():  # a usable mask
            from_mask = histogram[1:dataset.num_classes] > 0
            from_file = file_labels[name] > 0.5
            if (from_mask != from_file).any():
                def classes(present: np.ndarray) -> str:
                    return ", ".join(dataset.classes[c + 1] for c in np.flatnonzero(present)) or "none"
                differ.append(f"{name} (file: {classes(from_file)}; mask: {classes(from_mask)})")
    if differ:
        checked = sum(1 for name, h in zip(names, histograms, strict=True) if name in file_labels and h.any())
        shown = "; ".join(differ[:LISTED]) + ("; ..." if len(differ) > LISTED else "")
        notes.append(f"{path}: labels of {len(differ)} of {checked} image(s) differ from their masks: {shown}")
    return notes


def format_report(report: CheckReport) -> str:
    """Human-readable report: verdict, split sizes, every error and warning, then the per-class table."""
    verdict = "OK" if report.ok else f"FAILED: {len(report.errors)} error(s)"
    sizes = ", ".join(f"{split} {count:,}" for split, count in report.splits.items()) or "none"
    lines = [f"{verdict}; {report.images_checked:,} image(s) checked; splits: {sizes}"]
    for title, items in (("errors", report.errors), ("warnings", report.warnings)):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines.extend(f"  {item}" for item in items)
    table = report.table.copy()
    total = table["pixels"].sum() + report.void_pixels
    table["pixel %"] = (100.0 * table["pixels"] / total).round(2) if total else 0.0
    lines.append(f"per-class counts (void pixels: {report.void_pixels:,}):")
    lines.append(table.to_string())
    return "\n".join(lines)
