"""`rrm crf`: dense-CRF post-processing of any model's score maps (or of this project's checkpoint)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from rrm.cli import app
from rrm.ops.crf_classes import MIN_PROB
from rrm.ops.score_maps import (
    BadInput,
    Job,
    RefineOptions,
    image_jobs,
    load_image_for,
    load_pair,
    refine,
    refine_file,
    score_jobs,
    write_outputs,
)


def _same_size_batches(jobs: list[Job], options: RefineOptions, size: int,
                       report: list[str]) -> Iterator[tuple[list[Job], list[np.ndarray], list[np.ndarray]]]:
    """Loaded consecutive jobs in batches of up to ``size`` sharing one H x W; bad files go to report."""
    batch: tuple[list[Job], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for job in jobs:
        try:
            image, probs = load_pair(job, options)
        except BadInput as error:
            report.append(str(error))
            continue
        if batch[0] and (len(batch[0]) == size or batch[1][0].shape != image.shape):
            yield batch
            batch = ([], [], [])
        for items, item in zip(batch, (job, image, probs), strict=True):
            items.append(item)
    if batch[0]:
        yield batch


def _pydensecrf_installed() -> bool:
    return importlib.util.find_spec("pydensecrf") is not None


@app.command("crf")
def crf(
    images: Annotated[Path, typer.Option(file_okay=False, exists=True, help="folder of the photos (<name>.jpg/.png)")],
    out: Annotated[Path, typer.Option(file_okay=False, help="writes OUT/<name>.png (and OUT/probs/<name>.npz)")],
    scores: Annotated[Path | None, typer.Option(file_okay=False, exists=True,
                                                help="folder of (K, H, W) score maps <name>.npy/.npz")] = None,
    checkpoint: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                    help="this project's checkpoint, instead of --scores")] = None,
    logits: Annotated[bool, typer.Option("--logits/--probabilities", help="score maps hold logits (softmax first)")
                      ] = False,
    dataset: Annotated[str, typer.Option(help=(
        "voc | coco (rrm.data.datasets): K of the score maps and the masks' palette; with --checkpoint, the "
        "checkpoint's"))] = "voc",
    num_classes: Annotated[int | None, typer.Option(help="K of the score maps (default: the dataset's, VOC 21, COCO 81)")
                           ] = None,
    save_probs: Annotated[bool, typer.Option(help="also write the kept classes' posterior (uint8, .npz)")] = False,
    full_k: Annotated[bool, typer.Option("--full-k", help="run every image's CRF over all K classes")] = False,
    min_prob: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "the CRF keeps background, each image's argmax classes and the classes reaching this probability"))
                        ] = MIN_PROB,
    device: Annotated[str, typer.Option(help="cuda: torch CRF in batches on the GPU; cpu: pydensecrf process pool")
                      ] = "cpu",
    processes: Annotated[int | None, typer.Option(help="CPU worker processes (default: one per core)")] = None,
    batch_size: Annotated[int, typer.Option(help="images per GPU batch (same-size neighbours)")] = 8,
    iterations: Annotated[int, typer.Option(help="mean-field iterations")] = 10,
    gauss_sxy: float = 3.0, gauss_compat: float = 3.0,
    bi_sxy: Annotated[float, typer.Option(help="bilateral kernel's spatial width (defaults: RRM's test-time CRF)")
                      ] = 83.0,
    bi_srgb: float = 5.0, bi_compat: float = 4.0,
) -> None:
    """Refine score maps with a dense CRF; write palette PNGs at the images' size. Each image's CRF runs
    over the classes that can win there (see --min-prob; --full-k for all). Resumable: finished
    outputs are skipped. A bad file is reported on one line and counted; the rest still run."""
    if (scores is None) == (checkpoint is None):
        raise typer.BadParameter("give exactly one of --scores and --checkpoint")
    from rrm.data.datasets import DATASETS

    if dataset not in DATASETS:
        raise typer.BadParameter(f"--dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    model, spec = (None, DATASETS[dataset]) if checkpoint is None else _load_checkpoint(checkpoint, device)
    options = RefineOptions(logits=logits, num_classes=num_classes or spec.num_classes, palette=spec.palette, min_prob=None if full_k else min_prob, crf={
        "iterations": iterations, "gauss_sxy": gauss_sxy, "gauss_compat": gauss_compat,
        "bi_sxy": bi_sxy, "bi_srgb": bi_srgb, "bi_compat": bi_compat})
    out.mkdir(parents=True, exist_ok=True)
    jobs = (score_jobs(scores, images, out, save_probs=save_probs) if scores is not None
            else image_jobs(images, out, save_probs=save_probs))
    todo = [job for job in jobs if not job.done()]
    failed: list[str] = []
    with typer.progressbar(length=len(todo), label="crf") as bar:
        if model is not None:
            _run_checkpoint(model, checkpoint.name, todo, options, device, failed, bar)
        elif device == "cpu" and _pydensecrf_installed():
            _run_pool(todo, options, processes, failed, bar)
        else:  # the torch lattice: batches on the GPU, or the CPU when pydensecrf is not installed
            for batch_jobs, photos, maps in _same_size_batches(todo, options, batch_size, failed):
                for job, result in zip(batch_jobs, refine(photos, maps, options, "torch", device), strict=True):
                    write_outputs(job, options, *result)
                bar.update(len(batch_jobs))
    for line in failed:
        typer.echo(f"failed: {line}")
    typer.echo(f"crf: {len(todo) - len(failed)} written, {len(jobs) - len(todo)} already done, "
               f"{len(failed)} failed, of {len(jobs)} -> {out}")
    if failed:
        raise typer.Exit(code=1)


def _run_pool(todo: list[Job], options: RefineOptions, processes: int | None, failed: list[str], bar) -> None:
    from rrm.ops.crf import cpu_pool

    with cpu_pool(processes) as pool:
        handles = [(job, pool.submit(refine_file, job, options)) for job in todo]
        for job, handle in handles:
            try:
                error = handle.get()
            except Exception as crash:  # a worker that died or raised outside the input checks
                error = f"{job.name}: CRF failed ({type(crash).__name__}: {crash})"
            if error is not None:
                failed.append(error)
            bar.update(1)


def _load_checkpoint(checkpoint: Path, device: str):
    """This project's network on `device` and the dataset (rrm.data.datasets) it was trained on."""
    from rrm.models import deeplab, rrm_net
    from rrm.models.registry import load_model

    model, _, spec = load_model(checkpoint, {**rrm_net.ARCHS, **deeplab.ARCHS}, device)
    return model, spec


def _run_checkpoint(model, name: str, todo: list[Job], options: RefineOptions, device: str, failed: list[str],
                    bar) -> None:
    """Score maps from this project's network (single scale), refined one image at a time."""
    from rrm.engine.inference import predict_probs

    backend = "pydensecrf" if device == "cpu" and _pydensecrf_installed() else "torch"
    for job in todo:
        try:
            image = load_image_for(job)
            probs = predict_probs(model, image, device=device, name=job.name).numpy()
            if probs.shape[0] != options.num_classes:
                raise BadInput(f"{name}: the network predicts {probs.shape[0]} classes, "
                               f"--num-classes is {options.num_classes}")
            write_outputs(job, options, *refine([image], [probs], options, backend, device)[0])
        except (BadInput, ValueError) as error:
            failed.append(str(error))
        bar.update(1)
