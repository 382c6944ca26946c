"""Scoring a network over a whole split: one confusion matrix at original resolution, 255 ignored, with and
without dense-CRF post-processing (one-step RRM, the full-supervision reference and DeepLab alike)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from rrm.data.datasets import DatasetSpec
from rrm.data.voc import voc_split
from rrm.engine.device import resolve_device
from rrm.engine.predictions import predictions
from rrm.engine.reports import confusion_matrix, metrics_report, write_reports
from rrm.figures import colorize
from rrm.method.crf_pool import CRFPool
from rrm.models.registry import Arch, load_model
from rrm.settings import CRFParams, Params, Prediction


def evaluate_segmentation(model: nn.Module, dataset: Sequence[dict], out_dir: str | Path, *, spec: DatasetSpec,
                          scales: Sequence[float] = (1.0,), flip: bool = False, crf: CRFParams | None = None,
                          pool: CRFPool, device: torch.device, n_examples: int = 8) -> dict:
    """Score predictions (and their CRF refinement) against the split's masks over the classes of `spec`;
    write the reports."""
    cm, cm_crf = confusion_matrix(spec), confusion_matrix(spec) if crf is not None else None
    palette = spec.palette
    examples = []
    for sample, pred, refined in predictions(model, dataset, scales=scales, flip=flip, crf=crf, pool=pool,
                                             device=device, desc="evaluate"):
        cm.update(sample["mask"], pred)
        if cm_crf is not None:
            cm_crf.update(sample["mask"], refined)
        if len(examples) < n_examples:
            row = [sample["image"], colorize(sample["mask"], palette), colorize(pred, palette)]
            examples.append(row + ([colorize(refined, palette)] if refined is not None else []))
    report = metrics_report(spec, cm, cm_crf, n_images=len(dataset))
    titles = ["image", "ground truth", "prediction"] + (["prediction+CRF"] if crf is not None else [])
    write_reports(spec, out_dir, report, examples, titles)
    return report


def evaluate_stage(p: Params, model_path: str, out_dir: str, archs: Mapping[str, Arch], prediction: Prediction
                   ) -> dict:
    """An evaluate stage: the checkpoint (one of `archs`, trained on data.dataset) scored on data.val_split
    with `prediction`'s scales, flip and CRF; p.figures.examples example rows."""
    dev = resolve_device(p.device)
    model, *_ = load_model(model_path, archs, dev, dataset=p.data.dataset)
    split = voc_split(p.data, p.data.val_split)
    with CRFPool(p.mining.pool_processes) as pool:
        return evaluate_segmentation(model, split, out_dir, spec=split.spec, scales=prediction.scales,
                                     flip=prediction.flip, crf=prediction.crf, pool=pool, device=dev,
                                     n_examples=p.figures.examples)
