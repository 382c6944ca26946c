"""Tests for the embedded dataset (rrm/data/render.py draws, rrm/data/synthetic.py writes), on tiny 48 px datasets."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrm.data import render
from rrm.data.classes import CLASSES, IGNORE_INDEX, PALETTE
from rrm.data.render import render_image, void_border
from rrm.data.synthetic import dataset_stats, generate_dataset, save_examples
from rrm.io import load_image, load_mask

SMALL = dict(image_size=48, n_train=4, n_extra=2, n_val=2, n_test=2)


def _split(root: Path, name: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("embedded")
    return root, generate_dataset(root, seed=3, **SMALL)


def test_layout_and_splits(dataset: tuple[Path, dict]) -> None:
    root, stats = dataset
    train, train_aug, val, test = (_split(root, s) for s in ("train", "train_aug", "val", "test"))
    assert (len(train), len(train_aug), len(val), len(test)) == (4, 6, 2, 2)
    assert train_aug[: len(train)] == train and len(set(train_aug)) == 6  # train ⊂ train_aug, + 2 extra
    assert not set(val) & set(test) and not (set(val) | set(test)) & set(train_aug)
    assert all(i.startswith("emb_") and len(i) == 10 for i in train_aug + val + test)
    assert (root / "classes.txt").read_text().split() == list(CLASSES)
    for image_id in train_aug + val + test:
        for folder, ext in (
            ("JPEGImages", "jpg"),
            ("SegmentationClass", "png"),
            ("SegmentationObject", "png"),
            ("SegmentationPart", "png"),
        ):
            assert (root / folder / f"{image_id}.{ext}").is_file()
    assert stats["num_images"] == {"train": 4, "train_aug": 6, "val": 2, "test": 2}
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temp files behind


def test_deterministic_bytes(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    generate_dataset(tmp_path / "again", seed=3, **SMALL)
    assert _files(tmp_path / "again") == _files(root)
    generate_dataset(tmp_path / "other", seed=4, **SMALL)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(root).keys()
    jpegs = [k for k in other if k.endswith(".jpg")]
    assert all(other[k] != _files(root)[k] for k in jpegs)


def test_masks_are_voc_palette_pngs_with_void_borders(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    for image_id in _split(root, "train_aug") + _split(root, "val") + _split(root, "test"):
        with Image.open(root / "SegmentationClass" / f"{image_id}.png") as png:
            assert png.mode == "P"
            assert np.array_equal(np.array(png.getpalette()[:768]).reshape(256, 3), PALETTE)
        label = load_mask(root / "SegmentationClass" / f"{image_id}.png")
        image = load_image(root / "JPEGImages" / f"{image_id}.jpg")
        assert label.shape == image.shape[:2] == (48, 48)
        values = set(np.unique(label).tolist())
        assert values <= set(range(21)) | {IGNORE_INDEX}
        assert values - {0, IGNORE_INDEX}, f"{image_id} has no foreground class"
        assert IGNORE_INDEX in values
        # void separates every object from background and from other classes: no 4-adjacent pair of
        # distinct non-void labels exists anywhere
        for a, b in ((label[1:], label[:-1]), (label[:, 1:], label[:, :-1])):
            touching = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
            assert not touching.any()
        # ... and void is a thin outline (1 px each side of an edge, more only where thin slivers of an
        # occluded object vanish in it): no 5 x 5 block is entirely void
        void = np.pad(label == IGNORE_INDEX, 2)
        assert (
            not np.stack([void[dy : dy + 48, dx : dx + 48] for dy in range(5) for dx in range(5)])
            .all(0)
            .any()
        )
        assert (label == IGNORE_INDEX).mean() < 0.35  # 2 px outlines are thick at 48 px; ~7% at 96 px


def test_parts_lie_inside_their_objects(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    for image_id in _split(root, "train_aug") + _split(root, "val"):
        label, instance, part = (
            load_mask(root / d / f"{image_id}.png")
            for d in ("SegmentationClass", "SegmentationObject", "SegmentationPart")
        )
        objects = [k for k in np.unique(instance) if k not in (0, IGNORE_INDEX)]
        assert sorted(np.unique(part[part > 0]).tolist()) == sorted(int(k) for k in objects)
        for k in objects:
            inside = part == k
            assert (instance[inside] == k).all()  # inside its own object, never on the void border
            assert len(np.unique(label[instance == k])) == 1  # one class per object
            assert 0.1 < inside.sum() / (instance == k).sum() < 0.6  # small, but visible


def test_stats_recomputed_from_files(dataset: tuple[Path, dict]) -> None:
    root, stats = dataset
    assert dataset_stats(root) == stats
    assert 1.0 <= stats["mean_objects_per_image"] <= 3.0
    assert 0.1 < stats["mean_part_fraction"] < 0.5
    assert 0.0 < stats["mean_ignore_fraction"] < 0.2
    counts = stats["class_image_counts"]
    assert set(counts) == {"train", "train_aug", "val", "test"}
    assert all(counts["train_aug"][c] >= counts["train"][c] for c in CLASSES[1:])


def test_every_class_in_every_split(tmp_path: Path) -> None:
    """With 3 foreground classes and round-robin class plans, each split holds every class."""
    stats = generate_dataset(
        tmp_path,
        seed=0,
        image_size=48,
        n_train=6,
        n_extra=0,
        n_val=3,
        n_test=3,
        min_objects=1,
        max_objects=2,
        num_classes=4,
    )
    assert (tmp_path / "classes.txt").read_text().split() == list(CLASSES[:4])
    for split, per_class in stats["class_image_counts"].items():
        assert set(per_class) == set(CLASSES[1:4])
        assert min(per_class.values()) >= 1, split


def test_part_colours_carry_the_class_and_nothing_else_does() -> None:
    """Before JPEG: part pixels wear their class's part colour; no other pixel comes near any part colour."""
    for index in range(6):
        classes = [1 + (5 * index + j) % 20 for j in range(3)]
        out = render_image(np.random.default_rng([9, index]), classes, 64)
        image = out["image"].astype(float)
        distance = np.linalg.norm(image[:, :, None] - render.PART_COLOURS[None, None], axis=-1)  # (H,W,20)
        assert (distance[out["part"] == 0].min(-1) > 60).all()
        instance, label = out["instance"], out["label"]
        for k in np.unique(out["part"][out["part"] > 0]):
            cls = int(label[instance == k][0])
            colour_index = cls - 1
            assert (distance[out["part"] == k].argmin(-1) == colour_index).all()


