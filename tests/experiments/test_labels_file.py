"""data.labels_file: the image-level labels the authors load (PSA's cls_labels.npy, or a text file) reach
every stage that uses image labels, must cover the split, and leave scoring (masks only) alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from training import run_train

from rrm.data.classes import CLASSES
from rrm.data.voc import read_split, voc_split
from rrm.experiments.profiles import expand
from rrm.experiments.training import training_run
from rrm.io import load_mask
from rrm.settings import load_params, parse

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _params(root: Path, labels_file: Path | None, **extra):
    overrides = {"data.root": str(root), "data.labels_file": None if labels_file is None else str(labels_file),
                 "model.width": 0.0625, "train_cls.steps": 1, "train_cls.batch_size": 2, "train_cls.crop_size": 48,
                 **extra}
    return parse(expand(load_params(PARAMS), overrides, source="test"))


def _labels_from_masks(root: Path, split: str) -> dict[str, np.ndarray]:
    out = {}
    for name in read_split(root, split):
        values = np.unique(load_mask(root / "SegmentationClass" / f"{name}.png"))
        out[name] = np.isin(np.arange(1, 21), values).astype(np.float32)
    return out


def test_labels_come_from_the_file_where_labels_are_used(tiny_dataset: Path, tmp_path: Path) -> None:
    labels = _labels_from_masks(tiny_dataset, "train_aug")
    first = next(iter(labels))
    labels[first] = np.eye(20, dtype=np.float32)[19]  # tvmonitor only, whatever the mask shows
    path = tmp_path / "cls_labels.npy"
    np.save(path, labels)
    p = _params(tiny_dataset, path)
    weak = voc_split(p.data, p.data.train_split, weak=True)
    assert np.array_equal(weak[weak.names.index(first)]["labels"], labels[first])
    assert voc_split(p.data, p.data.val_split).file_labels is None  # scoring: masks only, val need not be listed
    out = tmp_path / "cls"
    run = training_run(p, "train_cls", out_model=str(out / "model.pt"), checkpoint=str(out / "last.pt"),
                       live_dir=None)
    assert run.labels_file == str(path)
    assert training_run(p, "train_full", init="-", out_model="-", checkpoint="-", live_dir=None).labels_file is None
    history = run_train(run)
    assert np.isfinite(history["cls"]) and (out / "model.pt").is_file()


def test_a_file_missing_ids_names_the_file_and_the_ids(tiny_dataset: Path, tmp_path: Path) -> None:
    labels = _labels_from_masks(tiny_dataset, "train_aug")
    missing = sorted(labels)[:2]
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"{name} {' '.join(CLASSES[c + 1] for c in np.flatnonzero(v))}\n"
                            for name, v in labels.items() if name not in missing))
    p = _params(tiny_dataset, path)
    out = tmp_path / "cls"
    run = training_run(p, "train_cls", out_model=str(out / "model.pt"), checkpoint=str(out / "last.pt"),
                       live_dir=None)
    with pytest.raises(ValueError) as error:
        run_train(run)
    message = str(error.value)
    assert all(f"{path}: no labels for {name!r}" in message for name in missing)
