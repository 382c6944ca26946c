"""params.yaml: read, checked and built into one frozen dataclass per section, in this one place.

`parse` walks the dataclasses' fields: a field's YAML value must have the field's type, and where a rule
below asks more (a range, a choice list), that too; sections recurse. Every problem is listed at once.
The method's own dataclasses (rrm.method: MiningParams, CRFParams) check their values when constructed;
their errors are collected here rather than repeated. Nothing downstream re-checks or supplies defaults.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch
import yaml

from rrm.engine.recipe import (
    AMP,
    DEEPLAB_ARCHS,
    HEAD_BIAS,
    LOSSES,
    OPTIMIZERS,
    PSEUDO_LABELS,
    SCHEDULES,
    ClassifierRecipe,
    EnergyParams,
    MiningSettings,
    OneStepRecipe,
    Recipe,
)
from rrm.method.crf import CRFParams
from rrm.method.reliable import MiningParams

DEVICES = ("cpu", "cuda", "auto")  # auto: CUDA when present


@dataclass(frozen=True)
class Data:
    root: str  # a VOC-layout root
    train_split: str
    val_split: str
    test_split: str
    mask_dir: str | None  # None: SegmentationClassAug when present, else SegmentationClass
    labels_file: str | None  # image-level labels (PSA's cls_labels.npy or text); None: from the masks
    num_workers: int


@dataclass(frozen=True)
class PrepareData:
    generate: bool
    seed: int
    image_size: int
    n_train: int
    n_extra: int
    n_val: int
    n_test: int
    max_objects: int


@dataclass(frozen=True)
class Model:
    width: float
    init: str | None
    head_bias: str  # one of HEAD_BIAS: the segmentation head's bias init when model.init does not set it


@dataclass(frozen=True)
class DeepLab:
    arch: str  # one of DEEPLAB_ARCHS
    width: float
    batch_norm: bool
    init: str | None  # params.yaml: one entry per architecture (BY_ARCH); here deeplab.arch's


@dataclass(frozen=True)
class Prediction:
    """How a network's prediction is made (evaluate_deeplab)."""

    scales: tuple[float, ...]
    flip: bool
    crf: CRFParams  # the post-processing CRF


@dataclass(frozen=True)
class Evaluate(Prediction):
    figures: int  # qualitative examples per report


@dataclass(frozen=True)
class EvaluateCam:
    split: str
    bg_threshold: float


@dataclass(frozen=True)
class ExportPseudo:
    split: str
    scales: tuple[float, ...]
    flip: bool
    crf: bool  # refine with evaluate.crf


@dataclass(frozen=True)
class Params:
    """All of params.yaml. alpha_ratio lives in mining.params (MiningParams.alpha_ratio)."""

    seed: int
    device: str  # one of DEVICES
    nproc: int
    amp: str  # one of rrm.engine.recipe.AMP
    data: Data
    prepare_data: PrepareData
    model: Model
    train_cls: ClassifierRecipe
    mining: MiningSettings
    train_onestep: OneStepRecipe
    train_full: Recipe
    evaluate: Evaluate
    evaluate_cam: EvaluateCam
    export_pseudo: ExportPseudo
    deeplab: DeepLab
    train_deeplab: Recipe
    evaluate_deeplab: Prediction


Check = tuple[Callable[[Any], bool], str]


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _one_of(choices: tuple[str, ...]) -> Check:
    return (lambda x: x in choices), "one of " + ", ".join(choices)


_POS_INT: Check = (lambda x: _int(x) and x > 0, "a positive integer")
_COUNT: Check = (lambda x: _int(x) and x >= 0, "an integer >= 0")
_UNIT: Check = (lambda x: _num(x) and 0 < x <= 1, "a number in (0, 1]")
_SCALES: Check = (lambda x: isinstance(x, list) and bool(x) and all(_num(v) and v > 0 for v in x),
                  "a non-empty list of positive scales")

