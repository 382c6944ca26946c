"""A network's predictions over a split, with their dense-CRF refinement computed alongside in the CRF pool."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from rrm.engine.inference import predict_probs_batch
from rrm.method.crf_pool import CRFPool, Handle
from rrm.settings import CRFParams


def chunks(samples: Iterable[dict], size: int) -> Iterator[list[dict]]:
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

    return overlapped(chunks(tqdm(dataset, desc=desc, unit="img"), chunk), start, _with_labels)


def overlapped(chunks: Iterable[list[dict]], start: Callable[[list[dict]], tuple],
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
