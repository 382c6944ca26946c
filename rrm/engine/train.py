"""Training loops: classification pre-training, one-step RRM, and the fully supervised reference.

One loop serves all three modes; they differ only in the loss of a step:
  cls      multi-label soft-margin loss (the authors' "VOC-classification ResNet-38" weights)
  onestep  cls + CE(bg) + CE(fg) on mined reliable regions + dense energy loss (paper eq. 8)
  supervised  CE on masks: ground truth (the fully supervised reference) or the one-step network's
              pseudo masks (two-step DeepLab, any of ARCHS)
Runs checkpoint atomically every N steps and resume from the last checkpoint after a kill.

Under torchrun (see rrm.engine.distributed) the model is wrapped in DistributedDataParallel and `batch_size` stays
the global batch of one step: each rank trains on its slice, every image is augmented as a single process
would augment it, and pixel-averaged losses are normalised over the global batch, so N processes follow
the single-process schedule (up to dropout masks, drawn per rank). Rank 0 alone logs and writes files.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from rrm.data.classes import IGNORE_INDEX
from rrm.data.transforms import PSA_COLOR_JITTER, PSA_RESIZE_LONG, TrainBatchCollate
from rrm.data.voc import VOCSegmentation
from rrm.engine import distributed
from rrm.engine.inference import segmentation_logits
from rrm.io import load_torch, save_torch
from rrm.method.cam import multiscale_cam
from rrm.method.crf import CRFPool
from rrm.method.energy_loss import dense_energy_loss
from rrm.method.losses import classification_loss, split_cross_entropy, split_targets
from rrm.method.reliable import MiningParams, mine_batch, mine_cam_only
from rrm.method.reliable_torch import mine_batch_torch, mine_cam_only_torch
from rrm.models.deeplab import build_deeplab
from rrm.models.rrm_net import build_rrm
from rrm.models.trainable import PSA_FROZEN, freeze_modules
from rrm.models.weights import load_rrm_weights

MODES = ("cls", "onestep", "supervised")
AMP = ("none", "bf16")
ARCHS = ("resnet38", "vgg16_largefov", "resnet101_v2")


@dataclass
class TrainSettings:
    mode: str
    data_root: str
    split: str
    out_model: str
    checkpoint: str
    live_dir: str | None = None
    arch: str = "resnet38"
    mask_dir: str | None = None
    width: float = 0.125
    batch_norm: bool = False  # DeepLab-LargeFOV only: VGG-16 with BatchNorm (torchvision's vgg16_bn)
    init: str | None = None
    freeze_bn: bool = True
    dropout: bool = True  # ResNet-38's Dropout2d layers, DeepLab-LargeFOV's fc6/fc7 Dropout (the published nets have them)
    steps: int = 100
    batch_size: int = 4
    crop_size: int = 96
    scale_range: tuple[float, float] = (0.7, 1.3)
    # PSA's classifier recipe (mode cls from pretrained weights when left None): per-image long side,
    # ColorJitter, top-level modules not trained; otherwise the per-batch scale, no jitter, all trained
    resize_long: tuple[int, int] | None = None
    color_jitter: tuple[float, float, float, float] | None = None
    frozen: tuple[str, ...] | None = None
    lr: float = 7e-4
    weight_decay: float = 1e-5
    momentum: float = 0.0
    optimizer: str = "sgd"
    poly_power: float = 0.9
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "cpu"
    amp: str = "none"  # "bf16": autocast of the network forward and CAM (losses stay fp32)
    num_workers: int = 0
    nproc: int = 1  # processes a stage launches under torchrun; train() itself uses torchrun's world size
    loss: str = "joint"
    pseudo: str = "rrm"
    cam_scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    mining: MiningParams = field(default_factory=lambda: MiningParams(rule="code"))
    pool_processes: int = 2
    energy: dict = field(default_factory=lambda: {"sigma_rgb": 15.0, "sigma_xy": 100.0, "scale": 0.5,
                                                  "weight": 1e-7})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"train mode {self.mode!r}: expected one of {MODES}")
        if self.arch not in ARCHS or (self.arch != "resnet38" and self.mode != "supervised"):
            raise ValueError(f"arch {self.arch!r} with mode {self.mode!r}: expected resnet38, or a DeepLab "
                             f"arch {ARCHS[1:]} with mode 'supervised'")
        if self.amp not in AMP:
            raise ValueError(f"amp {self.amp!r}: expected one of {AMP}")
        _check_split(self.batch_size, self.nproc)
        psa = self.mode == "cls" and self.init is not None
        self.resize_long = self.resize_long or (PSA_RESIZE_LONG if psa else None)
        self.color_jitter = self.color_jitter or (PSA_COLOR_JITTER if psa else None)
        self.frozen = tuple(PSA_FROZEN if psa else ()) if self.frozen is None else tuple(self.frozen)


def _check_split(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} training processes "
                         f"(nproc / torchrun --nproc_per_node): batch_size is the global batch of one step, "
                         f"split evenly across the processes")


Key = tuple[int, int, int]  # (dataset index, batch seed, image seed)


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
        _check_split(batch_size, world_size)
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


class _Seeded(Dataset):
    """Dataset view indexed by (index, batch_seed, image_seed); the seeds travel to the collate function."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> dict:
        index, batch_seed, image_seed = key
        return {**self.base[index], "batch_seed": batch_seed, "image_seed": image_seed}


