"""ResNet-38 backbone (Wu, Shen, van den Hengel 2019) as used by PSA/AffinityNet and RRM.

Output stride 8 and 4096 channels at width 1. Pre-activation blocks: BN-ReLU precede every conv and the
projection shortcut `conv_branch1` reads the BN-ReLU'd input. Module names follow the authors' weight files
(`conv1a.weight`, `b4_3.bn_branch2b1.running_var`, `b6.conv_branch2b2.weight`, `bn7.*`), so their state dicts
load without renaming.

| block          | in -> out   | mid             | stride | dilation (first / rest) |
|----------------|-------------|-----------------|--------|-------------------------|
| conv1a         | 3 -> 64     |                 | 1      | 1                       |
| b2, b2_1, b2_2 | 64 -> 128   | 128             | 2      | 1                       |
| b3, b3_1, b3_2 | 128 -> 256  | 256             | 2      | 1                       |
| b4, b4_1..b4_5 | 256 -> 512  | 512             | 2      | 1                       |
| b5, b5_1, b5_2 | 512 -> 1024 | 512             | 1      | 1 / 2                   |
| b6 (bottleneck)| 1024 -> 2048| 512, 1024       | 1      | 4, Dropout2d 0.3        |
| b7 (bottleneck)| 2048 -> 4096| 1024, 2048      | 1      | 4, Dropout2d 0.5        |
| bn7 + ReLU     | 4096        |                 |        |                         |

`width` scales every channel count (same topology), so the CPU default runs a narrow copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rrm.models.layers import FreezableBatchNorm, scaled

# Forward order of the residual blocks (attribute names = weight-file prefixes).
BLOCKS = tuple("b2 b2_1 b2_2 b3 b3_1 b3_2 b4 b4_1 b4_2 b4_3 b4_4 b4_5 b5 b5_1 b5_2 b6 b7".split())


class ResBlock(nn.Module):
    """Pre-activation basic block, (N, C_in, H, W) -> (N, C_out, H', W'):
    shortcut + conv_2b1(relu(bn_2b1(conv_2a(relu(bn_2a(x)))))).

    The first conv carries the stride and `first_dilation`; the second uses `dilation`.
    """

    def __init__(
        self,
        in_ch: int,
        mid_ch: int,
        out_ch: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
    ) -> None:
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first, dilation=first, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        # The weight files have a projection exactly where the shape changes.
        self.conv_branch1 = (
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False) if in_ch != out_ch or stride != 1 else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(pre)
        branch = self.conv_branch2a(pre)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch)))
        return shortcut + branch


class BottleneckBlock(nn.Module):
    """Pre-activation bottleneck (1x1 -> 3x3 dilated -> 1x1, widths out/4, out/2, out), Dropout2d inside.

    (N, C_in, H, W) -> (N, C_out, H, W); always has a projection shortcut (b6: 1024->2048, b7: 2048->4096).
    """

    def __init__(
        self, in_ch: int, out_ch: int, mid1: int, mid2: int, *, dilation: int, dropout: float
    ) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid1, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid1)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(mid1, mid2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(mid2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(mid2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(pre)
        branch = self.conv_branch2a(pre)
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        return shortcut + branch


class ResNet38(FreezableBatchNorm):
    """ResNet-38 features: (N, 3, H, W) -> (N, out_channels, ceil(H/8), ceil(W/8)), after bn7 + ReLU.

    With `freeze_bn` (the authors' setting, needed at batch 4) every BatchNorm stays in eval mode even under
    `train()` and its affine parameters get no gradient; conv1a is trained (RRM; PSA froze it).
    """

    def __init__(self, *, width: float = 1.0, freeze_bn: bool = True, dropout: bool = True) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        c = {n: scaled(n, width) for n in (64, 128, 256, 512, 1024, 2048, 4096)}
        self.conv1a = nn.Conv2d(3, c[64], 3, padding=1, bias=False)
        self.b2 = ResBlock(c[64], c[128], c[128], stride=2)
        self.b2_1 = ResBlock(c[128], c[128], c[128])
        self.b2_2 = ResBlock(c[128], c[128], c[128])
        self.b3 = ResBlock(c[128], c[256], c[256], stride=2)
        self.b3_1 = ResBlock(c[256], c[256], c[256])
        self.b3_2 = ResBlock(c[256], c[256], c[256])
        self.b4 = ResBlock(c[256], c[512], c[512], stride=2)
        for i in range(1, 6):
            setattr(self, f"b4_{i}", ResBlock(c[512], c[512], c[512]))
        self.b5 = ResBlock(c[512], c[512], c[1024], dilation=2, first_dilation=1)
        self.b5_1 = ResBlock(c[1024], c[512], c[1024], dilation=2)
        self.b5_2 = ResBlock(c[1024], c[512], c[1024], dilation=2)
        self.b6 = BottleneckBlock(c[1024], c[2048], c[512], c[1024], dilation=4, dropout=0.3 * dropout)
        self.b7 = BottleneckBlock(c[2048], c[4096], c[1024], c[2048], dilation=4, dropout=0.5 * dropout)
        self.bn7 = nn.BatchNorm2d(c[4096])
        self.out_channels = c[4096]
        self.freeze_batchnorm_if(freeze_bn)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, out_channels, ceil(H/8), ceil(W/8)); kept apart so subclasses can add heads."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet38 expects (N, 3, H, W) images, got shape {tuple(x.shape)}")
        x = self.conv1a(x)
        for name in BLOCKS:
            x = getattr(self, name)(x)
        return F.relu(self.bn7(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
