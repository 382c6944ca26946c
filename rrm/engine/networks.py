"""The network a training run starts from."""

from __future__ import annotations

import torch
import torch.nn as nn

from rrm.engine.recipe import ClassifierRecipe, TrainSettings
from rrm.models.deeplab import build_deeplab
from rrm.models.rrm_net import build_rrm
from rrm.models.trainable import freeze_modules
from rrm.models.weights import load_rrm_weights


def build_model(s: TrainSettings, device: torch.device) -> nn.Module:
    """ResNet-38 RRM net (init: PSA ImageNet / RRM classification weights or one of our checkpoints), or a
    DeepLab (init: a torchvision-format ImageNet file)."""
    if s.arch == "resnet38":
        model = build_rrm(width=s.width, freeze_bn=s.recipe.freeze_bn, dropout=s.recipe.dropout,
                          head_bias=s.head_bias)
        if s.init:
            load_rrm_weights(model, s.init)
        if isinstance(s.recipe, ClassifierRecipe):
            freeze_modules(model, s.recipe.frozen)
    else:
        model = build_deeplab(arch=s.arch, width=s.width, weights=s.init, freeze_bn=s.recipe.freeze_bn,
                              batch_norm=s.batch_norm, dropout=s.recipe.dropout)
    return model.to(device)