# Value rules beyond the field's type, by (dataclass, field); subclasses inherit their base's rules.
RULES: dict[tuple[type, str], Check] = {
    (Params, "device"): _one_of(DEVICES),
    (Params, "nproc"): (lambda x: _int(x) and x >= 1, "an integer >= 1"),
    (Params, "amp"): _one_of(AMP),
    (Data, "root"): (lambda x: isinstance(x, str) and x != "", "a path"),
    (Data, "num_workers"): _COUNT,
    (Model, "width"): _UNIT,
    (Model, "head_bias"): _one_of(HEAD_BIAS),
    (DeepLab, "arch"): _one_of(DEEPLAB_ARCHS),
    (DeepLab, "width"): _UNIT,
    (Recipe, "optimizer"): _one_of(OPTIMIZERS),
    (Recipe, "steps"): _POS_INT,
    (Recipe, "batch_size"): _POS_INT,
    (Recipe, "crop_size"): _POS_INT,
    (Recipe, "scale_range"): (lambda x: isinstance(x, list) and len(x) == 2 and all(_num(v) and v > 0 for v in x)
                              and x[0] <= x[1], "[low, high] with 0 < low <= high"),
    (Recipe, "lr"): (lambda x: _num(x) and x > 0, "a positive number"),
    (Recipe, "weight_decay"): (lambda x: _num(x) and x >= 0, "a number >= 0"),
    (Recipe, "momentum"): (lambda x: _num(x) and 0 <= x < 1, "a number in [0, 1)"),
    (Recipe, "poly_power"): (lambda x: _num(x) and x >= 0, "a number >= 0"),
    (Recipe, "checkpoint_every"): _POS_INT,
    (ClassifierRecipe, "resize_long"): (lambda x: x is None or (isinstance(x, list) and len(x) == 2 and all(
        _int(v) and v > 0 for v in x) and x[0] <= x[1]), "null or [low, high] with 0 < low <= high (integers)"),
    (ClassifierRecipe, "frozen"): (lambda x: isinstance(x, list) and all(isinstance(v, str) for v in x),
                                   "a list of module names"),
    (OneStepRecipe, "loss"): _one_of(LOSSES),
    (OneStepRecipe, "pseudo"): _one_of(PSEUDO_LABELS),
    (OneStepRecipe, "schedule"): _one_of(SCHEDULES),
    (EnergyParams, "scale"): _UNIT,
    (EnergyParams, "weight"): (lambda x: _num(x) and x >= 0, "a number >= 0"),
    (MiningSettings, "cam_scales"): _SCALES,
    (MiningSettings, "pool_processes"): _COUNT,
    (Prediction, "scales"): _SCALES,
    (Evaluate, "figures"): _COUNT,
    (EvaluateCam, "bg_threshold"): (lambda x: _num(x) and 0 <= x <= 1, "a number in [0, 1]"),
    (ExportPseudo, "scales"): _SCALES,
}
# Rules for one key only, overriding the field's rule.
KEY_RULES: dict[str, Check] = {
    "train_cls.steps": (lambda x: _int(x) and x >= 0,
                        "an integer >= 0 (0: model.init already is a VOC classifier and becomes models/cls.pt untrained)"),
}
_ABSENT = object()
# Dataclasses whose constructor checks its values (the method's public API).
SELF_CHECKED = (MiningParams, CRFParams)
# Keys holding one value per two-step architecture ({vgg16_largefov: ..., resnet101_v2: ...}); the dataclass
# field gets deeplab.arch's, so `-S deeplab.arch=...` alone switches the weights and the CRF with the network.
BY_ARCH = ("deeplab.init", "evaluate_deeplab.crf")


def _type_check(hint: Any) -> Check:
    """A field type's check: what YAML value may stand for it."""
    if hint is bool:
        return (lambda x: isinstance(x, bool)), "true or false"
    if hint is int:
        return _int, "an integer"
    if hint is float:
        return _num, "a number"
    if hint is str:
        return (lambda x: isinstance(x, str)), "a string"
    if get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint):
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        ok, what = _type_check(inner)
        return (lambda x: x is None or ok(x)), f"null or {what}"
    if get_origin(hint) is tuple:
        args = get_args(hint)
        size = None if args[-1] is Ellipsis else len(args)
        return (lambda x: isinstance(x, list) and (size is None or len(x) == size) and all(_num(v) for v in x),
                "a list of numbers" if size is None else f"a list of {size} numbers")
    raise TypeError(f"no params.yaml check for field type {hint!r}")


def _rule(cls: type, name: str, key: str, hint: Any) -> Check:
    if key in KEY_RULES:
        return KEY_RULES[key]
    for klass in cls.__mro__:
        if (klass, name) in RULES:
            return RULES[(klass, name)]
    return _type_check(hint)


