"""The report files every evaluation stage writes: metrics.json, per_class.csv, per_class.png, examples.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rrm.data.datasets import DatasetSpec
from rrm.engine.metrics import ConfusionMatrix
from rrm.figures import per_class_bars, save_grid
from rrm.io import write_json, write_text


def confusion_matrix(spec: DatasetSpec) -> ConfusionMatrix:
    """An empty confusion matrix over the dataset's classes (its ignore index skipped)."""
    return ConfusionMatrix(spec.num_classes, spec.ignore_index)


def metrics_report(spec: DatasetSpec, cm: ConfusionMatrix, cm_crf: ConfusionMatrix | None = None,
                   **extra: object) -> dict:
    """The metrics.json schema shared by every evaluation stage, keyed by the dataset's class names."""
    base = cm.to_dict(spec.classes)
    report = {"miou": base["miou"], "pixel_acc": base["pixel_acc"], "per_class_iou": base["per_class_iou"]}
    if cm_crf is not None:
        crf = cm_crf.to_dict(spec.classes)
        report |= {"miou_crf": crf["miou"], "pixel_acc_crf": crf["pixel_acc"],
                   "per_class_iou_crf": crf["per_class_iou"]}
    return report | extra


def write_reports(spec: DatasetSpec, out_dir: str | Path, report: dict, examples: list[list[np.ndarray]],
                  titles: list[str]) -> None:
    """metrics.json, per_class.csv (for `dvc plots`; one row per class of the dataset), per_class.png and
    examples.png under out_dir."""
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", report)
    classes = spec.classes
    table = pd.DataFrame({"class": list(classes), "iou": [report["per_class_iou"][c] for c in classes]})
    series = {"no CRF": report["per_class_iou"]}
    if "per_class_iou_crf" in report:
        table["iou_crf"] = [report["per_class_iou_crf"][c] for c in classes]
        series["CRF"] = report["per_class_iou_crf"]
    write_text(out_dir / "per_class.csv", table.to_csv(index=False, float_format="%.4f"))
    per_class_bars(out_dir / "per_class.png", series, title=f"per-class IoU (mIoU {report['miou']:.3f})")
    if examples:
        save_grid(out_dir / "examples.png", examples, titles)