def test_void_border_hand_computed() -> None:
    instances = np.zeros((6, 6), np.uint8)
    instances[2:4, 2:4] = 1
    expected = np.zeros((6, 6), bool)
    expected[1:5, 1:5] = True  # every pixel whose 3x3 window sees both 0 and 1
    assert np.array_equal(void_border(instances, 1), expected)
    instances[:, :] = 2  # a single object filling the frame has no border
    assert not void_border(instances, 1).any()


def test_hsv_matches_colorsys() -> None:
    hsv = np.random.default_rng(0).random((50, 3))
    expected = np.array([colorsys.hsv_to_rgb(*row) for row in hsv]) * 255
    np.testing.assert_allclose(render._hsv_to_rgb(hsv), expected, atol=1e-9)


def test_examples_grid(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    save_examples(root, tmp_path / "examples.png", split="val", n=8, zoom=2)
    with Image.open(tmp_path / "examples.png") as grid:
        assert grid.size == (2 * (2 * 48 + 4), 2 * 3 * 48)  # 2 val images, 3 rows each


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 16}, "image_size"),
        ({"n_val": 0}, "n_val"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects"),
        ({"num_classes": 22}, "num_classes"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path, **{**SMALL, **kwargs})
    assert not (tmp_path / "JPEGImages").exists()


def test_dataset_stats_without_split_lists(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="split lists"):
        dataset_stats(tmp_path)


def test_dataset_stats_on_real_voc(voc_sample: Path) -> None:
    """Real VOC has no SegmentationObject/Part here: object statistics are None, not zero."""
    stats = dataset_stats(voc_sample)
    assert stats["num_images"] == {"train": 60}
    assert stats["mean_objects_per_image"] is None and stats["mean_part_fraction"] is None
    assert 0.01 < stats["mean_ignore_fraction"] < 0.2
    assert sum(stats["class_image_counts"]["train"].values()) == round(60 * stats["mean_classes_per_image"])
