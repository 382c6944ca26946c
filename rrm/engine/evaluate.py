"""Evaluation over a whole split: one confusion matrix at original resolution, 255 ignored.

`evaluate_segmentation` scores a network's predictions with and without dense-CRF post-processing
(one-step RRM, the full-supervision reference and DeepLab use it alike); `evaluate_cam` scores the CAM
pseudo-label baseline and the reliable regions mined from it; `export_pseudo` writes a network's
predictions as VOC palette PNGs for the two-step DeepLab.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm import tqdm

from rrm.data.classes import CLASSES
from rrm.data.normalize import normalize_batch
from rrm.engine.inference import predict_probs_batch
from rrm.engine.metrics import ConfusionMatrix
from rrm.engine.mining import MiningHandle, mine_batch_async
from rrm.figures import cam_heatmap, colorize, per_class_bars, save_grid
from rrm.io import save_mask, write_json, write_text
from rrm.method.cam import cam_label_map, multiscale_cam
from rrm.method.crf import CRFParams
from rrm.method.crf_pool import CRFPool, Handle
from rrm.method.reliable import MiningParams


def _chunks(samples: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive samples, at most `size` at a time, whose images share one size (one batched forward)."""
    chunk: list[dict] = []
    for sample in samples:
        if chunk and (len(chunk) == size or sample["image"].shape != chunk[0]["image"].shape):
            yield chunk
            chunk = []
        chunk.append(sample)
    if chunk:
        yield chunk


def predictions(model: nn.Module, dataset: Sequence[dict], *, scales: Sequence[float], flip: bool,
                crf: CRFParams | None, pool: CRFPool, device: torch.device, desc: str,
                chunk: int = 8) -> Iterator[tuple[dict, np.ndarray, np.ndarray | None]]:
    """Yield (sample, prediction, CRF-refined prediction or None) for every image, in dataset order.

    The CRFs of a chunk run in the pool while the network predicts the next chunk, so neither the
    workers nor this process wait for the other."""
    model.eval()

    def start(samples: list[dict]) -> tuple[list[dict], list[torch.Tensor], Handle | None]:
        probs = predict_probs_batch(model, [s["image"] for s in samples], scales=scales, flip=flip, device=device,
                                    names=[s["name"] for s in samples])
        crfs = (pool.map_async([s["image"] for s in samples], [p.numpy().astype(np.float32) for p in probs], crf)
                if crf is not None else None)
        return samples, probs, crfs

    return _overlapped(_chunks(tqdm(dataset, desc=desc, unit="img"), chunk), start, _with_labels)


def _overlapped(chunks: Iterable[list[dict]], start: Callable[[list[dict]], tuple],
                finish: Callable[..., Iterator]) -> Iterator:
    """Yield from finish(*start(chunk)) for every chunk in order, starting the next chunk (this process's
    network work) before finishing the current one (waiting for the pool): the two overlap."""
    previous = None
    for chunk in chunks:
        started = start(chunk)
        if previous is not None:
            yield from finish(*previous)
        previous = started
    if previous is not None:
        yield from finish(*previous)


def _with_labels(samples: list[dict], probs: list[torch.Tensor], crfs: Handle | None
                 ) -> Iterator[tuple[dict, np.ndarray, np.ndarray | None]]:
    posts = crfs.get() if crfs is not None else [None] * len(samples)
    for sample, prob, post in zip(samples, probs, posts, strict=True):
        yield sample, prob.argmax(0).numpy().astype(np.uint8), None if post is None else post.argmax(0).astype(np.uint8)


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


def evaluate_segmentation(model: nn.Module, dataset: Sequence[dict], out_dir: str | Path, *,
                          scales: Sequence[float] = (1.0,), flip: bool = False, crf: CRFParams | None = None,
                          pool: CRFPool, device: torch.device, n_examples: int = 8) -> dict:
    """Score predictions (and their CRF refinement) against the split's masks; write the reports."""
    cm, cm_crf = ConfusionMatrix(), ConfusionMatrix() if crf is not None else None
    examples = []
    for sample, pred, refined in predictions(model, dataset, scales=scales, flip=flip, crf=crf, pool=pool,
                                             device=device, desc="evaluate"):
        cm.update(sample["mask"], pred)
        if cm_crf is not None:
            cm_crf.update(sample["mask"], refined)
        if len(examples) < n_examples:
            row = [sample["image"], colorize(sample["mask"]), colorize(pred)]
            examples.append(row + ([colorize(refined)] if refined is not None else []))
    report = metrics_report(cm, cm_crf, n_images=len(dataset))
    titles = ["image", "ground truth", "prediction"] + (["prediction+CRF"] if crf is not None else [])
    write_reports(out_dir, report, examples, titles)
    return report


