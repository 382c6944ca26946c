"""The report files every evaluation stage writes: metrics.json, per_class.csv, per_class.png, examples.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rrm.data.classes import CLASSES
from rrm.engine.metrics import ConfusionMatrix
from rrm.figures import per_class_bars, save_grid
from rrm.io import write_json, write_text


def metrics_report(cm: ConfusionMatrix, cm_crf: ConfusionMatrix | None = None, **extra: object) -> dict:
    """The metrics.json schema shared by every evaluation stage."""
    base = cm.to_dict(CLASSES)
    report = {"miou": base["miou"], "pixel_acc": base["pixel_acc"], "per_class_iou": base["per_class_iou"]}
    if cm_crf is not None:
        crf = cm_crf.to_dict(CLASSES)
        report |= {"miou_crf": crf["miou"], "pixel_acc_crf": crf["pixel_acc"],
                   "per_class_iou_crf": crf["per_class_iou"]}
    return report | extra


def write_reports(out_dir: str | Path, report: dict, examples: list[list[np.ndarray]], titles: list[str]) -> None:
    """metrics.json, per_class.csv (for `dvc plots`), per_class.png and examples.png under out_dir."""
    out_dir = Path(out_dir)
    write_json(out_dir / "metrics.json", report)
    table = pd.DataFrame({"class": list(CLASSES), "iou": [report["per_class_iou"][c] for c in CLASSES]})
    series = {"no CRF": report["per_class_iou"]}
    if "per_class_iou_crf" in report:
        table["iou_crf"] = [report["per_class_iou_crf"][c] for c in CLASSES]
        series["CRF"] = report["per_class_iou_crf"]
    write_text(out_dir / "per_class.csv", table.to_csv(index=False, float_format="%.4f"))
    per_class_bars(out_dir / "per_class.png", series, title=f"per-class IoU (mIoU {report['miou']:.3f})")
    if examples:
        save_grid(out_dir / "examples.png", examples, titles)
