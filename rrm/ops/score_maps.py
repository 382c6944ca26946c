"""Dense-CRF post-processing of saved score maps: pairing, checks, one image's refinement, outputs.

A score map is ``SCORES/<name>.npy`` or ``.npz`` (one array, or one named ``scores``) of shape
(K, H, W), probabilities or logits, for the image ``IMAGES/<name>.{jpg,jpeg,png}`` of the same
H x W. Each image's CRF runs over the classes that can win (:mod:`rrm.ops.crf_classes`; all K when
``RefineOptions.min_prob`` is None). The outputs are ``OUT/<name>.png`` (palette PNG of the argmax,
original size) and, when asked, ``OUT/probs/<name>.npz`` (the kept classes and their posterior as
uint8: :func:`rrm.ops.crf_classes.save_compact`). Every problem with one file raises
:class:`BadInput` naming that file, so a batch can report it and go on. ``refine_file`` is the
unit of work of the CPU process pool (a module-level function: workers import this module only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rrm.io import load_image, save_mask
from rrm.method.crf_params import CRFParams
from rrm.method.crf_torch import dense_crf_torch
from rrm.ops.crf import Backend
from rrm.ops.crf_classes import MIN_PROB, kept_classes, label_map, pruned_crf, save_compact

SCORE_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPEG", ".JPG", ".PNG")


class BadInput(ValueError):
    """One input file that cannot be processed; the message names it."""


@dataclass(frozen=True)
class Job:
    """One image's inputs and outputs."""

    name: str
    scores: Path | None
    image: Path  # where the photo is, or where it was looked for when missing
    mask_out: Path
    probs_out: Path | None

    def done(self) -> bool:
        return self.mask_out.is_file() and (self.probs_out is None or self.probs_out.is_file())


@dataclass(frozen=True)
class RefineOptions:
    """How score maps are read (K = num_classes channels), the (256, 3) palette of the masks written (the
    dataset's, rrm.data.datasets), which CRF settings refine them (pydensecrf's keywords), and the
    kept_classes threshold of each image's CRF (None: the CRF runs over all K classes)."""

    num_classes: int
    palette: np.ndarray = field(repr=False)
    logits: bool = False
    crf: dict = field(default_factory=dict)
    min_prob: float | None = MIN_PROB


def find_image(images_dir: Path, name: str) -> Path:
    """images_dir/<name> with the first image suffix that exists (.jpg when none does)."""
    for suffix in IMAGE_SUFFIXES:
        if (images_dir / f"{name}{suffix}").is_file():
            return images_dir / f"{name}{suffix}"
    return images_dir / f"{name}.jpg"


def score_jobs(scores_dir: Path, images_dir: Path, out_dir: Path, *, save_probs: bool) -> list[Job]:
    """One job per score file in scores_dir (sorted by name), whether or not its image exists."""
    files = sorted(p for p in scores_dir.iterdir() if p.suffix in SCORE_SUFFIXES and p.is_file())
    return [Job(p.stem, p, find_image(images_dir, p.stem), out_dir / f"{p.stem}.png",
                out_dir / "probs" / f"{p.stem}.npz" if save_probs else None) for p in files]


def image_jobs(images_dir: Path, out_dir: Path, *, save_probs: bool) -> list[Job]:
    """One job per image in images_dir (for score maps computed on the fly by a model)."""
    files = sorted(p for p in images_dir.iterdir() if p.suffix in IMAGE_SUFFIXES and p.is_file())
    return [Job(p.stem, None, p, out_dir / f"{p.stem}.png",
                out_dir / "probs" / f"{p.stem}.npz" if save_probs else None) for p in files]


def _read_array(path: Path) -> np.ndarray:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if len(names) == 1 or "scores" in names:
            return loaded[names[0] if len(names) == 1 else "scores"]
    raise BadInput(f"{path.name}: .npz holds {names}; expected one array or one named 'scores'")


