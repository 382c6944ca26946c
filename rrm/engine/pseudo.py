"""Two-step RRM's training masks: a network's labels for a split, written as palette PNGs.

Their score against the split's masks is a separate stage (rrm.engine.pseudo_report), so a report or figure
change never re-makes the masks DeepLab trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from rrm.data.datasets import DatasetSpec
from rrm.engine.predictions import predictions
from rrm.io import save_mask
from rrm.method.crf_pool import CRFPool
from rrm.settings import CRFParams


def export_pseudo(model: nn.Module, dataset: Sequence[dict], out_dir: str | Path, *, spec: DatasetSpec, scales: Sequence[float],
                  flip: bool, crf: CRFParams | None, pool: CRFPool, device: torch.device) -> int:
    """Write the network's label (CRF-refined where `crf` is given) for every image, in `spec`'s palette;
    return how many."""
    out_dir = Path(out_dir)
    written = 0
    for sample, pred, refined in predictions(model, dataset, scales=scales, flip=flip, crf=crf, pool=pool,
                                             device=device, desc="export pseudo labels"):
        save_mask(out_dir / f"{sample['name']}.png", refined if refined is not None else pred, spec.palette)
        written += 1
    return written
