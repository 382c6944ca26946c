"""PSA's ImageNet ResNet-38 as distributed (`ilsvrc-cls_rna-a1_cls1000_ep-0001.params`, an MXNet file) under
our ResNet-38 names (rrm/models/resnet38.py), without MXNet.

The renaming is PSA's `convert_mxnet_to_torch` (network/resnet38d.py); `arg:` / `aux:` prefixes are ignored:

    conv1a_weight                                  conv1a.weight
    res{s}a_branch{br}_weight                      b{s}.conv_branch{br}.weight
    res{s}b{k}_branch{br}_weight                   b{s}_{k}.conv_branch{br}.weight
    bn{s}a_branch{br}_gamma / _beta                b{s}.bn_branch{br}.weight / .bias
    bn{s}b{k}_branch{br}_moving_mean / _moving_var b{s}_{k}.bn_branch{br}.running_mean / .running_var
    bn7_gamma / _beta / _moving_mean / _moving_var bn7.weight / .bias / .running_mean / .running_var
    linear1000_weight / _bias                      dropped: the ImageNet classifier
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import torch

from rrm.models.mxnet_params import load_named_arrays

_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_CONV = re.compile(r"res(\d)(?:a|b(\d+))_branch(1|2a|2b1|2b2)_weight")
_BATCHNORM = re.compile(rf"bn(\d)(?:a|b(\d+))_branch(1|2a|2b1|2b2)_({'|'.join(_BN)})")
_BN7 = re.compile(rf"bn7_({'|'.join(_BN)})")
_CLASSIFIER = re.compile(r"linear1000_(weight|bias)")
_BN7_CHANNELS = 4096  # at width 1


def torch_name(mxnet_name: str) -> str | None:
    """Our ResNet-38 state-dict key for an MXNet parameter name; None for the ImageNet classifier.

    Raises KeyError for a name outside PSA's ResNet-38.
    """
    name = mxnet_name.split(":", 1)[1] if mxnet_name.startswith(("arg:", "aux:")) else mxnet_name
    if name == "conv1a_weight":
        return "conv1a.weight"
    if _CLASSIFIER.fullmatch(name):
        return None
    if match := _CONV.fullmatch(name):
        stage, unit, branch = match.groups()
        return f"b{stage}{f'_{unit}' if unit else ''}.conv_branch{branch}.weight"
    if match := _BATCHNORM.fullmatch(name):
        stage, unit, branch, param = match.groups()
        return f"b{stage}{f'_{unit}' if unit else ''}.bn_branch{branch}.{_BN[param]}"
    if match := _BN7.fullmatch(name):
        return f"bn7.{_BN[match.group(1)]}"
    raise KeyError(mxnet_name)


def rename(arrays: Mapping[str, np.ndarray], *, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict under our names, the dropped classifier entries); ValueError naming `source` and every
    entry that is not a ResNet-38 parameter or lands on a name already taken."""
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped, unknown, clashes = [], [], []
    for mxnet_name, array in arrays.items():
        try:
            target = torch_name(mxnet_name)
        except KeyError:
            unknown.append(mxnet_name)
            continue
        if target is None:
            dropped.append(mxnet_name)
        elif target in state:
            clashes.append(f"{mxnet_name} and {origin[target]} -> {target}")
        else:
            state[target], origin[target] = torch.from_numpy(array), mxnet_name
    if unknown or clashes:
        parts = [f"{source}: not PSA's ResNet-38 parameter names"]
        if unknown:
            parts.append(f"  not ResNet-38 parameters ({len(unknown)}): {', '.join(unknown)}")
        if clashes:
            parts.append(f"  two entries for one parameter ({len(clashes)}): {'; '.join(clashes)}")
        raise ValueError("\n".join(parts))
    return state, dropped


def resnet38_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read PSA's MXNet ResNet-38 file: (our state dict, dropped classifier entries). Raises MXNetParamsError
    for an unreadable file and ValueError for foreign names, both naming `path`."""
    return rename(load_named_arrays(path), source=str(path))


def resnet38_width(state: Mapping[str, torch.Tensor], *, source: str) -> float:
    """The ResNet-38 width a state dict was built at, from bn7's channels (4096 at width 1)."""
    if "bn7.weight" not in state:
        raise ValueError(f"{source}: no bn7 parameters, not a ResNet-38 backbone")
    return state["bn7.weight"].shape[0] / _BN7_CHANNELS

