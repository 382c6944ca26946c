"""Building blocks shared by the networks: channel scaling, a dilated conv that skips pure-padding taps,
BatchNorm that can be frozen, and the authors' (and DeepLab's) four SGD learning-rate groups.

DilatedConv2d: with padding = dilation d, output pixel i of a 3x3 conv reads input rows i - d, i, i + d.
When the input has h <= d rows, the outer two are outside the image for every i: they multiply padding.
The embedded default's 96-px crops give 12 x 12 feature maps, so the dilation-12 heads (RRM's segmentation
branch, LargeFOV's fc6, ASPP's rates 12/18/24) would compute a 1 x 1 conv nine times over (~12% of a
one-step training step's network FLOPs). Slicing the kernel to its centre row/column gives the same result
(the skipped products are exact zeros) and the same gradients (the skipped weights' gradients are zero
either way). Real 321-px crops give 41 x 41 maps: the full kernel runs, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def scaled(channels: int, width: float) -> int:
    """`channels * width` rounded, at least 1."""
    return max(1, round(channels * width))


class DilatedConv2d(nn.Conv2d):
    """`nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)`, same parameters and state dict."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int, bias: bool = True) -> None:
        super().__init__(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        rows, cols = x.shape[-2] <= d, x.shape[-1] <= d
        if not (rows or cols):
            return super().forward(x)
        weight = self.weight[:, :, 1:2] if rows else self.weight
        weight = weight[..., 1:2] if cols else weight
        return F.conv2d(x, weight, self.bias, padding=(0 if rows else d, 0 if cols else d), dilation=d)


def _batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm of `module` in eval mode and stop gradients to its affine parameters."""
    for m in _batchnorms(module):
        m.eval()
        for p in m.parameters(recurse=False):
            p.requires_grad_(False)


class FreezableBatchNorm(nn.Module):
    """Base of the networks whose BatchNorm can be frozen (the authors' and DeepLab-v2's setting): after
    `freeze_batchnorm_if(True)` BatchNorm keeps its statistics and affine weights, even under `.train()`."""

    freeze_bn = False

    def freeze_batchnorm_if(self, freeze: bool) -> None:
        self.freeze_bn = freeze
        if freeze:
            freeze_batchnorm(self)

    def train(self, mode: bool = True) -> FreezableBatchNorm:
        super().train(mode)
        if self.freeze_bn:
            for m in _batchnorms(self):
                m.eval()
        return self


def lr_groups(model: nn.Module, *, new_prefixes: Sequence[str], lr: float, weight_decay: float) -> list[dict]:
    """The four SGD groups of the authors (and of the DeepLab prototxts), frozen parameters excluded.

    pretrained weights: lr x1, decay; pretrained biases / other 1-d params: lr x2, no decay;
    new-layer weights (names starting with `new_prefixes`): lr x10, decay; new-layer biases: lr x20, no decay.
    Groups are always four, in this order, possibly empty; "initial_lr" lets schedulers start mid-run.
    """
    specs = [
        ("pretrained_weight", 1.0, weight_decay),
        ("pretrained_bias", 2.0, 0.0),
        ("new_weight", 10.0, weight_decay),
        ("new_bias", 20.0, 0.0),
    ]
    params: list[list[nn.Parameter]] = [[] for _ in specs]
    for name, p in model.named_parameters():
        if p.requires_grad:
            params[2 * name.startswith(tuple(new_prefixes)) + (p.dim() <= 1)].append(p)
    return [
        {"params": ps, "lr": lr * mult, "initial_lr": lr * mult, "weight_decay": wd, "name": name}
        for (name, mult, wd), ps in zip(specs, params, strict=True)
    ]
