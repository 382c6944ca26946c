"""VOC reader on the real VOC 2012 sample, a miniature VOCdevkit + SBD tree, and every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrm.data.classes import CLASSES
from rrm.data.datasets import VOC
from rrm.data.voc import (
    VOCSegmentation,
    image_labels,
    read_label_file,
    read_split,
)
from rrm.data.voc_prepare import build_train_aug
from rrm.io import load_mask, save_mask

SAMPLE = Path(os.environ.get("RRM_VOC_SAMPLE", "/work/shared/data/voc2012-sample"))
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE}: VOC 2012 sample not present")


def sample_ids(n: int) -> list[str]:
    return read_split(SAMPLE, "train")[:n]


def make_root(root: Path, ids: list[str], *, mask_dir: str = "SegmentationClass",
              lists: dict[str, list[str]] | None = None) -> Path:
    """A VOC-layout root holding copies of sample files (copies, so tests may damage them)."""
    for folder in ("JPEGImages", mask_dir, "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in ids:
        shutil.copy(SAMPLE / "JPEGImages" / f"{name}.jpg", root / "JPEGImages")
        shutil.copy(SAMPLE / "SegmentationClass" / f"{name}.png", root / mask_dir)
    for split, names in (lists or {"train": ids}).items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root


# --- the real sample -------------------------------------------------------------------------------

def test_reads_real_sample_with_void_and_labels() -> None:
    dataset = VOCSegmentation(SAMPLE, "train")
    assert len(dataset) == 60 and dataset.mask_dir.name == "SegmentationClass"
    shapes, labels = set(), []
    for index in range(len(dataset)):
        item = dataset[index]
        image, mask = item["image"], item["mask"]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        # palette indices are read as they are (not converted to colours), 255 borders kept
        raw = np.array(Image.open(SAMPLE / "SegmentationClass" / f"{item['name']}.png"))
        np.testing.assert_array_equal(mask, raw)
        assert (mask == 255).any()
        assert set(np.unique(mask).tolist()) <= set(range(21)) | {255}
        np.testing.assert_array_equal(item["labels"], image_labels(mask))
        shapes.add(mask.shape)
        labels.append(item["labels"])
    assert {(375, 500), (500, 375)} <= shapes
    per_class = np.stack(labels).sum(axis=0)
    # the sample's README: every class in >= 3 images, person in 27
    assert per_class[CLASSES.index("person") - 1] == 27 and per_class.min() >= 3


def test_image_labels_hand_computed() -> None:
    labels = image_labels(np.array([[0, 3], [255, 15]], dtype=np.uint8))
    expected = np.zeros(20, np.float32)
    expected[[2, 14]] = 1  # class 3 (bird) and 15 (person)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.float32
    assert not image_labels(np.array([[0, 255]], dtype=np.uint8)).any()
    with pytest.raises(ValueError, match=r"\[42\]"):
        image_labels(np.array([[0, 42]], dtype=np.uint8))


# --- labels files ----------------------------------------------------------------------------------

def test_read_label_file_text_and_json(tmp_path: Path) -> None:
    text = tmp_path / "labels.txt"
    text.write_text("# id classes\n2007_000032 1 person\n\n2007_000039\n2007_000042 background 20\n")
    labels = read_label_file(text)
    assert np.flatnonzero(labels["2007_000032"]).tolist() == [0, 14]
    assert not labels["2007_000039"].any()
    assert np.flatnonzero(labels["2007_000042"]).tolist() == [19]
    js = tmp_path / "labels.json"
    js.write_text(json.dumps({"a": [8, "dog"], "b": []}))
    labels = read_label_file(js)
    assert np.flatnonzero(labels["a"]).tolist() == [7, 11] and not labels["b"].any()


@pytest.mark.parametrize(("content", "message"), [
    ("a 1\nb 21\n", r"labels\.txt:2: unknown class '21'"),
    ("a 1\na 2\n", r"labels\.txt:2: id 'a' listed twice"),
    ("a giraffe\n", r"labels\.txt:1: unknown class 'giraffe'"),
    ("\n# nothing\n", r"labels\.txt: labels file lists no images"),
])
def test_read_label_file_errors_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_label_file(path)


def test_split_without_masks_uses_labels_file(tmp_path: Path) -> None:
    ids = sample_ids(3)
    root = make_root(tmp_path / "voc", ids)
    shutil.rmtree(root / "SegmentationClass")
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{ids[0]} 15\n{ids[1]} cat dog\n{ids[2]}\n")
    dataset = VOCSegmentation(root, "train", labels_file=str(labels))
    item = dataset[1]
    assert item["mask"] is None and np.flatnonzero(item["labels"]).tolist() == [7, 11]
    with pytest.warns(UserWarning, match=f"1 of 3 image.*{ids[2]}"):
        weak = VOCSegmentation(root, "train", labels_file=str(labels), weak=True)
    assert weak.skipped == [ids[2]] and weak.names == ids[:2]
    # without a labels file the missing masks are an error
    with pytest.raises(FileNotFoundError, match=r"SegmentationClass: mask folder not found"):
        VOCSegmentation(root, "train")
    (root / "SegmentationClass").mkdir()
    shutil.copy(SAMPLE / "SegmentationClass" / f"{ids[1]}.png", root / "SegmentationClass")
    with pytest.raises(ValueError, match=rf"(?s)2 problem.*SegmentationClass/{ids[0]}\.png: mask file missing"):
        VOCSegmentation(root, "train", labels_file=labels)  # some masks but not all: an error


# --- miniature VOCdevkit + SBD ---------------------------------------------------------------------

@pytest.fixture
def devkit(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    ids = sample_ids(7)  # a b c | d e | f g
    a, b, c, d, e, f, g = ids
    voc = make_root(tmp_path / "VOCdevkit" / "VOC2012", [a, b, c, d, e],
                    lists={"train": [a, b, c], "val": [d, e]})
    for name in (f, g):
        shutil.copy(SAMPLE / "JPEGImages" / f"{name}.jpg", voc / "JPEGImages")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    sbd.mkdir(parents=True)
    (sbd / "train.txt").write_text(f"{c}\n{f}\n{d}\n")  # d is VOC val: must be excluded
    (sbd / "val.txt").write_text(f"{g}\n")
    return voc, sbd.parent, ids


def test_train_aug_composition_and_count_warning(devkit: tuple[Path, Path, list[str]]) -> None:
    voc, sbd, (a, b, c, d, e, f, g) = devkit
    with pytest.warns(UserWarning) as caught:
        ids = build_train_aug(voc, sbd)
    assert ids == sorted([a, b, c, f, g])
    messages = [str(w.message) for w in caught]
    assert any("train_aug" in m and "5 ids" in m and "10,582" in m and "train.txt" in m for m in messages)
    assert any(m.startswith(str(voc / "ImageSets/Segmentation/val.txt")) and "1,449" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_train_aug(voc, sbd, expect_voc_counts=False) == ids


def test_train_aug_from_segmentation_class_aug_and_mask_dir_auto(devkit: tuple[Path, Path, list[str]]) -> None:
    voc, _, (a, b, c, d, e, f, g) = devkit
    assert VOCSegmentation(voc, "train").mask_dir.name == "SegmentationClass"
    with pytest.raises(FileNotFoundError, match="no SBD found"):
        build_train_aug(voc, expect_voc_counts=False)
    aug = voc / "SegmentationClassAug"
    aug.mkdir()
    for name in (b, d, f, g):  # SBD's converted masks, val image d included as in the public archive
        shutil.copy(SAMPLE / "SegmentationClass" / f"{name}.png", aug)
    ids = build_train_aug(voc, expect_voc_counts=False)
    assert ids == sorted([a, b, c, f, g])
    for name in (a, c):
        shutil.copy(voc / "SegmentationClass" / f"{name}.png", aug)
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(ids) + "\n")
    dataset = VOCSegmentation(voc, "train_aug")
    assert dataset.mask_dir == aug and len(dataset) == 5
    assert VOCSegmentation(voc, "train", mask_dir="SegmentationClass").mask_dir.name == "SegmentationClass"


def test_devkit_count_check_only_on_a_real_looking_root(tmp_path: Path) -> None:
    ids = sample_ids(3)
    root = make_root(tmp_path / "embedded", ids, lists={"train": ids[:2], "val": ids[2:]})
    (root / "SegmentationClassAug").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_train_aug(root) == sorted(ids[:2])


# --- bad inputs ------------------------------------------------------------------------------------

def test_missing_root_and_missing_list(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: dataset root not found"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    root = make_root(tmp_path / "voc", sample_ids(1))
    with pytest.raises(FileNotFoundError, match=r"Segmentation/val\.txt: split list 'val' not found; "
                                                r"splits available: train"):
        read_split(root, "val")


def test_empty_split(tmp_path: Path) -> None:
    root = make_root(tmp_path / "voc", sample_ids(1))
    (root / "ImageSets/Segmentation/train.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"train\.txt: split 'train' is empty"):
        VOCSegmentation(root, "train")


def test_every_missing_file_is_reported_at_once(tmp_path: Path) -> None:
    ids = sample_ids(2)
    root = make_root(tmp_path / "voc", ids, lists={"train": [*ids, "2099_000001"]})
    (root / "SegmentationClass" / f"{ids[1]}.png").unlink()
    with pytest.raises(ValueError, match="3 problem") as error:
        VOCSegmentation(root, "train")
    text = str(error.value)
    assert f"{root}/JPEGImages/2099_000001.jpg: image file missing" in text
    assert f"{root}/SegmentationClass/{ids[1]}.png: mask file missing" in text
    assert f"{root}/SegmentationClass/2099_000001.png: mask file missing" in text


def test_mask_size_mismatch(tmp_path: Path) -> None:
    name = sample_ids(1)[0]
    root = make_root(tmp_path / "voc", [name])
    path = root / "SegmentationClass" / f"{name}.png"
    mask = load_mask(path)
    save_mask(path, mask[:-10], VOC.palette)
    h, w = mask.shape
    with pytest.raises(ValueError, match=rf"{name}\.png: mask size {w}x{h - 10} differs from image .*{w}x{h}"):
        VOCSegmentation(root, "train")
    lazy = VOCSegmentation(root, "train", validate=False)  # no header scan: caught when the item is read
    with pytest.raises(ValueError, match=rf"{name}\.png: mask size {w}x{h - 10} differs"):
        lazy[0]


def test_mask_value_outside_classes(tmp_path: Path) -> None:
    name = sample_ids(1)[0]
    root = make_root(tmp_path / "voc", [name])
    path = root / "SegmentationClass" / f"{name}.png"
    mask = load_mask(path)
    mask[5, 5] = 42
    save_mask(path, mask, VOC.palette)
    with pytest.raises(ValueError, match=rf"{name}\.png: mask values outside 0\.\.20 and 255: \[42\]"):
        VOCSegmentation(root, "train")[0]
    with pytest.raises(ValueError, match=rf"{name}\.png: mask values outside .*\[42\]"):
        VOCSegmentation(root, "train", weak=True)


def test_truncated_jpeg(tmp_path: Path) -> None:
    name = sample_ids(1)[0]
    root = make_root(tmp_path / "voc", [name])
    path = root / "JPEGImages" / f"{name}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    dataset = VOCSegmentation(root, "train")  # the header is intact; the decode fails
    with pytest.raises(ValueError, match=rf"{name}\.jpg: unreadable or truncated image"):
        dataset[0]


def test_grey_cmyk_rgba_converted(tmp_path: Path) -> None:
    ids = sample_ids(3)
    root = make_root(tmp_path / "voc", ids)
    originals = {name: Image.open(SAMPLE / "JPEGImages" / f"{name}.jpg").convert("RGB") for name in ids}
    originals[ids[0]].convert("L").save(root / "JPEGImages" / f"{ids[0]}.jpg", quality=95)
    originals[ids[1]].convert("CMYK").save(root / "JPEGImages" / f"{ids[1]}.jpg", quality=95)
    rgba = originals[ids[2]].convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "JPEGImages" / f"{ids[2]}.jpg", format="PNG")  # mislabelled PNG, as found in the wild
    dataset = VOCSegmentation(root, "train")
    grey, cmyk, alpha = (dataset[i]["image"] for i in range(3))
    for image, name in zip((grey, cmyk, alpha), ids, strict=True):
        assert image.dtype == np.uint8 and image.shape == (*load_mask(
            root / "SegmentationClass" / f"{name}.png").shape, 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.abs(cmyk.astype(int) - np.asarray(originals[ids[1]], dtype=int)).mean() < 3
    np.testing.assert_array_equal(alpha, np.asarray(originals[ids[2]]))


def test_weak_mode_skips_and_counts_images_without_foreground(tmp_path: Path) -> None:
    ids = sample_ids(4)
    root = make_root(tmp_path / "voc", ids)
    path = root / "SegmentationClass" / f"{ids[2]}.png"
    mask = load_mask(path)
    save_mask(path, np.where(mask == 255, 255, 0).astype(np.uint8), VOC.palette)  # background and void only
    assert len(VOCSegmentation(root, "train")) == 4  # not weak: kept
    with pytest.warns(UserWarning, match=rf"train\.txt: 1 of 4 image\(s\) have no foreground.*{ids[2]}"):
        dataset = VOCSegmentation(root, "train", weak=True)
    assert dataset.skipped == [ids[2]] and len(dataset) == 3
    assert [dataset[i]["name"] for i in range(3)] == [ids[0], ids[1], ids[3]]
    assert all(dataset[i]["labels"].any() for i in range(3))


def test_dataloader_with_train_collate_on_real_images() -> None:
    import torch

    from rrm.data.transforms import TrainBatchCollate

    dataset = VOCSegmentation(SAMPLE, "train", weak=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False,
                                         collate_fn=TrainBatchCollate(crop_size=96))
    torch.manual_seed(0)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 96, 96) and batch["name"] == dataset.names[:3]
    assert batch["roi"].all()  # 500x375 photos scaled by >= 0.7 always cover a 96 crop
    np.testing.assert_array_equal(batch["labels"].numpy(), np.stack([dataset[i]["labels"] for i in range(3)]))
