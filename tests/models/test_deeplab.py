from __future__ import annotations

import pytest
import torch
import torchvision

from rrm.io import save_torch
from rrm.models.deeplab import ASPP, build_deeplab, imagenet_to_deeplab
from rrm.models.weights import load_state_dict_checked

ARCHS = ("vgg16_largefov", "resnet101_v2")
WIDTH = 0.125


@pytest.fixture(scope="module")
def narrow() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {arch: build_deeplab(arch=arch, width=WIDTH) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_output_stride_8_and_21_channels(arch, narrow):
    model = narrow[arch].eval()
    with torch.no_grad():
        for size, expected in (((64, 64), (8, 8)), ((65, 47), (9, 6))):
            out = model(torch.randn(2, 3, *size))
            assert set(out) == {"seg"} and out["seg"].shape == (2, 21, *expected)


def test_largefov_layout():
    model = build_deeplab(arch="vgg16_largefov")
    with torch.device("meta"):
        reference = torchvision.models.vgg16(weights=None).features
    assert {k: v.shape for k, v in model.features.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)] * 2
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs] == [1] * 10 + [2] * 3
    pool5a = model.pool5a  # DeepLab's prototxt: pool5a AVE 3x3, stride 1, pad 1, between pool5 and fc6
    assert isinstance(pool5a, torch.nn.AvgPool2d) and pool5a.count_include_pad
    assert (pool5a.kernel_size, pool5a.stride, pool5a.padding) == (3, 1, 1)
    assert model.fc6.weight.shape == (1024, 512, 3, 3) and model.fc6.dilation == (12, 12)
    assert model.fc7.weight.shape == (1024, 1024, 1, 1) and model.fc8.weight.shape == (21, 1024, 1, 1)
    assert model.drop6.p == model.drop7.p == 0.5


def test_resnet_backbone_is_torchvision_dilated_resnet101():
    torch.manual_seed(0)
    reference = torchvision.models.resnet101(
        weights=None, replace_stride_with_dilation=[False, True, True]
    ).eval()
    mapped, dropped = imagenet_to_deeplab(reference.state_dict(), "resnet101_v2")
    assert dropped == ["fc.weight", "fc.bias"]
    assert all(k.startswith("backbone.") for k in mapped)
    model = build_deeplab(arch="resnet101_v2").eval()
    load_state_dict_checked(model, mapped, source="resnet101.pth", allow_missing=("aspp.",))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)  # up to layer4
        torch.testing.assert_close(model.backbone(x), expected, rtol=0, atol=0)
    assert model.aspp.branches[0].weight.shape == (21, 2048, 3, 3)


def test_pool5a_averages_pool5_before_fc6():
    model = build_deeplab(arch="vgg16_largefov", width=WIDTH, dropout=False).eval()
    x = torch.randn(1, 3, 40, 40)
    seen = {}
    model.fc6.register_forward_hook(lambda m, args, out: seen.update(fc6_in=args[0]))
    with torch.no_grad():
        model(x)
        pool5 = model.features(x)
    # Caffe's AVE pooling with pad 1 divides by 9 everywhere (padding counted)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(pool5, (1, 1, 1, 1)),
                                          torch.full((pool5.shape[1], 1, 3, 3), 1 / 9), groups=pool5.shape[1])
    torch.testing.assert_close(seen["fc6_in"], expected)
    assert not torch.allclose(seen["fc6_in"], pool5)


def test_vgg_mapping_decimates_fc6_fc7():
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    torch.manual_seed(0)
    state = {k: torch.randn(s) for k, s in shapes.items()}
    mapped, dropped = imagenet_to_deeplab(state, "vgg16_largefov")
    assert dropped == ["classifier.6.weight", "classifier.6.bias"]
    model = build_deeplab(arch="vgg16_largefov")
    load_state_dict_checked(model, mapped, source="vgg16-397923af.pth", allow_missing=("fc8.",))
    assert torch.equal(model.features[28].weight, state["features.28.weight"])
    fc6, fc7 = state["classifier.0.weight"], state["classifier.3.weight"]
    for k, c, i, j in [(0, 0, 0, 0), (5, 17, 2, 1), (1023, 511, 2, 2)]:
        # fc6 filter k is VGG's filter 4k, tap (i, j) its 7x7 position (3i, 3j); Linear input c*49 + y*7 + x.
        assert model.fc6.weight[k, c, i, j] == fc6[4 * k, c * 49 + 3 * i * 7 + 3 * j]
    assert model.fc7.weight[7, 9, 0, 0] == fc7[28, 36]
    assert (
        model.fc6.bias[3] == state["classifier.0.bias"][12]
        and model.fc7.bias[3] == state["classifier.3.bias"][12]
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_torchvision_format_file_and_names_bad_keys(tmp_path, arch, narrow):
    source = narrow[arch]
    if arch == "resnet101_v2":
        state = {
            k.removeprefix("backbone."): v
            for k, v in source.state_dict().items()
            if k.startswith("backbone.")
        }
        state |= {"fc.weight": torch.randn(1000, 256), "fc.bias": torch.randn(1000)}
        renamed = "layer3.7.conv2.weight"
    else:
        state = {k: v for k, v in source.state_dict().items() if k.startswith("features.")}
        state |= {"classifier.6.weight": torch.randn(1000, 4096), "classifier.6.bias": torch.randn(1000)}
        renamed = "features.10.weight"
    path = tmp_path / "imagenet.pth"
    save_torch(path, state)
    model = build_deeplab(arch=arch, width=WIDTH, weights=path)
    own = model.state_dict()
    prefix = "backbone." if arch == "resnet101_v2" else ""
    assert all(
        torch.equal(own[prefix + k], v) for k, v in state.items() if not k.startswith(("fc.", "classifier."))
    )
    state[renamed + "_old"] = state.pop(renamed)
    save_torch(path, state)
    with pytest.raises(ValueError) as info:
        build_deeplab(arch=arch, width=WIDTH, weights=path)
    assert str(path) in str(info.value) and renamed in str(info.value) and renamed + "_old" in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_deeplab(arch=arch, width=WIDTH, weights=tmp_path / "absent.pth")


def test_aspp_sums_its_four_branches(narrow):
    torch.manual_seed(0)
    aspp = ASPP(8, 5)
    assert [b.dilation[0] for b in aspp.branches] == [6, 12, 18, 24]
    assert [b.padding[0] for b in aspp.branches] == [6, 12, 18, 24]
    for b in aspp.branches:
        b.bias.data.normal_()
    x = torch.randn(2, 8, 30, 30)
    singles = [
        torch.nn.functional.conv2d(x, b.weight, b.bias, padding=r, dilation=r)
        for b, r in zip(aspp.branches, (6, 12, 18, 24), strict=True)
    ]
    torch.testing.assert_close(aspp(x), singles[0] + singles[1] + singles[2] + singles[3])
    model = narrow["resnet101_v2"].eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 32, 32) + 1)
        torch.testing.assert_close(
            model(torch.zeros(1, 3, 32, 32) + 1)["seg"], sum(b(features) for b in model.aspp.branches)
        )


