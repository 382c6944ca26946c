"""Two-step extension networks: DeepLab-LargeFOV (VGG-16) and DeepLab-v2 (ResNet-101 with ASPP).

Both return {"seg": (N, num_classes, h, w)}, the key of RRMNet's segmentation branch, at output stride 8;
callers upsample. `width` < 1 scales every channel count (same topology) for the CPU default.

ImageNet initialisation reads a torchvision-format state dict (`vgg16-397923af.pth`,
`resnet101-*.pth`) and maps its keys:

| torchvision key                        | here                                                      |
|----------------------------------------|-----------------------------------------------------------|
| vgg16 `features.N.*`                   | `features.N.*` (same indices; vgg16_bn's with `batch_norm`) |
| vgg16 `classifier.0.*` (fc6)           | `fc6.*`: every 4th filter, 7x7 taps 0/3/6 -> (1024, 512, 3, 3) |
| vgg16 `classifier.3.*` (fc7)           | `fc7.*`: every 4th filter and input -> (1024, 1024, 1, 1) |
| vgg16 `classifier.6.*`                 | dropped (ImageNet classes); `fc8` starts fresh            |
| resnet101 `conv1`, `bn1`, `layer1..4`  | `backbone.<same key>`                                     |
| resnet101 `fc.*`                       | dropped; `aspp` starts fresh                              |

DeepLab-LargeFOV initialises fc6/fc7 by subsampling VGG-16's fully connected layers (Chen et al. ICLR 2015,
sec. 4.1); the exact taps of their Caffe conversion are not published, these are ours.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1

from rrm.data.datasets import VOC
from rrm.io import load_torch
from rrm.models.layers import DilatedConv2d, FreezableBatchNorm, lr_groups, scaled
from rrm.models.registry import Arch
from rrm.models.weights import load_initial_weights, unwrap_state
from rrm.settings import DEEPLAB_ARCHS

ASPP_RATES = (6, 12, 18, 24)
# torchvision's vgg16 `features` layout: channel count for a conv, "M" for a pooling layer.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
RESNET101_BLOCKS = (3, 4, 23, 3)


def _check_image(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} expects (N, 3, H, W) images, got shape {tuple(x.shape)}")


class DeepLabLargeFOV(FreezableBatchNorm):
    """DeepLab-LargeFOV (Chen et al. ICLR 2015): VGG-16 convs with pools 1-3 3x3/2 (pad 1), pools 4-5
    3x3/1, conv5 dilation 2, pool5a 3x3/1 average pool (pad 1, padding counted as Caffe's), fc6 3x3
    dilation 12 -> 1024, fc7 1x1 -> 1024 (ReLU and Dropout 0.5 after each), fc8 1x1 -> num_classes.
    (N, 3, H, W) -> {"seg": (N, K, ceil(H/8), ceil(W/8))}.

    `batch_norm` puts BatchNorm after every conv as torchvision's `vgg16_bn` (same `features` indices, so its
    ImageNet file loads): without ImageNet weights the plain 16-layer VGG does not train from random
    weights in a short schedule (it predicts background everywhere), with BatchNorm it does.
    `dropout` False drops the two Dropout(0.5) layers (no parameters: checkpoints load either way).
    """

    new_layers = ("fc8.",)

    def __init__(self, *, num_classes: int = VOC.num_classes, width: float = 1.0, batch_norm: bool = False,
                 freeze_bn: bool = False, dropout: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, n_pool = 3, 0
        for item in VGG16_LAYOUT:
            if item == "M":
                n_pool += 1
                stride = 2 if n_pool <= 3 else 1
                # Floor rounding: ceil(H/2) per pool, equal to Caffe's ceil rounding at DeepLab's odd
                # 32k-31 sizes (321 -> 41) and exactly ceil(H/8) overall at even ones.
                layers.append(nn.MaxPool2d(3, stride, padding=1))
            else:
                dilation = 2 if n_pool == 4 else 1  # conv5_x after the first stride-1 pool
                out_ch = scaled(int(item), width)
                layers += [
                    nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation),
                    *([nn.BatchNorm2d(out_ch)] if batch_norm else []),
                    nn.ReLU(inplace=True),
                ]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)  # indices match torchvision's vgg16().features
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1)  # no parameters: ImageNet files load unchanged
        fc_ch = scaled(1024, width)
        self.fc6 = DilatedConv2d(in_ch, fc_ch, 12)
        self.drop6 = nn.Dropout(0.5) if dropout else nn.Identity()
        self.fc7 = nn.Conv2d(fc_ch, fc_ch, 1)
        self.drop7 = nn.Dropout(0.5) if dropout else nn.Identity()
        self.fc8 = nn.Conv2d(fc_ch, num_classes, 1)
        for m in self.modules():  # torchvision's VGG init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc8.weight, std=0.01)  # DeepLab's classifier init
        self.freeze_batchnorm_if(freeze_bn and batch_norm)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_image(x, "DeepLabLargeFOV")
        x = self.pool5a(self.features(x))
        x = self.drop6(F.relu(self.fc6(x)))
        x = self.drop7(F.relu(self.fc7(x)))
        return {"seg": self.fc8(x)}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """DeepLab's recipe: weights x1, biases x2 (no decay); fc8 weight x10, bias x20 (no decay)."""
        return lr_groups(self, new_prefixes=self.new_layers, lr=lr, weight_decay=weight_decay)


