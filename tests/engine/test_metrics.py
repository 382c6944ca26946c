"""Confusion-matrix mIoU against a hand-computed matrix."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rrm.data.classes import CLASSES
from rrm.engine.metrics import ConfusionMatrix


def test_hand_matrix_iou_and_ignore() -> None:
    cm = ConfusionMatrix(num_classes=4)
    # pairs (t, p): (0,0) (0,1) (1,1) (1,1) (2,0); (255, 2) and (3, 255) are ignored
    cm.update(np.array([[0, 0, 1], [1, 2, 255]]), torch.tensor([[0, 1, 1], [1, 0, 2]]))
    cm.update(np.array([3]), np.array([255]))
    assert cm.mat.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    iou = cm.iou()  # 1 / (2 + 2 - 1), 2 / (2 + 3 - 2), 0 / 1, absent -> NaN
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx(1 / 3)  # NaN class left out of the mean
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)


def test_to_dict_is_json_and_named() -> None:
    cm = ConfusionMatrix(len(CLASSES))
    cm.update(np.array([0, 15, 15, 255]), np.array([0, 15, 0, 3]))
    report = cm.to_dict(CLASSES)
    json.dumps(report, allow_nan=False)
    assert report["per_class_iou"]["person"] == pytest.approx(0.5)
    assert report["per_class_iou"]["background"] == pytest.approx(0.5)
    assert report["per_class_iou"]["cat"] is None
    assert report["miou"] == pytest.approx(0.5) and report["pixel_acc"] == pytest.approx(2 / 3)


def test_bad_labels_raise() -> None:
    cm = ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match="pred"):
        cm.update(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(ValueError, match="same number"):
        cm.update(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="class_names"):
        cm.to_dict(CLASSES)
