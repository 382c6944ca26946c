"""`rrm prepare-coco` round trip: the VOC sample's masks as a COCO instances json (pycocotools RLE, COCO's
category ids), converted back to the WSSS layout, must give the same masks in COCO's class indices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rrm.cli import app
from rrm.data.coco_classes import CATEGORIES, CLASSES, VOC_TO_COCO
from rrm.data.datasets import COCO
from rrm.data.voc import VOCSegmentation, read_split
from rrm.io import load_mask, save_mask

mask_utils = pytest.importorskip("pycocotools.mask")
# pycocotools 2.0.11's decode under numpy 2 (its own code, harmless)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

SPLIT_OF = {"train2014": slice(0, 40), "val2014": slice(40, None)}
VOC_CAT = {voc: CATEGORIES[coco - 1][0] for voc, coco in enumerate(VOC_TO_COCO) if voc}  # VOC index -> COCO id


def _rle(binary: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _instances(voc_sample: Path, names: list[str], first_id: int) -> tuple[dict, dict[str, np.ndarray]]:
    """COCO instances json of VOC masks: one annotation per VOC class present (COCO's id for its name) and
    the void (255) pixels as one crowd annotation of the image's largest class; plus an image without
    annotations. Returns the json and the expected masks (VOC indices mapped to COCO's, 255 kept)."""
    lut = np.full(256, 255, np.uint8)
    lut[: len(VOC_TO_COCO)] = VOC_TO_COCO
    images, annotations, expected = [], [], {}
    for image_id, name in enumerate(names, start=first_id):
        mask = load_mask(voc_sample / "SegmentationClass" / f"{name}.png")
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": mask.shape[0], "width": mask.shape[1]})
        counts = np.bincount(mask.ravel(), minlength=256)
        for voc in np.flatnonzero(counts[1:21]) + 1:
            annotations.append({"image_id": image_id, "category_id": VOC_CAT[voc], "iscrowd": 0,
                                "segmentation": _rle(mask == voc), "area": float(counts[voc])})
        if counts[255]:
            annotations.append({"image_id": image_id, "category_id": VOC_CAT[int(np.argmax(counts[1:21])) + 1],
                                "iscrowd": 1, "segmentation": _rle(mask == 255), "area": float(counts[255])})
        expected[name] = lut[mask]
    images.append({"id": first_id + 999, "file_name": "no_annotations.jpg", "height": 10, "width": 10})
    for n, annotation in enumerate(annotations):
        annotation["id"] = first_id * 100 + n
    categories = [{"id": cat, "name": name, "supercategory": ""} for cat, name in CATEGORIES]
    return {"images": images, "annotations": annotations, "categories": categories}, expected


@pytest.fixture(scope="module")
def coco_root(voc_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("coco")
    (root / "annotations").mkdir()
    names, expected = read_split(voc_sample, "train"), {}
    for n, (split, part) in enumerate(SPLIT_OF.items()):
        (root / split).mkdir()
        for name in names[part]:
            shutil.copy(voc_sample / "JPEGImages" / f"{name}.jpg", root / split)
        instances, expected[split] = _instances(voc_sample, names[part], first_id=1000 * (n + 1))
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
    return root, expected


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_round_trip_masks_labels_lists_and_resume(coco_root: tuple[Path, dict], tmp_path: Path) -> None:
    root, expected = coco_root
    code, output = _run("prepare-coco", "--coco-root", root, "--out", tmp_path)
    assert code == 0, output
    assert "train2014: 40 of 40 annotated images listed; masks 40 written" in output
    for split, masks in expected.items():
        assert (tmp_path / "ImageSets" / f"{split}.txt").read_text().split() == sorted(masks)  # no unannotated
        labels = json.loads((tmp_path / "ImageLabels" / f"{split}.json").read_text())
        for name, want in masks.items():
            got = load_mask(tmp_path / "SegmentationClass" / split / f"{name}.png")
            np.testing.assert_array_equal(got, want)  # exactly: COCO's indices, 255 where VOC was void
            assert labels[name] == sorted(set(np.unique(want).tolist()) - {0, 255})
        assert (tmp_path / "JPEGImages" / split / f"{sorted(masks)[0]}.jpg").is_file()
    assert {CLASSES[c] for m in expected.values() for mask in m.values() for c in np.unique(mask) if c != 255} >= {
        "airplane", "motorcycle", "couch", "tv", "dining table", "potted plant"}  # the renamed VOC classes

    code, output = _run("check-coco", tmp_path)
    assert code == 0 and "OK; images: train2014 40, val2014 20; crowd/ignore pixels" in output, output
    code, output = _run("check-data", tmp_path, "--dataset", "coco")  # the pipeline's check of the same root
    assert code == 0 and "OK; 60 image(s) checked; splits: train2014 40, val2014 20" in output, output
    assert all(f"\n{name} " in output for name in CLASSES)  # a row per class of COCO (background + 80)

    # the pipeline's reader of data.dataset coco: the same masks, and the labels of ImageLabels/<split>.json
    val = VOCSegmentation(tmp_path, "val2014", dataset=COCO, weak=True,
                          labels_file=COCO.labels_file(tmp_path, "val2014"))
    assert sorted(val.names) == sorted(name for name, mask in expected["val2014"].items() if (mask > 0).any()
                                       and (mask < 255).any())
    for sample in val:
        want = expected["val2014"][sample["name"]]
        np.testing.assert_array_equal(sample["mask"], want)
        assert sample["labels"].shape == (80,)
        assert set(np.flatnonzero(sample["labels"]) + 1) == set(np.unique(want).tolist()) - {0, 255}

    first = sorted(expected["val2014"])[0]
    (tmp_path / "SegmentationClass" / "val2014" / f"{first}.png").write_bytes(b"truncated")
    code, output = _run("prepare-coco", "--coco-root", root, "--out", tmp_path)
    assert code == 0 and "masks 0 written, 40 already complete" in output, output
    assert "val2014: 20 of 20 annotated images listed; masks 1 written, 19 already complete" in output, output
    np.testing.assert_array_equal(load_mask(tmp_path / "SegmentationClass" / "val2014" / f"{first}.png"),
                                  expected["val2014"][first])


def test_bad_and_missing_files_are_named(coco_root: tuple[Path, dict], tmp_path: Path) -> None:
    root, expected = coco_root
    broken = tmp_path / "coco"
    shutil.copytree(root, broken)
    gone = sorted(expected["train2014"])[3]
    (broken / "train2014" / f"{gone}.jpg").unlink()
    (broken / "annotations" / "instances_val2014.json").write_text("{not json")
    code, output = _run("prepare-coco", "--coco-root", broken, "--out", tmp_path / "out")
    assert code == 1
    assert f"problem: {broken / 'train2014' / gone}.jpg: image file missing" in output
    assert f"problem: {broken / 'annotations' / 'instances_val2014.json'}: not a COCO instances file" in output
    assert "train2014: 39 of 40 annotated images listed" in output
    code, output = _run("prepare-coco", "--coco-root", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert code == 1 and "COCO root not found" in output


def test_overlaps_smallest_instance_wins_crowd_only_where_uncovered() -> None:
    from rrm.data.coco_prepare import render_mask

    big, small, crowd = (np.zeros((4, 6), np.uint8) for _ in range(3))
    big[:, :4] = 1
    small[1:3, 2:5] = 1
    crowd[:, 3:] = 1
    annotations = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 90, "iscrowd": 0},
                   {"id": 3, "category_id": 18, "iscrowd": 1}]
    got = render_mask(annotations, [small, big, crowd], (4, 6))  # order in the file does not matter
    assert got.tolist() == [[80, 80, 80, 80, 255, 255],
                            [80, 80, 1, 1, 1, 255],
                            [80, 80, 1, 1, 1, 255],
                            [80, 80, 80, 80, 255, 255]]


def test_check_coco_layout_names_each_problem(coco_root: tuple[Path, dict], tmp_path: Path) -> None:
    from rrm.data.coco_check import check_coco_layout
    from rrm.data.coco_prepare import prepare_coco

    root, expected = coco_root
    prepare_coco(root, tmp_path, ("val2014",))
    assert check_coco_layout(tmp_path, ("val2014",)).ok
    names = sorted(expected["val2014"])
    bad_value = tmp_path / "SegmentationClass" / "val2014" / f"{names[0]}.png"
    mask = load_mask(bad_value)
    mask[0, 0] = 81
    save_mask(bad_value, mask, COCO.palette)
    labels_path = tmp_path / "ImageLabels" / "val2014.json"
    labels = json.loads(labels_path.read_text())
    labels[names[1]] = []
    labels_path.write_text(json.dumps(labels))
    errors = check_coco_layout(tmp_path, ("val2014", "train2014")).errors
    assert f"{bad_value}: values [81] outside 0..80 and 255" in errors
    assert any(e.startswith(f"{tmp_path / 'SegmentationClass' / 'val2014' / names[1]}.png: classes") for e in errors)
    assert f"{tmp_path / 'ImageSets' / 'train2014.txt'}: split list missing" in errors
    assert len(errors) == 3, errors
