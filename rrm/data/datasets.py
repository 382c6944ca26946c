"""The datasets the pipeline reads: each one object with its classes, palette, ignore index, folder layout
and the source of its image-level labels; params.yaml's `data.dataset` names one of DATASETS.

Every module that needs a class list, a class count or a palette takes it from here (metrics keys, report
files, masks, figures, network head sizes, `rrm check-data`, `rrm predict`, `rrm crf`). Torch-free.

Layouts, under the dataset root (`{split}` is the split's name)::

    voc   JPEGImages/<id>.jpg, SegmentationClass[Aug]/<id>.png, ImageSets/Segmentation/<split>.txt;
          image-level labels from the masks (or data.labels_file)
    coco  JPEGImages/{split}/<name>.jpg, SegmentationClass/{split}/<name>.png, ImageSets/{split}.txt,
          image-level labels ImageLabels/{split}.json ({name: [class indices]}); what `rrm prepare-coco` writes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rrm.data import classes as voc_classes
from rrm.data import coco_classes
from rrm.settings import Data

IGNORE_INDEX = voc_classes.IGNORE_INDEX  # 255 in both datasets: void / crowd / "not reliable"


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """One dataset: `classes` background first (mask value = index), the folder layout relative to the root
    (`{split}` stands for the split's name) and where its image-level labels come from."""

    name: str
    classes: tuple[str, ...]
    palette: np.ndarray = field(repr=False)  # (256, 3) uint8: the colour of every mask value
    ignore_index: int
    image_dir: str  # photos: <image_dir>/<name>.jpg
    mask_dir: str  # masks: <mask_dir>/<name>.png
    extra_mask_dir: str | None  # read instead of mask_dir when present (VOC: SBD's SegmentationClassAug)
    list_path: str  # the split list: one name per line
    labels_path: str | None  # image-level labels file ({name: [class, ...]} json); None: from the masks

    @property
    def num_classes(self) -> int:
        """Background + the foreground classes: the segmentation head's size and the metrics' matrix."""
        return len(self.classes)

    @property
    def num_fg(self) -> int:
        """Foreground classes: the classifier's logits and the image-level label vectors (class c at c - 1)."""
        return len(self.classes) - 1

    def _at(self, root: str | Path, template: str, split: str) -> Path:
        if "{split}" in template and not split:
            raise ValueError(f"{self.name}: {template} is per split; no split given")
        return Path(root) / template.format(split=split)

    def list_file(self, root: str | Path, split: str) -> Path:
        return self._at(root, self.list_path, split)

    def list_folder(self, root: str | Path) -> Path:
        """The folder of the split lists: every <split>.txt there is a split."""
        return Path(root) / Path(self.list_path).parent

    def images(self, root: str | Path, split: str) -> Path:
        return self._at(root, self.image_dir, split)

    def masks(self, root: str | Path, split: str, mask_dir: str | None = None) -> Path:
        """ROOT/<mask_dir> when given (data.mask_dir), else extra_mask_dir when present, else mask_dir."""
        root = Path(root)
        if mask_dir is not None:
            return self._at(root, mask_dir, split)
        if self.extra_mask_dir is not None and (extra := self._at(root, self.extra_mask_dir, split)).is_dir():
            return extra
        return self._at(root, self.mask_dir, split)

    def labels_file(self, root: str | Path, split: str) -> Path | None:
        """The split's image-level labels file, None where the labels come from the masks."""
        return None if self.labels_path is None else self._at(root, self.labels_path, split)

    def missing_files(self, root: str | Path, splits: list[str]) -> list[Path]:
        """The split lists, labels files and image and mask folders of `splits` that `root` lacks (a quick
        look at the layout; `rrm check-data` decodes every file)."""
        missing: list[Path] = []
        for split in dict.fromkeys(splits):
            labels = self.labels_file(root, split)
            paths = [self.list_file(root, split), self.images(root, split), self.masks(root, split)]
            for path in [*paths, *([labels] if labels is not None else [])]:
                if not path.exists() and path not in missing:
                    missing.append(path)
        return missing


VOC = DatasetSpec(
    name="voc", classes=voc_classes.CLASSES, palette=voc_classes.PALETTE, ignore_index=IGNORE_INDEX,
    image_dir="JPEGImages", mask_dir="SegmentationClass", extra_mask_dir="SegmentationClassAug",
    list_path="ImageSets/Segmentation/{split}.txt", labels_path=None,
)
# COCO's masks are coloured with the same 256-entry colour map as VOC's.
COCO = DatasetSpec(
    name="coco", classes=coco_classes.CLASSES, palette=voc_classes.PALETTE, ignore_index=IGNORE_INDEX,
    image_dir="JPEGImages/{split}", mask_dir="SegmentationClass/{split}", extra_mask_dir=None,
    list_path="ImageSets/{split}.txt", labels_path="ImageLabels/{split}.json",
)
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (VOC, COCO)}  # rrm.settings.DATASETS


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry `name`; a clear error listing the datasets otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def image_labels_file(data: Data, split: str) -> str | None:
    """Where the training stages read `split`'s image-level labels: data.labels_file when set, else the
    dataset's labels file (COCO: ImageLabels/<split>.json); None: from the masks (VOC)."""
    if data.labels_file is not None:
        return data.labels_file
    path = get_dataset(data.dataset).labels_file(data.root, split)
    return None if path is None else str(path)
