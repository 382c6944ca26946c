"""The datasets as objects (rrm.data.datasets): one class list, palette and layout each, the registry that
data.dataset names, and the network heads and checkpoints sized from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rrm.data import classes as voc_classes
from rrm.data import coco_classes
from rrm.data.datasets import COCO, DATASETS, VOC, get_dataset, image_labels_file
from rrm.engine.reports import confusion_matrix, metrics_report
from rrm.io import save_torch
from rrm.models import deeplab, rrm_net
from rrm.models.registry import checkpoint_meta, load_model
from rrm.settings import DATASETS as DATASET_CHOICES
from rrm.settings import load_settings

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_the_registry_is_the_settings_choice_list():
    assert tuple(DATASETS) == DATASET_CHOICES == ("voc", "coco")
    assert all(get_dataset(name).name == name for name in DATASETS)
    with pytest.raises(ValueError, match="unknown dataset 'ade'; expected one of voc, coco"):
        get_dataset("ade")


def test_class_lists_background_first():
    assert VOC.classes == voc_classes.CLASSES and (VOC.num_classes, VOC.num_fg) == (21, 20)
    assert COCO.classes == ("background", *(name for _, name in coco_classes.CATEGORIES))  # category-id order
    assert (COCO.num_classes, COCO.num_fg) == (81, 80)
    assert COCO.classes[1] == "person" and COCO.classes[80] == "toothbrush"
    for spec in DATASETS.values():
        assert spec.ignore_index == 255 and spec.palette.shape == (256, 3) and spec.palette.dtype == np.uint8
        assert len(set(map(tuple, spec.palette[:spec.num_classes]))) == spec.num_classes  # a colour per class


def test_layouts(tmp_path):
    assert VOC.list_file(tmp_path, "val") == tmp_path / "ImageSets/Segmentation/val.txt"
    assert VOC.images(tmp_path, "val") == tmp_path / "JPEGImages"
    assert VOC.masks(tmp_path, "val") == tmp_path / "SegmentationClass"
    (tmp_path / "SegmentationClassAug").mkdir()
    assert VOC.masks(tmp_path, "train_aug") == tmp_path / "SegmentationClassAug"  # SBD's, when present
    assert VOC.masks(tmp_path, "val", "Other") == tmp_path / "Other"  # data.mask_dir
    assert VOC.labels_file(tmp_path, "train") is None  # VOC: from the masks
    assert COCO.list_file(tmp_path, "val2014") == tmp_path / "ImageSets/val2014.txt"
    assert COCO.images(tmp_path, "val2014") == tmp_path / "JPEGImages/val2014"
    assert COCO.masks(tmp_path, "val2014") == tmp_path / "SegmentationClass/val2014"
    assert COCO.labels_file(tmp_path, "train2014") == tmp_path / "ImageLabels/train2014.json"


def test_data_dataset_selects_the_labels_source(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text().replace("  dataset: voc ", "  dataset: coco"))
    coco = load_settings(params).data
    assert coco.dataset == "coco"
    assert image_labels_file(coco, "train2014") == f"{coco.root}/ImageLabels/train2014.json"
    assert image_labels_file(load_settings(PARAMS).data, "train") is None  # VOC: the masks


def test_metrics_are_keyed_by_the_dataset_classes():
    cm = confusion_matrix(COCO)
    cm.update(np.array([[0, 1], [80, 255]]), np.array([[0, 1], [80, 3]]))
    report = metrics_report(COCO, cm)
    assert list(report["per_class_iou"]) == list(COCO.classes)
    assert report["per_class_iou"]["toothbrush"] == 1.0 and report["per_class_iou"]["car"] is None


@pytest.mark.parametrize("spec", [VOC, COCO], ids=lambda s: s.name)
def test_head_sizes_follow_the_dataset(spec, tmp_path):
    torch.manual_seed(0)
    model = rrm_net.ARCHS["resnet38"].build(num_classes=spec.num_classes, width=0.0625, batch_norm=False,
                                            freeze_bn=True, dropout=True, head_bias="zeros", init=None, frozen=())
    out = model.eval()(torch.zeros(1, 3, 32, 32))
    assert out["cls"].shape == (1, spec.num_fg) and out["cam"].shape[1] == spec.num_fg
    assert out["seg"].shape[1] == spec.num_classes
    dl = deeplab.ARCHS["vgg16_largefov"].build(num_classes=spec.num_classes, width=0.0625, batch_norm=False,
                                               freeze_bn=True, dropout=True, head_bias="zeros", init=None,
                                               frozen=())
    assert dl.eval()(torch.zeros(1, 3, 32, 32))["seg"].shape[1] == spec.num_classes

    path = tmp_path / "model.pt"
    meta = checkpoint_meta(rrm_net.ARCHS["resnet38"], mode="onestep", width=0.0625, steps=1, batch_norm=False,
                           dataset=spec.name)
    save_torch(path, {"model": model.state_dict(), "meta": meta})
    loaded, _, trained_on = load_model(path, rrm_net.ARCHS, dataset=spec.name)
    assert trained_on is spec
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                  strict=True))
    other = "coco" if spec is VOC else "voc"
    with pytest.raises(ValueError, match=f"model.pt: a network trained on '{spec.name}'; data.dataset is '{other}'"):
        load_model(path, rrm_net.ARCHS, dataset=other)


def test_voc_networks_keep_their_head_shapes():
    """The VOC default: the classifier has 20 logits, the segmentation heads 21 channels."""
    rrm = rrm_net.build_rrm(width=0.0625).state_dict()
    assert rrm["fc8.weight"].shape[0] == 20 and rrm["fc8_seg_conv2.weight"].shape[0] == 21
    assert deeplab.build_deeplab(arch="resnet101_v2", width=0.0625).state_dict()["aspp.branches.0.weight"].shape[0] == 21


def test_the_dataset_module_is_torch_free():
    code = "import sys, rrm.data.datasets; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True
                          ).stdout.strip() == "False"


def test_a_per_split_folder_needs_the_split(tmp_path):
    with pytest.raises(ValueError, match="coco: SegmentationClass/{split} is per split; no split given"):
        COCO.masks(tmp_path, "")
    assert VOC.masks(tmp_path, "") == tmp_path / "SegmentationClass"  # VOC's folders hold every split
