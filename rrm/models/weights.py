"""Weight files: checked state-dict loading, unwrapping of saved checkpoints, and the RRM network's
initialisation from the files users have (the authors', PSA's, ours)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rrm.io import load_torch
from rrm.models.mxnet_params import is_ndarray_file
from rrm.models.resnet38_mxnet import resnet38_state

log = logging.getLogger(__name__)

# Added by PyTorch 0.4.1: older files (PSA's conversion, RRM's weights) lack them; eval-mode BN ignores them.
_OPTIONAL_SUFFIX = "num_batches_tracked"
_IMAGENET_CLASSES = 1000


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
        if k not in state and not k.endswith(_OPTIONAL_SUFFIX) and not k.startswith(tuple(allow_missing))
    ]
    unexpected = [k for k in state if k not in own and not k.startswith(tuple(allow_unexpected))]
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


def load_initial_weights(
    model: nn.Module, state: Mapping[str, Any], *, source: str, fresh: Sequence[str], dropped: Sequence[str] = ()
) -> list[str]:
    """load_state_dict_checked with the layers starting with a `fresh` prefix allowed to be absent; returns
    (and logs as warnings) notes: the `dropped` file entries, and each fresh layer the file lacks."""
    load_state_dict_checked(model, state, source=source, allow_missing=fresh)
    notes = [f"dropped ImageNet classifier entry {key}" for key in dropped]
    notes += [
        f"{layer.rstrip('.')} not in file: keeps its fresh initialisation"
        for layer in fresh
        if not any(k.startswith(layer) for k in state)
    ]
    for note in notes:
        log.warning("%s: %s", source, note)
    return notes


def load_rrm_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Initialise an RRMNet from one of the weight files users have; returns notes on what was not loaded.

    Accepted: the authors' RRM state dict (backbone and all heads); their VOC-classification ResNet-38
    (`fc8` without `fc8_seg_*`: the segmentation head keeps its fresh init); PSA's ImageNet ResNet-38, converted
    or as the MXNet `.params` file PSA distributes (backbone only; an ImageNet 1000-way `fc8.*` / `linear1000*`
    classifier is dropped); or our own checkpoint (a dict with a "model" state dict). Backbone keys are always
    required; the heads (`model.new_layers`) may be missing.
    """
    source = str(path)
    if is_ndarray_file(path):  # PSA's ImageNet file as downloaded, converted on the fly
        kept, dropped = resnet38_state(path)
        return load_initial_weights(model, kept, source=source, fresh=model.new_layers, dropped=dropped)
    state = unwrap_state(load_torch(path), source=source)
    dropped = [
        key
        for key, value in state.items()
        if key.startswith(("fc8.", "linear1000", "fc.")) and value.dim() >= 1 and value.shape[0] == _IMAGENET_CLASSES
    ]
    kept = {key: value for key, value in state.items() if key not in dropped}
    return load_initial_weights(model, kept, source=source, fresh=model.new_layers, dropped=dropped)
