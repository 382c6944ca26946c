"""The segmentation dataset reader: split lists, image-level labels and the dataset, for every layout of
rrm.data.datasets (the VOC train_aug list is built by `rrm.data.voc_prepare`).

VOC's layout (the devkit's, also written by the embedded dataset)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png        palette PNG, 0 background, 1..20 objects, 255 void
    ROOT/SegmentationClassAug/<id>.png     optional: SBD masks converted to PNG (train_aug)
    ROOT/ImageSets/Segmentation/<split>.txt one id per line

COCO's (`rrm prepare-coco`): JPEGImages/<split>/, SegmentationClass/<split>/ (0 background, 1..80, 255
crowd), ImageSets/<split>.txt and the image-level labels ImageLabels/<split>.json.

RRM trains with image-level labels only (paper, "Input: Images I with their image-level class
labels C_fg"); those labels are read from the masks (`image_labels`) or from a labels file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rrm.data.cls_labels import read_cls_labels_npy
from rrm.data.datasets import VOC, DatasetSpec, get_dataset, image_labels_file
from rrm.io import load_image, load_mask
from rrm.settings import Data

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_LISTED = 20  # problems quoted in one error message; the rest are counted




def read_ids(path: Path) -> list[str]:
    """Ids from a list file: first token per line; path-like tokens ('/JPEGImages/x.jpg ...') give their stem."""
    ids = []
    for line in path.read_text().splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        token = tokens[0]
        ids.append(Path(token).stem if "/" in token or token.lower().endswith(IMAGE_SUFFIXES) else token)
    return ids


def read_split(root: Path, split: str, dataset: DatasetSpec = VOC) -> list[str]:
    """Ids listed in the split list (VOC: ROOT/ImageSets/Segmentation/<split>.txt), in file order, duplicates
    dropped with a warning."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found")
    path = dataset.list_file(root, split)
    list_dir = dataset.list_folder(root)
    if not path.is_file():
        found = sorted(p.stem for p in list_dir.glob("*.txt")) if list_dir.is_dir() else []
        available = ", ".join(found) if found else f"none ({list_dir} has no .txt lists)"
        raise FileNotFoundError(f"{path}: split list '{split}' not found; splits available: {available}")
    ids = read_ids(path)
    if not ids:
        raise ValueError(f"{path}: split '{split}' is empty (no ids listed)")
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        warnings.warn(f"{path}: {len(ids) - len(unique)} duplicate id(s) ignored", stacklevel=2)
    return unique


def resolve_mask_dir(root: Path, mask_dir: str | None = None, dataset: DatasetSpec = VOC, split: str = "") -> Path:
    """ROOT/<mask_dir>; by default the dataset's (VOC: SegmentationClassAug (SBD, covers train_aug) if present,
    else SegmentationClass; COCO: SegmentationClass/<split>)."""
    return dataset.masks(root, split, mask_dir)


def image_path(root: Path, name: str, dataset: DatasetSpec = VOC, split: str = "") -> Path:
    """The photo <name>.jpg in the dataset's image folder (VOC: ROOT/JPEGImages), or a .jpeg/.png sibling if
    only that exists (the .jpg path if none does)."""
    base = dataset.images(root, split)
    for suffix in IMAGE_SUFFIXES:
        path = base / f"{name}{suffix}"
        if path.is_file():
            return path
    return base / f"{name}.jpg"


def _value_counts(mask: np.ndarray) -> np.ndarray:
    """(256,) pixel count per uint8 value (bincount: much faster than np.unique on large masks)."""
    values = np.asarray(mask).ravel()
    if values.dtype.kind not in "ui" or (values.size and values.min() < 0):
        raise ValueError(f"mask: expected non-negative integer class indices, got {values.dtype}")
    return np.bincount(values, minlength=256)


def _check_counts(counts: np.ndarray, path: Path | str, dataset: DatasetSpec) -> np.ndarray:
    counts = counts.copy()
    counts[dataset.ignore_index] = 0
    k = dataset.num_classes
    bad = np.flatnonzero(counts[k:]) + k
    if bad.size:
        raise ValueError(f"{path}: mask values outside 0..{k - 1} and {dataset.ignore_index}: {bad.tolist()}")
    return counts


def check_mask_values(mask: np.ndarray, path: Path | str, dataset: DatasetSpec = VOC) -> None:
    """Raise if the (H, W) mask holds values other than the dataset's class indices and its ignore index."""
    _check_counts(_value_counts(mask), path, dataset)


