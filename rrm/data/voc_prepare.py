"""Making a VOCdevkit/VOC2012 root ready for real-VOC training: the train_aug list (VOC train ∪ SBD
train+val − VOC val), SBD's masks wherever they are, and list sizes checked against VOC 2012's.

`prepare_voc` writes ImageSets/Segmentation/train_aug.txt when it is missing, warns (SplitCountWarning)
on any list whose size differs from VOC 2012's 10,582 / 1,449 / 1,456 ids, and fails naming the ids
without an image or a mask.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from rrm.data.datasets import VOC
from rrm.data.voc import image_path, read_ids, read_split, resolve_mask_dir
from rrm.io import write_text

# VOC 2012 sizes: train_aug (VOC train + SBD train/val - VOC val), val, test.
VOC_COUNTS = {"train_aug": 10_582, "val": 1_449, "test": 1_456}
_WHY = {
    "train_aug": "VOC train ∪ SBD train+val − VOC val",
    "val": "the segmentation val list of VOC 2012",
    "test": "the segmentation test list of VOC 2012",
}
MASK_SUFFIX = ".png"
_SHOWN = 5  # ids quoted per problem in error messages


class SplitCountWarning(UserWarning):
    """A split list whose size differs from PASCAL VOC 2012's: scores are not comparable with the paper's."""


@dataclass(frozen=True)
class PreparedVOC:
    """What `prepare_voc` found: list sizes, whether it wrote train_aug.txt, and the mask folder to use
    (None: SegmentationClassAug, else SegmentationClass, under the root; a path: SBD's PNGs elsewhere)."""

    root: Path
    counts: dict[str, int]
    created_train_aug: bool
    mask_dir: Path | None


def _warn_counts(counts: dict[str, tuple[int, str]]) -> None:
    """A SplitCountWarning for each {split: (ids, where they were listed)} whose size is not VOC 2012's."""
    for split, (n, where) in counts.items():
        expected = VOC_COUNTS[split]
        if n != expected:
            warnings.warn(SplitCountWarning(
                f"{where}: {n:,} ids, but PASCAL VOC 2012's {split} has {expected:,} ({_WHY[split]}); "
                "scores on these lists are not comparable with the paper's"), stacklevel=3)


def check_split_counts(voc_root: str | Path) -> dict[str, int]:
    """Ids per list (train_aug, val, and test when present); a SplitCountWarning for each size that differs
    from VOC 2012's. The test list ships with the separate test download."""
    voc_root = Path(voc_root)
    found = {}
    for split in VOC_COUNTS:
        path = VOC.list_file(voc_root, split)
        if split != "test" or path.is_file():
            found[split] = (len(read_split(voc_root, split)), str(path))
    _warn_counts(found)
    return {split: n for split, (n, _) in found.items()}


def _sbd_png_dir(sbd_root: Path) -> Path | None:
    """SBD's SegmentationClassAug PNGs under `sbd_root`, or `sbd_root` itself when it holds them."""
    for folder in (sbd_root / "SegmentationClassAug", sbd_root):
        if folder.is_dir() and any(folder.glob(f"*{MASK_SUFFIX}")):
            return folder
    return None


def _sbd_ids(voc_root: Path, sbd_root: Path | None) -> tuple[list[str], str]:
    """SBD ids (train + val) and a description of where they came from."""
    if sbd_root is None:
        aug = voc_root / "SegmentationClassAug"
        if aug.is_dir():
            return [p.stem for p in aug.glob(f"*{MASK_SUFFIX}")], str(aug)
        raise FileNotFoundError(
            f"{voc_root}: no SBD found for train_aug: pass sbd_root or put SegmentationClassAug/ under the VOC root"
        )
    sbd_root = Path(sbd_root)
    if not sbd_root.is_dir():
        raise FileNotFoundError(f"{sbd_root}: SBD root not found")
    for base in (sbd_root, sbd_root / "dataset"):  # benchmark_RELEASE/ or benchmark_RELEASE/dataset/
        lists = [base / "train.txt", base / "val.txt"]
        if any(p.is_file() for p in lists):
            found = [p for p in lists if p.is_file()]
            return [name for p in found for name in read_ids(p)], " + ".join(map(str, found))
        if (base / "cls").is_dir():
            return [p.stem for p in (base / "cls").glob("*.mat")], str(base / "cls")
    folder = _sbd_png_dir(sbd_root)
    if folder is not None:
        return [p.stem for p in folder.glob(f"*{MASK_SUFFIX}")], str(folder)
    raise FileNotFoundError(
        f"{sbd_root}: no SBD ids found (looked for train.txt/val.txt, dataset/train.txt, cls/*.mat, "
        "SegmentationClassAug/*.png)"
    )


def build_train_aug(
    voc_root: Path, sbd_root: Path | None = None, *, expect_voc_counts: bool | None = None
) -> list[str]:
    """train_aug ids: VOC train ∪ SBD (train + val) − VOC val, sorted.

    SBD ids come from SBD's train.txt/val.txt (or cls/*.mat) under `sbd_root`, or from the PNGs of a
    SegmentationClassAug folder (under `sbd_root`, else under `voc_root`). With `expect_voc_counts`
    (default: when `voc_root` is named VOC2012, i.e. looks like the real devkit) the sizes are compared
    with VOC 2012's and any difference is warned about (SplitCountWarning).
    """
    voc_root = Path(voc_root)
    train, val = read_split(voc_root, "train"), read_split(voc_root, "val")
    sbd, source = _sbd_ids(voc_root, sbd_root)
    ids = sorted((set(train) | set(sbd)) - set(val))
    if expect_voc_counts is None:
        expect_voc_counts = voc_root.absolute().name == "VOC2012"
    if expect_voc_counts:
        lists = VOC.list_file(voc_root, "train").parent
        counts = {"train_aug": (len(ids), f"train_aug ({lists / 'train.txt'} + {source} - {lists / 'val.txt'})"),
                  "val": (len(val), str(lists / "val.txt"))}
        if (lists / "test.txt").is_file():
            counts["test"] = (len(read_split(voc_root, "test")), str(lists / "test.txt"))
        _warn_counts(counts)
    return ids


def _missing_files(voc_root: Path, mask_dir: Path, splits: tuple[str, ...]) -> list[str]:
    problems = []
    for split in splits:
        ids = read_split(voc_root, split)
        no_image = [i for i in ids if not image_path(voc_root, i).is_file()]
        no_mask = [i for i in ids if not (mask_dir / f"{i}{MASK_SUFFIX}").is_file()]
        for what, where, names in (("images", voc_root / "JPEGImages", no_image),
                                   ("masks", mask_dir, no_mask)):
            if names:
                problems.append(f"  {split}: {len(names):,} of {len(ids):,} ids have no {what} in {where} "
                                f"(first: {', '.join(names[:_SHOWN])})")
    return problems


def prepare_voc(voc_root: str | Path, sbd_root: str | Path | None = None) -> PreparedVOC:
    """Make a VOCdevkit/VOC2012 root ready for the real-VOC profiles.

    Writes ROOT/ImageSets/Segmentation/train_aug.txt atomically when absent (`build_train_aug`; SBD's ids
    from `sbd_root` or ROOT/SegmentationClassAug), checks the list sizes (`check_split_counts`, warnings),
    picks SBD's SegmentationClassAug PNGs as masks wherever they are, and raises FileNotFoundError listing
    train_aug / val ids without an image or a mask (image-level labels are read from the masks, so every
    training id needs one).
    """
    voc_root = Path(voc_root)
    sbd = Path(sbd_root) if sbd_root is not None else None
    if not voc_root.is_dir():
        raise FileNotFoundError(f"{voc_root}: VOC root not found (expected VOCdevkit/VOC2012 with "
                                "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/)")
    list_path = VOC.list_file(voc_root, "train_aug")
    created = not list_path.is_file()
    if created:
        ids = build_train_aug(voc_root, sbd, expect_voc_counts=False)
        write_text(list_path, "".join(f"{i}\n" for i in ids))
    # SBD's PNGs outside the root become data.mask_dir; under the root the data layer finds them itself
    elsewhere = None if (voc_root / "SegmentationClassAug").is_dir() or sbd is None else _sbd_png_dir(sbd)
    mask_dir = elsewhere.absolute() if elsewhere is not None else None
    counts = check_split_counts(voc_root)
    problems = _missing_files(voc_root, mask_dir or resolve_mask_dir(voc_root), ("train_aug", "val"))
    if problems:
        raise FileNotFoundError(
            f"{voc_root}: files missing for the real-VOC profile:\n" + "\n".join(problems)
            + "\n  SBD's masks: put SegmentationClassAug/ (the 12,031 PNGs of VOC train+val and SBD) under "
            "the VOC root, or pass its folder as sbd_root / --sbd-root; SBD's .mat files are not read")
    return PreparedVOC(root=voc_root, counts=counts, created_train_aug=created, mask_dir=mask_dir)