class _SeededCollate:
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


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": torch.tensor(np.random.get_state()[1].astype(np.int64)),
            "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))


def settings_fingerprint(s: TrainSettings) -> str:
    """What a checkpoint must match to be resumed (paths and worker counts may change)."""
    skip = {"out_model", "checkpoint", "live_dir", "num_workers", "pool_processes", "device", "nproc"}
    return repr(sorted((k, repr(v)) for k, v in vars(s).items() if k not in skip))


def build_model(s: TrainSettings, device: torch.device) -> nn.Module:
    """ResNet-38 RRM net (init: PSA ImageNet / RRM classification weights or one of our checkpoints), or a
    DeepLab (init: a torchvision-format ImageNet file)."""
    if s.arch == "resnet38":
        model = build_rrm(width=s.width, freeze_bn=s.freeze_bn, dropout=s.dropout)
        if s.init:
            load_rrm_weights(model, s.init)
        freeze_modules(model, s.frozen)
    else:
        model = build_deeplab(arch=s.arch, width=s.width, weights=s.init, freeze_bn=s.freeze_bn,
                              batch_norm=s.batch_norm, dropout=s.dropout)
    return model.to(device)


def make_optimizer(model: nn.Module, s: TrainSettings) -> tuple[torch.optim.Optimizer,
                                                               torch.optim.lr_scheduler.LRScheduler]:
    """SGD with a poly schedule over the recipe's groups: ResNet-38's four (x1/x2/x10/x20), DeepLab's x1/x10.

    `optimizer: adam` (same groups and schedule) is for stages trained from random weights, where it
    converges in far fewer steps; the paper's recipes are SGD.
    """
    groups = model.param_groups(s.lr, s.weight_decay)
    if s.optimizer == "adam":
        # Adam's step size does not scale with the gradient, so the SGD recipe's x2/x20 bias multipliers are
        # dropped. Fine-tuning (init given) keeps x10 for the new layers. From scratch ResNet-38 treats all
        # layers alike; a DeepLab keeps x10 for its classifier (embedded two-step val mIoU after 400 steps:
        # 0.44 with it, 0.10 without).
        new_mult = 10 if s.init or s.arch != "resnet38" else 1
        groups = [group | {"lr": lr, "initial_lr": lr} for group in groups
                  for lr in [s.lr * (new_mult if group["name"].startswith("new") else 1)]]
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=s.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=s.steps, power=s.poly_power)
    return optimizer, scheduler


def _global_pixel_ce(logits: torch.Tensor, targets: list[torch.Tensor]) -> list[torch.Tensor]:
    """Under DDP: the CE of each target map averaged over the labelled pixels of the GLOBAL batch.

    A per-rank pixel mean would weight ranks equally whatever their labelled-pixel counts (padding and
    void differ per slice). Each rank divides its pixel sum by the all-reduced count times the world size
    instead; DDP averages the ranks' gradients, so the update equals the single-process pixel mean.
    """
    world = dist.get_world_size()
    counts = torch.stack([(target != IGNORE_INDEX).sum() for target in targets])
    dist.all_reduce(counts)
    return [logits.sum() * 0.0 if count == 0 else  # no labelled pixel anywhere: zero, still in the graph
            F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum") * (world / count)
            for target, count in zip(targets, counts.tolist(), strict=True)]