def cams_and_reliable(model: nn.Module, samples: Iterable[dict], *, scales: Sequence[float], mining: MiningParams,
                      pool: CRFPool, device: torch.device | str,
                      chunk: int = 8) -> Iterator[tuple[dict, torch.Tensor, np.ndarray]]:
    """Per sample: the normalised multi-scale CAM, (1, 20, H, W) on the CPU (eq. 1-3), and the reliable regions
    mined from it, (H, W) uint8 in {0..20, 255}. The model is expected in eval mode. Same-size images share
    one forward per scale; a chunk's CRFs run in the pool while the network computes the next chunk's CAMs."""
    @torch.no_grad()  # runs lazily, as the returned iterator is consumed
    def start(group: list[dict]) -> tuple[list[dict], torch.Tensor, MiningHandle]:
        images = np.stack([s["image"] for s in group])
        labels = torch.from_numpy(np.stack([s["labels"] for s in group]))
        x = normalize_batch(images).to(device)
        cams = multiscale_cam(model, x, labels.to(device), scales=scales).cpu()
        return group, cams, mine_batch_async(images, cams, labels, mining, pool)

    return _overlapped(_chunks(samples, chunk), start, _with_reliable)


def _with_reliable(group: list[dict], cams: torch.Tensor, mined: MiningHandle
                   ) -> Iterator[tuple[dict, torch.Tensor, np.ndarray]]:
    for sample, cam, reliable in zip(group, cams, mined.get(), strict=True):
        yield sample, cam[None], reliable


@torch.no_grad()
def evaluate_cam(model: nn.Module, dataset: Sequence[dict], out_dir: str | Path, *, scales: Sequence[float],
                 bg_threshold: float, mining: MiningParams, pool: CRFPool, device: torch.device,
                 n_examples: int = 8) -> dict:
    """Score the CAM pseudo labels (argmax over [bg_threshold, CAMs]) and the reliable regions mined from them.

    Reliable regions are judged by precision on the pixels they label and by the fraction they label.
    """
    model.eval()
    cm, reliable_cm = ConfusionMatrix(), ConfusionMatrix()
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
            examples.append([sample["image"], cam_heatmap(cam[0].numpy()), colorize(cam_label),
                             colorize(reliable), colorize(sample["mask"])])
    report = metrics_report(cm, n_images=len(dataset), bg_threshold=bg_threshold,
                            reliable_precision=reliable_cm.pixel_accuracy(),
                            reliable_fraction=labelled / max(total, 1))
    write_reports(out_dir, report, examples, ["image", "CAM", "CAM label", "reliable", "ground truth"])
    return report


def export_pseudo(model: nn.Module, dataset: Sequence[dict], out_dir: str | Path, report_dir: str | Path, *,
                  scales: Sequence[float], flip: bool, crf: CRFParams | None, pool: CRFPool,
                  device: torch.device, n_examples: int = 8) -> dict:
    """Write the network's labels for every image as palette PNGs; score them where masks exist."""
    out_dir = Path(out_dir)
    cm, scored, examples = ConfusionMatrix(), 0, []
    for sample, pred, refined in predictions(model, dataset, scales=scales, flip=flip, crf=crf, pool=pool,
                                             device=device, desc="export pseudo labels"):
        label = refined if refined is not None else pred
        save_mask(out_dir / f"{sample['name']}.png", label)
        if sample.get("mask") is not None:
            cm.update(sample["mask"], label)
            scored += 1
            if len(examples) < n_examples:
                examples.append([sample["image"], colorize(label), colorize(sample["mask"])])
    report = metrics_report(cm, n_images=len(dataset), n_scored=scored)
    write_reports(report_dir, report, examples, ["image", "pseudo label", "ground truth"])
    return report
