"""End to end on COCO's layout: the whole `dvc repro` with data.dataset coco on a tiny COCO-layout dataset (the session's `tiny_coco_pipeline`, tests/conftest.py): 81-class networks, metrics,
per-class tables and masks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from rrm.data.coco_classes import VOC_TO_COCO
from rrm.data.datasets import COCO
from rrm.io import load_mask, load_torch


@pytest.mark.slow
def test_dvc_repro_on_coco(tiny_coco_pipeline):
    repo = tiny_coco_pipeline.repo
    for stage in ("cam", "onestep", "full", "pseudo", "twostep"):
        metrics = json.loads((repo / "reports" / stage / "metrics.json").read_text())
        assert list(metrics["per_class_iou"]) == list(COCO.classes)  # background + COCO's 80, in category order
        assert 0.0 <= metrics["miou"] <= 1.0
        with (repo / "reports" / stage / "per_class.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [row["class"] for row in rows] == list(COCO.classes)
        assert (repo / "reports" / stage / "per_class.png").is_file()
    onestep = json.loads((repo / "reports/onestep/metrics.json").read_text())
    assert list(onestep["per_class_iou_crf"]) == list(COCO.classes)
    # every class the val masks show (VOC's classes under their COCO indices) is scored under its COCO name
    shown = set().union(*(np.unique(load_mask(path)).tolist()
                          for path in (repo / "data/coco/SegmentationClass/val2014").glob("*.png"))) - {0, 255}
    assert shown and shown <= set(VOC_TO_COCO)
    assert all(onestep["per_class_iou"][COCO.classes[c]] is not None for c in shown)

    for name in ("cls", "onestep", "full"):
        state = load_torch(repo / "models" / f"{name}.pt")
        assert state["meta"]["dataset"] == "coco"
        assert state["model"]["fc8.weight"].shape[0] == COCO.num_fg == 80  # one logit per COCO class
        assert state["model"]["fc8_seg_conv2.weight"].shape[0] == COCO.num_classes == 81
    deeplab = load_torch(repo / "models/deeplab.pt")
    assert deeplab["meta"]["dataset"] == "coco"
    assert deeplab["meta"]["arch"] == "vgg16_largefov" and deeplab["model"]["fc8.weight"].shape[0] == 81
    pseudo = sorted((repo / "data/pseudo").glob("*.png"))
    assert [p.stem for p in pseudo] == sorted((repo / "data/coco/ImageSets/train2014.txt").read_text().split())
    assert max(int(load_mask(p).max()) for p in pseudo) <= 80
    assert (repo / "reports/figures/qualitative.png").is_file()
    stats = json.loads((repo / "reports/data/stats.json").read_text())  # prepare_data: data/coco's statistics
    assert stats["num_images"] == {"train2014": 12, "val2014": 4}
    assert set(stats["class_image_counts"]["val2014"]) == set(COCO.classes[1:])
    assert "up to date" in tiny_coco_pipeline.run(["dvc", "repro"])