class _Bf16Cam(nn.Module):
    """The network's CAM head under bf16 autocast, returned in fp32: the CAMs' resizing, averaging and
    normalisation, whose values mining thresholds and ranks, stay fp32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return {"cam": self.model(x)["cam"].float()}


def step_losses(model: nn.Module, batch: dict, s: TrainSettings, pool: CRFPool | None,
                device: torch.device) -> dict[str, torch.Tensor]:
    """The loss terms of one step; their sum is what is optimised.

    `model` may be DistributedDataParallel-wrapped; pixel-averaged terms then average over the global batch.
    """
    ddp = isinstance(model, DistributedDataParallel)
    cuda = device.type == "cuda"
    # channels_last suits cuDNN's convolutions (the model is converted in _train); the host tensors
    # are pinned by the DataLoader, so the copies overlap with the GPU's work
    images = batch["image"].to(device, non_blocking=cuda,
                               memory_format=torch.channels_last if cuda else torch.preserve_format)
    labels = batch["labels"].to(device, non_blocking=cuda)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp == "bf16")
    crop = images.shape[-2:]
    if s.mode == "supervised":
        with autocast:
            logits = segmentation_logits(model, images)
        seg = F.interpolate(logits.float(), crop, mode="bilinear", align_corners=False)
        mask = batch["mask"].to(device, non_blocking=cuda)
        if ddp:
            return {"ce": _global_pixel_ce(seg, [mask])[0]}
        return {"ce": F.cross_entropy(seg, mask, ignore_index=IGNORE_INDEX)}
    with autocast:
        out = model(images)
    losses = {"cls": classification_loss(out["cls"].float(), labels)}
    if s.mode == "cls":
        return losses
    bare = getattr(model, "module", model)  # extra forwards through DDP would sync buffers for nothing
    with torch.no_grad():
        cam = multiscale_cam(bare if s.amp == "none" else _Bf16Cam(bare), images, labels, scales=s.cam_scales,
                             scale1_cam=out["cam"].float())
    raw = batch["raw"].to(device, non_blocking=cuda)
    roi = batch["roi"].to(device, non_blocking=cuda)
    if s.mining.crf_backend == "torch":  # on the device; labels from the host: no sync (see reliable_torch)
        if s.pseudo == "rrm":
            target = mine_batch_torch(raw, cam, batch["labels"], s.mining)
        else:
            target = mine_cam_only_torch(cam, batch["labels"], s.mining)
    else:
        raw_uint8 = batch["raw"].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
        if s.pseudo == "rrm":  # the whole crop, padding included: the ROI only enters the energy loss
            pseudo = mine_batch(raw_uint8, cam.cpu(), labels.cpu(), s.mining, pool)
        else:
            pseudo = mine_cam_only(cam.cpu(), labels.cpu(), s.mining)
        target = torch.from_numpy(pseudo).long().to(device)
    seg = F.interpolate(out["seg"].float(), crop, mode="bilinear", align_corners=False)
    if ddp:  # split_cross_entropy's bg / fg maps, each averaged over the global batch
        losses["ce_bg"], losses["ce_fg"] = _global_pixel_ce(seg, list(split_targets(target, IGNORE_INDEX)))
    else:
        losses["ce_bg"], losses["ce_fg"] = split_cross_entropy(seg, target)
    if s.loss == "joint":  # a per-image mean already: rank means average to the global one
        losses["energy"] = dense_energy_loss(
            raw, torch.softmax(seg, dim=1), roi, target,
            sigma_rgb=s.energy["sigma_rgb"], sigma_xy=s.energy["sigma_xy"], scale=s.energy["scale"],
            weight=s.energy["weight"])
    return losses


def _gather_rng() -> list[dict]:
    """Every rank's RNG state (rank order), so a resumed DDP run keeps each rank's dropout stream."""
    state = _rng_state()
    if distributed.world_size() == 1:
        return [state]
    states: list = [None] * distributed.world_size()
    dist.all_gather_object(states, state)
    return states


def _restore_rng(saved: list[dict] | dict, rank: int) -> None:
    saved = [saved] if isinstance(saved, dict) else saved
    if rank < len(saved):  # a rank the saved run did not have keeps its fresh seed
        _set_rng_state(saved[rank])


def train(s: TrainSettings) -> dict:
    """Run (or resume) a training stage and write the final weights to `s.out_model`.

    Started by torchrun with several processes, it trains with DistributedDataParallel (see module doc).
    """
    _check_split(s.batch_size, distributed.torchrun_world_size())  # before any process starts work
    with distributed.process_group(s.device) as device:
        return _train(s, device)


def _train(s: TrainSettings, device: torch.device) -> dict:
    from dvclive import Live  # imported here: dvclive pulls in DVC, which the library doesn't otherwise need

    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    # Rank 0 seeds as a single process does; DDP copies its initial weights to the others, whose own seeds
    # only give them their own dropout masks.
    torch.manual_seed(s.seed + rank)
    np.random.seed(s.seed + rank)
    random.seed(s.seed + rank)
    dataset = VOCSegmentation(s.data_root, s.split, mask_dir=s.mask_dir, weak=s.mode != "supervised")
    model = build_model(s, device)
    if device.type == "cuda":  # NHWC activations: cuDNN's fast convolution layouts (bf16 tensor cores)
        model = model.to(memory_format=torch.channels_last)
    if world > 1 and not s.freeze_bn:
        if device.type == "cuda":  # batch statistics over the global batch, as one process computes them
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif main:  # torch's SyncBatchNorm is GPU-only
            print("note: BatchNorm is trained on CPU with several processes: each process normalises with "
                  "the statistics of its own slice of the batch (freeze_bn or one process avoids this)")
    optimizer, scheduler = make_optimizer(model, s)
    start = 0
    checkpoint = Path(s.checkpoint)
    state = load_torch(checkpoint) if checkpoint.is_file() else None  # every rank loads it
    if state is not None and state.get("settings") != settings_fingerprint(s):
        if main:
            print(f"{checkpoint}: written with other settings; starting over")
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state["rng"], rank)
        start = int(state["step"])
        if main:
            print(f"resuming {s.mode} training from {checkpoint} at step {start}/{s.steps}")
    # DDP's constructor is a collective: no rank passes it (and later writes a checkpoint) before all loaded.
    # cls and supervised leave one RRMNet head without gradient (seg / fc8), which DDP must be told to expect
    # (it then warns it found none: the head is in the outputs, only the loss ignores it).
    net: nn.Module = model if world == 1 else DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=s.arch == "resnet38" and s.mode != "onestep")
    sampler = StepBatchSampler(len(dataset), s.batch_size, s.steps, s.seed, start, rank=rank, world_size=world)
    collate = _SeededCollate(TrainBatchCollate(crop_size=s.crop_size, scale_range=tuple(s.scale_range),
                                               resize_long=s.resize_long, color_jitter=s.color_jitter))
    loader = DataLoader(_Seeded(dataset), batch_sampler=sampler, collate_fn=collate, num_workers=s.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=s.num_workers > 0)
    pool = (CRFPool(s.pool_processes) if s.mode == "onestep" and s.pseudo == "rrm"
            and s.mining.crf_backend == "pydensecrf" else None)  # one per rank
    live = Live(s.live_dir, dvcyaml=False, save_dvc_exp=False, resume=start > 0) if s.live_dir and main else None
    net.train()
    history: dict[str, float] = {}
    try:
        progress = tqdm(loader, total=len(sampler), desc=f"train {s.mode}", unit="step", disable=not main)
        for step, batch in enumerate(progress, start=start + 1):
            losses = step_losses(net, batch, s, pool, device)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            scheduler.step()
            values = torch.stack([v.detach() for v in (*losses.values(), total)])
            if world > 1:  # log the global batch's losses: the mean over ranks
                dist.all_reduce(values)
                values /= world
            history = dict(zip([*losses, "total"], values.tolist(), strict=True))
            progress.set_postfix({k: f"{v:.3f}" for k, v in history.items()})
            if live is not None:
                for name, value in history.items():
                    live.log_metric(f"loss/{name}", value)
                live.log_metric("lr", optimizer.param_groups[0]["lr"])
                live.next_step()
            if step % s.checkpoint_every == 0 or step == s.steps:
                rng = _gather_rng()
                if main:
                    save_torch(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                            "scheduler": scheduler.state_dict(), "step": step, "rng": rng,
                                            "settings": settings_fingerprint(s)})
    finally:
        if pool is not None:
            pool.close()
        if live is not None:
            live.end()
    if main:
        save_torch(s.out_model, {"model": model.state_dict(), "meta": {"mode": s.mode, "width": s.width,
                                                                       "steps": s.steps, "arch": s.arch,
                                                                       "batch_norm": s.batch_norm}})
        checkpoint.unlink(missing_ok=True)  # finished: only the final model remains
    distributed.barrier()  # no rank returns (and ends the job) before rank 0's files are written
    return history
