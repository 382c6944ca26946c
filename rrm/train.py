"""Training loops: classification pre-training, one-step RRM, and the fully supervised reference.

One loop serves all three modes; they differ only in the loss of a step:
  cls      multi-label soft-margin loss (the authors' "VOC-classification ResNet-38" weights)
  onestep  cls + CE(bg) + CE(fg) on mined reliable regions + dense energy loss (paper eq. 8)
  supervised  CE on masks: ground truth (the fully supervised reference) or the one-step network's
              pseudo masks (two-step DeepLab, any of ARCHS)
Runs checkpoint atomically every N steps and resume from the last checkpoint after a kill.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from rrm.cam import multiscale_cam
from rrm.crf import CRFPool
from rrm.data.transforms import TrainBatchCollate
from rrm.data.voc import VOCSegmentation
from rrm.energy_loss import dense_energy_loss
from rrm.inference import segmentation_logits
from rrm.io import load_torch, save_torch
from rrm.losses import classification_loss, split_cross_entropy
from rrm.models.deeplab import build_deeplab
from rrm.models.rrm_net import build_rrm
from rrm.models.weights import load_rrm_weights
from rrm.reliable import MiningParams, mine_batch, mine_cam_only

MODES = ("cls", "onestep", "supervised")
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
    init: str | None = None
    freeze_bn: bool = True
    steps: int = 100
    batch_size: int = 4
    crop_size: int = 96
    scale_range: tuple[float, float] = (0.7, 1.3)
    lr: float = 7e-4
    weight_decay: float = 1e-5
    momentum: float = 0.0
    optimizer: str = "sgd"
    poly_power: float = 0.9
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0
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


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches for steps [start, steps): epoch-seeded permutations, so a resumed run sees the same data.

    Each index carries a per-batch seed, so augmentation is reproducible whatever the worker count.
    """

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, start: int = 0) -> None:
        if n < batch_size:
            raise ValueError(f"training split has {n} images, fewer than batch_size {batch_size}")
        self.n, self.batch_size, self.steps, self.seed, self.start = n, batch_size, steps, seed, start

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.n // self.batch_size  # drop_last, as the authors' loader does
        for step in range(self.start, self.steps):
            epoch, k = divmod(step, per_epoch)
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            batch = order[k * self.batch_size:(k + 1) * self.batch_size].tolist()
            yield [(i, self.seed * 1000003 + step) for i in batch]


