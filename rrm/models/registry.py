"""The model registry's entry type, and the checkpoint metadata that names an entry.

Each network family declares its architectures where it is defined (rrm.models.rrm_net.ARCHS,
rrm.models.deeplab.ARCHS; their names are rrm.settings.RRM_ARCH and DEEPLAB_ARCHS); a stage or the CLI
passes the families it uses, so a stage loads (and dvc.yaml lists) only the network code it runs. Nothing
outside an entry compares architecture names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rrm.data.datasets import DatasetSpec, get_dataset
from rrm.io import load_torch
from rrm.settings import HEAD_BIAS


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build it, and what training and inference need to know about it."""

    name: str
    # (num_classes, width, batch_norm, freeze_bn, dropout, head_bias, init, frozen) -> the network with a
    # num_classes segmentation head (the dataset's background + C classes), `init` weights loaded, `frozen`
    # top-level modules excluded from training (batch_norm: LargeFOV only; head_bias: ResNet-38 only)
    build: Callable[..., nn.Module]
    scratch_new_lr_mult: float  # adam from random weights: lr multiplier of the new layers (fine-tuning: 10)
    unused_head: Callable[[str], bool]  # training mode -> one head gets no gradient (DDP must be told)
    inference: str  # the params.yaml section of its inference settings (scales, flip, crf)


def checkpoint_meta(arch: Arch, *, mode: str, width: float, steps: int, batch_norm: bool, dataset: str) -> dict:
    """What `load_model` needs to rebuild the network, stored next to the weights; `dataset` (a name of
    rrm.data.datasets) gives its head sizes and the classes its outputs mean."""
    return {"mode": mode, "width": width, "steps": steps, "arch": arch.name, "batch_norm": batch_norm,
            "dataset": dataset}


def checkpoint_dataset(path: str | os.PathLike, meta: Mapping) -> str:
    """The dataset a checkpoint's network was trained on (a name of rrm.data.datasets); a checkpoint whose
    metadata names none is VOC's."""
    name = meta.get("dataset", "voc")
    try:
        get_dataset(name)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return name


def checkpoint_arch(path: str | os.PathLike, state: object, archs: Mapping[str, Arch]) -> Arch:
    """The registry entry a checkpoint's metadata names; a clear error when it is not one of `archs`."""
    meta = state.get("meta") if isinstance(state, dict) else None
    if not meta or "model" not in state:
        raise ValueError(f"{path}: not an rrm checkpoint (expected 'model' and 'meta' entries)")
    if meta.get("arch") not in archs:
        raise ValueError(f"{path}: a {meta.get('arch')!r} network; expected one of {', '.join(archs)}")
    return archs[meta["arch"]]


def load_model(path: str | Path, archs: Mapping[str, Arch], map_device: torch.device | str = "cpu", *,
               dataset: str | None = None) -> tuple[nn.Module, Arch, DatasetSpec]:
    """Rebuild one of our checkpoints (an architecture of `archs`) in eval mode on `map_device`, its head
    sized for the dataset it records, which is returned too (the classes and palette of its outputs); with
    `dataset` given, a checkpoint of another dataset is an error."""
    state = load_torch(path)
    arch = checkpoint_arch(path, state, archs)
    meta = state["meta"]
    trained_on = checkpoint_dataset(path, meta)
    if dataset is not None and trained_on != dataset:
        raise ValueError(f"{path}: a network trained on {trained_on!r}; data.dataset is {dataset!r}")
    model = arch.build(num_classes=get_dataset(trained_on).num_classes, width=meta["width"], batch_norm=meta.get("batch_norm", False), freeze_bn=True,
                       dropout=True, head_bias=HEAD_BIAS[0], init=None, frozen=())  # biases: the state dict's
    model.load_state_dict(state["model"])
    return model.to(map_device).eval(), arch, get_dataset(trained_on)
