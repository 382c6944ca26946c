"""The pseudo masks' quality: rrm.engine.pseudo's PNGs scored against the split's masks where they exist."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from rrm.data.datasets import DatasetSpec
from rrm.engine.reports import confusion_matrix, metrics_report, write_reports
from rrm.figures import colorize
from rrm.io import load_mask


def score_pseudo(dataset: Sequence[dict], masks_dir: str | Path, report_dir: str | Path, *, spec: DatasetSpec,
                 n_examples: int = 8) -> dict:
    """Score every image's pseudo mask (masks_dir/<name>.png) against its mask over the classes of `spec`;
    write the reports."""
    masks_dir = Path(masks_dir)
    cm, scored, examples = confusion_matrix(spec), 0, []
    for sample in tqdm(dataset, desc="score pseudo labels", unit="img"):
        path = masks_dir / f"{sample['name']}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no pseudo mask for image {sample['name']} (run export_pseudo)")
        if sample.get("mask") is None:
            continue
        label = load_mask(path)
        cm.update(sample["mask"], label)
        scored += 1
        if len(examples) < n_examples:
            examples.append([sample["image"], colorize(label, spec.palette), colorize(sample["mask"], spec.palette)])
    report = metrics_report(spec, cm, n_images=len(dataset), n_scored=scored)
    write_reports(spec, report_dir, report, examples, ["image", "pseudo label", "ground truth"])
    return report
