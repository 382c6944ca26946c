"""The RRM network: ResNet-38 shared by a classification/CAM branch and a segmentation branch (Fig. 1)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from rrm.data.datasets import VOC
from rrm.models.layers import DilatedConv2d, lr_groups, scaled
from rrm.models.registry import Arch
from rrm.models.resnet38 import ResNet38
from rrm.models.trainable import freeze_modules
from rrm.models.weights import load_rrm_weights
from rrm.settings import HEAD_BIAS, RRM_ARCH


def class_activation_map(features: torch.Tensor, fc8_weight: torch.Tensor) -> torch.Tensor:
    """Eq. 1 before the resize RS(.): CAM^c = ReLU(sum_ch w^c_ch F_ch), at feature resolution.

    features: (N, D, h, w) backbone output; fc8_weight: (K, D, 1, 1) classifier weight -> (N, K, h, w).
    The ReLU is the authors' (PSA's `forward_cam`); callers resize and normalise (eq. 2-3).
    """
    return F.relu(F.conv2d(features, fc8_weight))


class RRMNet(ResNet38):
    """ResNet-38 plus the two branches; forward (N, 3, H, W) -> {"cls": (N, C) logits,
    "cam": (N, C, h, w) ReLU'd CAM, "seg": (N, num_classes, h, w) logits}, h, w = ceil(H/8), ceil(W/8),
    num_classes = C + 1 (the dataset's foreground classes and background: VOC 21, COCO 81).

    A subclass (as in PSA/RRM) rather than a `backbone` attribute, so the state dict has the authors' flat
    keys (`conv1a.weight`, `b7.conv_branch2b2.weight`, `fc8.weight`, `fc8_seg_conv1.bias`). Callers upsample.
    """

    new_layers = ("fc8.", "fc8_seg_conv1.", "fc8_seg_conv2.")

    def __init__(
        self, *, width: float = 1.0, num_classes: int = VOC.num_classes, freeze_bn: bool = True, dropout: bool = True,
        head_bias: str = "zeros",
    ) -> None:
        super().__init__(width=width, freeze_bn=freeze_bn, dropout=dropout)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if head_bias not in HEAD_BIAS:
            raise ValueError(f"head_bias must be one of {', '.join(HEAD_BIAS)}, got {head_bias!r}")
        channels, mid = self.out_channels, scaled(512, width)
        self.num_classes = num_classes
        self.dropout7 = nn.Dropout2d(0.5 * dropout)
        self.fc8 = nn.Conv2d(channels, num_classes - 1, 1, bias=False)  # one logit per foreground class
        self.fc8_seg_conv1 = DilatedConv2d(channels, mid, 12)
        self.fc8_seg_conv2 = DilatedConv2d(mid, num_classes, 12)
        for conv in (self.fc8, self.fc8_seg_conv1, self.fc8_seg_conv2):
            nn.init.xavier_uniform_(conv.weight)  # PSA and RRM use Xavier for the new layers' weights
            if conv.bias is not None and head_bias == "zeros":
                nn.init.zeros_(conv.bias)  # "pytorch": nn.Conv2d's U(+-1/sqrt(fan_in)), as network/RRM.py

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, C) logits: Dropout2d(0.5), global average pooling, fc8."""
        pooled = F.adaptive_avg_pool2d(self.dropout7(features), 1)
        return self.fc8(pooled).flatten(1)

    def segment(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) -> (N, num_classes, h, w) logits of the segmentation branch."""
        return self.fc8_seg_conv2(F.relu(self.fc8_seg_conv1(features)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        features = self.features(x)
        # CAM and segmentation read the features before dropout7, which only feeds the classifier.
        return {
            "cls": self.classify(features),
            "cam": class_activation_map(features, self.fc8.weight),
            "seg": self.segment(features),
        }

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The authors' SGD groups: backbone weights x1, backbone 1-d x2 (no decay), fc8/fc8_seg_* weights
        x10, their biases x20 (no decay); frozen BatchNorm parameters are left out."""
        return lr_groups(self, new_prefixes=self.new_layers, lr=lr, weight_decay=weight_decay)


def build_rrm(
    *,
    width: float = 1.0,
    num_classes: int = VOC.num_classes,
    weights: str | os.PathLike | None = None,
    freeze_bn: bool = True,
    dropout: bool = True,
    head_bias: str = "zeros",
) -> RRMNet:
    """The RRM network; `weights`: the authors' RRM / classification file, PSA's ImageNet ResNet-38 or one of
    our checkpoints (see `load_rrm_weights`). `freeze_bn` False trains BatchNorm (not the authors'
    setting); `dropout` False turns ResNet-38's Dropout2d layers (b6, b7, before fc8) into identities (not
    the authors' setting); `head_bias` "pytorch" keeps nn.Conv2d's default bias init of the segmentation
    head (the authors' network/RRM.py), "zeros" zeroes it."""
    model = RRMNet(width=width, num_classes=num_classes, freeze_bn=freeze_bn, dropout=dropout, head_bias=head_bias)
    if weights is not None:
        load_rrm_weights(model, weights)
    return model


def _build(*, num_classes: int, width: float, batch_norm: bool, freeze_bn: bool, dropout: bool, head_bias: str,
           init: str | None, frozen: tuple[str, ...]) -> RRMNet:
    """The registry's builder (batch_norm: ResNet-38 always has BatchNorm)."""
    model = build_rrm(width=width, num_classes=num_classes, weights=init, freeze_bn=freeze_bn, dropout=dropout, head_bias=head_bias)
    freeze_modules(model, frozen)
    return model


# From random weights ResNet-38 trains all layers alike under adam; its classifier (mode cls) and segmentation
# (mode supervised) runs leave the other head without gradient.
ARCHS = {RRM_ARCH: Arch(name=RRM_ARCH, build=_build, scratch_new_lr_mult=1, unused_head=lambda mode: mode != "onestep",
                        inference="evaluate")}
