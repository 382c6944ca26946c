"""A dilated 3x3 convolution that skips the taps which can only read zero padding.

With padding = dilation d, output pixel i of a 3x3 conv reads input rows i - d, i, i + d. When the input
has h <= d rows, the outer two are outside the image for every i: they multiply padding. The embedded
default's 96-px crops give 12 x 12 feature maps, so the dilation-12 heads (RRM's segmentation branch,
LargeFOV's fc6, ASPP's rates 12/18/24) compute a 1 x 1 conv nine times over; that padding was ~12% of a
one-step step's network FLOPs. Slicing the kernel to its centre row/column gives the same result (the
skipped products are exact zeros) and the same gradients (the skipped weights' gradients are zero either
way). Real 321-px crops give 41 x 41 maps: the full kernel runs, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
