"""A qualitative grid like the paper's Figure 4: per val image, the image, its CAM, the reliable regions mined
from it, the one-step prediction, the two-step (DeepLab) prediction and the ground truth.

The CAM and the reliable regions come from the classifier (models/cls.pt), exactly as `evaluate_cam`
computes them; each prediction uses its network's evaluation settings (scales, flip, post-processing CRF).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from rrm.data.voc import VOCSegmentation
from rrm.engine.evaluate_cam import cams_and_reliable
from rrm.engine.predictions import predictions
from rrm.figures import cam_heatmap, colorize, save_grid
from rrm.method.crf_pool import CRFPool
from rrm.settings import MiningParams, Prediction


def first_ids(dataset: VOCSegmentation, count: int) -> list[str]:
    """The first `count` ids of the split, in list order: a fixed choice, the same as the evaluate stages'
    examples.png rows."""
    return list(dataset.names[:max(count, 0)])


def _labels(model: nn.Module, samples: list[dict], inference: Prediction | None, pool: CRFPool,
            device: torch.device | str, desc: str) -> list[np.ndarray]:
    """The network's label map per sample: CRF-refined by the settings' CRF; without settings, the single-scale
    argmax."""
    scales, flip, crf = (inference.scales, inference.flip, inference.crf) if inference else ((1.0,), False, None)
    return [pred if refined is None else refined
            for _, pred, refined in predictions(model, samples, scales=scales, flip=flip, crf=crf, pool=pool,
                                                device=device, desc=desc)]


def qualitative_grid(path: str | os.PathLike, dataset: VOCSegmentation, ids: Sequence[str], *,
                     classifier: nn.Module, onestep: nn.Module, deeplab: nn.Module | None = None,
                     cam_scales: Sequence[float], mining: MiningParams, onestep_inference: Prediction | None = None,
                     deeplab_inference: Prediction | None = None, pool: CRFPool, device: torch.device | str = "cpu",
                     cell: int = 128) -> list[str]:
    """Write the grid for the dataset's images `ids` (one row each, in order) to `path` as a PNG, atomically.

    Columns: image, CAM (max over the labelled classes of the normalised multi-scale CAM), reliable regions
    (void = unlabelled), one-step prediction, two-step prediction (left out when `deeplab` is None),
    ground truth. Inference settings default to single scale, no flip, no CRF. Returns the column titles.
    """
    if not ids:
        raise ValueError("qualitative_grid: no image ids given")
    index = {name: n for n, name in enumerate(dataset.names)}
    unknown = [name for name in ids if name not in index]
    if unknown:
        raise ValueError(f"{dataset.list_path}: id(s) not in split '{dataset.split}': {', '.join(unknown)}")
    samples = [dataset[index[name]] for name in ids]
    missing = [s["name"] for s in samples if s["mask"] is None]
    if missing:
        raise ValueError(f"{dataset.list_path}: no ground-truth mask for {', '.join(missing)}")

    palette = dataset.spec.palette
    classifier.eval()
    cams = [(cam, reliable) for _, cam, reliable in
            cams_and_reliable(classifier, samples, scales=cam_scales, mining=mining, pool=pool, device=device)]
    columns = [[s["image"] for s in samples], [cam_heatmap(cam[0].numpy()) for cam, _ in cams],
               [colorize(reliable, palette) for _, reliable in cams]]
    titles = ["image", "CAM", "reliable regions"]
    networks = [("one-step", onestep, onestep_inference)]
    if deeplab is not None:
        networks.append(("two-step", deeplab, deeplab_inference))
    for title, model, inference in networks:
        columns.append([colorize(label, palette) for label in _labels(model, samples, inference, pool, device, title)])
        titles.append(title + (" +CRF" if inference is not None else ""))
    columns.append([colorize(s["mask"], palette) for s in samples])
    titles.append("ground truth")
    save_grid(path, [list(row) for row in zip(*columns, strict=True)], titles, cell=cell)
    return titles
