"""The run of a training stage, built from params.yaml's dataclasses (rrm.settings) and the paths the stage's
command passes; the stage scripts pass the network family and the loss they train."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rrm.data.datasets import image_labels_file
from rrm.engine.device import resolve_device
from rrm.engine.distributed import launch
from rrm.engine.recipe import TrainSettings
from rrm.engine.steps import Steps
from rrm.engine.train import train
from rrm.models.registry import Arch
from rrm.settings import RRM_ARCH, Params

MODES = {"train_cls": "cls", "train_onestep": "onestep", "train_full": "supervised", "train_deeplab": "supervised"}


def training_run(p: Params, stage: str, *, out_model: str, checkpoint: str, live_dir: str | None,
                 init: str | None = None, masks: str | None = None) -> TrainSettings:
    """The run of a training stage (a key of MODES). `init`: the classifier the segmentation stages start
    from (train_onestep, train_full; train_cls and train_deeplab start from model.init / deeplab.init);
    `masks`: the pseudo masks train_deeplab learns."""
    if stage not in MODES:
        raise ValueError(f"training stage {stage!r}: expected one of {tuple(MODES)}")
    deeplab = stage == "train_deeplab"
    if stage in ("train_onestep", "train_full") and init is None:
        raise ValueError(f"{stage} starts from the classifier: pass init (models/cls.pt)")
    if deeplab and masks is None:
        raise ValueError("train_deeplab learns pseudo masks: pass masks (data/pseudo)")
    arch = p.deeplab.arch if deeplab else RRM_ARCH
    if stage in ("train_cls", "train_deeplab"):
        init = p.deeplab.init if deeplab else p.model.init
    return TrainSettings(
        mode=MODES[stage], arch=arch, width=p.deeplab.width if deeplab else p.model.width,
        head_bias=p.model.head_bias,
        batch_norm=deeplab and p.deeplab.batch_norm, init=init,
        dataset=p.data.dataset, data_root=p.data.root, split=p.export_pseudo.split if deeplab else p.data.train_split,
        mask_dir=str(Path(masks).resolve()) if masks is not None else p.data.mask_dir,
        labels_file=None if MODES[stage] == "supervised" else image_labels_file(p.data, p.data.train_split),
        out_model=out_model, checkpoint=checkpoint, live_dir=live_dir,
        seed=p.train_cls.seed if stage == "train_cls" else p.seed,
        device=str(resolve_device(p.device)), amp=p.amp, num_workers=p.data.num_workers, nproc=p.nproc,
        recipe=getattr(p, stage), mining=p.mining if stage == "train_onestep" else None)


def run_training(settings: TrainSettings, archs: Mapping[str, Arch], steps: Steps) -> None:
    """Train network settings.arch (an entry of `archs`) with `steps`' loss in this process, or with nproc > 1
    re-run this script under torchrun (DDP)."""
    if not launch(settings.nproc):
        train(settings, archs[settings.arch], steps)
