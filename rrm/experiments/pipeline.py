"""params.yaml sections -> library settings. Stages and the CLI both go through these, so a setting is
read in exactly one place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from rrm.data.voc import VOCSegmentation
from rrm.experiments.settings import lookup, resolve_device
from rrm.io import load_torch
from rrm.method.crf import CRFParams
from rrm.method.reliable import MiningParams
from rrm.models.rrm_net import build_rrm

# rrm.engine.train and rrm.models.deeplab import torchvision (augmentation, ResNet blocks), whose import pulls in
# torch._dynamo (~3 s): they are imported where used, so the evaluation stages start without them.
if TYPE_CHECKING:
    from rrm.engine.train import TrainSettings

TRAIN_KEYS = ("freeze_bn", "dropout", "optimizer", "steps", "batch_size", "crop_size", "scale_range", "lr",
              "weight_decay", "momentum", "poly_power", "checkpoint_every")


def crf_params(section: dict) -> CRFParams:
    return CRFParams(**section)


def mining_params(params: dict) -> MiningParams:
    m = params["mining"]
    return MiningParams(rule=m["rule"], alpha_ratio=float(params["alpha_ratio"]), gamma=m["gamma"],
                        gamma_low=m["gamma_low"], gamma_high=m["gamma_high"], cam_min=m["cam_min"],
                        bg_confident=m["bg_confident"], crf_confident=m["crf_confident"],
                        crf=crf_params(m["crf"]), crf_backend=m.get("crf_backend", "pydensecrf"))


def device(params: dict) -> torch.device:
    return resolve_device(params["device"])


def dataset(params: dict, split_key: str, *, weak: bool = False, mask_dir: str | None = None) -> VOCSegmentation:
    """The split named by data.<split_key> (e.g. 'val_split') of the configured VOC-layout root."""
    data = params["data"]
    split = data.get(split_key, split_key)
    return VOCSegmentation(data["root"], split, mask_dir=mask_dir or data.get("mask_dir"), weak=weak)


def train_settings(params: dict, stage: str, *, mode: str, out_model: str, init: str | None = None,
                   arch: str = "resnet38", mask_dir: str | None = None, split: str | None = None) -> TrainSettings:
    from rrm.engine.train import TrainSettings

    section = params[stage]
    extra = {}
    if mode == "onestep":
        extra = {"loss": section["loss"], "pseudo": section["pseudo"], "energy": dict(section["energy"]),
                 "cam_scales": tuple(params["mining"]["cam_scales"]), "mining": mining_params(params),
                 "pool_processes": params["mining"]["pool_processes"]}
    return TrainSettings(
        mode=mode, arch=arch, data_root=params["data"]["root"], split=split or params["data"]["train_split"],
        mask_dir=mask_dir or params["data"].get("mask_dir"), out_model=out_model,
        checkpoint=f"checkpoints/{stage}/last.pt", live_dir=f"reports/{stage}/live",
        width=float(lookup(params, "deeplab.width") if arch != "resnet38" else params["model"]["width"]),
        batch_norm=arch == "vgg16_largefov" and bool(lookup(params, "deeplab.batch_norm", False)),
        init=init, seed=int(params["seed"]), device=str(device(params)), amp=str(params.get("amp", "none")),
        num_workers=int(params["data"]["num_workers"]), nproc=int(params["nproc"]),
        **{key: section[key] for key in TRAIN_KEYS if key in section}, **extra)


def load_model(path: str | Path, map_device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a one-step (ResNet-38) or DeepLab network from one of our checkpoints."""
    state = load_torch(path)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not meta or "model" not in state:
        raise ValueError(f"{path}: not an rrm checkpoint (expected 'model' and 'meta' entries)")
    if meta["arch"] == "resnet38":
        model = build_rrm(width=meta["width"])
    else:
        from rrm.models.deeplab import build_deeplab

        model = build_deeplab(arch=meta["arch"], width=meta["width"], batch_norm=meta.get("batch_norm", False))
    model.load_state_dict(state["model"])
    return model.to(map_device).eval()
