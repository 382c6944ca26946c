"""params.yaml: loading and validation before any work starts, listing every problem at once."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

Check = tuple[str, Callable[[Any], bool], str]


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _pos_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _range(x: Any) -> bool:
    return isinstance(x, list) and len(x) == 2 and all(_num(v) and v > 0 for v in x) and x[0] <= x[1]


_TRAIN_CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("freeze_bn", lambda x: isinstance(x, bool), "true or false"),
    ("optimizer", lambda x: x in ("sgd", "adam"), "sgd or adam"),
    ("steps", _pos_int, "a positive integer"),
    ("batch_size", _pos_int, "a positive integer"),
    ("crop_size", _pos_int, "a positive integer"),
    ("scale_range", _range, "[low, high] with 0 < low <= high"),
    ("lr", lambda x: _num(x) and x > 0, "a positive number"),
    ("weight_decay", lambda x: _num(x) and x >= 0, "a number >= 0"),
    ("momentum", lambda x: _num(x) and 0 <= x < 1, "a number in [0, 1)"),
    ("checkpoint_every", _pos_int, "a positive integer"),
]

_MAY_SKIP = {("train_cls", "steps")}  # stages whose steps may be 0
CHECKS: list[Check] = [
    ("seed", lambda x: isinstance(x, int) and not isinstance(x, bool), "an integer"),
    ("device", lambda x: x in ("cpu", "cuda", "auto"), "one of cpu, cuda, auto"),
    ("nproc", _pos_int, "an integer >= 1"),
    ("amp", lambda x: x in ("none", "bf16"), "none or bf16"),
    ("alpha_ratio", lambda x: _num(x) and 0 < x <= 1, "a number in (0, 1]"),
    ("data.root", lambda x: isinstance(x, str) and x != "", "a path"),
    ("data.num_workers", lambda x: isinstance(x, int) and x >= 0, "an integer >= 0"),
    ("model.width", lambda x: _num(x) and 0 < x <= 1, "a number in (0, 1]"),
    ("model.init", lambda x: x is None or isinstance(x, str), "null or a path"),
    ("deeplab.arch", lambda x: x in ("vgg16_largefov", "resnet101_v2"), "vgg16_largefov or resnet101_v2"),
    ("deeplab.batch_norm", lambda x: isinstance(x, bool), "true or false"),
    ("mining.rule", lambda x: x in ("paper", "code"), "paper or code"),
    ("mining.crf_backend", lambda x: x in ("pydensecrf", "torch"), "pydensecrf or torch"),
    ("mining.cam_scales", lambda x: isinstance(x, list) and x and all(_num(v) and v > 0 for v in x),
     "a non-empty list of positive scales"),
    ("mining.pool_processes", lambda x: isinstance(x, int) and x >= 0, "an integer >= 0"),
    ("mining.crf.iterations", _pos_int, "a positive integer"),
    ("train_onestep.loss", lambda x: x in ("joint", "ce"), "joint or ce"),
    ("train_onestep.pseudo", lambda x: x in ("rrm", "cam"), "rrm or cam"),
    ("train_onestep.energy.weight", lambda x: _num(x) and x >= 0, "a number >= 0"),
    ("train_onestep.energy.scale", lambda x: _num(x) and 0 < x <= 1, "a number in (0, 1]"),
    ("evaluate.scales", lambda x: isinstance(x, list) and x and all(_num(v) and v > 0 for v in x),
     "a non-empty list of positive scales"),
    ("evaluate_cam.bg_threshold", lambda x: _num(x) and 0 <= x <= 1, "a number in [0, 1]"),
] + [(f"{stage}.{key}", check, what)
      for stage in ("train_cls", "train_onestep", "train_full", "train_deeplab")
      for key, check, what in _TRAIN_CHECKS if (stage, key) not in _MAY_SKIP] + [
    ("train_cls.steps", lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0,
     "an integer >= 0 (0: model.init already is a VOC classifier and becomes models/cls.pt untrained)")]

_MISSING = object()  # lookup() without a default raises
_ABSENT = object()


def lookup(params: dict, dotted: str, default: Any = _MISSING) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(dotted)
            return default
        node = node[part]
    return node


def validate(params: dict, source: str = "params.yaml", checks: list[Check] = CHECKS) -> None:
    """Raise one ValueError listing every missing, mistyped or out-of-range key."""
    problems = []
    for key, ok, what in checks:
        value = lookup(params, key, _ABSENT)
        if value is _ABSENT:
            problems.append(f"  {key}: missing (expected {what})")
        elif not ok(value):
            problems.append(f"  {key}: {value!r} is not {what}")
    if problems:
        raise ValueError(f"{source}: invalid parameters:\n" + "\n".join(problems))


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `5e-08` (as `dvc exp run -S` writes it) is a string; read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """YAML as DVC reads it (YAML 1.2 floats: `1e-05`, as DVC writes dvc.lock and `-S` values, is a float)."""
    return yaml.load(text, Loader=_Loader)


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    """Read and validate params.yaml (the single source of settings)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: parameter file not found")
    with open(path) as handle:
        params = yaml.load(handle, Loader=_Loader)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of parameters, got {type(params).__name__}")
    validate(params, str(path))
    return params


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml: device is 'cuda' but no CUDA device is available (use cpu or auto)")
    return torch.device(name)