class _Seeded(Dataset):
    """Dataset view indexed by (index, batch_seed) pairs; the seed travels to the collate function."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        return {**self.base[index], "seed": seed}


class _SeededCollate:
    def __init__(self, collate: TrainBatchCollate) -> None:
        self.collate = collate

    def __call__(self, samples: list[dict]) -> dict:
        torch.manual_seed(samples[0]["seed"])
        return self.collate(samples)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": torch.tensor(np.random.get_state()[1].astype(np.int64)),
            "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))


def settings_fingerprint(s: TrainSettings) -> str:
    """What a checkpoint must match to be resumed (paths and worker counts may change)."""
    skip = {"out_model", "checkpoint", "live_dir", "num_workers", "pool_processes", "device"}
    return repr(sorted((k, repr(v)) for k, v in vars(s).items() if k not in skip))


def build_model(s: TrainSettings, device: torch.device) -> nn.Module:
    """ResNet-38 RRM net (init: PSA ImageNet / RRM classification weights or one of our checkpoints), or a
    DeepLab (init: a torchvision-format ImageNet file)."""
    if s.arch == "resnet38":
        model = build_rrm(width=s.width, freeze_bn=s.freeze_bn)
        if s.init:
            load_rrm_weights(model, s.init)
    else:
        model = build_deeplab(arch=s.arch, width=s.width, weights=s.init, freeze_bn=s.freeze_bn)
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
        # dropped. Fine-tuning (init given) keeps x10 for the new layers; from scratch all layers are new.
        groups = [group | {"lr": lr, "initial_lr": lr} for group in groups
                  for lr in [s.lr * (10 if s.init and group["name"].startswith("new") else 1)]]
        optimizer: torch.optim.Optimizer = torch.optim.Adam(groups, lr=s.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=s.steps, power=s.poly_power)
    return optimizer, scheduler


def step_losses(model: nn.Module, batch: dict, s: TrainSettings, pool: CRFPool | None,
                device: torch.device) -> dict[str, torch.Tensor]:
    """The loss terms of one step; their sum is what is optimised."""
    images, labels = batch["image"].to(device), batch["labels"].to(device)
    crop = images.shape[-2:]
    if s.mode == "supervised":
        seg = F.interpolate(segmentation_logits(model, images), crop, mode="bilinear", align_corners=False)
        return {"ce": F.cross_entropy(seg, batch["mask"].to(device), ignore_index=255)}
    out = model(images)
    losses = {"cls": classification_loss(out["cls"], labels)}
    if s.mode == "cls":
        return losses
    with torch.no_grad():
        cam = multiscale_cam(model, images, labels, scales=s.cam_scales, scale1_cam=out["cam"])
    raw_uint8 = batch["raw"].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
    roi = batch["roi"].numpy() > 0
    if s.pseudo == "rrm":
        pseudo = mine_batch(raw_uint8, cam.cpu(), labels.cpu(), s.mining, pool, roi=roi)
    else:
        pseudo = mine_cam_only(cam.cpu(), labels.cpu(), s.mining, roi=roi)
    target = torch.from_numpy(pseudo).long().to(device)
    seg = F.interpolate(out["seg"], crop, mode="bilinear", align_corners=False)
    losses["ce_bg"], losses["ce_fg"] = split_cross_entropy(seg, target)
    if s.loss == "joint":
        losses["energy"] = dense_energy_loss(
            batch["raw"].to(device), torch.softmax(seg, dim=1), batch["roi"].to(device), target,
            sigma_rgb=s.energy["sigma_rgb"], sigma_xy=s.energy["sigma_xy"], scale=s.energy["scale"],
            weight=s.energy["weight"])
    return losses


def train(s: TrainSettings) -> dict:
    """Run (or resume) a training stage and write the final weights to `s.out_model`."""
    from dvclive import Live  # imported here: dvclive pulls in DVC, which the library doesn't otherwise need

    device = torch.device(s.device)
    torch.manual_seed(s.seed)
    np.random.seed(s.seed)
    random.seed(s.seed)
    dataset = VOCSegmentation(s.data_root, s.split, mask_dir=s.mask_dir, weak=s.mode != "supervised")
    model = build_model(s, device)
    optimizer, scheduler = make_optimizer(model, s)
    start = 0
    checkpoint = Path(s.checkpoint)
    state = load_torch(checkpoint) if checkpoint.is_file() else None
    if state is not None and state.get("settings") != settings_fingerprint(s):
        print(f"{checkpoint}: written with other settings; starting over")
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
        print(f"resuming {s.mode} training from {checkpoint} at step {start}/{s.steps}")
    sampler = StepBatchSampler(len(dataset), s.batch_size, s.steps, s.seed, start)
    collate = _SeededCollate(TrainBatchCollate(crop_size=s.crop_size, scale_range=tuple(s.scale_range)))
    loader = DataLoader(_Seeded(dataset), batch_sampler=sampler, collate_fn=collate, num_workers=s.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=s.num_workers > 0)
    pool = CRFPool(s.pool_processes) if s.mode == "onestep" and s.pseudo == "rrm" else None
    live = Live(s.live_dir, dvcyaml=False, save_dvc_exp=False, resume=start > 0) if s.live_dir else None
    model.train()
    history: dict[str, float] = {}
    try:
        progress = tqdm(loader, total=len(sampler), desc=f"train {s.mode}", unit="step")
        for step, batch in enumerate(progress, start=start + 1):
            losses = step_losses(model, batch, s, pool, device)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            scheduler.step()
            history = {k: v.item() for k, v in losses.items()} | {"total": total.item()}
            progress.set_postfix({k: f"{v:.3f}" for k, v in history.items()})
            if live is not None:
                for name, value in history.items():
                    live.log_metric(f"loss/{name}", value)
                live.log_metric("lr", optimizer.param_groups[0]["lr"])
                live.next_step()
            if step % s.checkpoint_every == 0 or step == s.steps:
                save_torch(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "scheduler": scheduler.state_dict(), "step": step, "rng": _rng_state(),
                                        "settings": settings_fingerprint(s)})
    finally:
        if pool is not None:
            pool.close()
        if live is not None:
            live.end()
    save_torch(s.out_model, {"model": model.state_dict(), "meta": {"mode": s.mode, "width": s.width,
                                                                   "steps": s.steps, "arch": s.arch}})
    checkpoint.unlink(missing_ok=True)  # finished: only the final model remains
    return history
