"""check_dataset: the real sample passes with exact counts; a damaged copy lists every problem."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrm.data.check import check_dataset, format_report
from rrm.data.classes import CLASSES
from rrm.data.datasets import VOC
from rrm.io import load_mask, save_mask

SAMPLE = Path(os.environ.get("RRM_VOC_SAMPLE", "/work/shared/data/voc2012-sample"))
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE}: VOC 2012 sample not present")


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    shutil.copytree(SAMPLE, root)
    return root


def test_sample_passes_with_exact_counts() -> None:
    report = check_dataset(SAMPLE)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.images_checked == 60 and report.splits == {"train": 60}
    assert list(report.table.index) == list(CLASSES)
    assert report.table.loc["person", "images"] == 27 and report.table.loc["background", "images"] == 60
    assert (report.table["images"].iloc[1:] >= 3).all()
    # every pixel is counted once: class pixels + void = sum of the image areas
    area = sum(np.prod(Image.open(p).size) for p in (SAMPLE / "JPEGImages").glob("*.jpg"))
    assert report.table["pixels"].sum() + report.void_pixels == area
    assert check_dataset(SAMPLE, splits=["train"]).table.equals(report.table)  # same with an explicit split
    text = format_report(report)
    assert text.startswith("OK; 60 image(s) checked") and "person" in text


def test_damaged_copy_lists_all_three_problems(damaged: Path) -> None:
    ids = (damaged / "ImageSets/Segmentation/train.txt").read_text().split()
    resized, truncated, recoloured = ids[3], ids[10], ids[20]
    path = damaged / "SegmentationClass" / f"{resized}.png"
    mask = load_mask(path)
    save_mask(path, np.asarray(Image.fromarray(mask).resize((mask.shape[1] // 2, mask.shape[0] // 2),
                                                            Image.Resampling.NEAREST)), VOC.palette)
    jpeg = damaged / "JPEGImages" / f"{truncated}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:4000])
    path = damaged / "SegmentationClass" / f"{recoloured}.png"
    mask = load_mask(path)
    mask[0, 0] = 42
    save_mask(path, mask, VOC.palette)

    report = check_dataset(damaged)
    assert not report.ok and len(report.errors) == 3, report.errors
    errors = "\n".join(report.errors)
    assert f"{resized}.png: mask size {mask_half(damaged, resized)} differs from image" in errors
    assert f"JPEGImages/{truncated}.jpg: unreadable or truncated image" in errors
    assert f"SegmentationClass/{recoloured}.png: mask values outside 0..20 and 255: [42]" in errors
    text = format_report(report)
    assert text.startswith("FAILED: 3 error(s)") and all(e in text for e in report.errors)
    # the bad masks/images are left out of the counts, the 57 good ones are counted
    assert report.table.loc["background", "images"] == 57


def mask_half(root: Path, name: str) -> str:
    height, width = load_mask(root / "SegmentationClass" / f"{name}.png").shape
    return f"{width}x{height}"


def test_missing_files_empty_and_maskless_splits_all_collected(damaged: Path) -> None:
    lists = damaged / "ImageSets/Segmentation"
    ids = (lists / "train.txt").read_text().split()
    (damaged / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    (damaged / "SegmentationClass" / f"{ids[1]}.png").unlink()
    (lists / "val.txt").write_text("")
    (lists / "test.txt").write_text("2099_000001\n")
    shutil.copy(SAMPLE / "JPEGImages" / f"{ids[2]}.jpg", damaged / "JPEGImages" / "2099_000001.jpg")
    Image.open(SAMPLE / "JPEGImages" / f"{ids[3]}.jpg").convert("L").save(damaged / "JPEGImages" / f"{ids[3]}.jpg")

    report = check_dataset(damaged)
    errors = "\n".join(report.errors)
    assert len(report.errors) == 3, report.errors
    assert f"JPEGImages/{ids[0]}.jpg: image file missing" in errors
    assert f"SegmentationClass/{ids[1]}.png: mask file missing" in errors
    assert "val.txt: split 'val' is empty" in errors
    warnings = "\n".join(report.warnings)
    assert "split 'test': no masks" in warnings  # like VOC test: images only, not an error
    assert f"{ids[3]}.jpg: mode L image, converted to RGB" in warnings
    assert report.splits == {"test": 1, "train": 60}


def test_missing_root_and_unknown_split(tmp_path: Path) -> None:
    report = check_dataset(tmp_path / "nowhere")
    assert report.errors == [f"{tmp_path / 'nowhere'}: dataset root not found"]
    report = check_dataset(SAMPLE, splits=["train", "val"])
    assert len(report.errors) == 1 and "split list 'val' not found; splits available: train" in report.errors[0]
    assert report.images_checked == 60  # the good split is still checked


def _mask_classes(name: str) -> list[int]:
    """The foreground classes (1..20) a sample mask shows, computed here from the PNG."""
    values = np.unique(load_mask(SAMPLE / "SegmentationClass" / f"{name}.png"))
    return [int(v) for v in values if 0 < v < 21]


@pytest.mark.parametrize("form", ["npy", "txt"])
def test_labels_file_disagreements_and_gaps_are_reported(tmp_path: Path, form: str) -> None:
    ids = (SAMPLE / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    classes = {name: _mask_classes(name) for name in ids}
    first, second, gone = ids[0], ids[1], ids[2]
    classes[first] = sorted({*classes[first], 15})  # a person the XML names and the mask does not show
    classes[second] = classes[second][1:]
    del classes[gone]
    if form == "npy":
        path = tmp_path / "cls_labels.npy"
        np.save(path, {name: np.isin(np.arange(1, 21), c).astype(np.float32) for name, c in classes.items()})
    else:
        path = tmp_path / "labels.txt"
        path.write_text("".join(f"{name} {' '.join(CLASSES[c] for c in cs)}\n" for name, cs in classes.items()))
    report = check_dataset(SAMPLE, labels_file=path)
    assert report.ok  # disagreements are warnings: XML-derived labels may name objects the masks omit
    (gaps,) = [w for w in report.warnings if "no labels for" in w]
    assert gaps == f"{path}: no labels for 1 of 60 id(s) of split 'train': {gone}"
    (differ,) = [w for w in report.warnings if "differ from their masks" in w]
    assert differ.startswith(f"{path}: labels of 2 of 59 image(s) differ from their masks: {first} (file: ")
    assert "person" in differ.split(";")[0] and second in differ
    broken = tmp_path / "broken.txt"
    broken.write_text(f"{first} unicorn\n")
    assert check_dataset(SAMPLE, labels_file=broken).errors == [f"{broken}:1: unknown class 'unicorn' "
                                                                 "(use 1..20 or a VOC class name)"]
