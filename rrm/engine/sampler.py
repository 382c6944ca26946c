"""Seeded training batches: which images each step sees and how each is augmented, reproducible on resume
and whatever the number of DataLoader workers or DDP processes."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rrm.data.transforms import TrainBatchCollate

Key = tuple[int, int, int]  # (dataset index, batch seed, image seed)


def check_split(batch_size: int, world: int) -> None:
    """The global batch must split evenly over the training processes."""
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} training processes "
                         f"(nproc / torchrun --nproc_per_node): batch_size is the global batch of one step, "
                         f"split evenly across the processes")


class StepBatchSampler(Sampler[list[Key]]):
    """Batches for steps [start, steps): epoch-seeded permutations, so a resumed run sees the same data.

    `batch_size` is the global batch; with `world_size` > 1 rank r gets the r-th of `world_size` equal
    slices. Each index carries its batch's seed (the shared random scale) and a seed for its position in
    the global batch (its flip and crop), so augmentation is reproducible whatever the worker count and
    the same whatever the number of ranks.
    """

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, start: int = 0, *, rank: int = 0,
                 world_size: int = 1) -> None:
        if n < batch_size:
            raise ValueError(f"training split has {n} images, fewer than batch_size {batch_size}")
        check_split(batch_size, world_size)
        self.n, self.batch_size, self.steps, self.seed, self.start = n, batch_size, steps, seed, start
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[Key]]:
        per_epoch = self.n // self.batch_size  # drop_last, as the authors' loader does
        local = self.batch_size // self.world_size
        for step in range(self.start, self.steps):
            epoch, k = divmod(step, per_epoch)
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            batch = order[k * self.batch_size:(k + 1) * self.batch_size].tolist()
            batch_seed = self.seed * 1000003 + step
            positions = range(self.rank * local, (self.rank + 1) * local)
            yield [(batch[p], batch_seed, _image_seed(batch_seed, p)) for p in positions]


def _image_seed(batch_seed: int, position: int) -> int:
    return int(np.random.SeedSequence([batch_seed, position]).generate_state(1, np.uint64)[0])


class SeededDataset(Dataset):
    """Dataset view indexed by (index, batch_seed, image_seed); the seeds travel to the collate function."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> dict:
        index, batch_seed, image_seed = key
        return {**self.base[index], "batch_seed": batch_seed, "image_seed": image_seed}


class SeededCollate:
    """TrainBatchCollate with its draws tied to the global batch rather than to the slice collated here.

    The batch seed draws the one random scale of the batch (the authors' per-batch scale); each image's
    seed then drives its own flip and crop. A rank collating half the batch thus produces exactly the
    images a single process produces for the whole batch.
    """

    def __init__(self, collate: TrainBatchCollate) -> None:
        self.collate = collate

    def __call__(self, samples: list[dict]) -> dict:
        torch.manual_seed(samples[0]["batch_seed"])
        low, high = self.collate.scale_range
        scale = low + (high - low) * torch.rand(()).item()  # TrainBatchCollate's own draw
        fixed = copy.copy(self.collate)
        fixed.scale_range = (scale, scale)  # low == high: every image gets exactly `scale`
        parts = []
        for sample in samples:
            torch.manual_seed(sample["image_seed"])
            parts.append(fixed([sample]))
        return {key: torch.cat([part[key] for part in parts]) if isinstance(value, torch.Tensor)
                else [item for part in parts for item in part[key]] for key, value in parts[0].items()}
