from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rrm.models.resnet38 import BottleneckBlock, ResBlock, ResNet38
from rrm.models.weights import load_state_dict_checked


def _c(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def authors_backbone_spec(width: float = 1.0) -> dict[str, tuple[int, ...]]:
    """Key -> shape of PSA's / RRM's ResNet-38 weight files, written out from the notes (no model code)."""
    c = lambda n: _c(n, width)  # noqa: E731
    spec: dict[str, tuple[int, ...]] = {"conv1a.weight": (c(64), 3, 3, 3)}

    def bn(name: str, n: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            spec[f"{name}.{p}"] = (n,)

    basic = [
        ("b2", 64, 128, 128),
        ("b2_1", 128, 128, 128),
        ("b2_2", 128, 128, 128),
        ("b3", 128, 256, 256),
        ("b3_1", 256, 256, 256),
        ("b3_2", 256, 256, 256),
        ("b4", 256, 512, 512),
        *((f"b4_{i}", 512, 512, 512) for i in range(1, 6)),
        ("b5", 512, 512, 1024),
        ("b5_1", 1024, 512, 1024),
        ("b5_2", 1024, 512, 1024),
    ]
    for name, cin, mid, cout in basic:
        bn(f"{name}.bn_branch2a", c(cin))
        spec[f"{name}.conv_branch2a.weight"] = (c(mid), c(cin), 3, 3)
        bn(f"{name}.bn_branch2b1", c(mid))
        spec[f"{name}.conv_branch2b1.weight"] = (c(cout), c(mid), 3, 3)
        if name in ("b2", "b3", "b4", "b5"):
            spec[f"{name}.conv_branch1.weight"] = (c(cout), c(cin), 1, 1)
    for name, cin, m1, m2, cout in [("b6", 1024, 512, 1024, 2048), ("b7", 2048, 1024, 2048, 4096)]:
        bn(f"{name}.bn_branch2a", c(cin))
        spec[f"{name}.conv_branch2a.weight"] = (c(m1), c(cin), 1, 1)
        bn(f"{name}.bn_branch2b1", c(m1))
        spec[f"{name}.conv_branch2b1.weight"] = (c(m2), c(m1), 3, 3)
        bn(f"{name}.bn_branch2b2", c(m2))
        spec[f"{name}.conv_branch2b2.weight"] = (c(cout), c(m2), 1, 1)
        spec[f"{name}.conv_branch1.weight"] = (c(cout), c(cin), 1, 1)
    bn("bn7", c(4096))
    return spec


def test_full_width_names_and_shapes_match_authors_files():
    with torch.device("meta"):
        model = ResNet38()
    state = {
        k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    assert state == authors_backbone_spec()
    assert model.out_channels == 4096
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_strides_and_dilations():
    model = ResNet38(width=0.125)
    assert model.conv1a.stride == (1, 1) and model.conv1a.padding == (1, 1)
    for name in ("b2", "b3", "b4"):
        block = getattr(model, name)
        assert block.conv_branch2a.stride == (2, 2) and block.conv_branch1.stride == (2, 2)
    assert model.b4_5.conv_branch2a.stride == (1, 1)
    # b5: first conv undilated, then dilation 2; b6/b7 3x3 dilation 4; padding keeps the size.
    assert model.b5.conv_branch2a.dilation == (1, 1) and model.b5.conv_branch2b1.dilation == (2, 2)
    assert model.b5_1.conv_branch2a.dilation == (2, 2) and model.b5_1.conv_branch2a.padding == (2, 2)
    for name in ("b6", "b7"):
        assert getattr(model, name).conv_branch2b1.dilation == (4, 4)
        assert getattr(model, name).conv_branch2b1.padding == (4, 4)
    assert model.b6.dropout_2b1.p == 0.3 and model.b7.dropout_2b2.p == 0.5


@pytest.mark.parametrize(("size", "expected"), [((64, 64), (8, 8)), ((65, 47), (9, 6))])
def test_output_stride_8_and_channels(size, expected):
    model = ResNet38(width=0.125).eval()
    assert model.out_channels == 512
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 512, *expected)
    assert (out >= 0).all()  # final bn7 + ReLU


def test_batchnorm_frozen_under_train():
    torch.manual_seed(0)
    model = ResNet38(width=0.0625)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 2 * 15 + 3 * 2 + 1
    assert not any(m.training for m in bns)
    assert model.b7.dropout_2b2.training  # dropout still follows train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for m in bns:
        assert not m.weight.requires_grad and m.weight.grad is None and m.bias.grad is None
    assert model.conv1a.weight.grad is not None  # RRM trains conv1a
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unfrozen_batchnorm_trains():
    model = ResNet38(width=0.0625, freeze_bn=False).train()
    assert model.bn7.training and model.bn7.weight.requires_grad


def test_projection_reads_preactivated_input():
    # Negative input: BN (identity at init, eval) + ReLU gives zeros, so with the projection on the
    # BN-ReLU'd input every path is zero; an identity shortcut passes x through unchanged.
    x = -torch.rand(1, 8, 6, 6) - 0.1
    for block in (ResBlock(8, 4, 16, stride=2), BottleneckBlock(8, 16, 4, 8, dilation=4, dropout=0.3)):
        assert torch.equal(block.eval()(x), torch.zeros_like(block(x)))
    same = ResBlock(8, 4, 8).eval()
    assert same.conv_branch1 is None
    assert torch.equal(same(x), x)


def test_basic_block_matches_hand_composition():
    torch.manual_seed(1)
    block = ResBlock(4, 6, 8, stride=2, dilation=2, first_dilation=1).eval()
    for bn in (block.bn_branch2a, block.bn_branch2b1):
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_()
    x = torch.randn(1, 4, 9, 9)
    pre = F.relu(block.bn_branch2a(x))
    mid = F.relu(block.bn_branch2b1(F.conv2d(pre, block.conv_branch2a.weight, stride=2, padding=1)))
    expected = F.conv2d(pre, block.conv_branch1.weight, stride=2) + F.conv2d(
        mid, block.conv_branch2b1.weight, padding=2, dilation=2
    )
    torch.testing.assert_close(block(x), expected)


def test_loads_authors_state_dict_strictly():
    torch.manual_seed(0)
    spec = authors_backbone_spec(0.125)
    state = {k: torch.rand(shape) + 0.1 for k, shape in spec.items()}  # old files: no num_batches_tracked
    model = ResNet38(width=0.125)
    load_state_dict_checked(model, state, source="res38_cls.pth")
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    # With the counters added the same dict also passes torch's own strict check.
    counters = {k: torch.tensor(0) for k in own if k.endswith("num_batches_tracked")}
    ResNet38(width=0.125).load_state_dict({**state, **counters}, strict=True)


def test_rejects_bad_width_and_input():
    with pytest.raises(ValueError, match="width"):
        ResNet38(width=0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ResNet38(width=0.0625)(torch.randn(1, 1, 16, 16))