def _section(cls: type, node: Any, key: str, root: dict, problems: list[str]) -> Any:
    """`cls` built from the mapping `node` (at dotted `key`); None where any of its values has a problem."""
    if not isinstance(node, dict):
        problems.append(f"  {key}: missing (expected a section)" if node is _ABSENT else
                        f"  {key}: {node!r} is not a section")
        return None
    count = len(problems)
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    unresolved = False  # a BY_ARCH key without a valid deeplab.arch (reported at deeplab.arch)
    for field in fields(cls):
        dotted = _key(f"{key}.{field.name}" if key else field.name)
        hint = hints[field.name]
        entries = node
        if dotted in BY_ARCH:
            entries, dotted = _arch_entry(node, field.name, dotted, root, problems)
            if entries is None:
                unresolved = True
                continue
        if cls is MiningSettings and field.name == "params":  # the mining rule's keys, and alpha_ratio
            values["params"] = _section(MiningParams, {**node, "alpha_ratio": root.get("alpha_ratio", _ABSENT)},
                                        key, root, problems)
        elif is_dataclass(hint):
            values[field.name] = _section(hint, entries.get(field.name, _ABSENT), dotted, root, problems)
        else:
            values[field.name] = _value(entries, field.name, _rule(cls, field.name, dotted, hint), dotted, problems)
    if len(problems) > count or unresolved:
        return None
    if cls in SELF_CHECKED:
        try:
            return cls(**values)
        except ValueError as error:  # "MiningParams.alpha_ratio must be ...": name the params.yaml key
            name = re.match(r"\w+\.(\w+)", str(error))
            if name and name[1] in values:
                problems.append(f"  {_key(f'{key}.{name[1]}')}: {values[name[1]]!r}: {error}")
            else:
                problems.append(f"  {key}: {error}")
            return None
    return cls(**values)


def _arch_entry(node: dict, name: str, key: str, root: dict, problems: list[str]) -> tuple[dict | None, str]:
    """({name: the entry of deeplab.arch}, its dotted key) from a BY_ARCH mapping; (None, key) with the
    problem recorded when the mapping lacks an architecture (an unknown deeplab.arch is reported there)."""
    table = node.get(name, _ABSENT)
    if not isinstance(table, dict) or set(table) != set(DEEPLAB_ARCHS):
        shown = "missing" if table is _ABSENT else f"{table!r} is not"
        problems.append(f"  {key}: {shown} one entry per architecture ({', '.join(DEEPLAB_ARCHS)})")
        return None, key
    arch = (root.get("deeplab") or {}).get("arch") if isinstance(root.get("deeplab"), dict) else None
    if arch not in table:
        return None, key
    return {name: table[arch]}, f"{key}.{arch}"


def _key(dotted: str) -> str:
    """The params.yaml key of a field: MiningParams.alpha_ratio is the top-level alpha_ratio."""
    return "alpha_ratio" if dotted == "mining.alpha_ratio" else dotted


def _value(node: dict, name: str, check: Check, key: str, problems: list[str]) -> Any:
    ok, what = check
    if name not in node or node[name] is _ABSENT:
        problems.append(f"  {key}: missing (expected {what})")
        return None
    value = node[name]
    if not ok(value):
        problems.append(f"  {key}: {value!r} is not {what}")
        return None
    return tuple(value) if isinstance(value, list) else value


def _cross_checks(params: Params, problems: list[str]) -> None:
    for stage in ("train_cls", "train_onestep", "train_full", "train_deeplab"):
        batch = getattr(params, stage).batch_size
        if batch % params.nproc:
            problems.append(f"  {stage}.batch_size: {batch} is not divisible by nproc {params.nproc} "
                            f"(batch_size is the global batch of one step, split evenly across the processes)")


def parse(params: dict, source: str = "params.yaml") -> Params:
    """Every section of params.yaml as its dataclass; one ValueError lists every missing, mistyped or
    out-of-range key."""
    problems: list[str] = []
    built = _section(Params, params, "", params, problems)
    if built is not None:
        _cross_checks(built, problems)
    if problems:
        raise ValueError(f"{source}: invalid parameters:\n" + "\n".join(problems))
    return built


def validate(params: dict, source: str = "params.yaml") -> None:
    """Raise one ValueError listing every missing, mistyped or out-of-range key (see parse)."""
    parse(params, source)


_MISSING = object()  # lookup() without a default raises


def lookup(params: dict, dotted: str, default: Any = _MISSING) -> Any:
    """The raw value at a dotted key ("mining.crf.iterations")."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _MISSING:
                raise KeyError(dotted)
            return default
        node = node[part]
    return node


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `5e-08` (as `dvc exp run -S` writes it) is a string; read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """YAML as DVC reads it (YAML 1.2 floats: `1e-05`, as DVC writes dvc.lock and `-S` values, is a float)."""
    return yaml.load(text, Loader=_Loader)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: parameter file not found")
    params = read_yaml(path.read_text())
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of parameters, got {type(params).__name__}")
    return params


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    """params.yaml as a validated mapping (for tools that edit or compare it)."""
    params = _read(Path(path))
    validate(params, str(path))
    return params


def load_settings(path: str | os.PathLike = "params.yaml") -> Params:
    """params.yaml built into its dataclasses (what the stages run on)."""
    return parse(_read(Path(path)), str(path))


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml: device is 'cuda' but no CUDA device is available (use cpu or auto)")
    return torch.device(name)
