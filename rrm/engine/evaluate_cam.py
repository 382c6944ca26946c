"""The CAM pseudo-label baseline and the reliable regions mined from it, scored over a split."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from rrm.data.datasets import DatasetSpec
from rrm.data.normalize import normalize_batch
from rrm.engine.mining import MiningHandle, mine_batch_async
from rrm.engine.predictions import chunks, overlapped
from rrm.engine.reports import confusion_matrix, metrics_report, write_reports
from rrm.figures import cam_heatmap, colorize
from rrm.method.cam import cam_label_map, multiscale_cam
from rrm.method.crf_pool import CRFPool
from rrm.settings import MiningParams


def cams_and_reliable(model: nn.Module, samples: Iterable[dict], *, scales: Sequence[float], mining: MiningParams,
                      pool: CRFPool, device: torch.device | str,
                      chunk: int = 8) -> Iterator[tuple[dict, torch.Tensor, np.ndarray]]:
    """Per sample: the normalised multi-scale CAM, (1, C, H, W) on the CPU (eq. 1-3; C foreground classes), and
    the reliable regions mined from it, (H, W) uint8 in {0..C, 255}. The model is expected in eval mode. Same-size images share
    one forward per scale; a chunk's CRFs run in the pool while the network computes the next chunk's CAMs."""
    @torch.no_grad()  # runs lazily, as the returned iterator is consumed
    def start(group: list[dict]) -> tuple[list[dict], torch.Tensor, MiningHandle]:
        images = np.stack([s["image"] for s in group])
        labels = torch.from_numpy(np.stack([s["labels"] for s in group]))
        x = normalize_batch(images).to(device)
        cams = multiscale_cam(model, x, labels.to(device), scales=scales).cpu()
        return group, cams, mine_batch_async(images, cams, labels, mining, pool)

    return overlapped(chunks(samples, chunk), start, _with_reliable)


def _with_reliable(group: list[dict], cams: torch.Tensor, mined: MiningHandle
                   ) -> Iterator[tuple[dict, torch.Tensor, np.ndarray]]:
    for sample, cam, reliable in zip(group, cams, mined.get(), strict=True):
        yield sample, cam[None], reliable


@torch.no_grad()
def evaluate_cam(model: nn.Module, dataset: Sequence[dict], out_dir: str | Path, *, spec: DatasetSpec, scales: Sequence[float],
                 bg_threshold: float, mining: MiningParams, pool: CRFPool, device: torch.device,
                 n_examples: int = 8) -> dict:
    """Score the CAM pseudo labels (argmax over [bg_threshold, CAMs]) and the reliable regions mined from them.

    Reliable regions are judged by precision on the pixels they label and by the fraction they label. Scored
    over the classes of `spec`.
    """
    model.eval()
    cm, reliable_cm, palette = confusion_matrix(spec), confusion_matrix(spec), spec.palette
    labelled = total = 0
    examples = []
    for sample, cam, reliable in cams_and_reliable(model, tqdm(dataset, desc="evaluate CAM", unit="img"),
                                                   scales=scales, mining=mining, pool=pool, device=device):
        labels = torch.from_numpy(sample["labels"]).unsqueeze(0)
        cam_label = cam_label_map(cam, labels, bg_threshold=bg_threshold)[0].numpy().astype(np.uint8)
        cm.update(sample["mask"], cam_label)
        reliable_cm.update(np.where(reliable == 255, 255, sample["mask"]), reliable)
        labelled += int((reliable != 255).sum())
        total += reliable.size
        if len(examples) < n_examples:
            examples.append([sample["image"], cam_heatmap(cam[0].numpy()), colorize(cam_label, palette),
                             colorize(reliable, palette), colorize(sample["mask"], palette)])
    report = metrics_report(spec, cm, n_images=len(dataset), bg_threshold=bg_threshold,
                            reliable_precision=reliable_cm.pixel_accuracy(),
                            reliable_fraction=labelled / max(total, 1))
    write_reports(spec, out_dir, report, examples, ["image", "CAM", "CAM label", "reliable", "ground truth"])
    return report
