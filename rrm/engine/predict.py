"""Predictions people use: masks + overlays for any images, and the VOC evaluation-server export."""

from __future__ import annotations

import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from rrm.data.datasets import VOC, DatasetSpec
from rrm.data.voc import image_path, read_split
from rrm.engine.inference import predict_probs
from rrm.figures import overlay
from rrm.io import atomic_path, load_image, save_mask
from rrm.method.crf import dense_crf
from rrm.settings import CRFParams

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SERVER_DIR = Path("results/VOC2012/Segmentation")


@dataclass
class PredictSummary:
    """Images written, and images skipped with the reason (the error message without the path)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand folders (their image files, sorted) and list files (one path per line); keep image files."""
    paths: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            paths += sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif entry.suffix == ".txt":
            paths += [Path(line.strip()) for line in entry.read_text().splitlines() if line.strip()]
        elif entry.exists():
            paths.append(entry)
        else:
            raise FileNotFoundError(f"{entry}: no such image, folder or list file")
    return paths


def label_image(model: nn.Module, image: np.ndarray, *, scales: Sequence[float], flip: bool,
                crf: CRFParams | None, device: torch.device | str, name: str) -> np.ndarray:
    """(H, W) uint8 labels for one image at its own size, optionally refined by the dense CRF."""
    probs = predict_probs(model, image, scales=scales, flip=flip, device=device, name=name)
    if crf is not None:
        probs = torch.from_numpy(dense_crf(image, probs.numpy().astype(np.float32), crf))
    return probs.argmax(0).numpy().astype(np.uint8)


def predict_images(model: nn.Module, paths: Sequence[Path], out_dir: str | Path, *, spec: DatasetSpec,
                   scales: Sequence[float] = (1.0,), flip: bool = False, crf: CRFParams | None = None,
                   device: torch.device | str = "cpu") -> PredictSummary:
    """Write out_dir/masks/<stem>.png and out_dir/overlays/<stem>.jpg, in the palette of `spec` (the dataset
    the network was trained on), for every readable image.

    An unreadable or too-small image is skipped with a warning and counted, not fatal to the batch.
    """
    out_dir, summary = Path(out_dir), PredictSummary()
    model.eval()
    for path in tqdm(paths, desc="predict", unit="img"):
        try:
            image = load_image(path)
            label = label_image(model, image, scales=scales, flip=flip, crf=crf, device=device, name=str(path))
        except (OSError, ValueError) as error:
            # our messages start with the file, PIL's quote it: the skip line names it once
            reason = str(error).removeprefix(f"{path}: ").replace(f" '{path}'", "")
            warnings.warn(f"skipped {path}: {reason}", stacklevel=2)
            summary.skipped.append((path, reason))
            continue
        save_mask(out_dir / "masks" / f"{path.stem}.png", label, spec.palette)
        with atomic_path(out_dir / "overlays" / f"{path.stem}.jpg") as tmp:
            Image.fromarray(overlay(image, label, spec.palette)).save(tmp, format="JPEG", quality=90)
        summary.written.append(path)
    return summary


def export_voc_server(model: nn.Module, root: str | Path, split: str, out_dir: str | Path, *,
                      comp: str = "comp6", scales: Sequence[float] = (1.0,), flip: bool = False,
                      crf: CRFParams | None = None, device: torch.device | str = "cpu") -> Path:
    """Predict every image of `split` into the devkit's results layout and pack the archive the server takes.

    Writes out_dir/results/VOC2012/Segmentation/<comp>_<split>_cls/<id>.png and out_dir/results.tgz
    (comp6: trained with data beyond VOC's own, e.g. SBD; comp5: VOC data only). `model` is a VOC network.
    """
    root, out_dir = Path(root), Path(out_dir)
    target = out_dir / SERVER_DIR / f"{comp}_{split}_cls"
    model.eval()
    for name in tqdm(read_split(root, split), desc=f"export {split}", unit="img"):
        image = load_image(image_path(root, name, VOC, split))
        label = label_image(model, image, scales=scales, flip=flip, crf=crf, device=device, name=name)
        save_mask(target / f"{name}.png", label, VOC.palette)
    archive = out_dir / "results.tgz"
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        tar.add(out_dir / "results", arcname="results")
    return archive