def load_scores(path: Path, *, logits: bool, num_classes: int) -> np.ndarray:
    """(K, H, W) float32 probabilities from a score file (softmax over K when ``logits``)."""
    try:
        scores = _read_array(path)
    except BadInput:
        raise
    except Exception as error:  # numpy raises ValueError, OSError, EOFError, zipfile errors for bad files
        raise BadInput(f"{path.name}: unreadable score map ({type(error).__name__}: {error})") from error
    if scores.ndim != 3 or scores.shape[0] != num_classes:
        raise BadInput(f"{path.name}: score map of shape {scores.shape}, expected ({num_classes}, H, W) "
                       f"(--num-classes {num_classes})")
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise BadInput(f"{path.name}: score map holds NaN or infinite values")
    if logits:
        scores = np.exp(scores - scores.max(axis=0, keepdims=True))
        return (scores / scores.sum(axis=0, keepdims=True)).astype(np.float32)
    if scores.min() < 0 or scores.max() > 1 + 1e-3:
        raise BadInput(f"{path.name}: values in [{scores.min():.3g}, {scores.max():.3g}] are not probabilities "
                       "(pass --logits for raw scores)")
    return scores.astype(np.float32)


def load_image_for(job: Job) -> np.ndarray:
    """The job's photo, (H, W, 3) uint8."""
    if not job.image.is_file():
        raise BadInput(f"{job.name}: no image {job.name}.jpg/.jpeg/.png in {job.image.parent}")
    try:
        return load_image(job.image)
    except (OSError, ValueError) as error:
        raise BadInput(f"{job.image.name}: {error}") from error


def load_pair(job: Job, options: RefineOptions) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 photo and (K, H, W) float32 probabilities of one job, checked against each other."""
    assert job.scores is not None
    image = load_image_for(job)
    probs = load_scores(job.scores, logits=options.logits, num_classes=options.num_classes)
    if probs.shape[1:] != image.shape[:2]:
        raise BadInput(f"{job.scores.name}: score map is {probs.shape[1]}x{probs.shape[2]} (HxW), "
                       f"image {job.image.name} is {image.shape[0]}x{image.shape[1]}")
    return image, probs


def write_outputs(job: Job, options: RefineOptions, classes: np.ndarray, posterior: np.ndarray) -> None:
    """Palette PNG of the argmax (options.palette) and, if asked, the compact posterior (both written
    atomically). posterior (K', H, W) is over the class ids ``classes`` (K')."""
    save_mask(job.mask_out, label_map(classes, posterior), options.palette)
    if job.probs_out is not None:
        save_compact(job.probs_out, classes, posterior)


def _classes(probs: np.ndarray, options: RefineOptions) -> np.ndarray:
    return np.arange(len(probs)) if options.min_prob is None else kept_classes(probs, options.min_prob)


def refine(images: list[np.ndarray], probs: list[np.ndarray], options: RefineOptions, backend: Backend,
           device: str = "cpu") -> list[tuple[np.ndarray, np.ndarray]]:
    """The dense CRF of same-size (H, W, 3) photos and (K, H, W) maps, each over its kept classes:
    (classes (K',), posterior (K', H, W)) per image. The torch backend runs the batch at once, each
    image's kept classes packed into the first channels and the padding left out of its CRF."""
    if backend == "pydensecrf":
        return [pruned_crf(image, prob, options.crf, options.min_prob) for image, prob in zip(images, probs, strict=True)]
    kept = [_classes(prob, options) for prob in probs]
    width = max(len(k) for k in kept)
    packed = np.zeros((len(probs), width, *probs[0].shape[1:]), np.float32)
    valid = np.zeros((len(probs), width), bool)
    for n, (prob, classes) in enumerate(zip(probs, kept, strict=True)):
        packed[n, : len(classes)], valid[n, : len(classes)] = prob[classes], True
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device)
    posterior = dense_crf_torch(batch, torch.from_numpy(packed).to(device), CRFParams(**options.crf),
                                valid=torch.from_numpy(valid).to(device)).cpu().numpy()
    return [(classes, posterior[n, : len(classes)]) for n, classes in enumerate(kept)]


def refine_file(job: Job, options: RefineOptions) -> str | None:
    """Load, refine with pydensecrf and write one job (a pool worker's task): None, or the error line."""
    try:
        image, probs = load_pair(job, options)
        write_outputs(job, options, *pruned_crf(image, probs, options.crf, options.min_prob))
    except BadInput as error:
        return str(error)
    return None
