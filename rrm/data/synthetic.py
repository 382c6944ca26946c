"""The embedded default dataset: a deterministic, VOC-layout weakly supervised segmentation benchmark.

Each image is drawn by :mod:`rrm.data.render` (which says why the task is hard in the way RRM cares about).

Layout written under ``root`` (PASCAL VOC devkit names; the last two folders are our additions)::

    JPEGImages/<id>.jpg                 RGB, JPEG quality 92
    SegmentationClass/<id>.png          palette PNG: 0 background, 1..20 classes, 255 void border
    SegmentationObject/<id>.png         palette PNG: 0 background, 1..k instances, 255 void border
    SegmentationPart/<id>.png           palette PNG: instance index of the object owning each part pixel
    ImageSets/Segmentation/{train,train_aug,val,test}.txt
    classes.txt                         class names, one per line

``train_aug`` is ``train`` plus ``n_extra`` further images (as SBD extends VOC train); val and test are
disjoint from both and, unlike VOC's test, carry masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rrm.data.datasets import IGNORE_INDEX, VOC, DatasetSpec
from rrm.data.render import render_image
from rrm.io import atomic_write, load_mask, save_mask, write_text

SPLITS: tuple[str, ...] = ("train", "train_aug", "val", "test")
JPEG_QUALITY = 92


def _plan_classes(
    rng: np.random.Generator, n_images: int, min_objects: int, max_objects: int, n_fg: int
) -> list[list[int]]:
    """Per-image class lists whose concatenation walks through random permutations of all classes,
    so every class appears about equally often in every split."""
    counts = rng.integers(min_objects, max_objects + 1, n_images)
    total = int(counts.sum())
    sequence = np.concatenate([rng.permutation(n_fg) + 1 for _ in range(total // n_fg + 1)])[:total]
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [sequence[a:b].tolist() for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _image_record(label: np.ndarray, instance: np.ndarray | None, part: np.ndarray | None) -> dict:
    """Per-image numbers that the dataset statistics are built from (same code for memory and disk)."""
    total = label.size
    classes = sorted(int(c) for c in np.unique(label) if c not in (0, IGNORE_INDEX))
    record = {
        "classes": classes,
        "foreground": float(np.isin(label, classes).sum() / total),
        "ignore": float((label == IGNORE_INDEX).sum() / total),
        "objects": None if instance is None else [],
    }
    if instance is not None:
        for k in (int(k) for k in np.unique(instance) if k not in (0, IGNORE_INDEX)):
            obj = instance == k
            entry = {"fraction": float(obj.sum() / total)}
            if part is not None:
                entry["part_fraction"] = float((part == k).sum() / obj.sum())
            record["objects"].append(entry)
    return record


def _summarise(records: dict[str, dict], splits: dict[str, list[str]], names: list[str]) -> dict:
    with_objects = [r["objects"] for r in records.values() if r["objects"] is not None]
    objects = [o for r in with_objects for o in r]
    parts = [o["part_fraction"] for o in objects if "part_fraction" in o]
    stats = {
        "num_images": {split: len(ids) for split, ids in splits.items()},
        "class_image_counts": {
            split: {names[c]: sum(c in records[i]["classes"] for i in ids) for c in range(1, len(names))}
            for split, ids in splits.items()
        },
        "mean_objects_per_image": float(np.mean([len(r) for r in with_objects])) if with_objects else None,
        "mean_classes_per_image": float(np.mean([len(r["classes"]) for r in records.values()])),
        "mean_foreground_fraction": float(np.mean([r["foreground"] for r in records.values()])),
        "mean_ignore_fraction": float(np.mean([r["ignore"] for r in records.values()])),
        "mean_object_fraction": float(np.mean([o["fraction"] for o in objects])) if objects else None,
        "mean_part_fraction": float(np.mean(parts)) if parts else None,
    }
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items()}


def _check_arguments(
    image_size: int, counts: dict[str, int], min_objects: int, max_objects: int, num_classes: int
) -> None:
    if not 40 <= image_size <= 1024:
        raise ValueError(f"image_size: must be between 40 and 1024, got {image_size}")
    for name, value in counts.items():
        if value < (0 if name == "n_extra" else 1):
            raise ValueError(f"{name}: must be >= {0 if name == 'n_extra' else 1}, got {value}")
    if not 1 <= min_objects <= max_objects <= 6:
        raise ValueError(
            f"min_objects/max_objects: need 1 <= min <= max <= 6, got {min_objects}, {max_objects}"
        )
    if not 2 <= num_classes <= VOC.num_classes:
        raise ValueError(f"num_classes: must be between 2 and {VOC.num_classes}, got {num_classes}")


def _write_sample(job: tuple[Path, str, int, int, list[int], int]) -> dict:
    """Render one image from its own seed, write its JPEG and three masks, return its stats record."""
    root, image_id, seed, index, classes, image_size = job
    sample = render_image(np.random.default_rng([seed, index]), classes, image_size)
    pil = Image.fromarray(sample["image"])
    atomic_write(
        root / "JPEGImages" / f"{image_id}.jpg", lambda f: pil.save(f, format="JPEG", quality=JPEG_QUALITY)
    )
    save_mask(root / "SegmentationClass" / f"{image_id}.png", sample["label"], VOC.palette)
    save_mask(root / "SegmentationObject" / f"{image_id}.png", sample["instance"], VOC.palette)
    save_mask(root / "SegmentationPart" / f"{image_id}.png", sample["part"], VOC.palette)
    return _image_record(sample["label"], sample["instance"], sample["part"])


def generate_dataset(
    root: Path,
    *,
    seed: int = 0,
    image_size: int = 96,
    n_train: int = 400,
    n_extra: int = 200,
    n_val: int = 100,
    n_test: int = 100,
    min_objects: int = 1,
    max_objects: int = 3,
    num_classes: int = VOC.num_classes,
) -> dict:
    """Write the embedded dataset under `root` (VOC layout, see the module docstring); return its stats.

    Deterministic: the same arguments give byte-identical files. Each image draws from its own
    generator seeded by (seed, image index), and each split's class plan from (seed, split), so
    images do not depend on the order they are written in. Returns the same dict as `dataset_stats`.
    """
    root = Path(root)
    counts = {"n_train": n_train, "n_extra": n_extra, "n_val": n_val, "n_test": n_test}
    _check_arguments(image_size, counts, min_objects, max_objects, num_classes)
    names = list(VOC.classes[:num_classes])
    blocks = list(zip(("train", "extra", "val", "test"), counts.values(), strict=True))
    plan: list[tuple[str, list[int]]] = []
    for block_index, (block, n) in enumerate(blocks):
        rng = np.random.default_rng([seed, 1_000_003, block_index])
        plan += [
            (block, classes) for classes in _plan_classes(rng, n, min_objects, max_objects, num_classes - 1)
        ]

    ids = [f"emb_{index:06d}" for index in range(len(plan))]
    jobs = [
        (root, image_id, seed, index, classes, image_size)
        for index, (image_id, (_, classes)) in enumerate(zip(ids, plan, strict=True))
    ]
    results = [_write_sample(job) for job in tqdm(jobs, desc="embedded dataset", unit="img")]
    records = dict(zip(ids, results, strict=True))

    block_ids = {block: [i for i, (b, _) in zip(ids, plan, strict=True) if b == block] for block, _ in blocks}
    splits = {
        "train": block_ids["train"],
        "train_aug": block_ids["train"] + block_ids["extra"],
        "val": block_ids["val"],
        "test": block_ids["test"],
    }
    for split, split_ids in splits.items():
        write_text(root / "ImageSets" / "Segmentation" / f"{split}.txt", "".join(f"{i}\n" for i in split_ids))
    write_text(root / "classes.txt", "".join(f"{name}\n" for name in names))
    return _summarise(records, splits, names)


def dataset_stats(root: Path, dataset: DatasetSpec = VOC) -> dict:
    """Recompute the statistics of a root in `dataset`'s layout from its files (for reports/data/stats.json).

    Works on real VOC too: object statistics need SegmentationObject/, part statistics need
    SegmentationPart/ (embedded data only); without them those entries are empty / None. VOC's splits are
    SPLITS, with the masks of SegmentationClass; another dataset's are every list of its list folder, with
    its masks (COCO: SegmentationClass/<split>/) and its class names.
    """
    root = Path(root)
    list_dir = dataset.list_folder(root)
    candidates = SPLITS if dataset is VOC else tuple(sorted(p.stem for p in list_dir.glob("*.txt")))
    splits = {}
    for split in candidates:
        path = list_dir / f"{split}.txt"
        if path.is_file():
            splits[split] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not splits:
        raise FileNotFoundError(f"{list_dir}: no split lists ({', '.join(candidates) or '<split>.txt'}) found")
    names_file = root / "classes.txt"
    if dataset is not VOC:
        names = list(dataset.classes)
    else:
        names = names_file.read_text().split() if names_file.is_file() else list(VOC.classes)
    mask_dir = {i: root / dataset.mask_dir.format(split=split) for split, ids in reversed(splits.items()) for i in ids}
    records = {}
    for image_id in sorted({i for ids in splits.values() for i in ids}):
        label = load_mask(mask_dir[image_id] / f"{image_id}.png")
        obj_path, part_path = (
            root / d / f"{image_id}.png" for d in ("SegmentationObject", "SegmentationPart")
        )
        instance = load_mask(obj_path) if obj_path.is_file() else None
        part = load_mask(part_path) if part_path.is_file() and instance is not None else None
        records[image_id] = _image_record(label, instance, part)
    return _summarise(records, splits, names)


def save_examples(root: Path, path: Path, *, split: str = "val", n: int = 8, zoom: int = 2) -> None:
    """Write a grid PNG: per example a column of image / class mask (void white) / parts over the image."""
    root = Path(root)
    ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:n]
    if not ids:
        raise ValueError(f"{root}: split {split!r} is empty")
    columns = []
    for image_id in ids:
        image = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        label = load_mask(root / "SegmentationClass" / f"{image_id}.png")
        part = load_mask(root / "SegmentationPart" / f"{image_id}.png")
        coloured = VOC.palette[label].copy()
        coloured[label == IGNORE_INDEX] = 255
        faded = (image * 0.35 + 160).astype(np.uint8)  # parts at full strength over a faded image
        faded[part > 0] = image[part > 0]
        columns.append(np.concatenate([image, coloured, faded], 0))
    gap = np.full((columns[0].shape[0], 4, 3), 255, np.uint8)
    grid = np.concatenate([x for c in columns for x in (c, gap)][:-1], 1)
    grid = np.kron(grid, np.ones((zoom, zoom, 1), np.uint8))
    atomic_write(path, lambda f: Image.fromarray(grid).save(f, format="PNG"))
