"""params.yaml: every section's dataclass, its choice lists, and the parser that builds them, in this one place.

The bottom layer: it imports only the standard library and yaml, so a stage, a tool or a CRF worker reads
settings without torch. `parse` walks the dataclasses' fields: a field's YAML value must have the field's
type, and where a rule below asks more (a range, a choice list), that too; sections recurse. Every problem
is listed at once. Two field markers say where a value lives in params.yaml when that is not the field's
own key: INLINE (a dataclass read from its parent's mapping: mining's rule keys) and AT (a key elsewhere:
`alpha_ratio` is top-level, the interface of `dvc exp run -S alpha_ratio=0.2`). MiningParams and
CRFParams, the method's public API, check their values when constructed; their errors are collected
here, under the params.yaml key. Nothing downstream re-checks or supplies defaults.

Choice lists name what a registry implements (rrm.engine.optim's optimisers, rrm.models' architectures,
the mining rules); tests assert each registry and its list agree.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from rrm.method.crf_params import CRFParams  # yaml-free, for rrm.ops (the light install)

DEVICES = ("cpu", "cuda", "auto")  # auto: CUDA when present
AMP = ("none", "bf16")  # precision of the network forward and CAM (losses stay fp32)
OPTIMIZERS = ("sgd", "adam")  # rrm.engine.optim.OPTIMIZERS
LOSSES = ("joint", "ce")  # one-step: CE(bg) + CE(fg) + energy (paper eq. 8) | cross-entropy only
PSEUDO_LABELS = ("rrm", "cam")  # one-step targets: reliable regions (CAM and CRF) | CAM top-ratio only
# one-step lr schedules: poly over all steps (PolyOptimizer_cls of train_from_cls_weight.py) | poly over the
# first half, then every group restarts at the base lr and decays over the second (PolyOptimizer of
# tool/torchutils.py, train_from_cls_weight(ori).py)
SCHEDULES = ("poly", "poly_restart")
HEAD_BIAS = ("zeros", "pytorch")  # RRMNet's new-layer biases at init: zero | nn.Conv2d's default (the authors')
RRM_ARCH = "resnet38"  # the one-step network (rrm.models.rrm_net.ARCHS)
DEEPLAB_ARCHS = ("vgg16_largefov", "resnet101_v2")  # the two-step networks (rrm.models.deeplab.ARCHS)
MINING_RULES = ("paper", "code")  # rrm.method.reliable / reliable_torch implement both
CRF_BACKENDS = ("pydensecrf", "torch")  # rrm.engine.mining (CPU pool) | rrm.method.reliable_torch
DATASETS = ("voc", "coco")  # rrm.data.datasets.DATASETS: class lists, palettes and folder layouts

INLINE = {"inline": True}  # field metadata: the dataclass is read from the parent section's own mapping


def at(key: str) -> dict:
    """Field metadata: the value is params.yaml's `key` (dotted, from the top), not the field's own key."""
    return {"key": key}


@dataclass(frozen=True)
class MiningParams:
    """Settings of both mining rules.

    alpha_ratio: fraction of each class's pixels kept as CAM-confident (paper: 0.4, Table 1 sweep).
    gamma: background exponent of the paper rule (eq. 4). gamma_low / gamma_high: the code rule's two
    CRF background exponents; gamma_high also makes its CAM label map. cam_min: CAM floor before the
    code rule's percentile. bg_confident: background-score threshold for confident background.
    crf_confident: minimum CRF posterior for a CRF-confident pixel. crf: kernel settings (eq. 5).
    crf_backend: "pydensecrf" (the authors' CRF, on the CPU: rrm.engine.mining.mine_batch) or "torch"
    (the same CRF on the permutohedral lattice, on the tensors' device:
    rrm.method.reliable_torch.mine_batch_torch).
    """

    rule: str  # one of MINING_RULES
    alpha_ratio: float = field(metadata=at("alpha_ratio"))
    gamma: float
    gamma_low: float
    gamma_high: float
    cam_min: float
    bg_confident: float
    crf_confident: float
    crf: CRFParams
    crf_backend: str  # one of CRF_BACKENDS

    def __post_init__(self) -> None:
        if self.rule not in MINING_RULES:
            raise ValueError(f"MiningParams.rule must be one of {MINING_RULES}, got {self.rule!r}")
        if self.crf_backend not in CRF_BACKENDS:
            raise ValueError(f"MiningParams.crf_backend must be one of {CRF_BACKENDS}, got {self.crf_backend!r}")
        if not 0.0 < self.alpha_ratio <= 1.0:
            raise ValueError(f"MiningParams.alpha_ratio must be in (0, 1], got {self.alpha_ratio!r}")
        for name in ("gamma", "gamma_low", "gamma_high"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MiningParams.{name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Recipe:
    """A train_* section: optimisation schedule, augmentation and which layers train."""

    freeze_bn: bool
    dropout: bool  # ResNet-38's Dropout2d layers, DeepLab-LargeFOV's fc6/fc7 Dropout
    optimizer: str  # one of OPTIMIZERS
    steps: int
    batch_size: int  # the global batch of one step (split across DDP processes)
    crop_size: int
    scale_range: tuple[float, float]
    lr: float
    weight_decay: float
    momentum: float
    poly_power: float
    checkpoint_every: int


@dataclass(frozen=True)
class ClassifierRecipe(Recipe):
    """train_cls: the recipe plus PSA's classifier augmentation and frozen stem (None / () for neither)."""

    seed: int  # the classifier's own seed: like the authors' released classifier, an input of the later stages
    resize_long: tuple[int, int] | None  # per-image long side drawn in [low, high] instead of scale_range
    color_jitter: tuple[float, float, float, float] | None  # brightness, contrast, saturation, hue
    frozen: tuple[str, ...]  # top-level ResNet-38 modules left untrained


@dataclass(frozen=True)
class EnergyParams:
    """Arguments of rrm.method.energy_loss.dense_energy_loss (train_onestep.energy)."""

    sigma_rgb: float
    sigma_xy: float
    scale: float
    weight: float


@dataclass(frozen=True)
class OneStepRecipe(Recipe):
    """train_onestep: the recipe plus the one-step loss and its targets."""

    loss: str  # one of LOSSES
    pseudo: str  # one of PSEUDO_LABELS
    energy: EnergyParams
    schedule: str  # one of SCHEDULES


@dataclass(frozen=True)
class MiningSettings:
    """The mining section: the mining rule's parameters, the CAM scales (eq. 2) and the CRF worker count."""

    params: MiningParams = field(metadata=INLINE)  # mining's rule keys, and the top-level alpha_ratio
    cam_scales: tuple[float, ...]
    pool_processes: int  # CRF worker processes (0: inline)


@dataclass(frozen=True)
class Data:
    dataset: str  # one of DATASETS: the classes and the folder layout of `root`
    root: str  # a root in the dataset's layout
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
    """How a network's prediction is made: the evaluate, export_pseudo and evaluate_deeplab sections."""

    scales: tuple[float, ...]
    flip: bool
    crf: CRFParams  # the post-processing CRF


@dataclass(frozen=True)
class EvaluateCam:
    split: str
    bg_threshold: float


@dataclass(frozen=True)
class ExportPseudo(Prediction):
    split: str  # the split labelled for DeepLab


@dataclass(frozen=True)
class Figures:
    examples: int  # example rows of every report's examples.png and of the qualitative figure


@dataclass(frozen=True)
class Params:
    """All of params.yaml. The top-level alpha_ratio is read into mining.params (MiningParams.alpha_ratio)."""

    seed: int
    device: str  # one of DEVICES
    nproc: int
    amp: str  # one of AMP
    data: Data
    prepare_data: PrepareData
    model: Model
    train_cls: ClassifierRecipe
    mining: MiningSettings
    train_onestep: OneStepRecipe
    train_full: Recipe
    evaluate: Prediction
    evaluate_cam: EvaluateCam
    export_pseudo: ExportPseudo
    deeplab: DeepLab
    train_deeplab: Recipe
    evaluate_deeplab: Prediction
    figures: Figures


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
    (Data, "dataset"): _one_of(DATASETS),
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
    (Figures, "examples"): _COUNT,
    (EvaluateCam, "bg_threshold"): (lambda x: _num(x) and 0 <= x <= 1, "a number in [0, 1]"),
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
    keys: dict[str, str] = {}  # field -> its params.yaml key, for the constructor's errors
    unresolved = False  # a BY_ARCH key without a valid deeplab.arch (reported at deeplab.arch)
    for f in fields(cls):
        hint = hints[f.name]
        if f.metadata.get("inline"):  # read from this section's own mapping
            values[f.name] = _section(hint, node, key, root, problems)
            continue
        if "key" in f.metadata:  # a key elsewhere in params.yaml
            dotted = f.metadata["key"]
            parent, _, name = dotted.rpartition(".")
            holder = lookup(root, parent, _ABSENT) if parent else root
        else:
            dotted, holder, name = f"{key}.{f.name}" if key else f.name, node, f.name
        if dotted in BY_ARCH:
            holder, dotted = _arch_entry(holder, name, dotted, root, problems)
            if holder is None:
                unresolved = True
                continue
        keys[f.name] = dotted
        if is_dataclass(hint):
            values[f.name] = _section(hint, holder.get(name, _ABSENT), dotted, root, problems)
        else:
            values[f.name] = _value(holder, name, _rule(cls, f.name, dotted, hint), dotted, problems)
    if len(problems) > count or unresolved:
        return None
    if cls in SELF_CHECKED:
        try:
            return cls(**values)
        except ValueError as error:  # "MiningParams.alpha_ratio must be ...": name the params.yaml key
            name = re.match(r"\w+\.(\w+)", str(error))
            if name and name[1] in keys:
                problems.append(f"  {keys[name[1]]}: {values[name[1]]!r}: {error}")
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


def _value(node: Any, name: str, check: Check, key: str, problems: list[str]) -> Any:
    ok, what = check
    if not isinstance(node, dict) or name not in node or node[name] is _ABSENT:
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
