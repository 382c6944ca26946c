"""What a training run is: a params.yaml train_* section (rrm.settings) plus the network, data and paths."""

from __future__ import annotations

from dataclasses import dataclass

from rrm.settings import MiningSettings, Recipe


@dataclass(frozen=True)
class TrainSettings:
    """One training run: network, data, recipe, and where it writes.

    `mining` is the mining section for mode onestep (None otherwise); `recipe` is a OneStepRecipe there.
    """

    mode: str  # cls | onestep | supervised (see rrm.engine.train)
    arch: str  # resnet38, or one of rrm.settings.DEEPLAB_ARCHS (mode supervised only)
    width: float
    head_bias: str  # resnet38 only: one of rrm.settings.HEAD_BIAS, the init of the segmentation head's biases
    batch_norm: bool  # DeepLab-LargeFOV only: VGG-16 with BatchNorm (torchvision's vgg16_bn)
    init: str | None
    dataset: str  # a name of rrm.data.datasets: the layout of data_root and the network's head sizes
    data_root: str
    split: str
    mask_dir: str | None
    labels_file: str | None  # image-level labels (rrm.data.labels); None: from the masks
    out_model: str
    checkpoint: str
    live_dir: str | None
    seed: int
    device: str
    amp: str  # one of rrm.settings.AMP
    num_workers: int
    nproc: int  # processes a stage launches under torchrun; train() itself uses torchrun's world size
    recipe: Recipe
    mining: MiningSettings | None
