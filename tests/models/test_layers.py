from __future__ import annotations

import pytest
import torch
from torch import nn

from rrm.models.layers import DilatedConv2d


@pytest.mark.parametrize("size", [(5, 5), (12, 12), (12, 20), (20, 7), (13, 13), (30, 30)])
def test_matches_the_full_dilated_conv_and_its_gradients(size):
    torch.manual_seed(0)
    fast = DilatedConv2d(6, 4, 12)
    full = nn.Conv2d(6, 4, 3, padding=12, dilation=12)
    full.load_state_dict(fast.state_dict())  # same parameter names: weight files load unchanged
    x = torch.randn(2, 6, *size, dtype=torch.float64, requires_grad=True)
    fast, full = fast.double(), full.double()
    out_fast, out_full = fast(x), full(x)
    assert out_fast.shape == out_full.shape == (2, 4, *size)
    torch.testing.assert_close(out_fast, out_full)
    g = torch.randn_like(out_full)
    grads_fast = torch.autograd.grad(out_fast, (x, fast.weight, fast.bias), g)
    grads_full = torch.autograd.grad(out_full, (x, full.weight, full.bias), g)
    for a, b in zip(grads_fast, grads_full, strict=True):
        torch.testing.assert_close(a, b)


def test_small_maps_give_outer_taps_no_gradient():
    conv = DilatedConv2d(3, 2, 12)
    conv(torch.randn(1, 3, 12, 12)).sum().backward()
    assert conv.weight.grad[:, :, 1, 1].abs().sum() > 0
    outer = conv.weight.grad.clone()
    outer[:, :, 1, 1] = 0
    assert torch.count_nonzero(outer) == 0
