from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rrm.io import save_torch
from rrm.models.rrm_net import RRMNet, build_rrm, class_activation_map

WIDTH = 0.0625


@pytest.fixture(scope="module")
def model() -> RRMNet:
    torch.manual_seed(0)
    return build_rrm(width=WIDTH)


def test_output_shapes(model):
    out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out["cls"].shape == (2, 20)
    assert out["cam"].shape == (2, 20, 8, 8)
    assert out["seg"].shape == (2, 21, 8, 8)
    assert build_rrm(width=WIDTH, num_classes=5)(torch.randn(1, 3, 40, 40))["seg"].shape == (1, 5, 5, 5)


def test_heads_follow_the_notes():
    with torch.device("meta"):
        full = build_rrm()
    assert full.fc8.weight.shape == (20, 4096, 1, 1) and full.fc8.bias is None
    for conv, shape in ((full.fc8_seg_conv1, (512, 4096, 3, 3)), (full.fc8_seg_conv2, (21, 512, 3, 3))):
        assert conv.weight.shape == shape and conv.bias is not None
        assert conv.dilation == (12, 12) and conv.padding == (12, 12)
    assert full.dropout7.p == 0.5 and isinstance(full.dropout7, torch.nn.Dropout2d)
    keys = set(full.state_dict())
    assert {"conv1a.weight", "bn7.running_var", "fc8.weight", "fc8_seg_conv2.bias"} <= keys
    small = build_rrm(width=WIDTH)
    assert torch.count_nonzero(small.fc8_seg_conv1.bias) == 0  # head_bias "zeros" (the embedded default)


def test_pytorch_head_bias_is_nn_conv2d_default():
    """network/RRM.py: nn.Conv2d(..., bias=True), then Xavier on the weight only, so the biases keep
    nn.Conv2d's U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels x 3 x 3."""
    torch.manual_seed(0)
    model = build_rrm(width=0.25, head_bias="pytorch")
    for conv in (model.fc8_seg_conv1, model.fc8_seg_conv2):
        bound = 1 / (conv.in_channels * 9) ** 0.5
        bias = conv.bias.detach()
        assert bias.abs().max() <= bound and bias.abs().max() > 0.5 * bound
        # a uniform's sd is bound / sqrt(3); the sample sd of n draws varies by sqrt(0.8 / 4n) relative
        # (0.1 at n = 21, conv2's biases): 40% is 4 of those
        assert 0.6 < float(bias.std()) / (bound / 3 ** 0.5) < 1.4
        weight_bound = (6 / (conv.in_channels * 9 + conv.out_channels * 9)) ** 0.5  # Xavier-uniform
        assert conv.weight.abs().max() <= weight_bound and conv.weight.abs().max() > 0.9 * weight_bound
    with pytest.raises(ValueError, match="head_bias"):
        build_rrm(width=WIDTH, head_bias="ones")


def test_cam_is_relu_of_fc8_conv_and_cls_is_its_average(model):
    model.eval()
    x = torch.randn(2, 3, 48, 56)
    with torch.no_grad():
        out = model(x)
        features = model.features(x)
        raw = F.conv2d(features, model.fc8.weight)
    torch.testing.assert_close(out["cam"], torch.relu(raw))
    torch.testing.assert_close(out["cam"], class_activation_map(features, model.fc8.weight))
    # GAP then a 1x1 conv equals the 1x1 conv then GAP: the logits are the mean of the pre-ReLU CAM.
    torch.testing.assert_close(out["cls"], raw.mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_param_groups_partition_trainable_params(model):
    lr, wd = 7e-4, 1e-5
    groups = model.param_groups(lr, wd)
    assert [g["name"] for g in groups] == ["pretrained_weight", "pretrained_bias", "new_weight", "new_bias"]
    assert [g["lr"] / lr for g in groups] == pytest.approx([1, 2, 10, 20])
    assert [g["initial_lr"] for g in groups] == [g["lr"] for g in groups]
    assert [g["weight_decay"] for g in groups] == [wd, 0.0, wd, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    by_group = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    assert id(model.conv1a.weight) in by_group["pretrained_weight"]
    assert by_group["pretrained_bias"] == set()  # no conv biases in ResNet-38 and BatchNorm is frozen
    assert by_group["new_weight"] == {
        id(model.fc8.weight),
        id(model.fc8_seg_conv1.weight),
        id(model.fc8_seg_conv2.weight),
    }
    assert by_group["new_bias"] == {id(model.fc8_seg_conv1.bias), id(model.fc8_seg_conv2.bias)}
    assert id(model.bn7.weight) not in set(ids)
    optimizer = torch.optim.SGD(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=10, power=0.9)
    optimizer.step()  # no gradients yet: a no-op that keeps the scheduler's call-order check quiet
    scheduler.step()
    assert optimizer.param_groups[3]["lr"] == pytest.approx(20 * lr * 0.9**0.9)


def test_unfrozen_bn_params_go_to_the_x2_group():
    groups = build_rrm(width=WIDTH, freeze_bn=False).param_groups(1.0, 0.1)
    assert len(groups[1]["params"]) == 2 * 37 and groups[1]["weight_decay"] == 0.0


def test_weights_roundtrip_through_our_checkpoint(tmp_path, model):
    path = tmp_path / "ckpt.pt"
    save_torch(path, {"model": model.state_dict(), "step": 3})
    other = build_rrm(width=WIDTH, weights=path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = model.eval()(x), other(x)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_missing_weight_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_rrm(width=WIDTH, weights=tmp_path / "nope.pth")


def test_rejects_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        build_rrm(width=WIDTH, num_classes=1)


def test_dropout_off_makes_train_mode_deterministic_with_the_same_keys():
    # With frozen BN, dropout is the only randomness of a train-mode forward: off, two forwards agree.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)
    on, off = build_rrm(width=WIDTH).train(), build_rrm(width=WIDTH, dropout=False).train()
    off.load_state_dict(on.state_dict())  # same parameter names either way (the authors' weight files load)
    assert torch.equal(off(x)["cls"], off(x)["cls"])
    assert not torch.equal(on(x)["cls"], on(x)["cls"])
    assert torch.allclose(off(x)["cls"], on.eval()(x)["cls"], atol=1e-6)  # eval ignores dropout anyway