def image_labels(mask: np.ndarray, path: Path | str = "mask", dataset: DatasetSpec = VOC) -> np.ndarray:
    """(C,) float32 multi-hot of the C foreground classes present in a (H, W) mask (0 and 255 excluded).

    Raises, naming `path`, if the mask holds values other than 0..C and 255.
    """
    counts = _check_counts(_value_counts(mask), path, dataset)
    return (counts[1:dataset.num_classes] > 0).astype(np.float32)


def _class_index(token: object, where: str, dataset: DatasetSpec) -> int | None:
    """A class token -> foreground index 1..C; 0/'background' -> None; anything else raises naming `where`."""
    classes = dataset.classes
    if isinstance(token, str):
        token = token.strip()
        index = classes.index(token) if token in classes else int(token) if token.isdigit() else -1
    elif isinstance(token, int) and not isinstance(token, bool):
        index = token
    else:
        index = -1
    if index == 0:
        return None
    if not 1 <= index < dataset.num_classes:
        raise ValueError(f"{where}: unknown class {token!r} (use 1..{dataset.num_fg} or a {dataset.name.upper()} class name)")
    return index


def read_label_file(path: str | Path, dataset: DatasetSpec = VOC) -> dict[str, np.ndarray]:
    """Image-level labels from a file -> {id: (C,) float32 multi-hot} over the dataset's C foreground classes.

    Three formats, chosen by the suffix:
      * ``.npy``: PSA's ``voc12/cls_labels.npy``, the dict {id: (20,) multi-hot} the authors load
        (`rrm.data.cls_labels`);
      * ``.json``: an object ``{"2007_000032": [1, 15], "2007_000039": ["tvmonitor"], ...}``;
      * anything else, text: one image per line, ``<id> <class> <class> ...``; blank lines and lines
        starting with ``#`` are ignored.
    A class is an index 1..C (VOC: 1 aeroplane ... 20 tvmonitor; COCO: 1 person ... 80 toothbrush, what
    `rrm prepare-coco` writes to ImageLabels/<split>.json) or its name in the dataset's class list
    (rrm.data.datasets); 0 / "background" is accepted and ignored. An id with no class has no foreground label.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    if path.suffix.lower() == ".npy":
        return read_cls_labels_npy(path, dataset.num_fg)
    entries: list[tuple[str, list[object], str]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a JSON object {{id: [class, ...]}}, got {type(data).__name__}"
            )
        for name, classes in data.items():
            if not isinstance(classes, list):
                raise ValueError(f"{path}: entry {name!r} must be a list of classes, got {classes!r}")
            entries.append((str(name), classes, f"{path}: entry {name!r}"))
    else:
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            tokens = line.split()
            if tokens and not tokens[0].startswith("#"):
                entries.append((tokens[0], list(tokens[1:]), f"{path}:{lineno}"))
    labels: dict[str, np.ndarray] = {}
    for name, classes, where in entries:
        if name in labels:
            raise ValueError(f"{where}: id {name!r} listed twice")
        vector = np.zeros(dataset.num_fg, dtype=np.float32)
        for token in classes:
            index = _class_index(token, where, dataset)
            if index is not None:
                vector[index - 1] = 1.0
        labels[name] = vector
    if not labels:
        raise ValueError(f"{path}: labels file lists no images")
    return labels


def _raise_problems(what: str, problems: list[str]) -> None:
    if problems:
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise ValueError(f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: unreadable file ({error})") from error


class VOCSegmentation(torch.utils.data.Dataset):
    """A split of a dataset of rrm.data.datasets (`dataset`, VOC's layout by default) returning dict(name,
    image (H, W, 3) uint8, mask (H, W) uint8 | None, labels (C,)), C the dataset's foreground classes.

    `weak=True` is for training with image-level labels only: images without any foreground label carry
    no supervision for the classification loss, so they are skipped (names in `self.skipped`) with a warning.
    `validate=True` checks, before any training, that every listed image and mask exists and that their
    header sizes agree; every item is still checked when read (truncated image, mask size and values).
    A full decode of every file is `rrm.data.check.check_dataset`'s job.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        mask_dir: str | None = None,
        labels_file: str | Path | None = None,
        weak: bool = False,
        validate: bool = True,
        dataset: DatasetSpec = VOC,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.spec = dataset  # rrm.data.datasets: classes, palette, layout
        names = read_split(self.root, split, dataset)
        self.list_path = dataset.list_file(self.root, split)
        self.mask_dir = resolve_mask_dir(self.root, mask_dir, dataset, split)
        self.file_labels = read_label_file(labels_file, dataset) if labels_file is not None else None

        if self.file_labels is None and not self.mask_dir.is_dir():
            raise FileNotFoundError(
                f"{self.mask_dir}: mask folder not found (masks or a labels_file give the image-level labels)"
            )
        listed = f"listed in {self.list_path}"
        problems = []
        has_mask = [self.mask_path(name).is_file() for name in names]
        # Masks may be absent only as a whole, and only when a labels file gives the labels (e.g. VOC test).
        self.has_masks = self.file_labels is None or any(has_mask)
        for name, mask_found in zip(names, has_mask, strict=True):
            image = self.image_path(name)
            if not image.is_file():
                problems.append(f"{image}: image file missing ({listed})")
            if self.has_masks and not mask_found:
                problems.append(f"{self.mask_path(name)}: mask file missing ({listed})")
            if self.file_labels is not None and name not in self.file_labels:
                problems.append(f"{labels_file}: no labels for {name!r} ({listed})")
            if validate and image.is_file() and self.has_masks and mask_found:
                try:
                    image_size, mask_size = _header_size(image), _header_size(self.mask_path(name))
                except ValueError as error:
                    problems.append(str(error))
                    continue
                if image_size != mask_size:
                    problems.append(
                        f"{self.mask_path(name)}: mask size {mask_size[0]}x{mask_size[1]} differs from "
                        f"image {image} size {image_size[0]}x{image_size[1]}"
                    )
        _raise_problems(f"{self.list_path} ({split} split of {self.root})", problems)

        self._labels: dict[str, np.ndarray] = dict(self.file_labels) if self.file_labels is not None else {}
        self.skipped: list[str] = []
        if weak:
            if self.file_labels is None:
                problems = []
                for name in names:
                    try:
                        self._labels[name] = self._read_mask(name)[1]
                    except ValueError as error:
                        problems.append(str(error))
                _raise_problems(f"{self.list_path} ({split} split of {self.root})", problems)
            self.skipped = [name for name in names if not self._labels[name].any()]
            if self.skipped:
                preview = ", ".join(self.skipped[:5]) + (", ..." if len(self.skipped) > 5 else "")
                warnings.warn(
                    f"{self.list_path}: {len(self.skipped)} of {len(names)} image(s) have no foreground "
                    f"label and are skipped for weak training: {preview}",
                    stacklevel=2,
                )
            names = [name for name in names if self._labels[name].any()]
            if not names:
                raise ValueError(f"{self.list_path}: no image of split '{split}' has a foreground label")
        self.names = names

    def mask_path(self, name: str) -> Path:
        return self.mask_dir / f"{name}.png"

    def image_path(self, name: str) -> Path:
        return image_path(self.root, name, self.spec, self.split)

    def _read_mask(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) uint8 mask and its (C,) labels; raises naming the file on a missing file or bad values."""
        path = self.mask_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: mask file missing (listed in {self.list_path})")
        mask = load_mask(path)
        return mask, image_labels(mask, path, self.spec)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image = load_image(self.image_path(name))  # raises naming the file on truncated/corrupt data
        mask, mask_labels = None, None
        if self.has_masks:
            mask, mask_labels = self._read_mask(name)
            if mask.shape != image.shape[:2]:
                raise ValueError(
                    f"{self.mask_path(name)}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                    f"{self.image_path(name)} size {image.shape[1]}x{image.shape[0]}"
                )
        labels = self._labels.get(name, mask_labels)  # a labels file, if given, takes precedence
        return {"name": name, "image": image, "mask": mask, "labels": labels.copy()}


def voc_split(data: Data, split: str, *, weak: bool = False, image_labels: bool = False,
              mask_dir: str | None = None) -> VOCSegmentation:
    """`split` of params.yaml's data.root, a data.dataset layout (masks from `mask_dir`, else data.mask_dir's
    choice). Where the image-level labels are used (`weak`, `image_labels`: CAMs and mining) they come from
    data.labels_file when set, which must then cover the split, else from the dataset's labels file (COCO:
    ImageLabels/<split>.json) or the masks (VOC); scoring reads the masks only."""
    dataset = get_dataset(data.dataset)
    labels_file = image_labels_file(data, split) if weak or image_labels else None
    return VOCSegmentation(data.root, split, mask_dir=mask_dir or data.mask_dir, labels_file=labels_file, weak=weak,
                           dataset=dataset)
