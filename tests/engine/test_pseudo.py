"""DeepLab's pseudo masks (rrm.engine.pseudo) and their report (rrm.engine.pseudo_report), written by two stages:
the report scored from the PNGs equals scoring the network's labels as they are predicted."""

from __future__ import annotations

import pytest
import torch

from rrm.data.datasets import VOC
from rrm.data.voc import VOCSegmentation
from rrm.engine.metrics import ConfusionMatrix
from rrm.engine.predictions import predictions
from rrm.engine.pseudo import export_pseudo
from rrm.engine.pseudo_report import score_pseudo
from rrm.engine.reports import metrics_report
from rrm.method.crf_pool import CRFPool
from rrm.models.rrm_net import build_rrm


def test_report_from_the_written_masks_equals_scoring_the_predictions(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    model, dataset, cpu = build_rrm(width=0.0625).eval(), VOCSegmentation(tiny_dataset, "train"), torch.device("cpu")
    with CRFPool(0) as pool:
        written = export_pseudo(model, dataset, tmp_path / "masks", spec=VOC, scales=(1.0,), flip=False, crf=None, pool=pool,
                                device=cpu)
        cm = ConfusionMatrix(VOC.num_classes)
        for sample, pred, _ in predictions(model, dataset, scales=(1.0,), flip=False, crf=None, pool=pool,
                                           device=cpu, desc="oracle"):
            cm.update(sample["mask"], pred)
    assert written == len(dataset) == len(list((tmp_path / "masks").glob("*.png")))
    report = score_pseudo(dataset, tmp_path / "masks", tmp_path / "report", spec=VOC, n_examples=2)
    assert report == metrics_report(VOC, cm, n_images=len(dataset), n_scored=len(dataset))
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"metrics.json", "per_class.csv", "per_class.png",
                                                                 "examples.png"}


def test_a_missing_mask_is_named(tiny_dataset, tmp_path):
    dataset = VOCSegmentation(tiny_dataset, "train")
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"{dataset.names[0]}\.png: no pseudo mask"):
        score_pseudo(dataset, tmp_path / "masks", tmp_path / "report", spec=VOC)
