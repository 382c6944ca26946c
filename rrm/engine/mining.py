"""Reliable-region mining of a batch through the CRF worker pool (runtime around `rrm.method.reliable`).

The rules themselves (eq. 4-7 and the authors' code rule) are `rrm.method.reliable`'s; this module decides
which work goes to which worker and collects the labels. Like the pool, it imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rrm.data.classes import IGNORE_INDEX
from rrm.method.crf_pool import CRFPool, Handle
from rrm.method.reliable import Prepared, as_numpy, crf_jobs, mine_prepared, prepare
from rrm.settings import MiningParams

if TYPE_CHECKING:
    from torch import Tensor


class MiningHandle:
    """Pending mining of a batch; .get() -> (N, H, W) uint8. Each entry is either a whole image sent
    to a worker (its labels come back) or its CRFs alone, whose rule then runs here as soon as they
    are back, overlapping the CRFs still running."""

    def __init__(
        self,
        pending: list[tuple[int, Handle, Prepared | None]],
        shape: tuple[int, int, int],
        params: MiningParams,
        roi: np.ndarray | None,
    ) -> None:
        self._pending, self._shape, self._params, self._roi = pending, shape, params, roi

    def get(self) -> np.ndarray:
        out = np.empty(self._shape, dtype=np.uint8)
        for n, handle, prepared in self._pending:
            result = handle.get()
            out[n] = result if prepared is None else mine_prepared(*prepared, self._params, result)
        if self._roi is not None:
            out[~self._roi] = IGNORE_INDEX
        return out


def _whole_image_tasks(num: int, workers: int, crfs: int) -> int:
    """How many of the batch's num images (costliest first) go to the pool whole, as one task with
    their crfs CRFs and their rule; the rest go CRF by CRF. Whole images when they split evenly over
    the workers or when an image has a single CRF anyway (paper rule), else CRF by CRF, so that e.g.
    one image's two CRFs run on two workers."""
    return num if crfs == 1 or num % workers == 0 else 0


def mine_batch_async(images: np.ndarray, cams: Tensor | np.ndarray, labels: Tensor | np.ndarray,
                     params: MiningParams, pool: CRFPool, roi: np.ndarray | None = None) -> MiningHandle:
    """Submit the batch's mining to the pool at once and return a handle; see mine_batch.

    When the images split evenly over the workers (N a multiple of pool.workers, always for an
    inline pool) or the rule has one CRF, each image is one task: its CRFs (sharing their kernels,
    see dense_crfs) and its rule run in one worker, which receives the image and the present
    classes' CAMs and returns the uint8 labels, so nothing else crosses processes and this process
    does no mining work while the workers run. Otherwise (e.g. one image on two workers) each CRF is
    a task, so that all workers get some, and the rules run here. Results are the same either way.
    """
    cams_np, labels_np = as_numpy(cams).astype(np.float32, copy=False), as_numpy(labels)
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be an (N, H, W, 3) uint8 array, got {getattr(images, 'shape', images)}"
        )
    if cams_np.ndim != 4 or cams_np.shape[0] != images.shape[0] or cams_np.shape[2:] != images.shape[1:3]:
        raise ValueError(f"cams must be (N, C, H, W) matching images {images.shape}, got {cams_np.shape}")
    if labels_np.shape != cams_np.shape[:2]:
        raise ValueError(f"labels must be {cams_np.shape[:2]}, got {labels_np.shape}")
    if roi is not None:
        roi = as_numpy(roi).astype(bool)
        if roi.shape != images.shape[:3]:
            raise ValueError(f"roi must be (N, H, W) = {images.shape[:3]}, got {roi.shape}")
    num = len(images)
    prepared = [prepare(images[n], cams_np[n], labels_np[n]) for n in range(num)]
    # Costliest images first (cost ~ labels x pixels): the pool's queue then ends on short tasks.
    order = sorted(range(num), key=lambda n: -prepared[n][1].size)
    whole = _whole_image_tasks(num, pool.workers, 1 if params.rule == "paper" else 2)
    pending: list[tuple[int, Handle, Prepared | None]] = []
    for rank, n in enumerate(order):
        if rank < whole:
            pending.append((n, pool.submit(mine_prepared, *prepared[n], params), None))
        else:
            jobs = crf_jobs(*prepared[n][:2], params)
            pending.append((n, pool.map_async(*zip(*jobs, strict=True)), prepared[n]))
    return MiningHandle(pending, (num, *images.shape[1:3]), params, roi)


def mine_batch(images: np.ndarray, cams: Tensor | np.ndarray, labels: Tensor | np.ndarray, params: MiningParams,
               pool: CRFPool, roi: np.ndarray | None = None) -> np.ndarray:
    """Reliable labels for a batch: images (N, H, W, 3) uint8, cams (N, C, H, W) normalised, labels
    (N, C), roi (N, H, W) bool (False = crop padding -> 255). The whole batch goes through the pool
    together (see mine_batch_async for how it is split). Returns (N, H, W) uint8 in {0..C, 255}.
    """
    return mine_batch_async(images, cams, labels, params, pool, roi).get()