@pytest.mark.parametrize(
    ("arch", "new"),
    [
        ("vgg16_largefov", ("fc8.weight", "fc8.bias")),
        ("resnet101_v2", ("aspp.branches.0.weight", "aspp.branches.0.bias")),
    ],
)
def test_param_groups(arch, new, narrow):
    model = narrow[arch].train()
    groups = model.param_groups(2.5e-4, 5e-4)
    assert [g["lr"] / 2.5e-4 for g in groups] == pytest.approx([1, 2, 10, 20])
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 5e-4, 0.0]
    assert all(g["initial_lr"] == g["lr"] and g["name"] for g in groups)
    params = dict(model.named_parameters())
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in params.values() if p.requires_grad}
    assert id(params[new[0]]) in {id(p) for p in groups[2]["params"]}
    assert id(params[new[1]]) in {id(p) for p in groups[3]["params"]}
    if arch == "resnet101_v2":
        assert not model.backbone.bn1.training and not model.backbone.bn1.weight.requires_grad
        assert len(groups[1]["params"]) == 0 and len(groups[3]["params"]) == 4
    else:
        assert len(groups[1]["params"]) == 13 + 2  # conv biases and fc6/fc7 biases at x2


def test_rejects_unknown_arch():
    with pytest.raises(ValueError, match="arch must be one of"):
        build_deeplab(arch="resnet50")


def test_batch_norm_variant_loads_torchvision_vgg16_bn_keys():
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16_bn(weights=None).state_dict().items()}
    torch.manual_seed(0)
    state = {k: torch.randn(s) if s else torch.tensor(3) for k, s in shapes.items()}
    mapped, _ = imagenet_to_deeplab(state, "vgg16_largefov")
    model = build_deeplab(arch="vgg16_largefov", batch_norm=True, freeze_bn=False)
    load_state_dict_checked(model, mapped, source="vgg16_bn-6c64b313.pth", allow_missing=("fc8.",))
    assert torch.equal(model.features[41].running_var, state["features.41.running_var"])  # conv5_3's BN
    with pytest.raises(ValueError, match="features.1.running_mean"):  # plain VGG-16 has no BatchNorm there
        load_state_dict_checked(build_deeplab(arch="vgg16_largefov"), mapped, source="vgg16_bn-6c64b313.pth",
                                allow_missing=("fc8.",))


def test_frozen_batch_norm_keeps_statistics_in_train_mode():
    model = build_deeplab(arch="vgg16_largefov", width=WIDTH, batch_norm=True, freeze_bn=True).train()
    bn = model.features[1]
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not bn.training and torch.equal(bn.running_mean, before) and not bn.weight.requires_grad


def test_resnet_blocks_start_as_their_shortcut():
    """Zero-initialised last BatchNorm of every Bottleneck: a block without downsampling maps its
    (non-negative, post-ReLU) input to itself, in train and eval mode alike."""
    torch.manual_seed(0)
    model = build_deeplab(arch="resnet101_v2", width=WIDTH, freeze_bn=False)
    blocks = [m for m in model.backbone.modules() if isinstance(m, torchvision.models.resnet.Bottleneck)]
    assert len(blocks) == 3 + 4 + 23 + 3
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    for mode in (True, False):
        for block in (b for b in blocks if b.downsample is None):
            x = torch.rand(2, block.conv1.in_channels, 6, 6)
            with torch.no_grad():
                torch.testing.assert_close(block.train(mode)(x), x)
