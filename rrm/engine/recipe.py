"""What a training run is: the recipe of a params.yaml train_* section, the one-step additions, and the run.

Values come from rrm.experiments.settings, which validates them once; these classes hold them and add no
defaults or checks of their own. The choice lists the training code branches on are defined here.
"""

from __future__ import annotations

from dataclasses import dataclass

from rrm.method.reliable import MiningParams

AMP = ("none", "bf16")  # precision of the network forward and CAM (losses stay fp32)
OPTIMIZERS = ("sgd", "adam")
LOSSES = ("joint", "ce")  # one-step: CE(bg) + CE(fg) + energy (paper eq. 8) | cross-entropy only
PSEUDO_LABELS = ("rrm", "cam")  # one-step targets: reliable regions (CAM and CRF) | CAM top-ratio only
DEEPLAB_ARCHS = ("vgg16_largefov", "resnet101_v2")  # the two-step networks (ResNet-38 is "resnet38")
# one-step lr schedules: poly over all steps (PolyOptimizer_cls of train_from_cls_weight.py) | poly over the
# first half, then every group restarts at the base lr and decays over the second (PolyOptimizer of
# tool/torchutils.py, train_from_cls_weight(ori).py)
SCHEDULES = ("poly", "poly_restart")
HEAD_BIAS = ("zeros", "pytorch")  # RRMNet's new-layer biases at init: zero | nn.Conv2d's default (the authors')


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

    params: MiningParams
    cam_scales: tuple[float, ...]
    pool_processes: int  # CRF worker processes (0: inline)


@dataclass(frozen=True)
class TrainSettings:
    """One training run: network, data, recipe, and where it writes.

    `mining` is the mining section for mode onestep (None otherwise); `recipe` is a OneStepRecipe there.
    """

    mode: str  # cls | onestep | supervised (see rrm.engine.train)
    arch: str  # resnet38, or one of DEEPLAB_ARCHS (mode supervised only)
    width: float
    head_bias: str  # resnet38 only: one of HEAD_BIAS, the init of the segmentation head's biases
    batch_norm: bool  # DeepLab-LargeFOV only: VGG-16 with BatchNorm (torchvision's vgg16_bn)
    init: str | None
    data_root: str
    split: str
    mask_dir: str | None
    labels_file: str | None  # image-level labels (rrm.data.labels); None: from the masks
    out_model: str
    checkpoint: str
    live_dir: str | None
    seed: int
    device: str
    amp: str  # one of AMP
    num_workers: int
    nproc: int  # processes a stage launches under torchrun; train() itself uses torchrun's world size
    recipe: Recipe
    mining: MiningSettings | None