def aspp_sum(x: torch.Tensor, branches: nn.ModuleList) -> torch.Tensor:
    """DeepLab-v2 ASPP (Chen et al. TPAMI 2018, ASPP-L): sum_r conv3x3_rate_r(x).

    x: (N, C, h, w) -> (N, K, h, w); each branch maps C -> K class scores, their outputs are summed.
    """
    return torch.stack([branch(x) for branch in branches]).sum(0)


class ASPP(nn.Module):
    """Four 3x3 convs (rates 6/12/18/24, with bias) whose class scores are summed."""

    def __init__(self, in_ch: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(DilatedConv2d(in_ch, num_classes, r) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)  # DeepLab-v2's Gaussian init of fc1_c*
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aspp_sum(x, self.branches)


def _resnet_stage(
    inplanes: int, planes: int, blocks: int, *, stride: int, dilation: int, first_dilation: int
) -> nn.Sequential:
    """A torchvision ResNet stage (`layerN`) of Bottlenecks; a dilated stage has stride 1 and, as
    torchvision's `replace_stride_with_dilation`, its first block keeps the previous stage's dilation."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride, downsample, dilation=first_dilation)]
    layers += [Bottleneck(out, planes, dilation=dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DeepLabV2(FreezableBatchNorm):
    """DeepLab-v2: torchvision ResNet-101 with layer3/layer4 dilated (2, 4; output stride 8) + ASPP.

    (N, 3, H, W) -> {"seg": (N, K, ceil(H/8), ceil(W/8))}. At width 1 the backbone is exactly
    `torchvision.models.resnet101(replace_stride_with_dilation=[False, True, True])` without `fc`
    (same module names under `backbone.`); `width` < 1 scales its stage widths. With `freeze_bn`
    (DeepLab-v2's Caffe setting) BatchNorm stays in eval mode and is not trained.

    Each Bottleneck's last BatchNorm starts at weight 0 (torchvision's `zero_init_residual`, Goyal et al.
    2017), so every block starts as its identity shortcut and the 33 blocks start as a shallow net.
    ImageNet weights overwrite it; from random weights it is what lets the network train: without it the
    first Adam steps throw the loss from 3 to 10-17 and the net ends up predicting background.
    """

    new_layers = ("aspp.",)

    def __init__(self, *, num_classes: int = VOC.num_classes, width: float = 1.0, freeze_bn: bool = True) -> None:
        super().__init__()
        stem = scaled(64, width)
        planes = [scaled(p, width) for p in (64, 128, 256, 512)]
        strides, dilations, firsts = (1, 2, 1, 1), (1, 1, 2, 4), (1, 1, 1, 2)
        stages, inplanes = [], stem
        for i in range(4):
            stages.append(
                (
                    f"layer{i + 1}",
                    _resnet_stage(
                        inplanes,
                        planes[i],
                        RESNET101_BLOCKS[i],
                        stride=strides[i],
                        dilation=dilations[i],
                        first_dilation=firsts[i],
                    ),
                )
            )
            inplanes = planes[i] * Bottleneck.expansion
        self.backbone = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(3, stem, 7, 2, padding=3, bias=False)),
                    ("bn1", nn.BatchNorm2d(stem)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("maxpool", nn.MaxPool2d(3, 2, padding=1)),
                    *stages,
                ]
            )
        )
        for m in self.backbone.modules():  # torchvision's ResNet init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.backbone.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
        self.aspp = ASPP(inplanes, num_classes)
        self.freeze_batchnorm_if(freeze_bn)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_image(x, "DeepLabV2")
        return {"seg": self.aspp(self.backbone(x))}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """DeepLab's recipe: backbone weights x1 (its BatchNorm frozen); ASPP weights x10, biases x20."""
        return lr_groups(self, new_prefixes=self.new_layers, lr=lr, weight_decay=weight_decay)


BUILDERS = {"vgg16_largefov": DeepLabLargeFOV, "resnet101_v2": DeepLabV2}


def imagenet_to_deeplab(
    state: Mapping[str, torch.Tensor], arch: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a torchvision ImageNet state dict to this module's keys (table in the module docstring).

    Returns (mapped state, dropped keys). Keys it does not recognise are passed through unchanged, so the
    checked loader reports them as unexpected.
    """
    if arch not in BUILDERS:
        raise ValueError(f"arch must be one of {sorted(BUILDERS)}, got {arch!r}")
    # VGG's fc6/fc7 subsampled to LargeFOV's 1024 filters: (new key, expected shape, decimation).
    vgg_fc = {
        "classifier.0.weight": (
            "fc6.weight",
            (4096, 25088),
            lambda w: w.view(4096, 512, 7, 7)[::4, :, ::3, ::3],
        ),
        "classifier.0.bias": ("fc6.bias", (4096,), lambda b: b[::4]),
        "classifier.3.weight": ("fc7.weight", (4096, 4096), lambda w: w[::4, ::4, None, None]),
        "classifier.3.bias": ("fc7.bias", (4096,), lambda b: b[::4]),
    }
    mapped, dropped = {}, []
    for key, value in state.items():
        if arch == "vgg16_largefov":
            if key.startswith("classifier.6."):
                dropped.append(key)
            elif key in vgg_fc and tuple(value.shape) == vgg_fc[key][1]:
                mapped[vgg_fc[key][0]] = vgg_fc[key][2](value).contiguous()
            else:
                mapped[key] = value
        else:
            if key.startswith("fc."):
                dropped.append(key)
            elif key.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")):
                mapped["backbone." + key] = value
            else:
                mapped[key] = value
    return mapped, dropped


def load_imagenet_weights(model: nn.Module, path: str | os.PathLike, *, arch: str) -> list[str]:
    """Initialise `model` from a torchvision-format ImageNet file; returns (and logs) notes on what was not
    loaded. Every backbone key must be present with the right shape (ValueError naming the file otherwise);
    the new layers (fc8 or ASPP; fc6/fc7 when the file has no VGG classifier) may stay freshly initialised.
    """
    source = str(path)
    mapped, dropped = imagenet_to_deeplab(unwrap_state(load_torch(path), source=source), arch)
    fresh = ("fc6.", "fc7.", "fc8.") if arch == "vgg16_largefov" else ("aspp.",)
    return load_initial_weights(model, mapped, source=source, fresh=fresh, dropped=dropped)


def build_deeplab(
    *,
    arch: str,
    num_classes: int = VOC.num_classes,
    width: float = 1.0,
    weights: str | os.PathLike | None = None,
    freeze_bn: bool = True,
    batch_norm: bool = False,
    dropout: bool = True,
) -> nn.Module:
    """DeepLab-LargeFOV ("vgg16_largefov") or DeepLab-v2 ("resnet101_v2"), optionally ImageNet-initialised
    from a torchvision-format file. `batch_norm` selects VGG-16 with BatchNorm (torchvision's vgg16_bn);
    `freeze_bn` keeps BatchNorm in eval mode and untrained; `dropout` False removes LargeFOV's fc6/fc7
    dropout (DeepLab-v2 has none)."""
    if arch not in BUILDERS:
        raise ValueError(f"arch must be one of {sorted(BUILDERS)}, got {arch!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if arch == "resnet101_v2":
        model: nn.Module = DeepLabV2(num_classes=num_classes, width=width, freeze_bn=freeze_bn)
    else:
        model = DeepLabLargeFOV(num_classes=num_classes, width=width, batch_norm=batch_norm, freeze_bn=freeze_bn,
                                dropout=dropout)
    if weights is not None:
        load_imagenet_weights(model, weights, arch=arch)
    return model


def _builder(arch: str):
    def build(*, num_classes: int, width: float, batch_norm: bool, freeze_bn: bool, dropout: bool, head_bias: str,
              init: str | None, frozen: tuple[str, ...]) -> nn.Module:  # head_bias: ResNet-38's; DeepLab's heads init as defined
        if frozen:
            raise ValueError(f"{arch}: frozen modules are a ResNet-38 classifier setting, got {list(frozen)}")
        return build_deeplab(arch=arch, num_classes=num_classes, width=width, weights=init, freeze_bn=freeze_bn,
                             batch_norm=arch == "vgg16_largefov" and batch_norm, dropout=dropout)
    return build


# A DeepLab keeps x10 for its classifier even from random weights under adam (embedded two-step val mIoU
# after 400 steps: 0.44 with it, 0.10 without); it has one head.
ARCHS = {arch: Arch(name=arch, build=_builder(arch), scratch_new_lr_mult=10, unused_head=lambda mode: False,
                    inference="evaluate_deeplab") for arch in DEEPLAB_ARCHS}
