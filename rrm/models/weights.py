"""Parameters: checked weight loading, frozen BatchNorm and the authors' four SGD learning-rate groups."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rrm.io import load_torch

if TYPE_CHECKING:
    from rrm.models.rrm_net import RRMNet

log = logging.getLogger(__name__)

# Added by PyTorch 0.4.1: older files (PSA's conversion, RRM's weights) lack them; eval-mode BN ignores them.
_OPTIONAL_SUFFIX = "num_batches_tracked"
_RRM_HEADS = ("fc8.", "fc8_seg_conv1.", "fc8_seg_conv2.")
_IMAGENET_CLASSES = 1000


def _matches(key: str, prefixes: Sequence[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def load_state_dict_checked(
    model: nn.Module,
    state: Mapping[str, Any],
    *,
    source: str,
    allow_missing: Sequence[str] = (),
    allow_unexpected: Sequence[str] = (),
) -> None:
    """Load `state` into `model`, refusing any mismatch not explicitly allowed.

    Every key the model has must be in `state` (except keys starting with an `allow_missing` prefix and
    BatchNorm `num_batches_tracked` counters); every key of `state` must exist in the model (except
    `allow_unexpected` prefixes, which are skipped); shapes must agree. Otherwise raises ValueError naming
    `source` and listing all missing keys, unexpected keys and shape mismatches at once.
    """
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{source}: expected a state dict (mapping of name -> tensor), got {type(state).__name__}"
        )
    bad_values = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise ValueError(f"{source}: entries that are not tensors: {', '.join(map(str, bad_values[:20]))}")
    own = model.state_dict()
    missing = [
        k
        for k in own
        if k not in state and not k.endswith(_OPTIONAL_SUFFIX) and not _matches(k, allow_missing)
    ]
    unexpected = [k for k in state if k not in own and not _matches(k, allow_unexpected)]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"{source}: weights do not match the model ({type(model).__name__})"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                parts.append(f"  {title} ({len(items)}):\n" + "\n".join(f"    {item}" for item in items))
        raise ValueError("\n".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def unwrap_state(obj: Any, *, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file: our checkpoints' "model" entry (or "state_dict"), the dict
    itself otherwise; a DataParallel `module.` prefix on every key is removed."""
    if isinstance(obj, Mapping):
        for entry in ("model", "state_dict"):
            if isinstance(obj.get(entry), Mapping):
                obj = obj[entry]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: no state dict found (got {type(obj).__name__})")
    state = dict(obj)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_rrm_weights(model: RRMNet, path: str | os.PathLike) -> list[str]:
    """Initialise an RRMNet from one of the weight files users have; returns notes on what was not loaded.

    Accepted: the authors' RRM state dict (backbone and all heads); their VOC-classification ResNet-38
    (`fc8` without `fc8_seg_*`: the segmentation head keeps its fresh init); PSA's converted ImageNet
    ResNet-38 (backbone only; an ImageNet 1000-way `fc8.*` / `linear1000*` classifier is dropped); or our
    own checkpoint (a dict with a "model" state dict). Backbone keys are always required.
    """
    source = str(path)
    state = unwrap_state(load_torch(path), source=source)
    notes = []
    for key in list(state):
        if (
            key.startswith(("fc8.", "linear1000", "fc."))
            and state[key].dim() >= 1
            and state[key].shape[0] == _IMAGENET_CLASSES
        ):
            del state[key]
            notes.append(f"dropped ImageNet classifier entry {key}")
    load_state_dict_checked(model, state, source=source, allow_missing=_RRM_HEADS)
    for head in _RRM_HEADS:
        if not any(k.startswith(head) for k in state):
            notes.append(f"{head.rstrip('.')} not in file: keeps its fresh initialisation")
    for note in notes:
        log.warning("%s: %s", source, note)
    return notes


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode and stop gradients to its affine parameters."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


def set_batchnorm_eval(module: nn.Module) -> None:
    """Return every BatchNorm of `module` to eval mode (running statistics used, never updated)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class FreezableBatchNorm(nn.Module):
    """Base of the networks whose BatchNorm can be frozen (the authors' and DeepLab-v2's setting): after
    `freeze_batchnorm_if(True)` BatchNorm keeps its statistics and affine weights, even under `.train()`."""

    freeze_bn = False

    def freeze_batchnorm_if(self, freeze: bool) -> None:
        self.freeze_bn = freeze
        if freeze:
            freeze_batchnorm(self)

    def train(self, mode: bool = True) -> FreezableBatchNorm:
        super().train(mode)
        if self.freeze_bn:
            set_batchnorm_eval(self)
        return self


def lr_groups(model: nn.Module, *, new_prefixes: Sequence[str], lr: float, weight_decay: float) -> list[dict]:
    """The four SGD groups of the authors (and of the DeepLab prototxts), frozen parameters excluded.

    pretrained weights: lr x1, decay; pretrained biases / other 1-d params: lr x2, no decay;
    new-layer weights (names starting with `new_prefixes`): lr x10, decay; new-layer biases: lr x20, no decay.
    Groups are always four, in this order, possibly empty; "initial_lr" lets schedulers start mid-run.
    """
    specs = [
        ("pretrained_weight", 1.0, weight_decay),
        ("pretrained_bias", 2.0, 0.0),
        ("new_weight", 10.0, weight_decay),
        ("new_bias", 20.0, 0.0),
    ]
    params: list[list[nn.Parameter]] = [[] for _ in specs]
    for name, p in model.named_parameters():
        if p.requires_grad:
            params[2 * _matches(name, new_prefixes) + (p.dim() <= 1)].append(p)
    return [
        {"params": ps, "lr": lr * mult, "initial_lr": lr * mult, "weight_decay": wd, "name": name}
        for (name, mult, wd), ps in zip(specs, params, strict=True)
    ]
